"""The HTTP admin endpoint: ``/metrics``, ``/healthz``, ``/sessions``, ``POST /flush``, ``/kick``.

Why a few lines of HTTP/1.1 of our own instead of aiohttp: four fixed routes, one request per
connection, no bodies we read; a dependency that size would be most of the attack surface.
Everything an admin client can make us hold is bounded (request line, header count and
size, body, time), and the listener should still sit on a management address only.

A few idle or slow-drip connections must never starve the load balancers' ``/healthz``
probe (they once did: 32 silent connections made it answer 503 to everyone). So a request
has a few seconds to arrive, one address holds at most ``MAX_CLIENTS_PER_IP`` connections,
and when a table is full the connection that has waited longest *without sending a whole
request* is closed to make room for the newcomer. A real client sends its request within a
round trip of connecting, so the one given up is almost always the idle one; only when
every slot is busy answering a request does a newcomer get 503.

Authentication is one bearer token (``[admin] token`` or ``token_file``), compared in
constant time. Without a token only the read-only GETs are served; the POSTs, which can
empty the route cache or disconnect users, answer 403.

A user move, on every instance behind the balancer (see OPERATIONS.md)::

    curl -X POST -H "Authorization: Bearer $TOKEN" "http://mf1:9143/flush?user=alice_example_com"
    curl -X POST -H "Authorization: Bearer $TOKEN" "http://mf1:9143/kick?user=alice_example_com"
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from proxy.actions import Failure
from proxy.config import Settings
from proxy.metrics import Metrics
from proxy.relay import Relay
from proxy.session import CoreEnv, SessionRecord

log = logging.getLogger("mailfarm.admin")

MAX_LINE = 4096  # request line, and each header line
MAX_HEADERS = 50
MAX_HEADER_BYTES = 16384
MAX_BODY = 4096  # no route reads a body; a small one is drained and ignored
REQUEST_TIMEOUT = 3.0  # to send the whole request; a scraper or curl needs milliseconds
WRITE_TIMEOUT = 10.0  # to take the answer (/metrics can be some hundred KiB)
MAX_CLIENTS = 32
MAX_CLIENTS_PER_IP = 8  # a scraper, a health checker and an operator, with room to spare
MAX_USER = 512

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    extra: tuple[tuple[str, str], ...] = ()


class HttpError(Exception):
    """Ends the request with ``status``; ``message`` goes into the JSON body."""

    def __init__(self, status: int, message: str, extra: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _json(status: int, payload: object, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(payload).encode() + b"\n", extra=extra)


def kick_goodbyes() -> dict[str, bytes]:
    """Each protocol's goodbye for a kicked session, worded by its own dialogue's table.

    ``Failure.KICKED`` is used once the dialogues know it; until then the shutdown goodbye
    (IMAP ``* BYE [UNAVAILABLE]``, POP3 ``-ERR [SYS/TEMP]``) tells clients the same thing:
    the server closed this session, come back in a moment.
    """
    failure = getattr(Failure, "KICKED", Failure.SHUTDOWN)
    out: dict[str, bytes] = {}
    try:
        from proxy.imap.dialogue import imap_bye

        out["imap"] = imap_bye(failure)
    except ImportError:
        pass
    try:
        from proxy.pop3.protocol import pop3_bye
    except ImportError:
        return out
    try:
        out["pop3"] = pop3_bye(failure)
    except KeyError:  # KICKED known to the core but not yet worded by the POP3 dialogue
        out["pop3"] = pop3_bye(Failure.SHUTDOWN)
    from proxy.sieve.protocol import sieve_bye

    out["sieve"] = sieve_bye(failure)
    return out


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(eq=False, slots=True)
class _Client:
    """One admin connection, for the connection tables."""

    ip: str
    writer: asyncio.StreamWriter
    released: bool = False


class AdminServer:
    """One per process; :meth:`listen` once per ``[admin] listen`` address."""

    def __init__(
        self,
        env: CoreEnv,
        metrics: Metrics,
        token: str = "",
        *,
        goodbyes: Mapping[str, bytes] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        max_clients_per_ip: int = MAX_CLIENTS_PER_IP,
    ) -> None:
        self.env = env
        self.metrics = metrics
        self._token = token.encode("utf-8")
        self._goodbyes = dict(kick_goodbyes() if goodbyes is None else goodbyes)
        self._timeout = request_timeout
        self._max_clients = max(1, max_clients)
        self._max_per_ip = max(1, min(max_clients_per_ip, self._max_clients))
        self.connections = 0
        self.connections_by_address: dict[str, int] = {}
        # Connections whose request is not read yet, oldest first (dicts keep order): the
        # ones given up, oldest first, when a table is full.
        self._waiting: dict[_Client, None] = {}
        self._given_up = 0
        self._given_up_logged = float("-inf")
        # path → (method, handler, served without a token)
        self.routes: dict[str, tuple[str, Handler, bool]] = {
            "/metrics": ("GET", self.get_metrics, True),
            "/healthz": ("GET", self.get_healthz, True),
            "/flush": ("POST", self.post_flush, False),
            "/kick": ("POST", self.post_kick, False),
            "/sessions": ("GET", self.get_sessions, False),  # names users: token only
        }

    async def listen(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(
            self.handle, host or None, port, reuse_address=True, limit=MAX_LINE
        )
        names = ", ".join(str(s.getsockname()[:2]) for s in server.sockets)
        log.info("admin listening on %s%s", names, "" if self._token else " (no token: GET only)")
        return server

    # -- connection --------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one request and close; never raises."""
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "-"
        client = self._admit(ip, writer)
        try:
            if client is None:
                response: Response | None = _json(503, {"error": "too many admin connections"})
            else:
                response = await self._respond(reader, ip, client)
            if response is not None and not writer.is_closing():
                writer.write(self._serialise(response))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
                if response.status >= 400:
                    if client is not None and not client.released:
                        self._waiting[client] = None  # done with: may make room again
                    await self._linger(reader, writer, 0.25 if client is None else 1.0)
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:
            log.exception("admin: internal error serving %s", ip)
        finally:
            if client is not None:
                self._release(client)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (ConnectionError, TimeoutError, OSError):
                pass

    # -- connection tables ---------------------------------------------------------------

    def _admit(self, ip: str, writer: asyncio.StreamWriter) -> _Client | None:
        """A place in the tables for a new connection, or ``None``: every slot it could
        take is busy answering a request (silent connections are given up instead)."""
        if self.connections_by_address.get(ip, 0) >= self._max_per_ip:
            if not self._give_up(ip):
                return None
        if self.connections >= self._max_clients:
            if not self._give_up(None):
                return None
        client = _Client(ip, writer)
        self.connections += 1
        self.connections_by_address[ip] = self.connections_by_address.get(ip, 0) + 1
        self._waiting[client] = None
        return client

    def _give_up(self, ip: str | None) -> bool:
        """Close the connection (of ``ip``, or of anyone) that has waited longest without
        sending its request; False when there is none to close."""
        victim = next((c for c in self._waiting if ip is None or c.ip == ip), None)
        if victim is None:
            return False
        self._release(victim)
        transport = victim.writer.transport
        transport.abort()  # its handler sees the connection end and returns
        self._given_up += 1
        now = asyncio.get_running_loop().time()
        if now - self._given_up_logged >= 60.0:  # a flood must not flood the log too
            log.warning(
                "admin: %d idle connections closed to make room (latest from %s; limits "
                "%d per address, %d in all)",
                self._given_up,
                victim.ip,
                self._max_per_ip,
                self._max_clients,
            )
            self._given_up, self._given_up_logged = 0, now
        return True

    def _release(self, client: _Client) -> None:
        if client.released:
            return
        client.released = True
        self._waiting.pop(client, None)
        self.connections -= 1
        left = self.connections_by_address.get(client.ip, 1) - 1
        if left > 0:
            self.connections_by_address[client.ip] = left
        else:
            self.connections_by_address.pop(client.ip, None)

    @staticmethod
    async def _linger(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float
    ) -> None:
        """After an error some request bytes may be unread; closing then would send a
        reset that can destroy our reply in flight, so drain them for a moment first."""
        if writer.can_write_eof():
            writer.write_eof()
        try:
            async with asyncio.timeout(seconds):
                while await reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass

    async def _respond(
        self, reader: asyncio.StreamReader, ip: str, client: _Client
    ) -> Response | None:
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    request = await self._read_request(reader)
            except TimeoutError:
                raise HttpError(408, "request not received in time") from None
            finally:
                self._waiting.pop(client, None)  # read (or failed): no longer given up
            if request is None or client.released:
                return None  # the client left before saying anything, or was given up
            return await self._dispatch(request, ip)
        except HttpError as exc:
            return _json(exc.status, {"error": exc.message}, exc.extra)
        except (ConnectionError, OSError):
            raise
        except Exception:
            log.exception("admin: internal error serving %s", ip)
            return _json(500, {"error": "internal error, see the mailfarm log"})

    @staticmethod
    def _serialise(response: Response) -> bytes:
        head = [
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.extra),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body

    # -- HTTP/1.1 parsing (RFC 9112, the subset a scraper and curl use) -------------------

    @staticmethod
    async def _line(reader: asyncio.StreamReader, too_long: int) -> bytes:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise HttpError(too_long, "line too long") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise HttpError(400, "incomplete request") from None
            raise
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            first = await self._line(reader, 414)
        except asyncio.IncompleteReadError:
            return None
        parts = first.split(b" ")
        if len(parts) != 3 or _TOKEN.fullmatch(parts[0]) is None:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        m = _VERSION.fullmatch(version)
        if m is None:
            raise HttpError(400, "malformed request line")
        if m.group(1) != b"1":
            raise HttpError(505, "only HTTP/1.x is served")
        if not target.startswith(b"/") or any(c <= 0x20 or c >= 0x7F for c in target):
            raise HttpError(400, "malformed request target")
        headers: dict[str, str] = {}
        total = count = 0
        while True:
            try:
                line = await self._line(reader, 431)
            except asyncio.IncompleteReadError:
                raise HttpError(400, "incomplete request") from None
            if not line:
                break
            total += len(line)
            count += 1
            if count > MAX_HEADERS or total > MAX_HEADER_BYTES:
                raise HttpError(431, "too many or too large header fields")
            name, colon, value = line.partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None:
                raise HttpError(400, "malformed header field")  # also obs-fold (RFC 9112 5.2)
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if key == "content-length" and key in headers and headers[key] != text:
                raise HttpError(400, "conflicting Content-Length")
            headers[key] = text
        if "transfer-encoding" in headers:
            raise HttpError(501, "Transfer-Encoding is not supported")
        length_text = headers.get("content-length", "0")
        if not length_text.isascii() or not length_text.isdigit():
            raise HttpError(400, "malformed Content-Length")
        if len(length_text) > 9 or int(length_text) > MAX_BODY:
            raise HttpError(413, "request body too large")
        if int(length_text):
            try:
                await reader.readexactly(int(length_text))
            except asyncio.IncompleteReadError:
                raise HttpError(400, "incomplete request body") from None
        url = urlsplit(target.decode("ascii"))
        try:
            query = parse_qs(url.query, keep_blank_values=True, max_num_fields=8)
        except ValueError:
            raise HttpError(400, "malformed query string") from None
        return Request(method.decode("ascii"), url.path, query, headers)

    # -- routing and authorisation -----------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # No early exit at the first wrong byte; with a wrong length only the length leaks.
        return hmac.compare_digest(given.strip().encode("latin-1"), self._token)

    async def _dispatch(self, request: Request, ip: str) -> Response:
        # /healthz stays open: load balancers probe it, and it tells nothing but liveness.
        open_path = request.path == "/healthz" and request.method == "GET"
        if self._token and not open_path and not self._authorised(request):
            log.warning("admin: unauthorised %s %s from %s", request.method, request.path, ip)
            raise HttpError(
                401, "bearer token required", (("WWW-Authenticate", 'Bearer realm="mailfarm"'),)
            )
        route = self.routes.get(request.path)
        if route is None:
            raise HttpError(404, "no such endpoint")
        method, handler, public = route
        if request.method != method:
            raise HttpError(405, f"use {method}", (("Allow", method),))
        if not self._token and not public:
            raise HttpError(
                403, "no [admin] token configured: only /metrics and /healthz are served"
            )
        return await handler(request)

    @staticmethod
    def _user(request: Request, required: bool) -> str | None:
        """The ``user`` parameter; any other parameter is refused, because a typo such as
        ``?usr=alice`` on /flush must not silently flush every user."""
        unknown = set(request.query) - {"user"}
        if unknown:
            raise HttpError(400, f"unknown parameter {sorted(unknown)[0]!r}")
        values = request.query.get("user")
        if values is None:
            if required:
                raise HttpError(400, "user=NAME is required")
            return None
        if len(values) != 1 or not values[0] or len(values[0]) > MAX_USER:
            raise HttpError(400, "give user=NAME once, not empty")
        return values[0]

    # -- endpoints -----------------------------------------------------------------------

    async def get_metrics(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(200, body, content_type)

    async def get_healthz(self, request: Request) -> Response:
        # Which worker answered and how many there are, so the admin tool can reach every
        # worker (port + i) from the one URL per instance an operator lists. Not secret: a
        # port scan tells as much. "status" stays first: probes may match the body's start.
        sessions = self.env.sessions
        return _json(
            200,
            {
                "status": "ok",
                "preauth": len(sessions.preauth),
                "proxied": len(sessions.relays),
                "worker": getattr(self.env, "worker", 0),
                "workers": getattr(self.env, "workers", 1),
            },
        )

    async def post_flush(self, request: Request) -> Response:
        user = self._user(request, required=False)
        count = self.env.directory.flush(user)
        log.info("admin: flushed %d route cache entries (%s)", count, user or "all users")
        return _json(200, {"flushed": count, "user": user})

    async def post_kick(self, request: Request) -> Response:
        user = self._user(request, required=True)
        assert user is not None
        kicked = self.kick(user)
        log.info("admin: kicked %d sessions of %s", kicked, user)
        return _json(200, {"kicked": kicked, "user": user})

    async def get_sessions(self, request: Request) -> Response:
        user = self._user(request, required=False)
        now = time.monotonic()
        listed = [
            {
                "protocol": record.protocol,
                "uid": record.uid,
                "mail": record.mail,
                "domain": record.domain or None,  # the directory's, for per-domain views
                "client": f"{record.client.ip}:{record.client.port}",
                "backend": record.backend,
                "seconds": round(now - record.started, 1),
                "worker": self.env.worker,
            }
            for _, record in self._proxied(user)
        ]
        return _json(200, {"sessions": listed, "user": user})

    def _proxied(self, user: str | None) -> list[tuple[Relay, SessionRecord]]:
        """The logged-in sessions, those whose uid, address or login is ``user`` (any case)
        when it is given."""
        name = user.lower() if user is not None else None
        sessions = self.env.sessions
        out = []
        for relay in list(sessions.relays):
            record = sessions.records.get(relay)
            if record is None:
                continue
            if name is not None and name not in (
                record.uid.lower(),
                record.login.lower(),
                record.mail.lower(),
            ):
                continue
            out.append((relay, record))
        return out

    def kick(self, user: str) -> int:
        """Close every proxied session whose uid, address or login is ``user`` (any case)."""
        found = self._proxied(user)
        for relay, record in found:  # kick() removes the relay from the set
            relay.kick(self._goodbyes.get(record.protocol, b""))
        return len(found)


async def start(settings: Settings, env: CoreEnv) -> list[asyncio.AbstractServer]:
    """The ``proxy.server.SERVICES`` entry point: one listener per ``[admin] listen``."""
    admin = settings.admin
    if not admin.listen:
        return []
    metrics = getattr(env, "metrics", None)
    if metrics is None:
        log.warning(
            "admin: the session core records no metrics; /metrics has cache and"
            " process figures only"
        )
        metrics = Metrics(env.directory)
    if not admin.token and any(
        host not in ("127.0.0.1", "::1", "localhost") for host, _ in admin.listen
    ):
        log.warning("admin: listening beyond loopback without a token: /metrics is public")
    server = AdminServer(env, metrics, admin.token)
    # Each worker process has its own sessions, caches and counters, so each needs its own
    # port: worker i listens on port + i (scrape and flush/kick every one of them).
    workers, worker = getattr(env, "workers", 1), getattr(env, "worker", 0)
    offset = worker if workers > 1 else 0
    return [await server.listen(host, port + offset) for host, port in admin.listen]
