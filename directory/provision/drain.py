"""Batch moves: draining a backend onto another, or moving a list of users, several at once.

A batch is only many :func:`~directory.provision.move.move_user` calls, so it inherits
their safety: each user's move keeps its own lease or cleanup marker in the user's entry
(:mod:`directory.movestate`) and running the same move again finishes or undoes it. That
is what makes a batch resumable without a state file of its own:

* ``--from HOST`` selects from LDAP each time: a user already moved is no longer on the
  source and is not picked again, while a user whose move switched and then died carries
  ``mailfarm-move-cleanup from=HOST`` and is picked (first) so that its move is finished.
* ``--list FILE`` names the users; one already on the target with no cleanup marker is
  *skipped*, not failed, so the same file can be run again after an interruption.

Moves run in threads, each with its own :class:`LdapWriter` (an ldap3 connection is not
shared between threads); the IMAP work is the slow part and is all socket waiting, so
threads are enough. One user's failure never stops the others: every user gets a result.

Ctrl-C stops taking new users and waits for the running moves (each is a consistent unit;
cutting one short would leave it to its lease); a second Ctrl-C abandons them, which is
safe too (their leases expire and the next run resumes them), only slower to recover.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from common.configschema import ConfigError
from directory import movestate
from directory.names import escape_filter_value
from directory.provision import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    NotFound,
    ProvisionError,
    Refused,
    UsageError,
)
from directory.provision.dns import check_domain
from directory.provision.dnsstore import domain_dn
from directory.provision.ldapwrite import LdapWriter
from directory.provision.move import (
    MoveProgress,
    MoveReport,
    Progress,
    move_user,
    require_move_attribute,
)
from directory.provision.users import find_user, user_attributes, user_from_entry
from directory.settings import ToolConfig

#: How many moves may run at once: each holds two IMAP sessions (one per backend) and
#: an LDAP connection, and the backends are serving their users meanwhile.
MAX_JOBS = 16
DEFAULT_JOBS = 2

MOVED, SKIPPED, FAILED = "moved", "skipped", "failed"


# -- which users -----------------------------------------------------------------------


def parse_list(text: str) -> list[str]:
    """The logins of a ``--list`` file: one uid or address a line; ``#`` starts a comment
    (at the start of a line or after a blank: ``#`` is legal inside an address's local
    part). Repeats are dropped, ignoring case (logins are matched without it), so a list
    assembled from several sources cannot start two moves of one user.
    """
    logins: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        cut = min((i for i in (line.find(" #"), line.find("\t#")) if i >= 0), default=-1)
        if cut >= 0:
            line = line[:cut].rstrip()
        if not line:
            continue
        if len(line.split()) != 1:
            raise UsageError(f"line {number}: {line!r} is not one uid or address")
        key = line.lower()
        if key not in seen:
            seen.add(key)
            logins.append(line)
    return logins


def select_source(
    settings: ToolConfig,
    writer: LdapWriter,
    source: str,
    domain: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """The uids a drain of ``source`` has left to do: users whose mailHost is ``source``,
    and users an interrupted move from ``source`` left with a cleanup marker (their
    mailHost is already the new one, but the old copy still has to be caught up and
    deleted). Those come first, so a ``limit`` never postpones a half-done move; the rest
    by uid, so that successive limited runs walk through the backend in a stable order.
    """
    require_move_attribute(settings)  # the marker search below reads it
    d = settings.directory
    host = escape_filter_value(source)
    marker = escape_filter_value(movestate.cleanup(source).value())
    search_filter = (
        f"(&(objectClass=inetLocalMailRecipient)"
        f"(|({d.host_attribute}={host})({d.disabled_attribute}={marker})))"
    )
    if domain is not None:
        zone = domain_dn(writer, check_domain(domain))
        if writer.get(zone, ("1.1",)) is None:
            raise NotFound(f"domain {domain}: no such domain")
        base = f"ou=users,{zone}"
    else:
        base = writer.base
    try:
        entries = list(writer.search(base, search_filter, "sub", user_attributes(settings)))
    except NotFound:  # a domain without its ou=users yet
        entries = []
    picked: list[tuple[bool, str]] = []
    for entry in entries:
        user = user_from_entry(entry, settings)
        if not user.uid:
            continue
        states = movestate.states(entry.values(d.disabled_attribute))
        unfinished = any(s.kind == movestate.CLEANUP and s.host == source for s in states)
        picked.append((not unfinished, user.uid))
    picked.sort()
    uids = [uid for _, uid in picked]
    return uids[:limit] if limit is not None else uids


# -- results ---------------------------------------------------------------------------


@dataclass
class UserResult:
    """What became of one selected user; ``exit_code`` is the CLI's code for a failure."""

    login: str  # as selected (a uid for --from, the file's text for --list)
    status: str  # MOVED, SKIPPED or FAILED
    uid: str | None = None
    reason: str | None = None  # why skipped
    error: str | None = None
    exit_code: int = EXIT_OK
    seconds: float = 0.0
    report: MoveReport | None = None
    resumed: bool = False  # it finished a move that had switched and then died

    @property
    def messages(self) -> int:
        """Messages that reached the target: a full move's verified count (which includes
        what it caught up), or for a finished interrupted move what it copied then."""
        if self.report is None:
            return 0
        return max(self.report.messages, self.report.caught_up)

    @property
    def warnings(self) -> list[str]:
        return self.report.warnings if self.report is not None else []

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"login": self.login, "uid": self.uid, "status": self.status}
        if self.report is not None:
            out.update(self.report.as_dict())
            out["messages"] = self.messages
            out["resumed"] = self.resumed
        if self.reason is not None:
            out["reason"] = self.reason
        if self.error is not None:
            out["error"] = self.error
        out["exit"] = self.exit_code
        out["seconds"] = round(self.report.seconds if self.report else self.seconds, 3)
        return out


@dataclass
class DrainReport:
    target: str
    source: str | None  # --from's host; None for a --list batch
    results: list[UserResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def messages(self) -> int:
        return sum(r.messages for r in self.results)

    @property
    def rate(self) -> float:
        """Messages per second of wall time: what the batch as a whole achieved."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def exit_code(self) -> int:
        """0 if every user moved or was skipped, else the worst failure's (as ``import``)."""
        return max((r.exit_code for r in self.results if r.status == FAILED), default=EXIT_OK)

    def summary(self) -> str:
        line = (
            f"{self.count(MOVED)} moved, {self.count(SKIPPED)} skipped, "
            f"{self.count(FAILED)} failed: {self.messages} messages in {self.seconds:.1f} s "
            f"({self.rate:.1f} messages/s)"
        )
        return line + ("; interrupted" if self.interrupted else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "moved": self.count(MOVED),
            "skipped": self.count(SKIPPED),
            "failed": self.count(FAILED),
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.rate, 1),
            "interrupted": self.interrupted,
            "users": [r.as_dict() for r in self.results],
        }


Done = Callable[[UserResult, int, int], None]  # a result, how many are done, of how many


# -- running them ----------------------------------------------------------------------


class _Batch:
    def __init__(
        self,
        settings: ToolConfig,
        logins: list[str],
        target: str,
        force: bool,
        keep_old: bool,
        progress: Progress,
        done: Done,
        no_sieve: bool = False,
    ) -> None:
        self.settings = settings
        self.no_sieve = no_sieve
        self.logins = logins
        self.target = target
        self.force = force
        self.keep_old = keep_old
        self.progress = progress
        self.on_done = done
        self.pending = deque(range(len(logins)))
        self.results: list[UserResult | None] = [None] * len(logins)
        self.claimed: dict[str, int] = {}  # uid -> index of the login that moves it
        self.finished = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def worker(self) -> None:
        with LdapWriter(self.settings) as writer:
            while not self.stop.is_set():
                with self.lock:
                    if not self.pending:
                        return
                    index = self.pending.popleft()
                started = time.monotonic()
                try:
                    result = self.one(writer, index)
                except ProvisionError as exc:  # no such user, LDAP unavailable...
                    result = UserResult(
                        self.logins[index], FAILED, error=str(exc), exit_code=exc.exit_code
                    )
                except Exception as exc:  # a bug in one move must not end the others
                    result = UserResult(
                        self.logins[index],
                        FAILED,
                        error=f"unexpected {type(exc).__name__}: {exc}",
                        exit_code=EXIT_UNAVAILABLE,
                    )
                if result.report is None:
                    result.seconds = time.monotonic() - started
                self.record(index, result)

    def one(self, writer: LdapWriter, index: int) -> UserResult:
        login = self.logins[index]
        user = find_user(self.settings, writer, login)
        with self.lock:
            first = self.claimed.setdefault(user.uid, index)
        if first != index:
            return UserResult(
                login, SKIPPED, user.uid, f"listed twice (also as {self.logins[first]})"
            )
        attr = self.settings.directory.disabled_attribute
        entry = writer.get(user.dn, (attr,))
        states = movestate.states(entry.values(attr) if entry else [])
        cleanup = any(s.kind == movestate.CLEANUP for s in states)
        if user.host == self.target and not cleanup:
            return UserResult(login, SKIPPED, user.uid, "already there")
        try:
            report = move_user(
                self.settings,
                writer,
                user.uid,
                self.target,
                self.force,
                self.progress,
                keep_old=self.keep_old,
                no_sieve=self.no_sieve,
            )
        except ProvisionError as exc:
            return UserResult(login, FAILED, user.uid, error=str(exc), exit_code=exc.exit_code)
        except ConfigError as exc:
            return UserResult(login, FAILED, user.uid, error=str(exc), exit_code=EXIT_USAGE)
        resumed = user.host == self.target
        return UserResult(login, MOVED, user.uid, report=report, resumed=resumed)

    def record(self, index: int, result: UserResult) -> None:
        with self.lock:
            self.results[index] = result
            self.finished += 1
            finished = self.finished
        self.on_done(result, finished, len(self.logins))

    def run(self, jobs: int, note: Callable[[str], None]) -> bool:
        """Run every move; True if Ctrl-C stopped the batch before its end."""
        threads = [
            threading.Thread(target=self.worker, name=f"move-{i}", daemon=True)
            for i in range(min(jobs, len(self.logins)))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
            return False
        except KeyboardInterrupt:
            self.stop.set()
            running = sum(t.is_alive() for t in threads)
            note(
                f"interrupted: starting no more moves, waiting for the {running} running now "
                "to end (Ctrl-C again abandons them; the same command run again resumes them)"
            )
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            raise Refused(
                "interrupted again: the running moves were abandoned mid-way; their leases "
                "expire after [provision] move_lease, then running the same command again "
                "finishes or undoes each of them"
            ) from None
        return True

    def not_started(self) -> None:
        for index in self.pending:
            self.results[index] = UserResult(
                self.logins[index], FAILED, error="not started: interrupted", exit_code=EXIT_REFUSED
            )


def move_many(
    settings: ToolConfig,
    logins: list[str],
    target: str,
    *,
    source: str | None = None,
    jobs: int = DEFAULT_JOBS,
    force: bool = False,
    keep_old: bool = False,
    progress: Progress | None = None,
    done: Done | None = None,
    note: Callable[[str], None] | None = None,
    no_sieve: bool = False,
) -> DrainReport:
    """Move each of ``logins`` to ``target``, ``jobs`` at a time; see the module docstring.

    ``progress`` gets every move's events and ``done`` each user's result as it comes, from
    the worker threads (they must be thread-safe); ``source`` is only reported.
    """
    require_move_attribute(settings)  # once for the batch, not per user
    if not 1 <= jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be between 1 and {MAX_JOBS}")
    batch = _Batch(
        settings,
        logins,
        target,
        force,
        keep_old,
        progress or (lambda event: None),
        done or (lambda result, finished, total: None),
        no_sieve,
    )
    started = time.monotonic()
    interrupted = batch.run(jobs, note or (lambda text: None))
    if interrupted:
        batch.not_started()
    results = [r for r in batch.results if r is not None]
    return DrainReport(target, source, results, time.monotonic() - started, interrupted)


# -- showing it ------------------------------------------------------------------------


def done_line(result: UserResult, finished: int, total: int) -> str:
    """One line for a finished user (pure, so it can be tested)."""
    name = result.uid or result.login
    if result.status == MOVED:
        assert result.report is not None
        how = ", finishing an interrupted move" if result.resumed else ""
        what = f"moved {result.messages} messages in {result.report.seconds:.1f} s{how}"
    elif result.status == SKIPPED:
        what = f"skipped ({result.reason})"
    else:
        what = f"FAILED: {result.error}"
    return f"{name}: {what} ({finished}/{total})"


class BatchView:
    """A batch's progress on stderr: a line per finished user (and its warnings), or with
    ``json_events`` every move's progress events and a ``user-done`` event per user, one
    JSON object a line. Called from the worker threads: each line is written whole."""

    def __init__(self, stream: TextIO, json_events: bool) -> None:
        self.stream = stream
        self.json_events = json_events
        self.lock = threading.Lock()

    def _write(self, lines: list[str]) -> None:
        with self.lock:
            self.stream.write("".join(line + "\n" for line in lines))
            self.stream.flush()

    def progress(self, event: MoveProgress) -> None:
        if self.json_events:
            self._write([json.dumps(event.as_dict())])

    def done(self, result: UserResult, finished: int, total: int) -> None:
        if self.json_events:
            event = {
                "event": "user-done",
                "uid": result.uid,
                "login": result.login,
                "status": result.status,
                "messages": result.messages,
                "seconds": round(result.report.seconds if result.report else result.seconds, 3),
                "done": finished,
                "total": total,
                "exit": result.exit_code,
            }
            for key, value in (("reason", result.reason), ("error", result.error)):
                if value is not None:
                    event[key] = value
            if result.warnings:
                event["warnings"] = result.warnings
            self._write([json.dumps(event)])
            return
        name = result.uid or result.login
        warnings = [f"mailfarm: warning: {name}: {w}" for w in result.warnings]
        self._write([done_line(result, finished, total), *warnings])

    def note(self, text: str) -> None:
        if self.json_events:
            self._write([json.dumps({"event": "note", "message": text})])
        else:
            self._write([f"mailfarm: {text}"])
