"""The session core shared by every protocol: login dialogue → authenticate → route →
backend login → relay, and one log line when the session ends.

A protocol contributes only a :class:`Dialect`: its pure dialogue and its backend login.
Failures are mapped to one :class:`~proxy.actions.Failure` each, here, and worded by the
dialogue, so IMAP and POP3 cannot disagree about what "LDAP down" means.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from directory.service import Directory
from directory.settings import Backends, BackendSettings
from proxy.actions import (
    Action,
    Authenticate,
    BackendInfo,
    Close,
    Dialogue,
    DialogueEnv,
    Failure,
    Send,
    StartTls,
)
from proxy.backend import BackendError, BackendTarget, open_backend
from proxy.config import ProtocolSettings, ProxySettings
from proxy.limits import Limits, Slot
from proxy.logincheck import check_login
from proxy.metrics import Metrics
from proxy.relay import Relay
from proxy.sasl import Credentials
from proxy.stream import Conn, ConnectionClosed, TlsFailed
from proxy.tlscerts import requested_name

log = logging.getLogger("mailfarm.session")


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str
    port: int
    local_ip: str
    local_port: int
    trusted: bool
    # The SNI name the client used when a balancer ended its TLS (PROXY v2 authority TLV).
    balancer_sni: str | None = None


BackendLogin = Callable[
    [Conn, Credentials, ClientInfo, ProtocolSettings, BackendTarget], Awaitable[BackendInfo]
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """Everything protocol-specific: how the login dialogue goes, how to log in upstream."""

    name: str
    settings: ProtocolSettings
    new_dialogue: Callable[[DialogueEnv], Dialogue]
    backend_login: BackendLogin
    bye: Callable[[Failure], bytes]  # goodbye outside a command (timeout, shutdown)
    # After login: what to tell the client when the backend connection ends, given the last
    # bytes each side sent (nothing after a LOGOUT/QUIT, a goodbye when the server vanished).
    farewell: Callable[[bytes, bytes], bytes] | None = None


@dataclass(slots=True)
class SessionRecord:
    """The facts for the one log line a session leaves behind."""

    protocol: str
    client: ClientInfo
    started: float = field(default_factory=time.monotonic)
    login: str = "-"
    uid: str = "-"
    mail: str = "-"
    domain: str = ""  # of the directory's address for the user; "" when it has none
    backend: str = "-"
    outcome: str = "disconnected"
    bytes_in: int = 0
    bytes_out: int = 0

    def line(self) -> str:
        took = time.monotonic() - self.started
        return (
            f"session proto={self.protocol} client={self.client.ip}:{self.client.port}"
            f" login={_safe(self.login)} uid={self.uid} backend={self.backend}"
            f" outcome={self.outcome} in={self.bytes_in} out={self.bytes_out}"
            f" duration={took:.3f}s"
        )


def _safe(text: str) -> str:
    """Logins come from the network: keep log lines one line and greppable."""
    text = text[:128]
    if text.isascii() and text.isprintable() and " " not in text:
        return text or "-"  # the usual login: nothing to replace, no per-character work
    return "".join(ch if 0x20 < ord(ch) < 0x7F else "?" for ch in text) or "-"


class Sessions:
    """The live sessions of one process: for shutdown draining and admin kicks."""

    def __init__(self) -> None:
        self.relays: set[Relay] = set()
        self.records: dict[Relay, SessionRecord] = {}
        self.preauth: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.relays) + len(self.preauth)


@dataclass(frozen=True, slots=True)
class CoreEnv:
    """Shared by all sessions of all protocols in one process."""

    directory: Directory
    proxy: ProxySettings
    server_tls: ssl.SSLContext | None
    sessions: Sessions
    limits: Limits
    metrics: Metrics = field(default_factory=lambda: Metrics(process=False))
    backends: Backends = field(default_factory=Backends.none)
    workers: int = 1  # processes sharing the listeners
    worker: int = 0  # this process's index among them


async def run_session(
    conn: Conn,
    dialect: Dialect,
    env: CoreEnv,
    client: ClientInfo,
    slot: Slot,
    tls_active: bool = False,
    handshake: ssl.SSLContext | None = None,
) -> None:
    """Drive one client from greeting to the relay's end; never raises.

    ``slot`` is the connection's place under the limits, taken at accept; ``handshake`` is
    the context of an implicit-TLS listener, whose handshake happens here, after the slot
    was counted, so a client that never finishes one still holds (and can lose) a slot.
    """
    record = SessionRecord(dialect.name, client)
    env.metrics.session_started(dialect.name)
    task = asyncio.current_task()

    def evict() -> None:
        record.outcome = "evicted"
        env.metrics.evicted(dialect.name)
        conn.write_if_clear(dialect.bye(Failure.CONNECTION_LIMIT))
        conn.close()
        if task is not None:
            task.cancel()

    slot.evict = evict
    relay: Relay | None = None
    try:
        relay = await _login_phase(conn, dialect, env, client, tls_active, handshake, record, slot)
    except TlsFailed as exc:
        record.outcome = "tls-failed"
        env.metrics.tls_failed(dialect.name)
        log.debug("%s TLS handshake with %s failed: %s", dialect.name, client.ip, exc)
        conn.abort()
    except ConnectionClosed:
        # Keep a failure already recorded (e.g. auth-failed); otherwise the client just left.
        pass
    except asyncio.CancelledError:
        if record.outcome != "evicted":
            record.outcome = "shutdown"
        conn.abort()
    except Exception:
        log.exception("session error (%s from %s)", dialect.name, client.ip)
        record.outcome = "internal-error"
        conn.abort()
    if relay is None:
        record.bytes_in, record.bytes_out = conn.bytes_in, conn.bytes_out
        conn.close()
        slot.release()
        env.metrics.session_ended(dialect.name, "preauth", record.bytes_in, record.bytes_out)
        log.info(record.line())
        return
    # The login task ends here: from now on the session is two transports and the relay,
    # and its log line is written by the relay's completion callback.


def _relay_done(
    env: CoreEnv, slot: Slot, conn_in: int, conn_out: int
) -> Callable[[Relay], None]:
    def done(relay: Relay) -> None:
        env.sessions.relays.discard(relay)
        record = env.sessions.records.pop(relay, None)
        slot.release()
        if record is None:
            return
        record.outcome = f"ok:{relay.reason}"
        record.bytes_in = conn_in + relay.bytes_up
        record.bytes_out = conn_out + relay.bytes_down
        env.metrics.session_ended(record.protocol, "proxied", record.bytes_in, record.bytes_out)
        log.info(record.line())

    return done


async def _login_phase(
    conn: Conn,
    dialect: Dialect,
    env: CoreEnv,
    client: ClientInfo,
    tls_active: bool,
    handshake: ssl.SSLContext | None,
    record: SessionRecord,
    slot: Slot,
) -> Relay | None:
    proxy = env.proxy
    # One deadline for the whole login phase, the TLS handshake included: a single timer,
    # not one per read.
    try:
        async with asyncio.timeout(proxy.preauth_timeout):
            if handshake is not None:
                await conn.start_tls(handshake, server_side=True)
                tls_active = True
            return await _dialogue_loop(conn, dialect, env, client, tls_active, record, slot)
    except TimeoutError:
        conn.write_if_clear(dialect.bye(Failure.TIMEOUT))
        record.outcome = "timeout"
        env.metrics.login(dialect.name, Failure.TIMEOUT)
        return None


async def _dialogue_loop(
    conn: Conn,
    dialect: Dialect,
    env: CoreEnv,
    client: ClientInfo,
    tls_active: bool,
    record: SessionRecord,
    slot: Slot,
) -> Relay | None:
    proxy = env.proxy
    dialogue = dialect.new_dialogue(
        DialogueEnv(
            tls_offered=env.server_tls is not None and not tls_active,
            tls_active=tls_active,
            plaintext_allowed=proxy.plaintext_auth or client.trusted,
            max_line=proxy.max_line,
            max_literal=proxy.max_literal,
        )
    )
    conn.write(dialogue.greeting())
    failures = 0
    pending: deque[Action] = deque()
    while True:
        if not pending:
            pending.extend(dialogue.receive(await conn.read()))
            continue
        action = pending.popleft()
        if isinstance(action, Send):
            conn.write(action.data)
            await conn.drain()
        elif isinstance(action, Close):
            record.outcome = action.outcome
            return None
        elif isinstance(action, StartTls):
            assert env.server_tls is not None
            await conn.start_tls(env.server_tls, server_side=True)
            pending.extend(dialogue.tls_started() or ())
        elif isinstance(action, Authenticate):
            creds = action.credentials
            record.login = creds.authcid
            # The SNI name as of now: a STARTTLS upgrade has replaced the transport.
            server_name = requested_name(conn.transport) or client.balancer_sni
            result = await _authenticate_and_connect(
                dialect, env, client, creds, record, server_name
            )
            if not isinstance(result, Failure):
                env.metrics.login(dialect.name, "ok")
                backend, info = result
                slot.logged_in()
                return _start_relay(conn, dialogue, backend, info, env, record, dialect, slot)
            failure = result
            record.outcome = failure.value
            env.metrics.login(dialect.name, failure)
            if failure is Failure.AUTH_FAILED:
                failures += 1
            conn.write(dialogue.failed(failure))
            if failures >= proxy.max_auth_failures:
                conn.write(dialogue.failed(Failure.TOO_MANY_FAILURES))
                record.outcome = Failure.TOO_MANY_FAILURES.value
                env.metrics.login(dialect.name, Failure.TOO_MANY_FAILURES)
                return None
            pending.extend(dialogue.resume())


async def _authenticate_and_connect(
    dialect: Dialect,
    env: CoreEnv,
    client: ClientInfo,
    creds: Credentials,
    record: SessionRecord,
    server_name: str | None = None,
) -> tuple[Conn, BackendInfo] | Failure:
    verdict = await check_login(
        env.directory,
        env.limits,
        client.ip,
        client.trusted,
        creds,
        proxy=env.proxy,
        server_name=server_name,
    )
    route = verdict.route
    if route is not None:
        record.uid = route.uid
        record.mail = route.mail or "-"
        record.domain = route.domain or ""
    if verdict.failure is not None:
        return verdict.failure
    assert route is not None
    settings = dialect.settings
    target = BackendTarget(route.host, route.port or settings.backend_port)
    record.backend = f"{target.host}:{target.port}"
    try:
        creds = backend_credentials(
            settings.backend_auth, env.backends.get(route.host), route.uid, creds.password
        )
        # backend_timeout bounds the connect and the backend's login together.
        async with asyncio.timeout(settings.backend_timeout):
            started = time.monotonic()
            backend = await open_backend(target, settings)
            env.metrics.backend_connect(dialect.name, time.monotonic() - started)
            try:
                info = await dialect.backend_login(backend, creds, client, settings, target)
            except BaseException:
                backend.abort()
                raise
    except (BackendError, ConnectionClosed, OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
        log.warning(
            "backend %s for %s unavailable: %s",
            record.backend,
            route.uid,
            _reason(exc),
        )
        return Failure.BACKEND_UNAVAILABLE
    return backend, info


def backend_credentials(
    mode: str, backend: BackendSettings, uid: str, password: str
) -> Credentials:
    """What the backend is sent at login, always naming the directory's own uid (not the
    spelling the client typed, " Alice@Example.com"): that is the name its mailbox has.

    ``"password"``: the user's own password, which the backend checks again.
    ``"proxy"``: the host's proxy user vouches for the uid (PLAIN authzid), so the user's
    password never reaches the backend and a login the auth cache allowed during an LDAP
    outage is not refused by a backend that would ask LDAP itself.
    """
    if mode != "proxy":
        return Credentials("", uid, password)
    if not backend.proxy_user:
        where = f"[[backends]] host = {backend.host!r}" if backend.listed else "[provision]"
        key = "proxy_user" if backend.listed else "master_user"
        raise BackendError(f'backend_auth = "proxy" needs {key} in {where}')
    return Credentials(uid, backend.proxy_user, backend.proxy_password)


def _reason(exc: BaseException) -> str:
    """Why a backend failed, never an empty string (a bare TimeoutError has no text)."""
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) and not text:
        return "no answer within backend_timeout"
    return f"{name}: {text}" if text else name


def _start_relay(
    conn: Conn,
    dialogue: Dialogue,
    backend: Conn,
    info: BackendInfo,
    env: CoreEnv,
    record: SessionRecord,
    dialect: Dialect,
    slot: Slot,
) -> Relay:
    """Hand both transports to the relay; no await here, so no byte can slip between owners.

    Order matters: the client gets its success reply, then whatever the backend sent after
    its own login; the backend gets the commands the client pipelined after its login.
    """
    conn.write(dialogue.succeeded(info))
    client_transport, client_rest = conn.detach()
    backend_transport, backend_rest = backend.detach()
    pending = dialogue.take_pending() + client_rest
    on_done = _relay_done(env, slot, conn.bytes_in - len(pending), conn.bytes_out)
    relay = Relay(
        client_transport,
        backend_transport,
        env.proxy.idle_timeout,
        on_done,
        farewell=dialect.farewell,
        idle_goodbye=dialect.bye(Failure.TIMEOUT),
    )
    env.sessions.relays.add(relay)
    env.sessions.records[relay] = record
    env.metrics.session_proxied(dialect.name)  # before start(): it may end the relay at once
    relay.start(to_backend=pending, to_client=backend_rest)
    return relay
