"""Which users a load test logs in as: a login/password pattern, or a users file (pure).

Patterns such as ``u{i}@d{i%10}.test`` and ``pw{i}`` come from the command line, so they are
evaluated by a tiny arithmetic evaluator of our own, never ``eval`` or ``str.format`` (which
would let ``{i.__class__}`` walk the object graph). Inside braces: the index ``i``, integer
literals, ``+ - * // %``, unary minus and parentheses, with Python's precedence and Python's
floor semantics; an optional ``:0N`` pads with zeros (``{i:05}``). ``{{`` and ``}}`` are
literal braces.

A users file holds one ``LOGIN PASSWORD`` per line. The separator is the first tab if the line
has one, else the first space, else the first colon (imaptest's ``user:pass``), and the
password is the rest of the line verbatim, so passwords with spaces or quotes survive. Blank
lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class PatternError(ValueError):
    """A pattern or users file the operator must fix; the message says where."""


@dataclass(frozen=True, slots=True)
class Credential:
    login: str
    password: str


_TOKEN = re.compile(r"\s*(?:(\d+)|(i)\b|(//|[-+*%()]))")
_MAX_INT = 10**12  # numbers a pattern may produce: far beyond any farm, far below bignums

Expr = Callable[[int], int]


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*`` and so on down."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                raise PatternError(f"unexpected {text[pos:].strip()[:10]!r} in {{{text}}}")
            self.tokens.append(m.group(1) or m.group(2) or m.group(3))
            pos = m.end()
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise PatternError(f"incomplete expression {{{self.text}}}")
        self.pos += 1
        return token

    def parse(self) -> Expr:
        if not self.tokens:
            raise PatternError("empty {} in pattern (use {i}, {i%10}, {i+1} …)")
        expr = self.expr()
        if self.peek() is not None:
            raise PatternError(f"unexpected {self.peek()!r} in {{{self.text}}}")
        return expr

    def expr(self) -> Expr:
        left = self.term()
        while self.peek() in ("+", "-"):
            op, right, prev = self.take(), self.term(), left
            left = _binary(op, prev, right)
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.peek() in ("*", "//", "%"):
            op, right, prev = self.take(), self.unary(), left
            left = _binary(op, prev, right)
        return left

    def unary(self) -> Expr:
        if self.peek() == "-":
            self.take()
            inner = self.unary()
            return lambda i: -inner(i)
        return self.atom()

    def atom(self) -> Expr:
        token = self.take()
        if token == "i":
            return lambda i: i
        if token.isdigit():
            value = int(token)
            if value > _MAX_INT:
                raise PatternError(f"number too large in {{{self.text}}}")
            return lambda i: value
        if token == "(":
            inner = self.expr()
            if self.take() != ")":
                raise PatternError(f"missing ')' in {{{self.text}}}")
            return inner
        raise PatternError(f"unexpected {token!r} in {{{self.text}}}")


def _binary(op: str, left: Expr, right: Expr) -> Expr:
    if op == "+":
        return lambda i: left(i) + right(i)
    if op == "-":
        return lambda i: left(i) - right(i)
    if op == "*":
        return lambda i: _bounded(left(i) * right(i))

    def divide(i: int) -> int:
        divisor = right(i)
        if divisor == 0:
            raise PatternError("division or modulo by zero in pattern")
        return left(i) // divisor if op == "//" else left(i) % divisor

    return divide


def _bounded(value: int) -> int:
    if abs(value) > _MAX_INT:
        raise PatternError("pattern arithmetic out of range")
    return value


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern: literal text and expressions, rendered for one index at a time."""

    source: str
    parts: tuple[str | tuple[Expr, int], ...]

    def render(self, i: int) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                expr, width = part
                value = expr(i)
                out.append(f"{value:0{width}d}" if width else str(value))
        return "".join(out)

    @property
    def uses_index(self) -> bool:
        return any(not isinstance(part, str) for part in self.parts)


_WIDTH = re.compile(r"0?(\d{1,2})")


def compile_pattern(source: str) -> Pattern:
    """Parse once, so a bad pattern fails before any connection is made."""
    parts: list[str | tuple[Expr, int]] = []
    literal: list[str] = []
    pos = 0
    while pos < len(source):
        ch = source[pos]
        if source.startswith("{{", pos) or source.startswith("}}", pos):
            literal.append(ch)
            pos += 2
        elif ch == "{":
            end = source.find("}", pos)
            if end < 0:
                raise PatternError(f"unclosed '{{' in pattern {source!r}")
            body, _, spec = source[pos + 1 : end].partition(":")
            width = 0
            if spec:
                m = _WIDTH.fullmatch(spec)
                if m is None:
                    raise PatternError(f"bad width {spec!r} in {source!r} (use {{i:05}})")
                width = int(m.group(1))
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((_Parser(body).parse(), width))
            pos = end + 1
        elif ch == "}":
            raise PatternError(f"single '}}' in pattern {source!r} (write '}}}}')")
        else:
            literal.append(ch)
            pos += 1
    if literal:
        parts.append("".join(literal))
    return Pattern(source, tuple(parts))


def expand(login: str, password: str, count: int, start: int = 0) -> list[Credential]:
    """``count`` credentials for indexes ``start`` … ``start + count - 1``."""
    if count < 1:
        raise PatternError("--count must be at least 1")
    login_p, password_p = compile_pattern(login), compile_pattern(password)
    return [
        Credential(login_p.render(i), password_p.render(i)) for i in range(start, start + count)
    ]


def parse_users(lines: Sequence[str], source: str = "users file") -> list[Credential]:
    users = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip(" \t") or line.lstrip(" \t").startswith("#"):
            continue
        for sep in ("\t", " ", ":"):
            if sep in line:
                login, _, password = line.partition(sep)
                break
        else:
            raise PatternError(f"{source}:{number}: expected 'LOGIN PASSWORD'")
        if not login or not password:
            raise PatternError(f"{source}:{number}: empty login or password")
        users.append(Credential(login, password))
    if not users:
        raise PatternError(f"{source}: no users")
    return users


def load_users(path: str | Path) -> list[Credential]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PatternError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PatternError(f"{path}: not UTF-8") from None
    # split("\n"), not splitlines(): a password may contain \x0b, \x1c or U+2028.
    return parse_users(text.split("\n"), str(path))


def format_users(users: Sequence[Credential]) -> str:
    """The users-file form (tab-separated), e.g. for tests that write one from a farm."""
    return "".join(f"{u.login}\t{u.password}\n" for u in users)
