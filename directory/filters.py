"""RFC 4515 search filters, parsed and evaluated in memory.

The embedded LDIF directory must answer exactly as slapd would for the filters mailfarm
sends, or a site would route differently after moving from a demo LDIF file to real LDAP.
The part that matters most is escaping: ``\\2a`` in a value is a literal asterisk, never a
wildcard, so a login rendered with :func:`directory.names.render_filter` can only match
itself.

Documented simplifications, all harmless for mail routing:

* every attribute matches case-insensitively (Unicode case folding), because ``uid``,
  ``mail``, ``mailHost``, ``associatedDomain`` and ``objectClass`` all use caseIgnore rules
  in the standard schemas; insignificant-space handling (RFC 4518) is not done;
* ``>=``/``<=`` compare numerically when both sides are integers, else as folded strings;
* ``~=`` (approximate) is plain equality;
* attribute names are not resolved through the schema, so ``cn`` and ``commonName`` differ;
* an absent attribute makes a comparison FALSE, never Undefined, so ``(!(x=1))`` is TRUE for
  an entry without ``x`` (slapd agrees for attributes the schema knows);
* extensible matches (``attr:rule:=value``) are rejected with :class:`FilterError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

MAX_DEPTH = 64  # nesting beyond this is a hostile or broken filter, not a directory query


class FilterError(ValueError):
    """The text is not an RFC 4515 filter this module can evaluate."""


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Filter


@dataclass(frozen=True, slots=True)
class Equal:
    attr: str
    value: str


@dataclass(frozen=True, slots=True)
class Approx:
    attr: str
    value: str


@dataclass(frozen=True, slots=True)
class GreaterOrEqual:
    attr: str
    value: str


@dataclass(frozen=True, slots=True)
class LessOrEqual:
    attr: str
    value: str


@dataclass(frozen=True, slots=True)
class Present:
    attr: str


@dataclass(frozen=True, slots=True)
class Substring:
    """``initial``/``final`` are ``None`` when the value starts/ends with ``*``."""

    attr: str
    initial: str | None
    any: tuple[str, ...]
    final: str | None


Filter: TypeAlias = (
    And | Or | Not | Equal | Approx | GreaterOrEqual | LessOrEqual | Present | Substring
)

# attributedescription: a descr or numericoid, then ;options (RFC 4512 section 2.5)
_ATTR_RE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*")
_INTEGER_RE = re.compile(r"-?[0-9]+")
_HEX = frozenset("0123456789abcdefABCDEF")
_COMPARISONS = (("~=", Approx), (">=", GreaterOrEqual), ("<=", LessOrEqual), ("=", Equal))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> FilterError:
        at = self.pos if pos is None else pos
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        return FilterError(f"{message} at offset {at} in filter {shown!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "end of filter"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def skip_space(self) -> None:
        # Not in RFC 4515, but templates in proxy.toml are often spread over lines.
        while self.peek() in (" ", "\t", "\r", "\n"):
            self.pos += 1

    def filter(self, depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise self.fail(f"filter nested deeper than {MAX_DEPTH}")
        self.expect("(")
        char = self.peek()
        result: Filter
        if char == "&":
            self.pos += 1
            result = And(self.filter_list(depth))
        elif char == "|":
            self.pos += 1
            result = Or(self.filter_list(depth))
        elif char == "!":
            self.pos += 1
            self.skip_space()
            result = Not(self.filter(depth + 1))
            self.skip_space()
        else:
            result = self.item()
        self.expect(")")
        return result

    def filter_list(self, depth: int) -> tuple[Filter, ...]:
        # An empty list is allowed: (&) is TRUE and (|) is FALSE (RFC 4526).
        items: list[Filter] = []
        self.skip_space()
        while self.peek() == "(":
            items.append(self.filter(depth + 1))
            self.skip_space()
        return tuple(items)

    def item(self) -> Filter:
        found = _ATTR_RE.match(self.text, self.pos)
        if found is not None:
            self.pos = found.end()
        if self.peek() == ":":
            raise self.fail("extensible match filters (attr:rule:=value) are not supported")
        if found is None:
            raise self.fail("expected an attribute description")
        attr = found.group().lower()
        found_op = next((c for c in _COMPARISONS if self.text.startswith(c[0], self.pos)), None)
        if found_op is None:
            raise self.fail(f"expected =, ~=, >= or <= after attribute {attr!r}")
        op, node = found_op
        self.pos += len(op)
        start = self.pos
        parts = self.value_parts()
        if node is not Equal:
            if len(parts) > 1:
                raise self.fail(f"unescaped '*' in a {op} value (write \\2a)", start)
            return node(attr, parts[0])
        if len(parts) == 1:
            return Equal(attr, parts[0])
        if not any(parts):  # (a=*), and the odd (a=**)
            return Present(attr)
        middle = tuple(part for part in parts[1:-1] if part)
        return Substring(attr, parts[0] or None, middle, parts[-1] or None)

    def value_parts(self) -> list[str]:
        """Split an assertion value on raw ``*`` and decode ``\\XX`` escapes.

        Escapes are octets of UTF-8, so runs of them are decoded together; undecodable octets
        survive as surrogate escapes and simply match no text value.
        """
        parts: list[str] = []
        chars: list[str] = []
        octets = bytearray()

        def flush() -> None:
            if octets:
                chars.append(octets.decode("utf-8", "surrogateescape"))
                octets.clear()

        text = self.text
        while True:
            if self.pos >= len(text):
                raise self.fail("missing ')' after value")
            char = text[self.pos]
            if char == ")":
                break
            if char == "\\":
                pair = text[self.pos + 1 : self.pos + 3]
                if len(pair) != 2 or not set(pair) <= _HEX:
                    raise self.fail("'\\' must be followed by two hex digits (RFC 4515)")
                octets.append(int(pair, 16))
                self.pos += 3
                continue
            flush()
            if char == "*":
                parts.append("".join(chars))
                chars.clear()
            elif char == "(":
                raise self.fail("unescaped '(' in value (write \\28)")
            elif char == "\x00":
                raise self.fail("NUL in value (write \\00)")
            else:
                chars.append(char)
            self.pos += 1
        flush()
        parts.append("".join(chars))
        return parts


def parse_filter(text: str) -> Filter:
    """Parse RFC 4515 text; a bare ``uid=x`` is wrapped in parentheses, as ldap3 does.

    Whitespace is tolerated around the filter and between the members of ``&``/``|``/``!``
    (multi-line templates), never inside an item, where it belongs to the value.
    """
    stripped = text.strip()
    if not stripped:
        raise FilterError("empty filter")
    if not stripped.startswith("("):
        stripped = f"({stripped})"
    parser = _Parser(stripped)
    result = parser.filter(0)
    if parser.pos != len(stripped):
        raise parser.fail("unexpected text after the filter")
    return result


def _escape(value: str) -> str:
    out = []
    for char in value:
        code = ord(char)
        if char in "*()\\\x00":
            out.append(f"\\{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable octet kept by value_parts
            out.append(f"\\{code - 0xDC00:02x}")
        else:
            out.append(char)
    return "".join(out)


def format_filter(f: Filter) -> str:
    """Canonical RFC 4515 text for ``f``, for logs and for round-trip tests of the parser."""
    match f:
        case And(items):
            return "(&" + "".join(format_filter(item) for item in items) + ")"
        case Or(items):
            return "(|" + "".join(format_filter(item) for item in items) + ")"
        case Not(item):
            return f"(!{format_filter(item)})"
        case Equal(attr, value):
            return f"({attr}={_escape(value)})"
        case Approx(attr, value):
            return f"({attr}~={_escape(value)})"
        case GreaterOrEqual(attr, value):
            return f"({attr}>={_escape(value)})"
        case LessOrEqual(attr, value):
            return f"({attr}<={_escape(value)})"
        case Present(attr):
            return f"({attr}=*)"
        case Substring(attr, initial, middle, final):
            pieces = [_escape(initial or ""), *(_escape(part) for part in middle)]
            return f"({attr}={'*'.join(pieces)}*{_escape(final or '')})"
    raise TypeError(f"not a filter: {f!r}")


def _substring(value: str, f: Substring) -> bool:
    pos, end = 0, len(value)
    if f.initial is not None:
        initial = f.initial.casefold()
        if not value.startswith(initial):
            return False
        pos = len(initial)
    if f.final is not None:
        final = f.final.casefold()
        # The final part must not overlap what initial already consumed.
        if end - pos < len(final) or not value.endswith(final):
            return False
        end -= len(final)
    for part in f.any:
        found = value.find(part.casefold(), pos, end)
        if found < 0:
            return False
        pos = found + len(part.casefold())
    return True


def _order(value: str, assertion: str) -> int:
    if _INTEGER_RE.fullmatch(value) and _INTEGER_RE.fullmatch(assertion):
        left, right = int(value), int(assertion)
        return (left > right) - (left < right)
    left_s, right_s = value.casefold(), assertion.casefold()
    return (left_s > right_s) - (left_s < right_s)


def matches(f: Filter, entry: Mapping[str, Sequence[str]]) -> bool:
    """Evaluate ``f`` against one entry whose attribute names are lower-cased keys."""
    match f:
        case And(items):
            return all(matches(item, entry) for item in items)
        case Or(items):
            return any(matches(item, entry) for item in items)
        case Not(item):
            return not matches(item, entry)
        case Present(attr):
            return bool(entry.get(attr))
        case Equal(attr, value) | Approx(attr, value):
            wanted = value.casefold()
            return any(have.casefold() == wanted for have in entry.get(attr, ()))
        case GreaterOrEqual(attr, value):
            return any(_order(have, value) >= 0 for have in entry.get(attr, ()))
        case LessOrEqual(attr, value):
            return any(_order(have, value) <= 0 for have in entry.get(attr, ()))
        case Substring(attr=attr):
            return any(_substring(have.casefold(), f) for have in entry.get(attr, ()))
    raise TypeError(f"not a filter: {f!r}")
