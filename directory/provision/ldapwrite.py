"""The admin tool's own LDAP connection: bound as ``[provision] bind_dn``, allowed to write.

The proxies' :mod:`directory.ldap` source is read-only on purpose and pooled for an event
loop; a CLI command needs one synchronous connection with write rights, so it gets its own,
opened to the first ``[directory] uri`` that answers (in a syncrepl farm, list the provider
first: a consumer answers writes with a referral, reported here as "unavailable").

Every LDAP result code is turned into one :mod:`directory.provision` error here, so the
rest of the package never looks at numbers, except the two that make a compare-and-swap
(``noSuchAttribute``, ``attributeOrValueExists``), which :class:`LdapResultError` carries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from ldap3 import BASE, LEVEL, NONE, SIMPLE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from common.configschema import ConfigError
from directory.ldaptls import ldap3_start_tls, ldap3_tls
from directory.provision import NotFound, Refused, Unavailable
from directory.settings import DirectorySettings, ToolConfig

NO_SUCH_OBJECT = 32
NO_SUCH_ATTRIBUTE = 16
VALUE_EXISTS = 20
ALREADY_EXISTS = 68
NOT_ALLOWED_ON_NON_LEAF = 66
REFERRAL = 10
_UNAVAILABLE_CODES = {51, 52, 80, REFERRAL}  # busy, unavailable, other, a read-only replica
PAGE_SIZE = 500

SCOPES = {"base": BASE, "one": LEVEL, "sub": SUBTREE}

# ldap3's modify operations, re-exported so callers need not import ldap3 themselves.
ADD, DELETE, REPLACE = "MODIFY_ADD", "MODIFY_DELETE", "MODIFY_REPLACE"
Changes = Mapping[str, Sequence[tuple[str, Sequence[str]]]]
Control = tuple[str, bool, bytes | None]  # (OID, criticality, value), as ldap3 takes them


@dataclass(frozen=True, slots=True)
class Entry:
    """One search result; attribute names lower-cased, values decoded as UTF-8."""

    dn: str
    attrs: dict[str, list[str]]

    def first(self, name: str) -> str | None:
        values = self.attrs.get(name.lower())
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        return list(self.attrs.get(name.lower(), []))


class LdapResultError(Refused):
    """An LDAP operation refused by the server; ``code`` is the LDAP result code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LdapWriter:
    """One bound connection for a CLI command; use as a context manager."""

    def __init__(self, settings: ToolConfig) -> None:
        directory, provision = settings.directory, settings.provision
        if directory.uri[0].startswith("ldif:"):
            raise ConfigError(
                settings.path, "directory", "uri", "the admin tool needs an LDAP server, not ldif:"
            )
        if not provision.bind_dn:
            raise ConfigError(
                settings.path, "provision", "bind_dn", "is required by the admin tool"
            )
        if not provision.bind_password:
            raise ConfigError(
                settings.path, "provision", "bind_password", "is required by the admin tool"
            )
        self.base = directory.base
        self.domains_dn = f"ou=domains,{directory.base}"
        self._uris = provision.uri or directory.uri  # the syncrepl provider, if one is named
        self._directory: DirectorySettings = directory  # the TLS keys: as the proxies use them
        self._timeout = directory.timeout
        self._bind_dn = provision.bind_dn
        self._password = provision.bind_password
        self._conn: Connection | None = None

    # -- connection -----------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        errors = []
        for uri in self._uris:
            server = Server(
                uri,
                get_info=NONE,
                connect_timeout=self._timeout,
                tls=ldap3_tls(self._directory, uri),
            )
            conn = Connection(
                server,
                user=self._bind_dn,
                # bytes: no SASLprep, slapd compares the octets (as in directory.ldap)
                password=self._password.encode("utf-8"),
                authentication=SIMPLE,
                receive_timeout=max(1, math.ceil(self._timeout)),
                raise_exceptions=False,
                auto_referrals=False,
                check_names=False,
            )
            try:
                conn.open()
                ldap3_start_tls(self._directory, uri, conn)  # a refusal: next URI, no bind
                if conn.bind():
                    self._conn = conn
                    return conn
                result = conn.result or {}
                errors.append(
                    f"{uri}: bind as [provision] bind_dn refused "
                    f"({result.get('description') or result.get('result')})"
                )
            except LDAPException as exc:
                errors.append(f"{uri}: {exc}")
            _unbind(conn)
        raise Unavailable("directory unavailable: " + "; ".join(errors))

    def close(self) -> None:
        if self._conn is not None:
            _unbind(self._conn)
            self._conn = None

    def __enter__(self) -> LdapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check(self, what: str, dn: str) -> None:
        """Map the last result to an exception; return quietly on success."""
        assert self._conn is not None
        result = self._conn.result or {}
        code = result.get("result")
        if code == 0:
            return
        detail = result.get("message") or result.get("description") or code
        if code is None or code in _UNAVAILABLE_CODES:
            self.close()
            raise Unavailable(f"directory unavailable during {what} {dn}: {detail}")
        if code == NO_SUCH_OBJECT:
            raise NotFound(f"{dn}: no such entry")
        if code == ALREADY_EXISTS:
            raise LdapResultError(f"{dn}: already exists", code)
        raise LdapResultError(f"{what} {dn} refused: {result.get('description')} {detail}", code)

    def _run(self, what: str, dn: str, op: str, *args: object, **kwargs: object) -> None:
        conn = self._connection()
        try:
            getattr(conn, op)(*args, **kwargs)
        except LDAPException as exc:
            self.close()
            raise Unavailable(f"directory unavailable during {what} {dn}: {exc}") from None
        self._check(what, dn)

    # -- reading --------------------------------------------------------------------------

    def search(
        self,
        base: str,
        search_filter: str,
        scope: str = "sub",
        attributes: Sequence[str] = ("*",),
    ) -> Iterator[Entry]:
        """All matching entries, paged so a server ``sizelimit`` cannot truncate a list."""
        cookie: bytes | None = None
        while True:
            self._run(
                "search",
                base,
                "search",
                base,
                search_filter,
                search_scope=SCOPES[scope],
                attributes=list(attributes),
                paged_size=PAGE_SIZE,
                paged_cookie=cookie,
            )
            assert self._conn is not None
            for item in list(self._conn.response or []):
                if item.get("type") != "searchResEntry":
                    continue
                raw = item.get("raw_attributes", {})
                attrs = {name.lower(): _decode(values) for name, values in raw.items()}
                yield Entry(item["dn"], attrs)
            controls = (self._conn.result or {}).get("controls") or {}
            paged = controls.get("1.2.840.113556.1.4.319", {})
            cookie = paged.get("value", {}).get("cookie") or None
            if not cookie:
                return

    def get(self, dn: str, attributes: Sequence[str] = ("*",)) -> Entry | None:
        """The entry at ``dn``, or ``None`` if there is none."""
        try:
            found = list(self.search(dn, "(objectClass=*)", "base", attributes))
        except NotFound:
            return None
        return found[0] if found else None

    def count(self, base: str, search_filter: str) -> int:
        """How many entries match; only DNs travel (attribute ``1.1``)."""
        try:
            return sum(1 for _ in self.search(base, search_filter, "sub", ("1.1",)))
        except NotFound:
            return 0

    # -- writing --------------------------------------------------------------------------

    def add(self, dn: str, object_classes: Sequence[str], attrs: Mapping[str, object]) -> None:
        self._run("add", dn, "add", dn, list(object_classes), dict(attrs))

    def modify(self, dn: str, changes: Changes, controls: Sequence[Control] = ()) -> None:
        """Apply all ``changes`` in one operation: LDAP makes it atomic for the entry."""
        payload = {name: [(op, list(vals)) for op, vals in ops] for name, ops in changes.items()}
        self._run("modify", dn, "modify", dn, payload, controls=list(controls) or None)

    def delete(self, dn: str) -> None:
        self._run("delete", dn, "delete", dn)

    def delete_subtree(self, dn: str) -> int:
        """Delete ``dn`` and everything under it, leaves first; returns how many entries."""
        dns = [entry.dn for entry in self.search(dn, "(objectClass=*)", "sub", ("1.1",))]
        dns.sort(key=lambda d: len(parse_dn(d)), reverse=True)
        for child in dns:
            self.delete(child)
        return len(dns)


def _decode(values: object) -> list[str]:
    items = values if isinstance(values, list) else [values]
    return [
        v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v) for v in items
    ]


def _unbind(conn: Connection) -> None:
    try:
        conn.unbind()
    except Exception:
        pass
