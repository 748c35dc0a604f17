"""Folder names across backends: through each side's NAMESPACE, special uses by use."""

from __future__ import annotations

from directory.provision.foldermap import (
    Listed,
    Namespace,
    name_in,
    parse_namespace,
    path_of,
    place,
)
from directory.provision.imapdata import parse_response

DOVECOT = Namespace(b"", b".")
DOVECOT_SLASH = Namespace(b"", b"/")
CYRUS = Namespace(b"INBOX.", b".")
UMLAUT = b"Gr&APYA3w-e &- Co"  # "Größe & Co" in modified UTF-7


def folder(name: bytes, *attrs: str) -> Listed:
    return Listed(name, frozenset(a.upper() for a in attrs))


def test_paths_and_names_across_namespaces() -> None:
    assert path_of(b"INBOX.Archive.2023", CYRUS) == (b"Archive", b"2023")
    assert path_of(b"inbox", CYRUS) == (b"INBOX",)
    assert name_in((b"Archive", b"2023"), DOVECOT) == (b"Archive.2023", False)
    assert name_in((b"Archive", b"2023"), DOVECOT_SLASH) == (b"Archive/2023", False)
    assert name_in((b"Sent",), CYRUS) == (b"INBOX.Sent", False)
    assert name_in((UMLAUT,), CYRUS) == (b"INBOX." + UMLAUT, False)
    # A Dovecot child of INBOX is already below Cyrus's INBOX. prefix.
    assert name_in(path_of(b"INBOX.lists", DOVECOT), CYRUS) == (b"INBOX.lists", False)
    # "/"-separated Dovecot allows "." in a name; Cyrus would read it as a level.
    assert name_in(path_of(b"v1.2/notes", DOVECOT_SLASH), CYRUS) == (b"INBOX.v1_2.notes", True)


def test_cyrus_to_dovecot_keeps_the_tree_and_the_uses() -> None:
    source = [
        folder(b"INBOX", "\\HasChildren"),
        folder(b"INBOX.Sent", "\\Sent"),
        folder(b"INBOX.Archive", "\\Archive", "\\HasChildren"),
        folder(b"INBOX.Archive.2023"),
        folder(b"INBOX." + UMLAUT),
    ]
    target = [folder(b"INBOX"), folder(b"Gesendet", "\\Sent")]
    placed = {p.source: (p.target, p.use, p.exists) for p in place(source, CYRUS, target, DOVECOT)}
    assert placed == {
        b"INBOX": (b"INBOX", None, True),
        b"INBOX.Sent": (b"Gesendet", None, True),  # the target's own \Sent folder
        b"INBOX.Archive": (b"Archive", "\\ARCHIVE", False),  # created, marked \Archive
        b"INBOX.Archive.2023": (b"Archive.2023", None, False),
        b"INBOX." + UMLAUT: (UMLAUT, None, False),
    }


def test_dovecot_to_cyrus_puts_top_level_folders_under_inbox() -> None:
    source = [folder(b"INBOX"), folder(b"Sent", "\\Sent"), folder(b"Work"), folder(b"Work.x")]
    placed = [p.target for p in place(source, DOVECOT, [folder(b"INBOX")], CYRUS)]
    assert placed == [b"INBOX", b"INBOX.Sent", b"INBOX.Work", b"INBOX.Work.x"]


def test_two_names_with_one_spelling_on_the_target_stay_apart() -> None:
    source = [folder(b"INBOX.lists"), folder(b"lists")]  # both INBOX.lists on Cyrus
    placed = place(source, DOVECOT, [], CYRUS)
    assert [p.target for p in placed] == [b"INBOX.lists", b"INBOX.lists_"]
    assert placed[1].renamed


def test_one_use_is_taken_once() -> None:
    source = [folder(b"Sent", "\\Sent"), folder(b"Sent Messages", "\\Sent")]
    placed = place(source, DOVECOT, [folder(b"INBOX.Sent", "\\Sent")], CYRUS)
    assert [p.target for p in placed] == [b"INBOX.Sent", b"INBOX.Sent Messages"]


def test_parse_namespace() -> None:
    cyrus = parse_response(b'* NAMESPACE (("INBOX." ".")) (("user." ".")) (("" "."))\r\n')
    assert parse_namespace(cyrus) == CYRUS
    dovecot = parse_response(b'* NAMESPACE (("" ".")) NIL NIL\r\n')
    assert parse_namespace(dovecot) == DOVECOT
    assert parse_namespace(parse_response(b"* NAMESPACE NIL NIL NIL\r\n")) is None
