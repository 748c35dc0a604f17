"""What a load test costs the server: memory and CPU of processes, read from /proc (Linux).

PSS (proportional set size, from ``smaps_rollup``) rather than RSS: Dovecot and mailfarm
fork or share libraries, and RSS counts every shared page once per process, so a tree of
processes would look several times larger than it is. RSS is the fallback where
``smaps_rollup`` is missing (kernels before 4.14) or unreadable.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def children_map(proc: Path = PROC) -> dict[int, list[int]]:
    """ppid → pids, from one scan of /proc."""
    tree: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = _stat_fields((entry / "stat").read_text())[1]
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        tree.setdefault(int(ppid), []).append(int(entry.name))
    return tree


def expand_pids(pids: Iterable[int], tree: bool, proc: Path = PROC) -> list[int]:
    """The pids themselves, plus every descendant when ``tree``; sorted, without repeats."""
    found = set(pids)
    if tree:
        kids = children_map(proc)
        todo = list(found)
        while todo:
            for child in kids.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return sorted(found)


def _stat_fields(text: str) -> list[str]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces or ')')."""
    return text[text.rindex(")") + 2 :].split()


@dataclass(frozen=True, slots=True)
class MemoryReading:
    kb: int
    kind: str  # "pss", "rss" or "mixed" (some processes without smaps_rollup)
    processes: int


def _memory_kb(pid: int, proc: Path) -> tuple[int, str] | None:
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]), "pss"
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]), "rss"
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory(pids: Iterable[int], tree: bool = False, proc: Path = PROC) -> MemoryReading | None:
    """Total PSS (else RSS) of the processes now, re-expanding the tree on every call.

    Re-expanding matters: Dovecot forks one imap process per session, so the tree measured
    while holding sessions has many more members than the one measured before.
    """
    total, kinds, count = 0, set(), 0
    for pid in expand_pids(pids, tree, proc):
        reading = _memory_kb(pid, proc)
        if reading is None:
            continue
        total += reading[0]
        kinds.add(reading[1])
        count += 1
    if not count:
        return None
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    return MemoryReading(total, kind, count)


def cpu_seconds(pids: Iterable[int], tree: bool = False, proc: Path = PROC) -> float | None:
    """utime+stime (+ cutime+cstime of reaped children) of the processes, in seconds.

    Counting reaped children's time is what makes a difference of two readings right for a
    tree: a child that exits between them moves its time into its parent's cutime, which we
    count, while its own entry disappears.
    """
    ticks, seen = 0, 0
    for pid in expand_pids(pids, tree, proc):
        try:
            fields = _stat_fields((proc / str(pid) / "stat").read_text())
            utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
        except (OSError, ValueError, IndexError):
            continue
        ticks += utime + stime + (cutime + cstime if tree else 0)
        seen += 1
    if not seen:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_by_root(pids: Iterable[int], tree: bool = False, proc: Path = PROC) -> dict[int, float]:
    """:func:`cpu_seconds` of each given process (with its tree), so a run watching mailfarm,
    slapd and Dovecot at once can say which of them the CPU went to."""
    out = {}
    for pid in pids:
        seconds = cpu_seconds([pid], tree, proc)
        if seconds is not None:
            out[pid] = seconds
    return out


def process_name(pid: int, proc: Path = PROC) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def check_pids(pids: Iterable[int], proc: Path = PROC) -> list[int]:
    """The pids that do not exist, so the operator learns of a typo before the run."""
    return [pid for pid in pids if not (proc / str(pid)).exists()]


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard limit; return (soft, hard) in force.

    Every concurrent connection costs the client one descriptor, and the default soft limit
    (often 1024) would otherwise cap a test of thousands of sessions with EMFILE.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0
