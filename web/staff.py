"""Staff sign-in for the console: a search for the entry, then a bind as it.

Staff are people in the directory, not lines in the tokens file, so leaving the company or
changing role takes effect where the rest of the ISP already manages it. The role comes
from the entry (``[web] role_attribute``) and a domain admin's domains from its
``associatedDomain`` values, never from anything the browser sends.

Blocking on purpose (ldap3's sync strategy, fresh connections): sign-ins are rare, and the
console runs :func:`sign_in` in a thread pool rather than sharing the proxies' pooled,
event-loop client, whose connections are bound as the reader and tuned for lookups.

No password ever reaches an exception message or a log line: messages are built from
server addresses and LDAP result descriptions only, and withheld altogether should one
contain a password anyway (a library echoing its arguments).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ldap3 import NONE, SIMPLE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException

from directory.ldap import INVALID_CREDENTIALS, NO_SUCH_OBJECT, SIZE_LIMIT_EXCEEDED
from directory.ldaptls import ldap3_start_tls, ldap3_tls
from directory.names import render_filter
from directory.settings import DirectorySettings, ToolConfig
from web.settings import WebSettings
from web.tokens import DOMAIN_ADMIN, ROLES, Principal

log = logging.getLogger("mailfarm.web.staff")

UNWILLING_TO_PERFORM = 53  # slapd's answer to a locked account (ppolicy) or an empty password
_BIND_REFUSED = {INVALID_CREDENTIALS, UNWILLING_TO_PERFORM}


class StaffDirectoryDown(Exception):
    """No directory server could answer, so the credentials were neither accepted nor
    refused: the console says "try again", not "wrong password". ``str()`` names servers
    and LDAP results, never a password."""


class _Refused(Exception):
    """A bind the server answered with "no" (as opposed to not answering)."""


class _NoAnswer(Exception):
    """No server of those tried answered; ``str()`` says what each did."""


def sign_in(settings: ToolConfig, web: WebSettings, login: str, password: str) -> Principal | None:
    """The principal for a staff member's own directory password, ``None`` for any refusal
    (unknown login, wrong password, no usable role); :class:`StaffDirectoryDown` when the
    directory could not say."""
    # Before any I/O: an empty password is an unauthenticated bind, which LDAP "accepts".
    if not login or not password or "\0" in password or "\0" in login:
        return None
    directory = settings.directory
    uris = tuple(u for u in directory.uri if not u.startswith("ldif:"))
    if not uris:
        raise StaffDirectoryDown("staff sign-in needs an LDAP server; [directory] uri is ldif:")
    try:
        return _sign_in(directory, web, uris, login, password)
    except StaffDirectoryDown as exc:
        raise StaffDirectoryDown(_scrub(str(exc), password, directory.bind_password)) from None


def _sign_in(
    directory: DirectorySettings,
    web: WebSettings,
    uris: tuple[str, ...],
    login: str,
    password: str,
) -> Principal | None:
    uri, entries = _search(directory, web, uris, login)
    if len(entries) != 1:
        if len(entries) > 1:
            log.warning("staff login %r matches %d entries; refusing to guess", login, len(entries))
        return None
    dn, attrs = entries[0]
    principal = _principal(web, login, dn, attrs)
    if principal is None:
        return None
    # The server that found the entry first: a replica that lags may not know it yet.
    order = (uri, *(u for u in uris if u != uri))
    try:
        _close(_connect(order, directory, dn, password, "bind as the staff entry"))
    except _Refused:
        return None
    except _NoAnswer as exc:
        raise StaffDirectoryDown(f"directory unavailable: {exc}") from None
    return principal


def _principal(
    web: WebSettings, login: str, dn: str, attrs: dict[str, list[str]]
) -> Principal | None:
    roles = {v.lower() for v in attrs.get(web.role_attribute.lower(), [])} & set(ROLES)
    if len(roles) != 1:
        # Logged, as it is the directory's fault, not the person's: an operator must fix it.
        log.warning(
            "staff entry %s has %s in %s; no sign-in",
            dn,
            "several roles" if roles else "no role of " + ", ".join(ROLES),
            web.role_attribute,
        )
        return None
    [role] = roles
    domains: frozenset[str] = frozenset()
    if role == DOMAIN_ADMIN:
        domains = frozenset(d.lower().rstrip(".") for d in attrs.get("associateddomain", []) if d)
        if not domains:
            log.warning("staff entry %s is a domain-admin of no associatedDomain", dn)
            return None
    uids = attrs.get("uid", [])
    uid = next((u for u in uids if u.lower() == login.lower()), uids[0] if uids else login)
    return Principal(role, domains, source=f"staff:{uid}")


def _search(
    directory: DirectorySettings, web: WebSettings, uris: tuple[str, ...], login: str
) -> tuple[str, list[tuple[str, dict[str, list[str]]]]]:
    """The entries the staff filter finds for ``login`` (at most two: one too many is
    enough to refuse), and the server that answered."""
    search_filter = render_filter(web.staff_filter, login)
    attributes = [web.role_attribute, "associatedDomain", "uid"]
    errors: list[str] = []
    for uri in uris:
        try:
            conn = _connect(
                (uri,),
                directory,
                directory.bind_dn,
                directory.bind_password,
                "bind as [directory] bind_dn",
            )
        except (_Refused, _NoAnswer) as exc:  # a refused reader is a config error: say so
            errors.append(str(exc))
            continue
        try:
            conn.search(
                directory.base,
                search_filter,
                search_scope=SUBTREE,
                attributes=attributes,
                size_limit=2,
            )
            code = conn.result.get("result")
            if code == NO_SUCH_OBJECT:
                log.warning("staff search base %r does not exist", directory.base)
                return uri, []
            if code not in (0, SIZE_LIMIT_EXCEEDED):
                errors.append(f"{uri}: staff search failed ({_describe(conn.result)})")
                continue
            found = [
                (item["dn"], _decode(item.get("raw_attributes") or {}))
                for item in conn.response or []
                if item.get("type") == "searchResEntry"
            ]
            return uri, found
        except (LDAPException, OSError) as exc:
            errors.append(f"{uri}: {exc}")
        finally:
            _close(conn)
    raise StaffDirectoryDown("directory unavailable: " + "; ".join(errors))


def _connect(
    uris: Sequence[str], directory: DirectorySettings, user: str, password: str, what: str
) -> Connection:
    """A connection bound as ``user`` (anonymous if empty) to the first server that answers.

    :class:`_Refused` when a server says no to the credentials (trying another would only
    ask the same question of a replica); :class:`_NoAnswer` when none answers.
    TLS as ``[directory]`` says (:mod:`directory.ldaptls`): a staff password must not go to
    an unverified server, nor in clear after a refused StartTLS.
    """
    timeout = directory.timeout
    errors = []
    for uri in uris:
        # A new Server each time: ldap3 remembers a failed address and skips it for a while.
        server = Server(uri, get_info=NONE, connect_timeout=timeout, tls=ldap3_tls(directory, uri))
        conn = Connection(
            server,
            user=user or None,
            # bytes: no SASLprep, slapd compares the octets (as in directory.ldap)
            password=password.encode("utf-8") if user else None,
            authentication=SIMPLE if user else None,
            receive_timeout=max(1, math.ceil(timeout)),  # ldap3 packs an int
            raise_exceptions=False,
            read_only=True,
            auto_referrals=False,
            check_names=False,
        )
        try:
            conn.open()
            ldap3_start_tls(directory, uri, conn)
            if not user or conn.bind():
                return conn
            code = conn.result.get("result")
            if code in _BIND_REFUSED:
                _close(conn)
                raise _Refused(f"{uri}: {what} refused ({_describe(conn.result)})")
            errors.append(f"{uri}: {what} failed ({_describe(conn.result)})")
        except (LDAPException, OSError) as exc:
            errors.append(f"{uri}: {exc}")
        _close(conn)
    raise _NoAnswer("; ".join(errors))


def _describe(result: dict[str, object] | None) -> str:
    result = result or {}
    return str(result.get("description") or result.get("result") or "no answer")


def _decode(raw: dict[str, object]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, values in raw.items():
        items = values if isinstance(values, list) else [values]
        out[name.lower()] = [
            v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)
            for v in items
        ]
    return out


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except Exception:
        pass


def _scrub(text: str, *secrets: str) -> str:
    # The whole message, not the secret's place in it: "********://" would tell the password.
    if any(secret and secret in text for secret in secrets):
        return "directory unavailable (details withheld: they would show a password)"
    return text


def failure_keys(client_ip: str, login: str) -> tuple[str, str]:
    """The two :class:`FailedLogins` keys of one attempt, in separate namespaces so a login
    that looks like an address cannot share a counter with that address."""
    return f"ip:{client_ip}", f"login:{login.casefold()}"


class FailedLogins:
    """The growing delay after failed sign-ins, per key (a client address, a login).

    Both keys, because each alone is easy to get round: guessing one login from many
    addresses, or many logins from one address. The delay doubles with each failure up to
    ``cap`` so a person who mistypes waits a second, a script guessing waits ``cap`` per
    try; it is forgotten after ``forget_after`` quiet seconds so a locked-out colleague need
    not call anyone. Keys are bounded (``max_keys``, the oldest failures dropped first) so
    a flood of made-up logins costs memory once, not without end: an attacker who floods
    to evict a counter has spent far more attempts than the counter would have allowed.

    A delay, not a lock-out: locking accounts would let anyone lock out the staff.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        forget_after: float = 900.0,
        max_keys: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if base < 0 or cap < 0 or forget_after <= 0 or max_keys < 1:
            raise ValueError("base and cap must be >= 0, forget_after and max_keys > 0")
        self.base, self.cap, self.forget_after, self.max_keys = base, cap, forget_after, max_keys
        self._now = now
        # key -> (failures, time of the last one); ordered by that time, oldest first
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()  # sign-ins run in a thread pool

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._now())
            return len(self._seen)

    def failures(self, key: str) -> int:
        with self._lock:
            return self._count(key, self._now())

    def delay(self, key: str) -> float:
        """Seconds to wait before answering the next attempt for ``key`` (0 if none failed)."""
        n = self.failures(key)
        if n == 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(n - 1, 64))

    def failed(self, key: str) -> None:
        with self._lock:
            now = self._now()
            n = self._count(key, now) + 1
            self._seen[key] = (n, now)
            self._seen.move_to_end(key)
            self._expire(now)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def _count(self, key: str, now: float) -> int:
        entry = self._seen.get(key)
        if entry is None:
            return 0
        if now - entry[1] >= self.forget_after:
            del self._seen[key]
            return 0
        return entry[0]

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (_, last) = next(iter(self._seen.items()))
            if now - last < self.forget_after:
                break
            del self._seen[key]
