"""A parser of the Prometheus text exposition format, only as much as the console needs.

Why our own and not ``prometheus_client.parser``: that one raises at the first line it does
not like, and the console reads pages from every instance in the farm, one of which may be
half-upgraded, truncated by our size cap, or not a mailfarm at all. Here a line that cannot be
read is skipped and the rest still counts; nothing on the page can make :func:`parse` raise.

Every step is linear in the input (no backtracking regular expressions, no unbounded
``int()``), so a hostile page costs what its size costs, and the caller caps the size.
``# HELP`` and ``# TYPE`` lines are skipped: the console knows which metrics it reads.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

MAX_SAMPLES = 100_000  # a mailfarm page has a few hundred; more is not a mailfarm page

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# The alternatives of the quoted value are disjoint, so matching is linear.
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
# Go's ParseFloat spellings of the specials, and plain decimals (no hex, no underscores).
_VALUE = re.compile(
    r"[+-]?(?:(?i:inf(?:inity)?)|(?i:nan)|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_TIMESTAMP = re.compile(r"-?[0-9]{1,19}")  # milliseconds; bounded so int() stays cheap


class Sample(NamedTuple):
    """One line of the page: ``name{labels} value [timestamp]``."""

    name: str
    labels: tuple[tuple[str, str], ...]  # in the page's order, names unique
    value: float
    timestamp: int | None = None  # milliseconds since the epoch, when the page gives one

    def label(self, key: str, default: str = "") -> str:
        """The value of label ``key``; series without it read as ``default``."""
        for name, value in self.labels:
            if name == key:
                return value
        return default


def parse(text: str | bytes, limit: int = MAX_SAMPLES) -> list[Sample]:
    """The samples of a page, at most ``limit``; malformed lines are left out, never raised."""
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("utf-8", errors="replace")
    out: list[Sample] = []
    for line in text.split("\n"):
        if len(out) >= limit:
            break
        sample = parse_line(line)
        if sample is not None:
            out.append(sample)
    return out


def parse_line(line: str) -> Sample | None:
    """One line as a :class:`Sample`, or None for comments, blank and malformed lines."""
    line = line.strip(" \t\r")
    if not line or line.startswith("#"):
        return None
    match = _NAME.match(line)
    if match is None:
        return None
    name, pos = match.group(), match.end()
    labels: tuple[tuple[str, str], ...] = ()
    if pos < len(line) and line[pos] == "{":
        parsed = _labels(line, pos + 1)
        if parsed is None:
            return None
        labels, pos = parsed
    rest = line[pos:]
    if not rest or rest[0] not in " \t":
        return None  # the value must be separated from the name (or the closing brace)
    fields = rest.split()
    if not 1 <= len(fields) <= 2 or _VALUE.fullmatch(fields[0]) is None:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    timestamp = None
    if len(fields) == 2:
        if _TIMESTAMP.fullmatch(fields[1]) is None:
            return None
        timestamp = int(fields[1])
    return Sample(name, labels, value, timestamp)


def _labels(line: str, pos: int) -> tuple[tuple[tuple[str, str], ...], int] | None:
    """``a="x",b="y"}`` from ``pos`` → the pairs and the position after ``}``; None if bad."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    while True:
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == "}":
            return tuple(pairs), pos + 1  # empty braces, or a trailing comma
        match = _LABEL.match(line, pos)
        if match is None:
            return None
        key, raw = match.group(1), match.group(2)
        value = _unescape(raw)
        if value is None or key in seen:
            return None
        seen.add(key)
        pairs.append((key, value))
        pos = match.end()
        if pos >= len(line):
            return None
        if line[pos] == "}":
            return tuple(pairs), pos + 1
        if line[pos] != ",":
            return None
        pos += 1


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _unescape(raw: str) -> str | None:
    """The label value's ``\\\\``, ``\\"`` and ``\\n``; None for any other escape (as
    Prometheus's own parser refuses them)."""
    if "\\" not in raw:
        return raw
    bad = False

    def one(match: re.Match[str]) -> str:
        nonlocal bad
        char = match.group(1)
        if char not in _ESCAPES:
            bad = True
            return ""
        return _ESCAPES[char]

    value = _ESCAPE.sub(one, raw)
    return None if bad else value


def finite(value: float) -> bool:
    """Whether a value can be counted (NaN and the infinities cannot)."""
    return not (math.isnan(value) or math.isinf(value))
