"""Login names: normalisation and safe use in LDAP filters.

A login is either a uid (``alice_example_co_uk``) or an address (``alice@example.co.uk``).
Which entry it names is the directory's decision, made by the configured filter; nothing here
guesses a domain by splitting a uid on ``_`` (domains and users may both contain ``_``).
"""

from __future__ import annotations

import unicodedata

MAX_LOGIN_LENGTH = 320  # RFC 5321: 64 local + @ + 255 domain


class BadLogin(ValueError):
    """The login cannot name any entry (empty, too long, control characters)."""


def normalise_login(login: str) -> str:
    """Trim, compose (Unicode NFC) and case-fold a login so the cache has one key per user.

    Both ``uid`` and ``mail`` match case-insensitively in the standard schemas, so folding
    here loses nothing and keeps ``Alice@Example.CO.UK`` and ``alice@example.co.uk`` on one
    cache entry. NFC because a client may send ``é`` as one code point or as ``e`` plus a
    combining accent; the directory stores one of them. Surrounding whitespace (a tab, a
    no-break space pasted from a web page) is never part of a login.
    """
    value = unicodedata.normalize("NFC", login).strip().lower()
    if not value:
        raise BadLogin("empty login")
    if len(value) > MAX_LOGIN_LENGTH:
        raise BadLogin("login too long")
    # isprintable() is False for every control character, so the usual login skips the scan.
    if not value.isprintable() and any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise BadLogin("control character in login")
    return value


_FILTER_ESCAPES = {"\\": r"\5c", "*": r"\2a", "(": r"\28", ")": r"\29", "\x00": r"\00"}


def escape_filter_value(value: str) -> str:
    """RFC 4515 escaping, so a login such as ``*)(uid=*`` can only ever match itself."""
    return "".join(_FILTER_ESCAPES.get(ch, ch) for ch in value)


def render_filter(template: str, login: str) -> str:
    """Put the escaped login in place of every ``%s`` in a filter template."""
    return template.replace("%s", escape_filter_value(login))


def split_address(address: str) -> tuple[str, str] | None:
    """``local@domain`` → (local, domain); ``None`` for anything that is not an address.

    Used only where Postfix hands us an address; the last ``@`` separates, as in RFC 5321.
    """
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        return None
    return local, domain


def strip_extension(address: str, delimiter: str = "+") -> str:
    """``alice+lists@example.org`` → ``alice@example.org`` (Postfix's recipient_delimiter)."""
    parts = split_address(address)
    if parts is None or not delimiter:
        return address
    local, domain = parts
    base = local.split(delimiter, 1)[0]
    return f"{base or local}@{domain}"
