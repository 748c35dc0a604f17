"""The folders and messages of one user's mailbox, over an IMAP session that sees it as
the user does (opened by the host's mailstore driver, :mod:`directory.mailstores`).

Dovecot backends find users in the same LDAP tree, so those sessions work only while the
user's entry exists: create the entry before the mailbox, remove the mailbox before the
entry. Tags, literals and continuations are :mod:`.imapclient`'s business, not this one's.

Folder names are kept as the opaque bytes the server sends (modified UTF-7 with the
server's separator) and copy verbatim between backends of one kind.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from directory.provision import Unavailable
from directory.provision.foldermap import Listed, Namespace, parse_namespace
from directory.provision.imapclient import ImapClient, ImapError
from directory.provision.imapdata import (
    Message,
    append_args,
    astring,
    fetch_message,
    folder_checksum,
    parse_response,
    uid_set,
    word,
)

INBOX = b"INBOX"
BATCH_MESSAGES = 500
BATCH_BYTES = 16 << 20
TIMEOUT = 60.0
_EXISTS = re.compile(rb"\* (\d+) EXISTS", re.IGNORECASE)
_CODE_NUMBER = re.compile(rb"\* OK \[(UIDVALIDITY|UIDNEXT) (\d+)\]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Folder:
    name: bytes
    attributes: frozenset[str]
    subscribed: bool = False

    @property
    def selectable(self) -> bool:
        return not self.attributes & {"\\NOSELECT", "\\NONEXISTENT"}

    @property
    def display(self) -> str:
        return self.name.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class FolderState:
    exists: int
    uidvalidity: int
    uidnext: int


@dataclass
class FolderCopy:
    """What was copied from one folder, to verify against and to catch up from."""

    name: bytes
    uidvalidity: int
    last_uid: int = 0
    digests: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.digests)

    @property
    def checksum(self) -> str:
        return folder_checksum(self.digests)


def list_folders(client: ImapClient) -> list[Folder]:
    """Every folder (INBOX first, parents before children) with its subscription state."""
    subscribed = {f.name for f in _list(client, b"LSUB")}
    folders = [Folder(f.name, f.attributes, f.name in subscribed) for f in _list(client, b"LIST")]
    if not any(f.name.upper() == INBOX for f in folders):
        folders.append(Folder(INBOX, frozenset()))
    return sorted(folders, key=lambda f: (f.name.upper() != INBOX, f.name))


def _list(client: ImapClient, command: bytes) -> list[Folder]:
    response = client.run(command + b' "" "*"')
    out = []
    for item in response.untagged:
        tokens = parse_response(item)
        if len(tokens) < 4 or word(tokens[0]) != command.decode():
            continue
        attrs = tokens[1] if isinstance(tokens[1], list) else []
        name = tokens[3]
        if isinstance(name, bytes):
            if name.upper() == INBOX:
                name = INBOX
            out.append(Folder(bytes(name), frozenset(word(a) for a in attrs)))
    return out


def namespace(client: ImapClient) -> Namespace:
    """The personal namespace: NAMESPACE (RFC 2342) when offered, else no prefix and the
    separator ``LIST "" ""`` reports."""
    if "NAMESPACE" in client.capabilities:
        for item in client.run(b"NAMESPACE").untagged:
            tokens = parse_response(item)
            if tokens and word(tokens[0]) == "NAMESPACE":
                found = parse_namespace(tokens)
                if found is not None:
                    return found
    for item in client.run(b'LIST "" ""').untagged:
        tokens = parse_response(item)
        if len(tokens) >= 3 and word(tokens[0]) == "LIST" and isinstance(tokens[2], bytes):
            separator = bytes(tokens[2])
            return Namespace(b"", b"" if separator.upper() == b"NIL" else separator)
    return Namespace(b"", b".")


def listed(folders: Sequence[Folder]) -> list[Listed]:
    return [Listed(f.name, f.attributes) for f in folders]


def select(client: ImapClient, name: bytes, readonly: bool = True) -> FolderState:
    """EXAMINE (read-only: no \\Recent or \\Seen side effects) or SELECT ``name``."""
    response = client.run(b"EXAMINE" if readonly else b"SELECT", astring(name, client.literal_plus))
    exists, numbers = 0, {}
    for item in response.untagged:
        if m := _EXISTS.match(item):
            exists = int(m[1])
        elif m := _CODE_NUMBER.match(item):
            numbers[m[1].upper()] = int(m[2])
    return FolderState(exists, numbers.get(b"UIDVALIDITY", 0), numbers.get(b"UIDNEXT", 0))


def ensure_inbox(client: ImapClient) -> int:
    """Make sure the INBOX exists (Dovecot creates the mail store on first SELECT)."""
    return select(client, INBOX, readonly=False).exists


def create_folder(
    client: ImapClient, name: bytes, subscribe: bool, use: str | None = None
) -> None:
    """Create ``name`` (an existing one is fine), marked with special ``use`` where the
    server takes it at creation (RFC 6154 CREATE-SPECIAL-USE)."""
    if name.upper() != INBOX:
        extra = []
        if use is not None and "CREATE-SPECIAL-USE" in client.capabilities:
            spelled = "\\" + use.lstrip("\\").capitalize()  # \SENT -> \Sent
            extra = [[b"(USE (" + spelled.encode("ascii") + b"))"]]
        response = client.run(b"CREATE", astring(name, client.literal_plus), *extra, check=False)
        if response.status != "OK" and response.code() != b"ALREADYEXISTS":
            raise ImapError(client.address, "CREATE", response.status, response.text)
    if subscribe:
        client.run(b"SUBSCRIBE", astring(name, client.literal_plus))


def message_sizes(client: ImapClient, after_uid: int = 0) -> list[tuple[int, int]]:
    """(uid, size) of the selected folder's messages with a UID above ``after_uid``."""
    response = client.run(b"UID FETCH %d:* (UID RFC822.SIZE)" % (after_uid + 1))
    out = []
    for item in response.untagged:
        tokens = parse_response(item)
        if len(tokens) < 3 or word(tokens[1]) != "FETCH" or not isinstance(tokens[2], list):
            continue
        items = tokens[2]
        attrs = {word(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
        uid, size = attrs.get("UID"), attrs.get("RFC822.SIZE")
        if isinstance(uid, bytes) and isinstance(size, bytes) and int(uid) > after_uid:
            out.append((int(uid), int(size)))
    return sorted(out)


def batches(sizes: Sequence[tuple[int, int]]) -> Iterator[list[int]]:
    """UIDs grouped so one batch stays under BATCH_MESSAGES and about BATCH_BYTES."""
    batch: list[int] = []
    total = 0
    for uid, size in sizes:
        if batch and (len(batch) >= BATCH_MESSAGES or total + size > BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


def fetch(client: ImapClient, uids: Sequence[int]) -> list[Message]:
    """Full messages with flags and internal dates, without setting \\Seen (BODY.PEEK)."""
    response = client.run(b"UID FETCH " + uid_set(uids) + b" (UID FLAGS INTERNALDATE BODY.PEEK[])")
    messages = [fetch_message(parse_response(item)) for item in response.untagged]
    found = sorted((m for m in messages if m is not None), key=lambda m: m.uid)
    return found


def append(client: ImapClient, folder: bytes, messages: Sequence[Message]) -> None:
    """Store ``messages`` in ``folder``: one MULTIAPPEND when offered, else one by one."""
    if not messages:
        return
    if "MULTIAPPEND" in client.capabilities:
        client.run(b"APPEND", *append_args(folder, messages, client.literal_plus))
        return
    for message in messages:
        client.run(b"APPEND", *append_args(folder, [message], client.literal_plus))


def digests(client: ImapClient, folder: bytes) -> list[str]:
    """Per-message digests of ``folder``, read in batches (for verification)."""
    select(client, folder)
    out: list[str] = []
    for uids in batches(message_sizes(client)):
        out.extend(m.digest() for m in fetch(client, uids))
    return out


def message_count(client: ImapClient, name: bytes) -> int:
    """Messages in ``name`` by STATUS, which (unlike SELECT) leaves the selection alone."""
    response = client.run(b"STATUS", astring(name, client.literal_plus), [b"(MESSAGES)"])
    for item in response.untagged:
        tokens = parse_response(item)
        if len(tokens) >= 3 and word(tokens[0]) == "STATUS" and isinstance(tokens[2], list):
            values = tokens[2]
            for key, value in zip(values[::2], values[1::2], strict=False):
                if word(key) == "MESSAGES" and isinstance(value, bytes):
                    return int(value)
    raise Unavailable(f"backend {client.address}: STATUS gave no message count")


def unselect(client: ImapClient) -> None:
    """Leave the selected folder without expunging (a folder cannot be deleted while open)."""
    if "UNSELECT" in client.capabilities:
        client.run(b"UNSELECT", check=False)
    else:
        client.run(b"EXAMINE INBOX", check=False)


def summary(client: ImapClient) -> dict[str, int]:
    """Folder → message count, for "is the target empty?" and for reports."""
    return {f.display: message_count(client, f.name) for f in list_folders(client) if f.selectable}


def wipe(client: ImapClient) -> int:
    """Delete every folder but INBOX (children first) and empty INBOX; messages removed.

    INBOX itself cannot be deleted over IMAP, and the home directory stays; both are what a
    fresh login would create anyway.
    """
    removed = 0
    unselect(client)
    folders = list_folders(client)
    for folder in sorted(folders, key=lambda f: len(f.name), reverse=True):  # children first
        if folder.subscribed:
            client.run(b"UNSUBSCRIBE", astring(folder.name, client.literal_plus), check=False)
        if folder.name == INBOX:
            continue
        if folder.selectable:
            removed += message_count(client, folder.name)
        response = client.run(b"DELETE", astring(folder.name, client.literal_plus), check=False)
        if response.status != "OK" and response.code() != b"NONEXISTENT":
            raise ImapError(client.address, "DELETE", response.status, response.text)
    state = select(client, INBOX, readonly=False)
    if state.exists:
        client.run(b"STORE 1:* +FLAGS.SILENT (\\Deleted)")
        client.run(b"EXPUNGE")
        removed += state.exists
    client.run(b"CLOSE", check=False)
    return removed


def copy_folder(
    source: ImapClient,
    target: ImapClient,
    folder: Folder,
    after: FolderCopy | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    into: bytes | None = None,
) -> FolderCopy:
    """Copy ``folder``'s messages (those above ``after.last_uid`` when catching up).

    The source is only EXAMINEd; ``into`` names the target folder when the two backends
    spell it differently (:mod:`.foldermap`). Returns what was copied, with one digest per
    message, so the caller can verify the target without reading the source again.
    """
    state = select(source, folder.name)
    if after is not None and after.uidvalidity != state.uidvalidity:
        raise Unavailable(
            f"folder {folder.display} was recreated on the source during the move; "
            "the old copy is kept"
        )
    result = after or FolderCopy(folder.name, state.uidvalidity)
    if state.exists == 0:
        return result
    for uids in batches(message_sizes(source, result.last_uid)):
        messages = fetch(source, uids)
        if len(messages) != len(uids):
            raise Unavailable(
                f"folder {folder.display}: {len(uids) - len(messages)} messages vanished "
                "from the source while copying"
            )
        append(target, folder.name if into is None else into, messages)
        result.digests.extend(m.digest() for m in messages)
        result.last_uid = max(result.last_uid, uids[-1])
        if on_batch is not None:
            on_batch(len(messages), sum(len(m.body) for m in messages))
    return result


def totals(client: ImapClient, folders: Sequence[Folder]) -> tuple[int, int]:
    """Messages and octets in the selectable ``folders``, for progress; octets are 0 when
    the server has no STATUS=SIZE (RFC 8438)."""
    sized = "STATUS=SIZE" in client.capabilities
    messages = octets = 0
    for folder in folders:
        if not folder.selectable:
            continue
        items = [b"(MESSAGES SIZE)"] if sized else [b"(MESSAGES)"]
        response = client.run(b"STATUS", astring(folder.name, client.literal_plus), items)
        for item in response.untagged:
            tokens = parse_response(item)
            if len(tokens) >= 3 and word(tokens[0]) == "STATUS" and isinstance(tokens[2], list):
                values = dict(zip(map(word, tokens[2][::2]), tokens[2][1::2], strict=False))
                messages += int(values.get("MESSAGES", b"0"))
                octets += int(values.get("SIZE", b"0"))
    return messages, octets


def copy_missing(
    source: ImapClient,
    target: ImapClient,
    folder: Folder,
    into: bytes,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Copy the messages of ``folder`` whose content ``into`` lacks; how many were copied.

    Compared by the SHA-256 of the message bytes, counting duplicates, because flags on
    the target may have changed since (the user kept working there) while content cannot.
    """
    present: Counter[str] = Counter()
    if select(target, into).exists:
        for uids in batches(message_sizes(target)):
            present.update(hashlib.sha256(m.body).hexdigest() for m in fetch(target, uids))
    unselect(target)
    copied = 0
    if not select(source, folder.name).exists:
        return 0
    for uids in batches(message_sizes(source)):
        missing = []
        for message in fetch(source, uids):
            key = hashlib.sha256(message.body).hexdigest()
            if present[key]:
                present[key] -= 1
            else:
                missing.append(message)
        append(target, into, missing)
        copied += len(missing)
        if on_batch is not None and missing:
            on_batch(len(missing), sum(len(m.body) for m in missing))
    return copied
