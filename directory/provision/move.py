"""Moving a user's mailbox to another backend without losing a message or a flag.

The order is the whole design:

1. Log in as admin on both backends first, so a backend that is down stops the move before
   anything changed. The target must hold nothing for the user (``--force`` wipes it).
2. Refuse new logins (``[directory] disabled_attribute`` = ``TRUE``: the proxies answer
   "being moved, try again"), then flush every proxy's route cache (so none serves the
   cached, still-enabled route) and kick the user's open sessions.
3. Copy every folder, message, flag and internal date (MULTIAPPEND + LITERAL+ batches),
   with a digest per message taken from what was read.
4. Verify: read the target back; per folder, the count and the checksum over the digests
   must match.
5. Switch ``mailHost`` and allow logins again **in one LDAP modify** (atomic: there is no
   moment where the user is enabled on the old host after the copy); flush the proxies.
6. Catch up: mail delivered to the old backend during the move (LMTP does not look at the
   login switch) is copied over; only then is the old copy deleted.

Any failure in steps 2-5 rolls back: the partial copy on the target is wiped, logins are
allowed again and caches flushed; the user stays on the old backend with everything there.
After step 5 the move has happened: a failure to catch up or delete is a warning and the
old copy is kept, never deleted with mail that may not have been copied.

Which attribute refuses logins is ``[directory] disabled_attribute``; the move sets it to
``TRUE`` (what :func:`directory.model.route_from_entry` reads as disabled, with yes/1/on) and
afterwards puts back whatever values it had. None of the stock schemas (core, cosine,
inetorgperson, nis, misc) has a boolean account-status attribute, so the test farm uses
``description``, which every inetOrgPerson may carry; a production directory is better
served by a dedicated attribute from a small local schema (a BOOLEAN such as
``mailfarmLoginDisabled``), which nothing else will ever write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.configschema import ConfigError
from directory.mailstores import mailstore_for
from directory.model import means_disabled
from directory.provision import ProvisionError, Refused, Unavailable
from directory.provision.adminapi import call as admin_call
from directory.provision.foldermap import Namespace, Placement, place
from directory.provision.folders import (
    Folder,
    FolderCopy,
    copy_folder,
    create_folder,
    digests,
    list_folders,
    listed,
    namespace,
    summary,
    wipe,
)
from directory.provision.imapclient import ImapClient
from directory.provision.ldapwrite import DELETE, REPLACE, LdapWriter
from directory.provision.users import DISABLED_VALUE, User, find_user
from directory.settings import ToolConfig

#: Called after each copied batch with (messages copied so far, messages in total).
Progress = Callable[[int, int], None]


@dataclass
class MoveReport:
    uid: str
    source: str
    target: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: int = 0
    caught_up: int = 0
    seconds: float = 0.0
    old_copy_deleted: bool = False
    old_copy_kept_as: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "from": self.source,
            "to": self.target,
            "messages": self.messages,
            "caught_up": self.caught_up,
            "folders": self.folders,
            "seconds": round(self.seconds, 3),
            "old_copy_deleted": self.old_copy_deleted,
            "old_copy_kept_as": self.old_copy_kept_as,
            "warnings": self.warnings,
        }


class _Mover:
    def __init__(
        self, settings: ToolConfig, writer: LdapWriter, user: User, target: str, progress: Progress
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.user = user
        self.target = target
        self.progress = progress
        self.attr = settings.directory.disabled_attribute
        self.report = MoveReport(user.uid, user.host, target)
        self.saved: list[str] = []
        self.disabled = False
        self.copies: dict[bytes, FolderCopy] = {}  # by source folder name
        self.placements: dict[bytes, Placement] = {}  # source name -> where it goes
        self.namespaces: tuple[Namespace, Namespace] | None = None  # source's, target's
        self.target_touched = False  # from the first CREATE/APPEND there, even if it failed
        self.source_store = mailstore_for(settings, user.host)
        self.target_store = mailstore_for(settings, target)

    # -- admin endpoints ------------------------------------------------------------------

    def _proxies(self, action: str, strict: bool) -> None:
        s = self.settings
        self.report.warnings += admin_call(
            s.provision.admin_urls, s.admin_token, action, self.user.uid, strict
        )

    # -- LDAP -----------------------------------------------------------------------------

    def disable(self) -> None:
        entry = self.writer.get(self.user.dn, (self.attr,))
        # A forced move of a user left disabled by an interrupted move must not restore that.
        values = entry.values(self.attr) if entry else []
        self.saved = [v for v in values if not means_disabled(v)]
        self.writer.modify(self.user.dn, {self.attr: [(REPLACE, [DISABLED_VALUE])]})
        self.disabled = True

    def _restore_ops(self) -> list[tuple[str, list[str]]]:
        return [(REPLACE, self.saved)] if self.saved else [(DELETE, [])]

    def enable(self) -> None:
        self.writer.modify(self.user.dn, {self.attr: self._restore_ops()})
        self.disabled = False

    def switch(self) -> None:
        host_attr = self.settings.directory.host_attribute
        self.writer.modify(
            self.user.dn, {host_attr: [(REPLACE, [self.target])], self.attr: self._restore_ops()}
        )
        self.disabled = False

    # -- mail -----------------------------------------------------------------------------

    def place(self, source: ImapClient, target: ImapClient, folders: list[Folder]) -> None:
        """Where each folder goes on the target (names through both NAMESPACEs, special
        uses onto the target's own special-use folders); see :mod:`.foldermap`."""
        if self.namespaces is None:
            self.namespaces = (namespace(source), namespace(target))
        new = [f for f in folders if f.name not in self.placements]
        if not new:
            return
        there = listed(list_folders(target))
        for placement in place(listed(new), self.namespaces[0], there, self.namespaces[1]):
            self.placements[placement.source] = placement
            if placement.renamed:
                self.report.warnings.append(
                    f"folder {_shown(placement.source)} is {_shown(placement.target)} on "
                    f"{self.target} (its name held the target's hierarchy separator)"
                )

    def _create(self, target: ImapClient, folder: Folder) -> bytes:
        placement = self.placements[folder.name]
        create_folder(target, placement.target, folder.subscribed, placement.use)
        return placement.target

    def copy_all(self, source: ImapClient, target: ImapClient) -> None:
        folders = list_folders(source)
        total = sum(summary(source).values())
        done = 0

        def batch_done(n: int) -> None:
            nonlocal done
            done += n
            self.progress(done, total)

        self.place(source, target, folders)
        self.target_touched = True
        for folder in folders:
            into = self._create(target, folder)
            if folder.selectable:
                self.copies[folder.name] = copy_folder(
                    source, target, folder, None, batch_done, into
                )

    def verify(self, target: ImapClient) -> None:
        for name, copy in self.copies.items():
            into = self.placements[name].target
            found = digests(target, into)
            shown = _shown(name)
            if len(found) != copy.count:
                raise Unavailable(
                    f"verification failed: folder {shown} has {len(found)} messages on "
                    f"{self.target}, {copy.count} on {self.user.host}"
                )
            copied = FolderCopy(name, 0, 0, found)
            if copied.checksum != copy.checksum:
                raise Unavailable(
                    f"verification failed: folder {shown}: content, flags or dates differ"
                )
            self.report.folders[shown] = {
                "to": _shown(into),
                "messages": copy.count,
                "sha256": copy.checksum,
            }
            self.report.messages += copy.count

    def catch_up(self, source: ImapClient, target: ImapClient) -> None:
        """Copy what arrived on the old backend after the copy (deliveries do not stop)."""
        folders = [f for f in list_folders(source) if f.selectable]
        self.place(source, target, folders)
        for folder in folders:
            before = self.copies.get(folder.name)
            if before is None:  # a folder made on the old backend during the move
                self._create(target, folder)
            into = self.placements[folder.name].target
            count = before.count if before else 0
            after = copy_folder(source, target, folder, before, None, into)
            self.report.caught_up += after.count - count

    # -- the whole move -------------------------------------------------------------------

    def rollback(self, cause: ProvisionError, target: ImapClient | None) -> ProvisionError:
        notes = []
        still_disabled = False
        if target is not None and self.target_touched:
            try:
                wipe(target)
            except ProvisionError as exc:
                notes.append(
                    f"the partial copy on {self.target} stays ({exc}; "
                    "a later move there needs --force)"
                )
        if self.disabled:
            try:
                self.enable()
            except ProvisionError as exc:
                still_disabled = True
                notes.append(
                    f"LOGINS ARE STILL DISABLED: re-enabling failed ({exc}); "
                    f"remove {self.attr} from {self.user.dn}"
                )
        try:
            self._proxies("flush", strict=False)
        except ProvisionError as exc:  # pragma: no cover - non-strict calls only warn
            notes.append(str(exc))
        message = f"move of {self.user.uid} aborted: {cause}; it stays on {self.user.host}"
        if not still_disabled:
            message += ", nothing lost, logins allowed"
        if notes:
            message += "; " + "; ".join(notes)
        return cause.amended(message)

    def run(self, force: bool) -> MoveReport:
        started = time.monotonic()
        source = self.source_store.open_user(self.user.uid)
        target: ImapClient | None = None
        try:
            # Cyrus: user.<uid> must exist first (with the user's quota, if it has one).
            self.target_store.create(self.user.uid, self.user.quota_kb)
            target = self.target_store.open_user(self.user.uid)
            leftover = {k: v for k, v in summary(target).items() if v or k != "INBOX"}
            if leftover:
                if not force:
                    raise Refused(
                        f"{self.target} already holds a mailbox for {self.user.uid} "
                        f"({sum(leftover.values())} messages in {len(leftover)} folders, "
                        "perhaps from an interrupted move); --force replaces it"
                    )
                wipe(target)
            try:
                self.disable()
                self._proxies("flush", strict=True)
                self._proxies("kick", strict=True)
                self.copy_all(source, target)
                self.verify(target)
                self.switch()
            except BaseException as exc:  # Ctrl-C or a bug must roll back too
                cause = exc if isinstance(exc, ProvisionError) else _unexpected(exc)
                raise self.rollback(cause, target) from (None if cause is exc else exc)
            self._proxies("flush", strict=False)
            self._finish(source, target)
        finally:
            for client in (source, target):
                if client is not None:
                    client.logout()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _finish(self, source: ImapClient, target: ImapClient) -> None:
        try:
            self.catch_up(source, target)
        except ProvisionError as exc:
            self.report.warnings.append(
                f"catching up mail delivered during the move failed ({exc}); "
                f"the old copy on {self.user.host} is kept"
            )
            return
        source.logout()  # its mailbox is about to go
        try:
            removal = self.source_store.delete(self.user.uid)
            self.report.old_copy_deleted = removal.kept_as is None
            if removal.kept_as is not None:
                self.report.old_copy_kept_as = removal.kept_as
                self.report.warnings.append(
                    f"{self.user.host} keeps the old mailbox as {removal.kept_as} until it "
                    "expires it (Cyrus delete_mode: delayed)"
                )
        except ProvisionError as exc:
            self.report.warnings.append(f"deleting the old copy on {self.user.host}: {exc}")


def _shown(name: bytes) -> str:
    return name.decode("utf-8", "replace")


def _unexpected(exc: BaseException) -> ProvisionError:
    if isinstance(exc, KeyboardInterrupt):
        return Refused("interrupted")
    return Unavailable(f"unexpected {type(exc).__name__}: {exc}")


def move_user(
    settings: ToolConfig,
    writer: LdapWriter,
    login: str,
    target: str,
    force: bool = False,
    progress: Progress | None = None,
) -> MoveReport:
    """Move ``login``'s mailbox to ``target`` (a mailHost value); see the module docstring.

    ``force`` moves a user whose logins are already disabled (an interrupted move) and
    replaces whatever the target holds for the user.
    """
    if not settings.directory.disabled_attribute:
        raise ConfigError(
            settings.path,
            "directory",
            "disabled_attribute",
            "must be set for moves: logins are refused through it while mail is copied",
        )
    user = find_user(settings, writer, login)
    if user.host == target:
        raise Refused(f"{user.uid} is on {target} already")
    if user.login_disabled and not force:
        raise Refused(
            f"logins of {user.uid} are disabled ({settings.directory.disabled_attribute}): "
            "a move is running or was interrupted; --force moves anyway"
        )
    mover = _Mover(settings, writer, user, target, progress or (lambda done, total: None))
    return mover.run(force)
