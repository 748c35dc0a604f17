"""``bench idle``: many logged-in IMAP sessions in IDLE, held open, and what they cost a server.

What an ISP's proxy mostly does all day is nothing: phones and desktop clients keep an IDLE
session open for hours. So the figure that sizes a front door is memory per idle session,
measured as PSS of the server's processes before any session and while all of them are held.

Sessions open at most ``rate`` per second (a thundering herd of logins measures the
directory, not idle cost) and at most ``concurrency`` at a time; each one connects, logs in,
selects INBOX and enters IDLE. During the hold a reader per session notices any the server
drops. Afterwards every session is ended politely (DONE, LOGOUT).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.clients import classify
from bench.load import Clock, Options, Recorder, Session, Stop, charge, mark
from bench.patterns import Credential
from bench.procstat import MemoryReading, memory


@dataclass
class IdleRound:
    requested: int
    established: int = 0
    dropped: int = 0
    held: int = 0
    ramp_seconds: float = 0.0
    hold_seconds: float = 0.0
    memory_kind: str | None = None
    memory_before_kb: int | None = None
    memory_holding_kb: int | None = None
    memory_peak_kb: int | None = None
    memory_samples: list[tuple[float, int]] = field(default_factory=list)
    processes_before: int | None = None
    processes_holding: int | None = None

    @property
    def kb_per_session(self) -> float | None:
        if self.memory_before_kb is None or self.memory_holding_kb is None or not self.held:
            return None
        return (self.memory_holding_kb - self.memory_before_kb) / self.held


@dataclass(frozen=True)
class IdlePlan:
    sessions: int
    rate: float
    hold: float
    concurrency: int
    memory_pids: tuple[int, ...] = ()
    memory_tree: bool = False
    settle: float = 0.0
    stop: Stop = field(default_factory=Stop)


async def _memory(plan: IdlePlan) -> MemoryReading | None:
    if not plan.memory_pids:
        return None
    # Reading smaps_rollup of a thousand Dovecot processes takes a while: not on the loop.
    return await asyncio.to_thread(memory, plan.memory_pids, plan.memory_tree)


async def _watch(session: Session) -> None:
    """Return when the server ends the session (EOF, error or BYE); ignore its updates."""
    assert session.conn is not None
    reader = session.conn.reader
    try:
        while True:
            line = await reader.readuntil(b"\n")
            if line.startswith(b"* BYE"):
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return


async def _open_all(
    rec: Recorder,
    clock: Clock,
    users: Sequence[Credential],
    plan: IdlePlan,
    options: Options,
    live: list[tuple[Session, bytes]],
    deadline: float,
) -> None:
    gate = asyncio.Semaphore(plan.concurrency)

    async def open_one() -> None:
        session = Session(rec.endpoint, options)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(options.timeout):
                await session.open(rec.take_user(users))
                assert session.imap is not None
                session.phase = "idle"
                tag = await session.imap.idle()
        except Exception as exc:
            session.abort()
            rec.failure(clock.now(), classify(exc, session.phase))
            return
        finally:
            gate.release()
        session.phases["idle"] = time.perf_counter() - started - sum(session.phases.values())
        rec.success(clock.now(), time.perf_counter() - started, session.phases)
        live.append((session, tag))

    start = time.perf_counter()
    tasks = []
    for k in range(plan.sessions):
        delay = start + k / plan.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        if time.perf_counter() > deadline or plan.stop.requested:
            gate.release()
            break
        tasks.append(asyncio.create_task(open_one()))
    await asyncio.gather(*tasks)


async def _end(session: Session, tag: bytes, options: Options) -> None:
    try:
        async with asyncio.timeout(options.timeout):
            assert session.imap is not None
            await session.imap.done(tag)
            await session.close()
    except Exception:
        session.abort()


async def idle_round(
    rec: Recorder,
    clock: Clock,
    users: Sequence[Credential],
    plan: IdlePlan,
    options: Options,
    on_status: Callable[[str], None] | None = None,
) -> IdleRound:
    """Open, hold, measure, close; bounded by ramp time + timeout + hold + teardown."""
    result = IdleRound(requested=plan.sessions)
    if plan.settle > 0:
        # A server may keep what the previous round used for a while (Dovecot keeps idle
        # imap processes for idle_kill, 60 s): let it go before taking the baseline.
        if on_status is not None:
            on_status(f"settling {plan.settle:g} s before measuring")
        await plan.stop.sleep(plan.settle)
    before = await _memory(plan)
    if before is not None:
        result.memory_samples.append((clock.now(), before.kb))
    started_mark = mark(rec)
    started = started_mark.wall
    live: list[tuple[Session, bytes]] = []
    ramp_limit = plan.sessions / plan.rate + options.timeout + 5  # stop launching after this
    opening = asyncio.create_task(
        _open_all(rec, clock, users, plan, options, live, started + ramp_limit)
    )
    next_sample = time.perf_counter() + 2.0
    while not opening.done():
        if on_status is not None:
            on_status(f"opening {len(live)}/{plan.sessions}, errors {sum(rec.errors.values())}")
        await asyncio.wait({opening}, timeout=0.5)
        if time.perf_counter() >= next_sample:  # the rise, for the report's memory chart
            reading = await _memory(plan)
            if reading is not None:
                result.memory_samples.append((clock.now(), reading.kb))
            next_sample = time.perf_counter() + 2.0
    await opening
    result.ramp_seconds = time.perf_counter() - started
    result.established = len(live)

    watchers = [asyncio.create_task(_watch(session)) for session, _ in live]
    hold_start = time.perf_counter()
    hold_end = hold_start + plan.hold
    interval = max(1.0, plan.hold / 10)
    while True:
        reading = await _memory(plan)
        if reading is not None:
            result.memory_samples.append((clock.now(), reading.kb))
            result.memory_holding_kb = reading.kb
            result.memory_kind = reading.kind
            result.processes_holding = reading.processes
        remaining = hold_end - time.perf_counter()
        if remaining <= 0 or plan.stop.requested:
            break
        if on_status is not None:
            alive = sum(1 for w in watchers if not w.done())
            on_status(f"holding {alive} sessions, {remaining:.0f} s left")
        await plan.stop.sleep(min(interval, remaining))
    result.hold_seconds = time.perf_counter() - hold_start
    dropped = [w.done() for w in watchers]
    for w in watchers:
        w.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    result.dropped = sum(dropped)
    result.held = result.established - result.dropped
    if before is not None:
        result.memory_before_kb = before.kb
        result.processes_before = before.processes
        result.memory_kind = result.memory_kind or before.kind
    if result.memory_samples:
        result.memory_peak_kb = max(kb for _, kb in result.memory_samples)
    for gone, (session, _) in zip(dropped, live, strict=True):
        if gone:  # reported as "dropped", not as an error: it did log in and idle
            session.abort()
    if on_status is not None:
        on_status(f"closing {result.held} sessions")
    await _close_all(
        [(s, tag) for gone, (s, tag) in zip(dropped, live, strict=True) if not gone],
        plan,
        options,
    )
    charge(rec, started_mark)
    return result


async def _close_all(
    sessions: list[tuple[Session, bytes]], plan: IdlePlan, options: Options
) -> None:
    gate = asyncio.Semaphore(plan.concurrency)

    async def one(session: Session, tag: bytes) -> None:
        async with gate:
            await _end(session, tag, options)

    await asyncio.gather(*(one(s, t) for s, t in sessions))
