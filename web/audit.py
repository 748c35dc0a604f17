"""The audit log: who changed what, when, from where, through the console or the API.

Every change made through :mod:`web.service` passes through :meth:`Audit.change`, so the
console and the API cannot forget to record one. An entry holds names (the staff member
or token line, the object, the client's address), never a value that was set: a password
typed into a form must not end up in a file that the help desk can read.

Entries are appended as JSON lines to ``[web] audit_log`` (mode 0600) when one is set,
and the newest are kept in memory for the console's page; the file's tail is read back at
start so a restart does not empty that page.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web.tokens import Principal

KEEP = 5000  # entries the console can page through
READ_BACK = 4 * 1024 * 1024  # bytes of the file's tail read at start
log = logging.getLogger("mailfarm.web")


@dataclass(frozen=True, slots=True)
class Actor:
    """A principal and where its request came from: what an audit entry is tied to."""

    principal: Principal
    ip: str
    via: str  # "api" or "console"

    def owns(self, domain: str) -> bool:
        return self.principal.owns(domain)


class Audit:
    def __init__(self, path: Path | None = None, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._entries: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._lock = threading.Lock()
        if path is not None:
            self._read_back(path)

    def _read_back(self, path: Path) -> None:
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - READ_BACK))
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("web: audit log %s unreadable: %s", path, exc.strerror)
            return
        if size > READ_BACK:
            lines = lines[1:]  # the first is cut
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                self._entries.append(entry)

    def record(
        self,
        actor: Actor,
        action: str,
        target: str,
        domain: str | None,
        outcome: str,
        detail: str = "",
    ) -> dict[str, Any]:
        entry = {
            "time": self._clock(),
            "who": actor.principal.source,
            "role": actor.principal.role,
            "from": actor.ip,
            "via": actor.via,
            "action": action,
            "target": target,
            "domain": domain,
            "outcome": outcome,
            "detail": detail,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._entries.append(entry)
            if self.path is not None:
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "a", encoding="utf-8") as f:
                        f.write(line)
                except OSError as exc:
                    log.error("web: audit log %s not written: %s", self.path, exc.strerror)
        return entry

    @contextmanager
    def change(
        self, actor: Actor, action: str, target: str, domain: str | None
    ) -> Iterator[dict[str, str]]:
        """Record the change's outcome, refused or failed ones too; the body may add a
        ``detail`` (e.g. the move's job id) through the yielded dict."""
        note: dict[str, str] = {}
        try:
            yield note
        except Exception as exc:
            status = getattr(exc, "status", None)
            outcome = f"failed: {type(exc).__name__}" if status is None else f"failed: {status}"
            self.record(actor, action, target, domain, outcome, note.get("detail", ""))
            raise
        self.record(actor, action, target, domain, "ok", note.get("detail", ""))

    def entries(
        self, actor: Actor, q: str = "", limit: int = 200, before: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; a domain admin sees only its domains' entries."""
        with self._lock:
            found = list(self._entries)
        out = []
        for number, entry in reversed(list(enumerate(found))):
            if before is not None and number >= before:
                continue
            domain = entry.get("domain")
            if actor.principal.role == "domain-admin" and (not domain or not actor.owns(domain)):
                continue
            if q and not any(q.lower() in str(v).lower() for v in entry.values()):
                continue
            out.append({"n": number, **entry})
            if len(out) >= limit:
                break
        return out
