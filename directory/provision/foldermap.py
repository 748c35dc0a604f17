"""Which folder on the target a source folder becomes, when the two backends name folders
differently: pure planning, no I/O (the move does the IMAP).

A user's folder tree is the same on every kind of backend; only the spelling differs. Each
side's personal NAMESPACE (RFC 2342) gives a prefix and a hierarchy separator: Dovecot
``""`` and ``.`` (or ``/``), Cyrus ``INBOX.`` and ``.``. A name is taken apart into its path
below the prefix (``INBOX.Archive.2023`` on Cyrus is ``Archive``/``2023``) and put together
again with the target's prefix and separator (``Archive.2023`` on Dovecot). INBOX is INBOX
everywhere. Names stay in modified UTF-7 bytes as the servers send them (``Gr&APYA3w-e``):
both sides speak it, so nothing is decoded.

Special-use folders (RFC 6154) follow their use, not their name: a source folder marked
``\\Sent`` lands in the target's existing ``\\Sent`` folder if it has one, whatever that is
called; otherwise it is created under its own (mapped) name and marked ``\\Sent`` where the
target can be told (CREATE-SPECIAL-USE).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

INBOX = b"INBOX"
#: The uses a mail client relies on to find its folders (RFC 6154 section 2).
SPECIAL_USES = ("\\ARCHIVE", "\\DRAFTS", "\\JUNK", "\\SENT", "\\TRASH")


@dataclass(frozen=True, slots=True)
class Namespace:
    prefix: bytes
    separator: bytes


@dataclass(frozen=True, slots=True)
class Listed:
    """A folder as LIST showed it: its name and its attributes (upper case)."""

    name: bytes
    attributes: frozenset[str]

    @property
    def use(self) -> str | None:
        uses = sorted(self.attributes & set(SPECIAL_USES))
        return uses[0] if uses else None


@dataclass(frozen=True, slots=True)
class Placement:
    source: bytes
    target: bytes
    use: str | None  # to mark a folder the move creates; None: no use, or already there
    exists: bool  # the target already has this folder (its INBOX, its special-use folder)
    renamed: bool = False  # a path part held the target's separator, replaced by "_"


def path_of(name: bytes, ns: Namespace) -> tuple[bytes, ...]:
    """The folder's path below the personal namespace (INBOX is ``(b"INBOX",)``)."""
    if name.upper() == INBOX:
        return (INBOX,)
    prefix = ns.prefix
    if prefix and name[: len(prefix)].upper() == prefix.upper():
        name = name[len(prefix) :]
    if not ns.separator:
        return (name,)
    return tuple(name.split(ns.separator))


def name_in(path: Sequence[bytes], ns: Namespace) -> tuple[bytes, bool]:
    """The name of ``path`` under ``ns``; True when a part had to lose a separator."""
    if tuple(path) == (INBOX,):
        return INBOX, False
    parts = list(path)
    renamed = False
    if ns.separator:
        for i, part in enumerate(parts):
            if ns.separator in part:
                parts[i] = part.replace(ns.separator, b"_")
                renamed = True
    if ns.prefix.upper() == INBOX + ns.separator and parts[0].upper() == INBOX:
        parts = parts[1:]  # Dovecot's INBOX.x child: under Cyrus's INBOX. prefix already
    return ns.prefix + ns.separator.join(parts), renamed


def place(
    source: Iterable[Listed],
    source_ns: Namespace,
    target: Iterable[Listed],
    target_ns: Namespace,
) -> list[Placement]:
    """Where each source folder goes, in source order."""
    by_use: dict[str, bytes] = {}
    existing = set()
    for folder in target:
        existing.add(folder.name)
        if folder.use is not None:
            by_use.setdefault(folder.use, folder.name)
    out = []
    taken: set[bytes] = set()
    for folder in source:
        use = folder.use
        if use is not None and use in by_use and by_use[use] not in taken:
            name = by_use[use]
            out.append(Placement(folder.name, name, None, True))
            taken.add(name)
            continue
        name, renamed = name_in(path_of(folder.name, source_ns), target_ns)
        while name in taken and name != INBOX:  # two source names, one target spelling
            name, renamed = name + b"_", True
        exists = name in existing or name == INBOX
        out.append(Placement(folder.name, name, None if exists else use, exists, renamed))
        taken.add(name)
    return out


def parse_namespace(tokens: list[object]) -> Namespace | None:
    """The first personal namespace of a parsed ``* NAMESPACE`` response, if any."""
    if len(tokens) < 2 or not isinstance(tokens[1], list) or not tokens[1]:
        return None
    first = tokens[1][0]
    if not isinstance(first, list) or len(first) < 2:
        return None
    prefix, separator = first[0], first[1]
    if not isinstance(prefix, bytes) or not isinstance(separator, bytes):
        return None
    return Namespace(bytes(prefix), b"" if separator.upper() == b"NIL" else bytes(separator))
