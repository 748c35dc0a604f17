"""One bench run from start to result: rounds for each mode, then one JSON-able document.

The document is the single source for every output (text, ``--json``, ``--report``), so
the three can never disagree; :mod:`bench.report` only renders it.
"""

from __future__ import annotations

import asyncio
import datetime
import signal
import smtplib
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from bench.clients import Endpoint
from bench.idle import IdlePlan, IdleRound, idle_round
from bench.load import (
    Clock,
    Options,
    Recorder,
    Round,
    Stop,
    fetch_worker,
    logins_worker,
    plan_rounds,
    run_rounds,
    submit_worker,
)
from bench.patterns import Credential
from bench.procstat import process_name
from bench.stats import (
    bucket_width,
    common_edges,
    histogram,
    rate,
    ratio,
    timeline,
    weighted_timeline,
)


@dataclass(frozen=True)
class Watch:
    """The processes behind one target whose CPU and memory the run reports."""

    cpu_pids: tuple[int, ...] = ()
    memory_pids: tuple[int, ...] = ()
    tree: bool = False


@dataclass(frozen=True)
class Spec:
    mode: str  # "logins" | "idle" | "fetch" | "submit"
    targets: tuple[Endpoint, ...]
    users: tuple[Credential, ...]
    users_source: str
    workers: int
    options: Options
    duration: float | None = None
    requests: int | None = None
    round_seconds: float = 5.0
    rounds: int = 2
    max_time: float = 600.0
    size: int = 0  # fetch, submit
    sessions: int = 0  # idle
    rate: float = 100.0  # idle
    hold: float = 10.0  # idle
    settle: float = 0.0  # idle
    watches: tuple[Watch, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)


class Progress:
    """One self-overwriting status line on stderr (carriage return, no curses)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.text = ""
        self.width = 0

    def show(self, text: str) -> None:
        self.text = text
        if self.stream is None:
            return
        padded = text.ljust(self.width)
        self.width = len(text)
        self.stream.write("\r" + padded)
        self.stream.flush()

    def finish(self) -> None:
        if self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def make_message(size: int, marker: str) -> bytes:
    """A plain message of exactly ``size`` bytes (CRLF lines of 76 characters)."""
    head = (
        f"From: bench@mailfarm.test\r\nTo: bench@mailfarm.test\r\n"
        f"Subject: mailfarm bench {size} bytes {marker}\r\n"
        f"Message-ID: <{marker}@bench.mailfarm.test>\r\n\r\n"
    ).encode()
    body_size = max(0, size - len(head))
    line = b"x" * 74 + b"\r\n"
    full, rest = divmod(body_size, len(line))
    tail = b"y" * max(0, rest - 2) + b"\r\n" if rest >= 2 else b"z" * rest
    return head + line * full + tail


def deliver_lmtp(host: str, port: int, recipients: list[str], message: bytes) -> None:
    """Put the test message in each recipient's INBOX (blocking; run before the load).

    One transaction per recipient: LMTP answers DATA once per recipient, and smtplib reads
    only one answer, so a multi-recipient transaction would leave replies unread.
    """
    with smtplib.LMTP(host, port, timeout=60) as lmtp:
        for rcpt in recipients:
            refused = lmtp.sendmail("bench@mailfarm.test", [rcpt], message)
            if refused:
                raise RuntimeError(f"LMTP refused: {refused}")


async def run(spec: Spec, progress: Progress) -> dict[str, Any]:
    """Run every round; the first Ctrl-C ends the run early, with a report of what was done."""
    stop = Stop()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        stop.request()
        progress.show("stopping: letting operations in flight finish (Ctrl-C again aborts)")
        loop.remove_signal_handler(signal.SIGINT)  # the second Ctrl-C is KeyboardInterrupt

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        pass
    try:
        doc = await _run(spec, progress, stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    doc["interrupted"] = stop.requested
    return doc


async def _run(spec: Spec, progress: Progress, stop: Stop) -> dict[str, Any]:
    clock = Clock()
    recorders = []
    for index, endpoint in enumerate(spec.targets):
        watch = spec.watches[index] if index < len(spec.watches) else Watch()
        rec = Recorder(endpoint, cpu_pids=watch.cpu_pids, cpu_tree=watch.tree)
        rec.cpu = 0.0 if watch.cpu_pids else None
        recorders.append(rec)
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    spans: list[tuple[int, float, float]] = []
    idle_rounds: list[list[IdleRound]] = [[] for _ in spec.targets]
    if spec.mode == "idle":
        for index in _idle_order(len(spec.targets), spec.rounds):
            if stop.requested:
                break
            watch = spec.watches[index] if index < len(spec.watches) else Watch()
            plan = IdlePlan(
                spec.sessions,
                spec.rate,
                spec.hold,
                spec.workers,
                watch.memory_pids,
                watch.tree,
                spec.settle,
                stop,
            )
            label = spec.targets[index].name

            def status(text: str, label: str = label) -> None:
                progress.show(f"[{label}] {text}")

            t0 = clock.now()
            result = await idle_round(
                recorders[index], clock, spec.users, plan, spec.options, status
            )
            idle_rounds[index].append(result)
            spans.append((index, t0, clock.now()))
    else:
        rounds = plan_rounds(
            len(spec.targets), spec.duration, spec.requests, spec.round_seconds, spec.rounds
        )
        current = [0]  # index of the round under way, for the status line
        ticker = asyncio.create_task(_tick(recorders, rounds, clock, progress, current))
        try:
            spans = await run_rounds(
                recorders,
                rounds,
                spec.workers,
                _starter(spec, clock),
                spec.max_time,
                on_round=lambda i, r, t: current.__setitem__(0, i),
                stop=stop,
            )
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
    progress.finish()
    return build_document(spec, recorders, spans, idle_rounds, clock.now(), started_at)


def _idle_order(targets: int, rounds: int) -> list[int]:
    return [t for _ in range(max(1, rounds if targets > 1 else 1)) for t in range(targets)]


def _starter(spec: Spec, clock: Clock) -> Callable[[Recorder, Any, int], asyncio.Task[None]]:
    def start(rec: Recorder, gate: Any, worker: int) -> asyncio.Task[None]:
        if spec.mode == "fetch":
            user = spec.users[worker % len(spec.users)]
            coro = fetch_worker(rec, gate, clock, user, spec.options, spec.size)
        elif spec.mode == "submit":
            coro = submit_worker(rec, gate, clock, spec.users, spec.options, worker)
        else:
            coro = logins_worker(rec, gate, clock, spec.users, spec.options, worker)
        return asyncio.create_task(coro)

    return start


async def _tick(
    recorders: list[Recorder],
    rounds: list[Round],
    clock: Clock,
    progress: Progress,
    current: list[int],
) -> None:
    last = {id(r): 0 for r in recorders}
    last_t = clock.now()
    while True:
        await asyncio.sleep(0.5)
        now = clock.now()
        index = current[0]
        rec = recorders[rounds[min(index, len(rounds) - 1)].target]
        per_s = (rec.ok - last[id(rec)]) / max(now - last_t, 1e-6)
        last = {id(r): r.ok for r in recorders}
        last_t = now
        parts = [f"round {index + 1}/{len(rounds)} [{rec.endpoint.name}]", f"{now:6.1f}s"]
        for r in recorders:
            parts.append(f"{r.endpoint.name}: ok {r.ok} err {sum(r.errors.values())}")
        parts.append(f"{per_s:,.0f}/s")
        progress.show("  ".join(parts))


def _summary_ms(samples: Any) -> dict[str, float] | None:
    summary = samples.summary()
    return summary.scaled(1000.0) if summary else None


def build_document(
    spec: Spec,
    recorders: list[Recorder],
    spans: list[tuple[int, float, float]],
    idle_rounds: list[list[IdleRound]],
    elapsed: float,
    started_at: str,
) -> dict[str, Any]:
    width = bucket_width(elapsed)
    edges = common_edges([rec.latency.values for rec in recorders])
    targets = []
    for index, rec in enumerate(recorders):
        doc = _target_doc(spec, index, rec, width, elapsed, edges)
        if spec.mode == "idle":
            doc["idle"] = _idle_doc(idle_rounds[index])
        targets.append(doc)
    return {
        "tool": "mailfarm bench",
        "mode": spec.mode,
        "started": started_at,
        "elapsed_s": elapsed,
        "users": {"count": len(spec.users), "source": spec.users_source},
        "settings": spec.settings,
        "targets": targets,
        "rounds": [{"target": t, "start_s": a, "end_s": b} for t, a, b in spans],
        "comparison": compare(spec.mode, targets[:2]) if len(targets) >= 2 else None,
        # A against every other target: with --compare2, the peer and the ceiling at once.
        "comparisons": [compare(spec.mode, [targets[0], other]) for other in targets[1:]],
    }


UNITS = {"logins": "login", "fetch": "fetch", "idle": "session", "submit": "message"}


def _target_doc(
    spec: Spec,
    index: int,
    rec: Recorder,
    width: float,
    elapsed: float,
    edges: tuple[float, ...] | None,
) -> dict[str, Any]:
    ep = rec.endpoint
    hist = histogram(rec.latency.values, edges) if edges and len(rec.latency) else None
    doc: dict[str, Any] = {
        "role": "ABC"[index],
        "label": ep.name,
        "address": ep.address,
        "protocol": ep.protocol,
        "tls": ep.tls,
        "ok": rec.ok,
        "errors": dict(rec.errors.most_common()),
        "error_total": sum(rec.errors.values()),
        "error_samples": rec.error_samples,
        "active_s": rec.active,
        "rate_per_s": rate(rec.ok, rec.active),
        "latency_ms": _summary_ms(rec.latency),
        "phases_ms": {name: _summary_ms(s) for name, s in rec.phases.items()},
        "histogram": {
            "edges_ms": [e * 1000 for e in hist.edges],
            "counts": list(hist.counts),
        }
        if hist
        else None,
        "timeline": {
            "width_s": width,
            "ok": timeline(rec.ok_times.values, width, elapsed),
            "errors": timeline(rec.error_times.values, width, elapsed),
        },
    }
    doc["client_cpu"] = {
        "seconds": rec.client_cpu,
        "share_of_one_core": rec.client_cpu / rec.active if rec.active else None,
    }
    if rec.cpu is not None:
        doc["cpu"] = {
            "pids": list(rec.cpu_pids),
            "tree": rec.cpu_tree,
            "seconds": rec.cpu,
            "per_pid": {
                str(pid): {"name": process_name(pid), "seconds": seconds}
                for pid, seconds in rec.cpu_by_pid.items()
            },
            "ms_per_" + UNITS[spec.mode]: 1000 * rec.cpu / rec.ok if rec.ok else None,
        }
    if ep.tls != "none" and spec.mode != "idle":
        doc["tls_resumption"] = {
            "offered": spec.options.resume,
            "connections": rec.tls_connections,
            "resumed": rec.tls_resumed,
            "share": rec.tls_resumed / rec.tls_connections if rec.tls_connections else None,
        }
    if spec.mode == "submit":
        doc.update(
            message_size=len(spec.options.message),
            messages=rec.ok,
            bytes=rec.bytes,
            marker=spec.settings.get("marker"),
        )
    if spec.mode == "fetch":
        mb = weighted_timeline(rec.ok_times.values, rec.byte_counts.values, width, elapsed)
        doc.update(
            requested_size=spec.size,
            message_size=rec.message_size,
            fetches=rec.ok,
            bytes=rec.bytes,
            mb_per_s=rate(rec.bytes, rec.active) / 1e6,
        )
        doc["timeline"]["mb_per_s"] = [b / 1e6 / width for b in mb]
    return doc


def _idle_doc(rounds: list[IdleRound]) -> dict[str, Any]:
    per_session = [r.kb_per_session for r in rounds if r.kb_per_session is not None]
    ramp = sum(r.ramp_seconds for r in rounds)
    established = sum(r.established for r in rounds)
    return {
        "requested": sum(r.requested for r in rounds),
        "established": established,
        "held": sum(r.held for r in rounds),
        "dropped": sum(r.dropped for r in rounds),
        "failed": sum(r.requested - r.established for r in rounds),
        "setup_per_s": rate(established, ramp),
        "kb_per_session": sum(per_session) / len(per_session) if per_session else None,
        "rounds": [asdict(r) | {"kb_per_session": r.kb_per_session} for r in rounds],
    }


def headline(mode: str, target: dict[str, Any]) -> float | None:
    """The one number a target is compared by: higher is better except for memory."""
    if mode == "fetch":
        return target.get("mb_per_s")
    if mode == "idle":
        idle = target.get("idle") or {}
        return idle.get("kb_per_session") or idle.get("setup_per_s")
    return target.get("rate_per_s")


def compare(mode: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = targets
    if mode == "idle" and all((t.get("idle") or {}).get("kb_per_session") for t in targets):
        metric = "KB per idle session"
    else:
        metric = {
            "fetch": "MB/s",
            "idle": "idle sessions set up per s",
            "submit": "messages/s",
        }.get(mode, "logins/s")
    value = ratio(headline(mode, a), headline(mode, b))
    lat_a, lat_b = a.get("latency_ms") or {}, b.get("latency_ms") or {}
    p50 = ratio(lat_a.get("p50"), lat_b.get("p50"))
    p99 = ratio(lat_a.get("p99"), lat_b.get("p99"))
    shown = f"{value:.2f}" if value is not None else "n/a"
    return {
        "metric": metric,
        "a": headline(mode, a),
        "b": headline(mode, b),
        "ratio": value,
        "latency_p50_ratio": p50,
        "latency_p99_ratio": p99,
        "text": f"{a['label']} / {b['label']} = {shown} ({metric})",
    }


def stderr_progress(enabled: bool) -> Progress:
    return Progress(sys.stderr if enabled else None)


def elapsed_bound(spec: Spec) -> float:
    """The longest this run can take, to tell the operator before it starts."""
    t = spec.options.timeout + 2
    if spec.mode == "idle":
        per_round = (
            spec.settle + spec.sessions / spec.rate + 2 * spec.options.timeout + spec.hold + 10
        )
        return per_round * len(_idle_order(len(spec.targets), spec.rounds))
    if spec.duration is not None:
        rounds = plan_rounds(len(spec.targets), spec.duration, None, spec.round_seconds, 1)
        return spec.duration * len(spec.targets) + t * len(rounds)
    return spec.max_time + t
