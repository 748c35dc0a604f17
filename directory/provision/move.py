"""Moving a user's mailbox to another backend without losing a message, a flag or a folder.

The order is the whole design:

1. Log in on both backends first, so a backend that is down stops the move before anything
   changed (the target's driver creates the mailbox where that is needed: Cyrus).
2. Take the lease (:mod:`directory.movestate`) in ``[directory] disabled_attribute``: the
   proxies answer "being moved, try again" and defer mail while it lasts; flush every
   proxy's route cache and kick the user's open sessions. The copy renews the lease.
3. Copy every folder under the target's spelling of its name (:mod:`.foldermap`), every
   message, flag and internal date (MULTIAPPEND + LITERAL+ batches), keeping a digest per
   message from what was read.
4. Verify: per folder, count and checksum over the digests read back from the target.
5. Switch ``mailHost`` and trade the lease for the cleanup marker **in one LDAP modify**
   (no moment with the user enabled on the old host after the copy, none where a crash
   would forget the old copy); flush the proxies.
6. Settle (``[provision] move_settle``) for deliveries already under way to the old host,
   catch up what reached it, and check every copied message is on the target; only then
   delete the old copy (unless ``keep_old``) and the marker.

Any failure in steps 2-5 rolls back: the partial copy is removed, the lease too, caches are
flushed; the user stays on the old backend with everything there. After step 5 the move
has happened: a failure to catch up or delete is a warning, the old copy and the marker
stay, and running the same move again finishes it (:meth:`_Mover.resume`). A move killed
outright leaves the same states: before the switch an expiring lease (the rerun removes the
partial copy and starts again), after it the marker.

The attribute that refuses logins (``[directory] disabled_attribute``) must take strings:
the farm uses ``description``; a production directory is better served by a dedicated
attribute from a small local schema, which nothing else writes. Values that are not the
move's own (an operator's ``TRUE`` from ``user disable``) are never touched.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from common.configschema import ConfigError
from directory import movestate
from directory.mailstores import mailstore_for
from directory.model import means_disabled
from directory.provision import ProvisionError, Refused, Unavailable
from directory.provision.adminapi import call as admin_call
from directory.provision.foldermap import Namespace, Placement, place
from directory.provision.folders import (
    Folder,
    FolderCopy,
    copy_folder,
    copy_missing,
    create_folder,
    digests,
    list_folders,
    listed,
    namespace,
    summary,
    totals,
)
from directory.provision.imapclient import ImapClient
from directory.provision.imapdata import astring
from directory.provision.ldapwrite import ADD, DELETE, REPLACE, LdapWriter
from directory.provision.replication import Replication, after_write
from directory.provision.sieveclient import SieveUnreachable
from directory.provision.sievemove import (
    SieveScript,
    delete_scripts,
    endpoint,
    read_scripts,
    verify_scripts,
    write_scripts,
)
from directory.provision.users import User, find_user
from directory.settings import ToolConfig


@dataclass(frozen=True, slots=True)
class MoveProgress:
    """Where a move is, for a progress bar or a JSON event: sent at each phase and after
    every copied batch. ``bytes_total`` is 0 when the source cannot tell (no STATUS=SIZE).
    The ``sieve`` phase carries the Sieve scripts copied (``scripts``)."""

    uid: str
    phase: str  # copy, verify, switched, catch-up, cleanup, done
    folder: str | None
    messages_done: int
    messages_total: int
    bytes_done: int
    bytes_total: int
    seconds: float
    scripts: tuple[dict[str, Any], ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = {f: getattr(self, f) for f in self.__slots__}
        if self.scripts is None:
            del shown["scripts"]
        else:
            shown["scripts"] = list(self.scripts)
        return {"event": "progress", **shown}


Progress = Callable[[MoveProgress], None]


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
    replication: Replication | None = None  # of the switch, with a separate provider
    # Sieve scripts: what was copied ({name, bytes, active, sha256}; None: not copied, with
    # --no-sieve or when finishing an interrupted move), and what became of the old ones:
    # "deleted", "kept (--keep-old)", "not looked at (--no-sieve)"; None until cleanup.
    sieve_scripts: list[dict[str, Any]] | None = None
    sieve_old_copy: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = self.replication.as_dict() if self.replication is not None else {}
        return {
            **shown,
            "uid": self.uid,
            "from": self.source,
            "to": self.target,
            "messages": self.messages,
            "caught_up": self.caught_up,
            "folders": self.folders,
            "seconds": round(self.seconds, 3),
            "old_copy_deleted": self.old_copy_deleted,
            "old_copy_kept_as": self.old_copy_kept_as,
            "sieve_scripts": self.sieve_scripts,
            "sieve_copied": self.sieve_scripts is not None,
            "sieve_old_copy": self.sieve_old_copy,
            "warnings": self.warnings,
        }


class _Mover:
    def __init__(
        self,
        settings: ToolConfig,
        writer: LdapWriter,
        user: User,
        target: str,
        progress: Progress,
        no_sieve: bool = False,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.user = user
        self.target = target
        self.progress = progress
        self.attr = settings.directory.disabled_attribute
        self.report = MoveReport(user.uid, user.host, target)
        self.disabled = False
        self.copies: dict[bytes, FolderCopy] = {}  # by source folder name
        self.placements: dict[bytes, Placement] = {}  # source name -> where it goes
        self.namespaces: tuple[Namespace, Namespace] | None = None  # source's, target's
        self.target_touched = False  # from the first CREATE/APPEND there, even if it failed
        self.lease: movestate.MoveState | None = None
        self.marker: movestate.MoveState | None = None
        self.renewed = 0.0
        self.started = time.monotonic()
        self.phase = "copy"
        self.done_messages = self.total_messages = self.done_bytes = self.total_bytes = 0
        self.source_store = mailstore_for(settings, user.host)
        self.target_store = mailstore_for(settings, target)
        self.no_sieve = no_sieve
        self.sieve = None if no_sieve else endpoint(settings)
        self.sieve_touched = False  # from the first PUTSCRIPT on the target

    # -- admin endpoints ------------------------------------------------------------------

    def _proxies(self, action: str, strict: bool) -> None:
        s = self.settings
        self.report.warnings += admin_call(
            s.provision.admin_urls, s.admin_token, action, self.user.uid, strict
        )

    # -- LDAP: the move's state, in the user's entry (directory.movestate) ------------------

    def disable(self) -> None:
        """Take the lease: logins are refused while it lasts, and the copy renews it."""
        self.lease = movestate.lease(self.target, self.settings.provision.move_lease)
        self.writer.modify(self.user.dn, {self.attr: [(ADD, [self.lease.value()])]})
        self.renewed = time.monotonic()
        self.disabled = True
        self._replicated("logins disabled for the move")

    def renew(self) -> None:
        length = self.settings.provision.move_lease
        if self.lease is None or time.monotonic() - self.renewed < length / 4:
            return
        new = movestate.lease(self.target, length)
        ops = [(DELETE, [self.lease.value()]), (ADD, [new.value()])]
        self.writer.modify(self.user.dn, {self.attr: ops})
        self.lease, self.renewed = new, time.monotonic()

    def enable(self) -> None:
        assert self.lease is not None
        self.writer.modify(self.user.dn, {self.attr: [(DELETE, [self.lease.value()])]})
        self.disabled = False

    def switch(self) -> None:
        """``mailHost`` to the target and the lease traded for the cleanup marker, in one
        modify: there is no moment with the user enabled on the old host after the copy,
        nor one where a crash would forget that the old host still has a copy."""
        assert self.lease is not None
        self.marker = movestate.cleanup(self.user.host)
        host_attr = self.settings.directory.host_attribute
        ops = [(DELETE, [self.lease.value()]), (ADD, [self.marker.value()])]
        self.writer.modify(self.user.dn, {host_attr: [(REPLACE, [self.target])], self.attr: ops})
        self.disabled = False
        self.report.replication = self._replicated(f"mailHost switched to {self.target}")
        self.event("switched")

    def _replicated(self, done: str) -> Replication | None:
        """Wait (bounded) until the consumers the proxies read show the last write, so the
        flush that follows is not answered from a consumer that still has the old state."""
        replication = after_write(self.settings, self.writer, self.user.dn)
        if replication is not None:
            self.report.warnings += replication.warnings(f"{self.user.uid}: {done}")
        return replication

    def clear_marker(self) -> None:
        if self.marker is not None:
            self.writer.modify(self.user.dn, {self.attr: [(DELETE, [self.marker.value()])]})
            self.marker = None

    def event(
        self,
        phase: str,
        folder: bytes | None = None,
        scripts: list[dict[str, Any]] | None = None,
    ) -> None:
        self.progress(
            MoveProgress(
                self.user.uid,
                phase,
                _shown(folder) if folder is not None else None,
                self.done_messages,
                self.total_messages,
                self.done_bytes,
                self.total_bytes,
                time.monotonic() - self.started,
                tuple(scripts) if scripts is not None else None,
            )
        )

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
        if placement.exists:  # the target's INBOX or special-use folder (Cyrus says NO to
            if folder.subscribed:  # CREATE of an existing one, without ALREADYEXISTS)
                target.run(b"SUBSCRIBE", astring(placement.target, target.literal_plus))
        else:
            create_folder(target, placement.target, folder.subscribed, placement.use)
            self.placements[folder.name] = replace(placement, exists=True, use=None)
        return placement.target

    def _batch_done(self, messages: int, size: int) -> None:
        self.done_messages += messages
        self.done_bytes += size
        self.renew()
        self.event(self.phase)

    def copy_all(self, source: ImapClient, target: ImapClient) -> None:
        folders = list_folders(source)
        self.total_messages, self.total_bytes = totals(source, folders)
        self.place(source, target, folders)
        self.target_touched = True
        self.phase = "copy"
        for folder in folders:
            into = self._create(target, folder)
            if folder.selectable:
                self.event("copy", folder.name)
                self.copies[folder.name] = copy_folder(
                    source, target, folder, None, self._batch_done, into
                )

    def verify(self, target: ImapClient, only: set[bytes] | None = None) -> None:
        """Read the target back: per folder the count and the checksum over every message's
        digest (body, flags, internal date) must be the copy's (``only``: those folders)."""
        self.event("verify")
        for name, copy in self.copies.items():
            if only is not None and name not in only:
                continue
            self.renew()
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
        self.report.messages = sum(f["messages"] for f in self.report.folders.values())

    def catch_up(self, source: ImapClient, target: ImapClient) -> None:
        """Copy what reached the old backend since the copy (deliveries do not stop when
        logins do), then verify the folders that got something."""
        self.phase = "catch-up"
        self.event("catch-up")
        folders = [f for f in list_folders(source) if f.selectable]
        self.place(source, target, folders)
        grown = set()
        for folder in folders:
            before = self.copies.get(folder.name)
            if before is None:  # a folder made on the old backend during the move
                self._create(target, folder)
            into = self.placements[folder.name].target
            count = before.count if before else 0
            after = copy_folder(source, target, folder, before, self._batch_done, into)
            self.copies[folder.name] = after
            if after.count != count:
                self.report.caught_up += after.count - count
                grown.add(folder.name)
        if grown:
            self.verify_present(target, grown)

    def verify_present(self, target: ImapClient, names: set[bytes]) -> None:
        """After the switch the target gets new mail and the user may change flags there,
        so a folder is checked for containing every message copied, by content."""
        for name in names:
            copy = self.copies[name]
            into = self.placements[name].target
            there = Counter(d.split("|", 1)[0] for d in digests(target, into))
            wanted = Counter(d.split("|", 1)[0] for d in copy.digests)
            missing = sum((wanted - there).values())
            if missing:
                raise Unavailable(
                    f"verification failed: {missing} messages copied to folder "
                    f"{_shown(into)} on {self.target} are not there"
                )
            shown = {"to": _shown(into), "sha256": copy.checksum}
            self.report.folders.setdefault(_shown(name), shown)["messages"] = copy.count
        self.report.messages = sum(f["messages"] for f in self.report.folders.values())

    def recover(self, source: ImapClient, target: ImapClient) -> None:
        """After a move that died past its switch: copy whatever the old backend has that
        the new one lacks, compared by content (the copy's own record died with it, and
        the user may have changed flags on the new backend since)."""
        self.phase = "catch-up"
        self.event("catch-up")
        folders = [f for f in list_folders(source) if f.selectable]
        self.place(source, target, folders)
        for folder in folders:
            self._create(target, folder)
            into = self.placements[folder.name].target
            copied = copy_missing(source, target, folder, into, self._batch_done)
            self.report.caught_up += copied
            self.report.folders[_shown(folder.name)] = {"to": _shown(into), "copied": copied}

    # -- Sieve scripts (directory.provision.sievemove) -------------------------------------

    def sieve_source_check(self) -> bool:
        """Before anything changes: the old backend's ManageSieve answers, so no script is
        left behind unseen. True when the user has scripts there."""
        if self.sieve is None:
            self.report.warnings.append(
                f"Sieve scripts were not copied (--no-sieve): any the user has stay on "
                f"{self.user.host} (and are deleted with the old copy where the server does so)"
            )
            return False
        try:
            with self.source_store.open_sieve(self.user.uid, self.sieve) as client:
                return bool(client.listscripts())
        except SieveUnreachable as exc:
            raise Unavailable(
                f"cannot read the Sieve scripts (filters, vacation replies) of "
                f"{self.user.uid}: {exc}; nothing was changed. --no-sieve moves the mailbox "
                "without them"
            ) from None

    def sieve_target_check(self, needed: bool, stale: bool, force: bool) -> None:
        """The new backend's ManageSieve answers when there are scripts to copy, and holds
        none of the user's already (a stale partial copy is removed, others need --force)."""
        if self.sieve is None:
            return
        try:
            client = self.target_store.open_sieve(self.user.uid, self.sieve)
        except SieveUnreachable:
            if not needed:
                return  # nothing to copy, and nothing can be there to clash
            raise
        with client:
            there = client.listscripts()
            if there and not (stale or force):
                raise Refused(
                    f"{self.target} already holds {len(there)} Sieve scripts for "
                    f"{self.user.uid}; --force replaces them"
                )
            if there:
                delete_scripts(client, self.target)
                self.report.warnings.append(
                    f"{len(there)} Sieve scripts {self.target} held for {self.user.uid} were "
                    "removed (an interrupted move's, or replaced with --force)"
                )

    def copy_sieve(self) -> None:
        """Read every script from the old backend, write it to the new one under the same
        name, make the same one active, and read them all back."""
        if self.sieve is None:
            return
        self.renew()
        with self.source_store.open_sieve(self.user.uid, self.sieve) as client:
            scripts: list[SieveScript] = read_scripts(client)
        if scripts:
            self.sieve_touched = True
            with self.target_store.open_sieve(self.user.uid, self.sieve) as client:
                write_scripts(client, scripts, self.target)
                verify_scripts(client, scripts, self.target)
        self.report.sieve_scripts = [s.as_dict() for s in scripts]
        self.event("sieve", scripts=self.report.sieve_scripts)

    def delete_old_sieve(self) -> None:
        """Before the old mailbox goes: its scripts, which neither kind removes with it for
        certain (Dovecot keeps the sieve directory; see :meth:`Mailstore.sieve_login`)."""
        if self.sieve is None:
            self.report.sieve_old_copy = "not looked at (--no-sieve)"
            return
        with self.source_store.open_sieve(self.user.uid, self.sieve) as client:
            delete_scripts(client, self.user.host)
        self.report.sieve_old_copy = "deleted"

    # -- the whole move -------------------------------------------------------------------

    def rollback(self, cause: ProvisionError, target: ImapClient | None) -> ProvisionError:
        notes = []
        still_disabled = False
        if self.sieve_touched and self.sieve is not None:
            try:
                with self.target_store.open_sieve(self.user.uid, self.sieve) as client:
                    delete_scripts(client, self.target)
            except ProvisionError as exc:
                notes.append(
                    f"the Sieve scripts copied to {self.target} stay ({exc}; "
                    "a later move there needs --force)"
                )
        if target is not None and self.target_touched:
            target.logout()  # Cyrus empties a mailbox by deleting it: not while it is open
            try:
                self.target_store.reset(self.user.uid)
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

    def run(self, force: bool, keep_old: bool, stale: movestate.MoveState | None) -> MoveReport:
        source = self.source_store.open_user(self.user.uid)
        target: ImapClient | None = None
        try:
            has_scripts = self.sieve_source_check()
            # Cyrus: user.<uid> must exist first (with the user's quota, if it has one).
            self.target_store.create(self.user.uid, self.user.quota_kb)
            target = self.target_store.open_user(self.user.uid)
            leftover = {k: v for k, v in summary(target).items() if v or k != "INBOX"}
            if leftover and stale is not None and stale.host == self.target:
                # The partial copy of a move that died before its switch: nobody reads it.
                self.report.warnings.append(
                    f"an interrupted move to {self.target} left {sum(leftover.values())} "
                    "messages there; they were removed and the move starts again"
                )
            elif leftover and not force:
                raise Refused(
                    f"{self.target} already holds a mailbox for {self.user.uid} "
                    f"({sum(leftover.values())} messages in {len(leftover)} folders); "
                    "--force replaces it"
                )
            if leftover:
                target.logout()
                self.target_store.reset(self.user.uid)
                target = self.target_store.open_user(self.user.uid)
            self.sieve_target_check(
                has_scripts, stale is not None and stale.host == self.target, force
            )
            try:
                if stale is not None:
                    self.writer.modify(self.user.dn, {self.attr: [(DELETE, [stale.value()])]})
                self.disable()
                self._proxies("flush", strict=True)
                self._proxies("kick", strict=True)
                self.copy_all(source, target)
                self.verify(target)
                self.copy_sieve()
                self.switch()
            except BaseException as exc:  # Ctrl-C or a bug must roll back too
                cause = exc if isinstance(exc, ProvisionError) else _unexpected(exc)
                raise self.rollback(cause, target) from (None if cause is exc else exc)
            self._proxies("flush", strict=False)
            # Deliveries that looked up the old route just before the switch may still be
            # arriving there: give them a moment, then take whatever came.
            time.sleep(self.settings.provision.move_settle)
            self._finish(source, target, keep_old, self.catch_up)
        finally:
            for client in (source, target):
                if client is not None:
                    client.logout()
        self.report.seconds = time.monotonic() - self.started
        return self.report

    def resume(self, keep_old: bool) -> MoveReport:
        """Finish a move that died after its switch: the user is on the target already."""
        source = self.source_store.open_user(self.user.uid)
        try:
            target = self.target_store.open_user(self.user.uid)
            try:
                self._finish(source, target, keep_old, self.recover)
            finally:
                target.logout()
        finally:
            source.logout()
        self.report.seconds = time.monotonic() - self.started
        return self.report

    def _finish(
        self,
        source: ImapClient,
        target: ImapClient,
        keep_old: bool,
        catch_up: Callable[[ImapClient, ImapClient], None],
    ) -> None:
        """Catch up, then delete the old copy; any failure keeps it, with the cleanup
        marker left in the entry so that running the move again finishes the job."""
        try:
            catch_up(source, target)
        except ProvisionError as exc:
            self.report.warnings.append(
                f"catching up mail delivered during the move failed ({exc}); the old copy "
                f"on {self.user.host} is kept: run the same move again to finish it"
            )
            return
        if keep_old:
            self.clear_marker()
            self.report.old_copy_kept_as = f"{self.user.host} (--keep-old)"
            if self.sieve is not None:
                self.report.sieve_old_copy = "kept (--keep-old)"
            self.event("done")
            return
        self.phase = "cleanup"
        self.event("cleanup")
        source.logout()  # its mailbox is about to go
        try:
            self.delete_old_sieve()
        except ProvisionError as exc:
            self.report.warnings.append(
                f"deleting the old Sieve scripts on {self.user.host}: {exc}; the old copy is "
                "kept: run the same move again to finish it (--no-sieve leaves the scripts)"
            )
            return
        try:
            removal = self.source_store.delete(self.user.uid)
        except ProvisionError as exc:
            self.report.warnings.append(
                f"deleting the old copy on {self.user.host}: {exc}; run the same move "
                "again to finish it"
            )
            return
        self.report.old_copy_deleted = removal.kept_as is None
        if removal.kept_as is not None:
            self.report.old_copy_kept_as = removal.kept_as
            self.report.warnings.append(
                f"{self.user.host} keeps the old mailbox as {removal.kept_as} until it "
                "expires it (Cyrus delete_mode: delayed)"
            )
        self.clear_marker()
        self.event("done")


def _shown(name: bytes) -> str:
    return name.decode("utf-8", "replace")


def _unexpected(exc: BaseException) -> ProvisionError:
    if isinstance(exc, KeyboardInterrupt):
        return Refused("interrupted")
    return Unavailable(f"unexpected {type(exc).__name__}: {exc}")


def require_move_attribute(settings: ToolConfig) -> None:
    """A move keeps its lease and marker in ``[directory] disabled_attribute``."""
    if not settings.directory.disabled_attribute:
        raise ConfigError(
            settings.path,
            "directory",
            "disabled_attribute",
            "must be set for moves: logins are refused through it while mail is copied",
        )


def move_user(
    settings: ToolConfig,
    writer: LdapWriter,
    login: str,
    target: str,
    force: bool = False,
    progress: Progress | None = None,
    keep_old: bool = False,
    no_sieve: bool = False,
) -> MoveReport:
    """Move ``login``'s mailbox to ``target`` (a mailHost value); see the module docstring.

    Run again after a move that died, it finishes that move (it had switched) or undoes
    its partial copy and starts again (it had not). ``force`` moves a user whose logins
    are disabled, or whose earlier move may still be running, and replaces whatever the
    target holds for the user. ``keep_old`` leaves the old copy where it is (Sieve scripts
    included). ``no_sieve`` moves without the user's Sieve scripts (for a backend without
    ManageSieve): they are neither copied nor deleted, and the report says so.
    """
    require_move_attribute(settings)
    user = find_user(settings, writer, login)
    entry = writer.get(user.dn, (settings.directory.disabled_attribute,))
    found = movestate.states(entry.values(settings.directory.disabled_attribute) if entry else [])
    cleanup = next((m for m in found if m.kind == movestate.CLEANUP), None)
    lease = next((m for m in found if m.kind == movestate.LEASE), None)
    report = progress or (lambda event: None)
    if user.host == target:
        if cleanup is None:
            raise Refused(f"{user.uid} is on {target} already")
        # The move switched and then died: finish it from the old host the marker names.
        mover = _Mover(settings, writer, replace(user, host=cleanup.host), target, report, no_sieve)
        mover.marker = cleanup
        return mover.resume(keep_old)
    if cleanup is not None:
        raise Refused(
            f"{user.uid} still has an old copy on {cleanup.host} from an earlier move: "
            f"finish that first (mailfarm user move {user.uid} --to {user.host})"
        )
    if lease is not None and lease.live() and not force:
        until = time.strftime("%H:%M:%S", time.localtime(lease.until))
        raise Refused(
            f"a move of {user.uid} to {lease.host} is running (its lease lasts until "
            f"{until}); if its command died, run this again after then"
        )
    disabled_otherwise = any(
        means_disabled(v) and movestate.parse(v) is None
        for v in (entry.values(settings.directory.disabled_attribute) if entry else [])
    )
    if disabled_otherwise and not force:
        raise Refused(
            f"logins of {user.uid} are disabled ({settings.directory.disabled_attribute}): "
            "--force moves it anyway (and it stays disabled)"
        )
    mover = _Mover(settings, writer, user, target, report, no_sieve)
    return mover.run(force, keep_old, lease)
