"""The embedded directory: an LDIF file (RFC 2849) answering like the LDAP source.

Small sites, demos and unit tests run mailfarm with ``uri = "ldif:PATH"`` instead of a
slapd. Moving such a site to real LDAP must not change who logs in where, so this source
follows the LDAP one's rules: the same filter template (evaluated by
:mod:`directory.filters`), the same ``userPassword`` schemes (:mod:`directory.passwords`),
and the same refusal to guess when the data is ambiguous.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from directory.filters import matches, parse_filter
from directory.model import DirectoryUnavailable, Route, means_disabled
from directory.names import render_filter
from directory.passwords import verify_password
from directory.settings import DEFAULT_DOMAIN_FILTER

log = logging.getLogger(__name__)

_ATTR_DESC_RE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*")
_DN_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*|[0-9]+(?:\.[0-9]+)*")
_HEX = frozenset("0123456789abcdefABCDEF")


class LdifError(ValueError):
    """The file is not LDIF this module reads; the message names the line."""

    def __init__(self, message: str, line: int | None = None, source: str | None = None):
        where = f"{source}: " if source else ""
        where += f"line {line}: " if line else ""
        super().__init__(where + message)
        self.message = message
        self.line = line


class Attributes(dict[str, list[str]]):
    """An entry's attributes, keyed as first written, looked up ignoring case.

    LDAP attribute names are case-insensitive, and LDIF written by hand mixes ``mailHost``
    and ``mailhost``. ``[]``, ``get``, ``in`` and ``add`` fold case; other ``dict`` methods
    see the keys as written.
    """

    __slots__ = ("_names",)

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[str, str] = {}

    def _key(self, name: str) -> str:
        return self._names.get(name.lower(), name)

    def __getitem__(self, name: str) -> list[str]:
        return super().__getitem__(self._key(name))

    def __setitem__(self, name: str, values: list[str]) -> None:
        super().__setitem__(self._names.setdefault(name.lower(), name), values)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(self._names.pop(name.lower(), name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(self._key(name), default)

    def add(self, name: str, value: str) -> None:
        if name in self:
            self[name].append(value)
        else:
            self[name] = [value]


def normalise_dn(dn: str) -> tuple[str, ...]:
    """A DN as a comparable tuple of RDNs, most specific first.

    Attribute types and values are case-folded (the naming attributes mailfarm uses, ``dc``,
    ``ou``, ``uid``, ``cn``, are all caseIgnore), unescaped spaces around ``,``/``+``/``=`` are
    dropped, escapes are decoded, and multi-valued RDNs are sorted, so the spellings an
    operator and a tool may use for one entry compare equal. Raises ``ValueError``.
    """
    if not dn.strip():
        return ()
    rdns: list[str] = []
    avas: list[str] = []
    pos, end = 0, len(dn)
    while True:
        equals = dn.find("=", pos)
        if equals < 0:
            raise ValueError(f"bad DN {dn!r}: {dn[pos:]!r} is not attribute=value")
        kind = dn[pos:equals].strip().lower()
        if not _DN_TYPE_RE.fullmatch(kind):
            raise ValueError(f"bad DN {dn!r}: {kind!r} is not an attribute type")
        pos = equals + 1
        pieces: list[tuple[str, bool]] = []  # (character, was escaped)
        octets = bytearray()
        while pos < end and dn[pos] not in ",+":
            char = dn[pos]
            if char == "\\":
                pair = dn[pos + 1 : pos + 3]
                if len(pair) == 2 and set(pair) <= _HEX:
                    octets.append(int(pair, 16))
                    pos += 3
                    continue
                if pos + 1 >= end:
                    raise ValueError(f"bad DN {dn!r}: ends with '\\'")
                char, escaped, pos = dn[pos + 1], True, pos + 2
            else:
                escaped, pos = False, pos + 1
            pieces.extend((c, True) for c in octets.decode("utf-8", "surrogateescape"))
            octets.clear()
            pieces.append((char, escaped))
        pieces.extend((c, True) for c in octets.decode("utf-8", "surrogateescape"))
        while pieces and pieces[-1] == (" ", False):
            pieces.pop()
        first = next((i for i, piece in enumerate(pieces) if piece != (" ", False)), len(pieces))
        value = "".join(c for c, _ in pieces[first:]).casefold()
        avas.append(kind + "=" + value.replace("\\", "\\5c").replace("+", "\\2b"))
        if pos >= end or dn[pos] == ",":
            rdns.append("+".join(sorted(avas)))
            avas = []
        if pos >= end:
            return tuple(rdns)
        pos += 1


def _logical_lines(text: str) -> list[list[tuple[int, str]]]:
    """Unfold lines, drop comments and group lines into records, keeping line numbers.

    A line of only whitespace separates records like an empty one: RFC 2849 would read it
    as a continuation, but in a hand-edited file it is always a stray blank line.
    """
    records: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    in_comment = False
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            if current:
                records.append(current)
                current = []
            in_comment = False
        elif line.startswith(" "):
            if in_comment:
                continue
            if not current:
                raise LdifError("continuation line with nothing to continue", number)
            first, previous = current[-1]
            current[-1] = (first, previous + line[1:])
        elif line.startswith("#"):
            in_comment = True
        else:
            in_comment = False
            current.append((number, line))
    if current:
        records.append(current)
    return records


def _attr_value(number: int, line: str) -> tuple[str, str]:
    name, colon, rest = line.partition(":")
    name = name.rstrip(" ")
    if not colon or not _ATTR_DESC_RE.fullmatch(name):
        raise LdifError(f"expected 'attribute: value', found {line[:60]!r}", number)
    if rest.startswith(":"):
        try:
            raw = base64.b64decode(rest[1:].strip(" "), validate=True)
        except (binascii.Error, ValueError):
            raise LdifError(f"{name}:: value is not valid base64", number) from None
        # Undecodable octets (a binary attribute) survive as surrogate escapes.
        return name, raw.decode("utf-8", "surrogateescape")
    if rest.startswith("<"):
        raise LdifError(f"{name}:< (value from a URL) is not supported", number)
    # RFC 2849 asks writers to base64 values with edge spaces, so a trailing space here is
    # editor debris that would otherwise end up in a host name.
    return name, rest.strip(" ")


def _records(text: str) -> list[tuple[int, str, tuple[str, ...], Attributes]]:
    records = _logical_lines(text)
    if records and records[0][0][1].lower().startswith("version:"):
        number, line = records[0][0]
        if _attr_value(number, line)[1] != "1":
            raise LdifError("only LDIF version 1 is supported", number)
        records[0] = records[0][1:]
    out = []
    for lines in records:
        if not lines:
            continue
        number, line = lines[0]
        name, dn = _attr_value(number, line)
        if name.lower() != "dn":
            raise LdifError(f"a record must start with 'dn:', found {name!r}", number)
        try:
            key = normalise_dn(dn)
        except ValueError as exc:
            raise LdifError(str(exc), number) from None
        attrs = Attributes()
        for number, line in lines[1:]:
            name, value = _attr_value(number, line)
            lowered = name.lower()
            if lowered == "changetype":
                if value.lower() != "add":
                    raise LdifError(f"changetype {value!r} is not supported, only add", number)
            elif lowered in ("dn", "version", "control"):
                raise LdifError(f"unexpected {name!r} line (missing blank line?)", number)
            else:
                attrs.add(name, value)
        out.append((lines[0][0], dn, key, attrs))
    return out


def parse_ldif(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Entries of an LDIF content file; the dicts are :class:`Attributes` (case-insensitive).

    ``changetype: add`` records are read as content; every other change record is refused,
    because applying modifications is not what a directory file for routing is for.
    """
    return [(dn, attrs) for _, dn, _, attrs in _records(text)]


@dataclass(frozen=True, slots=True)
class _Entry:
    dn: str
    attrs: Attributes
    folded: dict[str, list[str]]  # lower-cased names, for directory.filters.matches


@dataclass(frozen=True, slots=True)
class _Snapshot:
    entries: tuple[_Entry, ...]
    by_dn: dict[tuple[str, ...], _Entry]


class LdifSource:
    """A :class:`directory.model.UserSource` answering from an LDIF file held in memory.

    The data is an immutable snapshot swapped whole by :meth:`reload`, so lookups from many
    threads need no lock and never see half a file. Empty ``port_attribute`` or
    ``disabled_attribute`` (as ``proxy.toml`` spells "unset") mean ``None``.
    """

    def __init__(
        self,
        path: Path | str,
        base: str,
        user_filter: str,
        host_attribute: str = "mailHost",
        port_attribute: str | None = None,
        disabled_attribute: str | None = None,
        domain_filter: str = DEFAULT_DOMAIN_FILTER,
        domain_base: str = "",
        domain_scope: str = "one",
    ) -> None:
        self._path = Path(path)
        self._base = normalise_dn(base)
        # As [directory] domain_base/domain_scope: empty is "ou=domains," + base.
        self._domain_base = normalise_dn(
            domain_base or (f"ou=domains,{base}" if base.strip() else "ou=domains")
        )
        self._domain_scope = domain_scope
        parse_filter(render_filter(user_filter, "probe"))  # a bad template fails at startup
        self._user_filter = user_filter
        self.domain_filter = domain_filter
        self._host_attribute = host_attribute
        self._port_attribute = port_attribute or None
        self._disabled_attribute = disabled_attribute or None
        self._lock = threading.Lock()  # serialises reload/close, never taken by lookups
        self._data: _Snapshot | None = self._load()

    def _load(self) -> _Snapshot:
        try:
            text = self._path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise LdifError(f"cannot read {self._path}: {exc}") from None
        try:
            records = _records(text)
        except LdifError as exc:
            raise LdifError(exc.message, exc.line, str(self._path)) from None
        entries: list[_Entry] = []
        by_dn: dict[tuple[str, ...], _Entry] = {}
        depth = len(self._base)
        for number, dn, key, attrs in records:
            if depth and key[-depth:] != self._base:
                continue
            if key in by_dn:
                message = f"duplicate entry {dn!r} (first as {by_dn[key].dn!r})"
                raise LdifError(message, number, str(self._path))
            folded = {name.lower(): values for name, values in attrs.items()}
            by_dn[key] = entry = _Entry(dn, attrs, folded)
            entries.append(entry)
        log.info(
            "%s: %d entries under the base, %d outside it ignored",
            self._path, len(entries), len(records) - len(entries),
        )
        return _Snapshot(tuple(entries), by_dn)

    def _snapshot(self) -> _Snapshot:
        data = self._data
        if data is None:
            raise DirectoryUnavailable(f"{self._path}: directory closed")
        return data

    def find_domain(self, domain: str) -> bool:
        """Is ``domain`` hosted: does the domain filter match an entry under the domains base
        (``domain_scope`` "one": a domain entry itself, never a DNS name below it)?"""
        wanted = parse_filter(render_filter(self.domain_filter, domain))
        return any(
            matches(wanted, entry.folded)
            for entry in self._snapshot().entries
            if self._in_domain_scope(normalise_dn(entry.dn))
        )

    def _in_domain_scope(self, key: tuple[str, ...]) -> bool:
        depth = len(self._domain_base)
        if len(key) <= depth or key[-depth:] != self._domain_base:
            return False
        return self._domain_scope == "sub" or len(key) == depth + 1

    def find(self, login: str) -> Route | None:
        """The route for an already-normalised login, or ``None``.

        ``None`` also covers data an operator must fix (several entries match, no or several
        hosts, no uid): routing a login to a guessed mailbox is worse than refusing it.
        """
        data = self._snapshot()
        wanted = parse_filter(render_filter(self._user_filter, login))
        found = [entry for entry in data.entries if matches(wanted, entry.folded)]
        if not found:
            return None
        if len(found) > 1:
            dns = "; ".join(repr(entry.dn) for entry in found[:5])
            log.warning("login %r matches %d entries (%s): refusing it", login, len(found), dns)
            return None
        return self._route(found[0], login)

    def _route(self, entry: _Entry, login: str) -> Route | None:
        attrs = entry.attrs
        hosts: dict[str, str] = {}
        for value in attrs.get(self._host_attribute, ()):
            if value.strip():
                hosts.setdefault(value.strip().lower(), value.strip())
        if len(hosts) != 1:
            problem = "has no" if not hosts else "has several values of"
            log.warning("%r (login %r) %s %s: cannot route", entry.dn, login, problem,
                        self._host_attribute)
            return None
        uids = attrs.get("uid") or [""]
        if not uids[0]:
            log.warning("%r (login %r) has no uid: cannot route", entry.dn, login)
            return None
        disabled = False
        if self._disabled_attribute is not None:
            values = attrs.get(self._disabled_attribute, ())
            disabled = any(means_disabled(value.strip()) for value in values)
        return Route(
            uid=uids[0],
            dn=entry.dn,
            host=next(iter(hosts.values())),
            port=self._port(entry),
            mail=(attrs.get("mail") or [None])[0],
            routing_address=(attrs.get("mailRoutingAddress") or [None])[0],
            login_disabled=disabled,
        )

    def _port(self, entry: _Entry) -> int | None:
        if self._port_attribute is None:
            return None
        values = entry.attrs.get(self._port_attribute)
        if not values:
            return None
        text = values[0].strip()
        if text.isascii() and text.isdigit() and 0 < int(text) < 65536:
            return int(text)
        log.warning("%r: %s %r is not a port; using backend_port", entry.dn,
                    self._port_attribute, values[0])
        return None

    def bind(self, dn: str, password: str) -> bool:
        """Whether ``password`` is right for ``dn``; an empty password is never right.

        An LDAP simple bind with a DN and no password is an "unauthenticated bind" that
        slapd reports as success; counting it here would let anyone in.
        """
        data = self._snapshot()
        if not password:
            return False
        try:
            entry = data.by_dn.get(normalise_dn(dn))
        except ValueError:
            return False
        if entry is None:
            return False
        stored = entry.attrs.get("userPassword", ())
        return any(verify_password(value, password) for value in stored)

    def reload(self) -> None:
        """Re-read the file (SIGHUP); on any error the old data stays and LdifError is raised."""
        with self._lock:
            self._snapshot()
            new = self._load()
            self._data = new

    def close(self) -> None:
        with self._lock:
            self._data = None
