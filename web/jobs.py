"""Long operations (a mailbox move) run in a thread; the API hands out a job id to poll.

Jobs live in memory: a restart of ``mailfarm web`` forgets them, and a move interrupted so
is finished or undone by running it again (see :mod:`directory.provision.move`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KEEP_FINISHED = 3600.0  # seconds a finished job stays readable
RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class Job:
    id: str
    kind: str
    domain: str  # whose job it is, for a domain-admin's permission check
    subject: str
    state: str = RUNNING
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "state": self.state,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
        }


Work = Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]]


class Jobs:
    def __init__(self, describe: Callable[[Exception], dict[str, Any]]) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._describe = describe  # an exception -> the problem object clients see

    def start(self, kind: str, domain: str, subject: str, work: Work) -> Job:
        """Run ``work(report)`` in a thread; ``report(dict)`` updates the job's progress."""
        job = Job(secrets.token_urlsafe(12), kind, domain, subject)
        with self._lock:
            self._prune()
            self._jobs[job.id] = job

        def report(progress: dict[str, Any]) -> None:
            with self._lock:
                job.progress = dict(progress)

        def run() -> None:
            try:
                result = work(report)
            except Exception as exc:  # a ProvisionError, or a bug: the job says which
                outcome: tuple[str, Any, Any] = (FAILED, None, self._describe(exc))
            else:
                outcome = (DONE, result, None)
            with self._lock:
                job.state, job.result, job.error = outcome
                job.finished = time.time()

        threading.Thread(target=run, name=f"job-{kind}-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else {"domain": job.domain, **job.as_dict()}

    def _prune(self) -> None:
        now = time.time()
        old = [k for k, j in self._jobs.items() if j.finished and now - j.finished > KEEP_FINISHED]
        for key in old:
            del self._jobs[key]
