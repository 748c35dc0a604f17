"""The load generator: workers that log in (or fetch) in a loop, in rounds, against 1-2 targets.

Shape of a run: a list of rounds (:func:`plan_rounds`), each giving one target a budget of
seconds or of requests. With ``--compare`` the rounds alternate A, B, A, B … so that drift
(a warming cache, a neighbour's cron job) lands on both sides, and the ratio means something.
Within a round ``workers`` tasks share one :class:`Gate`: each takes a ticket before every
operation, so a request budget is met exactly and a time budget stops everyone together.

Timing uses ``time.perf_counter`` around each phase (connect, greeting, login, select,
logout); a failed operation is counted under one error kind (:func:`bench.clients.classify`)
with the first message of each kind kept as a sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.clients import (
    BenchError,
    Conn,
    Endpoint,
    ImapClient,
    ResumingContext,
    classify,
    connect,
    start_tls,
)
from bench.patterns import Credential, Pattern
from bench.pop3client import Pop3Client
from bench.procstat import cpu_by_root
from bench.sieveclient import SieveClient
from bench.smtpclient import SmtpClient
from bench.stats import Samples

_source_turn = itertools.count()
EOF_WAIT = 1.0  # after LOGOUT, wait this long for the server to close first (its TIME_WAIT)


@dataclass(frozen=True)
class Options:
    """How to talk to a target; shared by every mode."""

    timeout: float = 10.0
    pipeline: bool = False
    tls_context: ssl.SSLContext | None = None
    sni: str | None = None
    # Local addresses to connect from, in turn: a proxy's per-IP limits and Dovecot's
    # mail_max_userip_connections see many clients, as in production, not one.
    sources: tuple[str, ...] = ()
    # --resume: each worker offers its previous connection's TLS session on the next one,
    # with a context of its own from this factory (a session only resumes with its context).
    resume: bool = False
    tls_factory: Callable[[], ssl.SSLContext] | None = None
    # submit: the message sent (its Message-ID made unique per send) and the recipients.
    message: bytes = b""
    rcpt: Pattern | None = None


@dataclass
class Recorder:
    """Everything measured against one target, summed over its rounds."""

    endpoint: Endpoint
    ok: int = 0
    latency: Samples = field(default_factory=Samples)
    phases: dict[str, Samples] = field(default_factory=dict)
    ok_times: Samples = field(default_factory=Samples)
    error_times: Samples = field(default_factory=Samples)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    byte_counts: Samples = field(default_factory=Samples)
    message_size: int | None = None
    active: float = 0.0  # seconds spent in this target's rounds
    client_cpu: float = 0.0  # CPU seconds of this load generator during those rounds
    cpu: float | None = None  # CPU seconds of the watched processes during these rounds
    cpu_pids: tuple[int, ...] = ()
    cpu_tree: bool = False
    cpu_by_pid: dict[int, float] = field(default_factory=dict)
    next_user: int = 0
    tls_connections: int = 0  # TLS handshakes completed
    tls_resumed: int = 0  # … of which resumed a previous session (``session_reused``)
    contexts: dict[int, ssl.SSLContext] = field(default_factory=dict)  # per worker, --resume
    next_message: int = 0

    def tls_context(self, worker: int, options: Options) -> ssl.SSLContext | None:
        """The context worker ``worker`` connects with: its own one under --resume (kept
        across rounds, so a worker resumes the session of its last connection here)."""
        if not options.resume or options.tls_factory is None:
            return options.tls_context
        if worker not in self.contexts:
            self.contexts[worker] = options.tls_factory()
        return self.contexts[worker]

    def note_tls(self, reused: bool | None) -> None:
        if reused is not None:
            self.tls_connections += 1
            self.tls_resumed += int(reused)

    def success(self, now: float, latency: float, phases: dict[str, float], size: int = 0) -> None:
        self.ok += 1
        self.latency.add(latency)
        self.ok_times.add(now)
        for name, seconds in phases.items():
            self.phases.setdefault(name, Samples()).add(seconds)
        if size:
            self.bytes += size
            self.byte_counts.add(size)

    def failure(self, now: float, error: BenchError) -> None:
        self.errors[error.kind] += 1
        self.error_times.add(now)
        self.error_samples.setdefault(error.kind, error.detail or error.kind)

    def take_user(self, users: Sequence[Credential]) -> Credential:
        user = users[self.next_user % len(users)]
        self.next_user += 1
        return user


class Stop:
    """Set by the first Ctrl-C: no new operation starts, so the run ends with a report."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        self.event.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when a stop is requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), max(0.0, seconds))


class Gate:
    """Tickets for one round: stop after ``count`` operations, at ``deadline``, or on ``stop``."""

    def __init__(self, count: int | None, deadline: float, stop: Stop | None = None) -> None:
        self.left = count
        self.deadline = deadline
        self.stop = stop or Stop()

    def take(self) -> bool:
        if self.stop.requested or time.perf_counter() >= self.deadline:
            return False
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass(frozen=True, slots=True)
class Round:
    target: int
    seconds: float | None = None
    requests: int | None = None


def plan_rounds(
    targets: int,
    duration: float | None,
    requests: int | None,
    round_seconds: float,
    rounds: int,
) -> list[Round]:
    """A, B, A, B …: each target gets ``duration`` seconds or ``requests`` in total.

    With one target there is no drift to share, so the whole budget is one round.
    """
    if (duration is None) == (requests is None):
        raise ValueError("give exactly one of duration and requests")
    if targets == 1:
        return [Round(0, duration, requests)]
    if duration is not None:
        n = max(1, math.ceil(duration / round_seconds - 1e-9))
        return [Round(t, seconds=duration / n) for _ in range(n) for t in range(targets)]
    assert requests is not None
    n = max(1, min(rounds, requests))
    parts = [requests // n + (1 if k < requests % n else 0) for k in range(n)]
    return [Round(t, requests=part) for part in parts for t in range(targets)]


class Clock:
    """Seconds since the start of the run, shared by every recorder (for timelines)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.start


class Session:
    """A logged-in IMAP, POP3 or ManageSieve session (or an SMTP one, authenticated), built
    step by step so each phase can be timed."""

    def __init__(
        self, endpoint: Endpoint, options: Options, context: ssl.SSLContext | None = None
    ) -> None:
        self.endpoint = endpoint
        self.options = options
        self.context = context or options.tls_context
        self.phase = "connect"
        self.phases: dict[str, float] = {}
        self.conn: Conn | None = None
        self.imap: ImapClient | None = None
        self.pop3: Pop3Client | None = None
        self.smtp: SmtpClient | None = None
        self.sieve: SieveClient | None = None
        self.tls_reused: bool | None = None  # set once a TLS handshake is done

    def _note_handshake(self) -> None:
        obj = self.conn.ssl_object() if self.conn is not None else None
        if obj is not None:
            self.tls_reused = bool(obj.session_reused)

    def _lap(self, name: str, started: float, next_phase: str) -> float:
        now = time.perf_counter()
        self.phases[name] = now - started
        self.phase = next_phase
        return now

    async def open(self, user: Credential, select: bool = True, then_logout: bool = False) -> int:
        """Connect, greet, (STARTTLS), log in, SELECT/STAT; returns the message count.

        With ``options.pipeline`` the LOGIN, SELECT (and LOGOUT when ``then_logout``) go in
        one write: fewer round trips, so it measures the server rather than the latency.
        """
        t = time.perf_counter()
        ep, opts = self.endpoint, self.options
        source = opts.sources[next(_source_turn) % len(opts.sources)] if opts.sources else None
        self.conn = await connect(ep, self.context, opts.sni, source)
        self._note_handshake()
        t = self._lap("connect", t, "greeting")
        if ep.protocol == "smtp":
            await self._open_smtp(user, t)
            return 0
        if ep.protocol == "sieve":
            return await self._open_sieve(user, t, select)
        if ep.protocol == "imap":
            self.imap = ImapClient(self.conn)
            await self.imap.greeting()
        else:
            self.pop3 = Pop3Client(self.conn)
            await self.pop3.greeting()
        if ep.tls == "starttls":
            assert self.context is not None
            await start_tls(self.conn, ep.protocol, self.context, opts.sni or ep.host)
            self._note_handshake()
        t = self._lap("greeting", t, "login")
        if self.imap is not None:
            if opts.pipeline and select:
                then = [b"SELECT INBOX"] + ([b"LOGOUT"] if then_logout else [])
                tags = await self.imap.login(user, then)
                t = self._lap("login", t, "select")
                count = await self.imap.select_reply(tags[0])
                t = self._lap("select", t, "logout")
                if then_logout:
                    await self.imap.response(tags[1], "logout")
                    self._lap("logout", t, "logout")
                    self.imap = None  # already logged out
                return count
            await self.imap.login(user)
            t = self._lap("login", t, "select")
            count = await self.imap.select() if select else 0
        else:
            assert self.pop3 is not None
            await self.pop3.login(user, opts.pipeline)
            t = self._lap("login", t, "select")
            count = await self.pop3.stat() if select else 0
        self._lap("select", t, "ready")
        return count

    async def _open_sieve(self, user: Credential, t: float, select: bool) -> int:
        """Capabilities (STARTTLS, capabilities again) as ``greeting``, AUTHENTICATE as
        ``login``, LISTSCRIPTS as ``list``; returns the number of scripts."""
        assert self.conn is not None
        ep = self.endpoint
        self.sieve = SieveClient(self.conn)
        await self.sieve.greeting()
        if ep.tls == "starttls":
            assert self.context is not None
            self.phase = "starttls"
            await self.sieve.starttls(self.context, self.options.sni or ep.host)
            self._note_handshake()
        t = self._lap("greeting", t, "login")
        await self.sieve.login(user)
        t = self._lap("login", t, "list")
        count = await self.sieve.listscripts() if select else 0
        self._lap("list", t, "ready")
        return count

    async def _open_smtp(self, user: Credential, t: float) -> None:
        """Greeting, EHLO (STARTTLS, EHLO) as the ``greeting`` phase, AUTH as ``login``."""
        assert self.conn is not None
        ep = self.endpoint
        self.smtp = SmtpClient(self.conn)
        await self.smtp.greeting()
        await self.smtp.ehlo()
        if ep.tls == "starttls":
            assert self.context is not None
            await self.smtp.starttls_command()
            await self.conn.start_tls(self.context, self.options.sni or ep.host)
            self._note_handshake()
            await self.smtp.ehlo()
        t = self._lap("greeting", t, "login")
        await self.smtp.login(user)
        self._lap("login", t, "send")

    async def submit(self, sender: str, recipient: str, message: bytes) -> None:
        """MAIL FROM / RCPT TO / DATA of one message, timed as the ``send`` phase."""
        assert self.smtp is not None
        t = time.perf_counter()
        self.phase = "send"
        await self.smtp.send(sender, recipient, message, self.options.pipeline)
        self._lap("send", t, "logout")

    async def close(self) -> None:
        """LOGOUT / QUIT (timed as the ``logout`` phase), then close the socket."""
        t = time.perf_counter()
        self.phase = "logout"
        if self.imap is not None:
            await self.imap.logout()
        elif self.pop3 is not None:
            await self.pop3.quit()
        elif self.smtp is not None:
            await self.smtp.quit()
        elif self.sieve is not None:
            await self.sieve.logout()
        if "logout" not in self.phases:
            self.phases["logout"] = time.perf_counter() - t
        if self.conn is not None and isinstance(self.context, ResumingContext):
            self.context.keep(self.conn)  # after the last reply: any TLS 1.3 ticket is in
        if self.conn is not None:
            await self.conn.close(wait_eof=min(EOF_WAIT, self.options.timeout))
            self.conn = None

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.abort()
            self.conn = None

    async def sizes(self, count: int) -> dict[int, int]:
        if self.imap is not None:
            return await self.imap.sizes(count)
        assert self.pop3 is not None
        return await self.pop3.sizes()

    async def fetch(self, number: int) -> int:
        if self.imap is not None:
            return await self.imap.fetch_body(number)
        assert self.pop3 is not None
        return await self.pop3.retr(number)


async def login_once(
    rec: Recorder,
    clock: Clock,
    endpoint: Endpoint,
    user: Credential,
    options: Options,
    context: ssl.SSLContext | None = None,
) -> None:
    """One connect → login → SELECT/STAT → logout, recorded as a success or one error."""
    session = Session(endpoint, options, context)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(options.timeout):
            await session.open(user, then_logout=options.pipeline)
            await session.close()
    except Exception as exc:  # every failure is a data point, never a crash
        session.abort()
        rec.note_tls(session.tls_reused)
        rec.failure(clock.now(), classify(exc, session.phase))
        return
    rec.note_tls(session.tls_reused)
    rec.success(clock.now(), time.perf_counter() - started, session.phases)


async def logins_worker(
    rec: Recorder,
    gate: Gate,
    clock: Clock,
    users: Sequence[Credential],
    options: Options,
    worker: int = 0,
) -> None:
    context = rec.tls_context(worker, options)
    while gate.take():
        await login_once(rec, clock, rec.endpoint, rec.take_user(users), options, context)


def unique_message(message: bytes, n: int) -> bytes:
    """``message`` with ``-n`` added to its Message-ID, so no two sends look like duplicates
    to a store that suppresses them; only the header block is rewritten."""
    head, sep, body = message.partition(b"\r\n\r\n")
    return head.replace(b"@bench.mailfarm.test>", b"-%d@bench.mailfarm.test>" % n, 1) + sep + body


async def submit_once(
    rec: Recorder,
    clock: Clock,
    user: Credential,
    options: Options,
    context: ssl.SSLContext | None = None,
) -> None:
    """One connect → EHLO (→ STARTTLS → EHLO) → AUTH → one message → QUIT, recorded."""
    n = rec.next_message
    rec.next_message += 1
    recipient = options.rcpt.render(n) if options.rcpt is not None else user.login
    session = Session(rec.endpoint, options, context)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(options.timeout):
            await session.open(user)
            await session.submit(user.login, recipient, unique_message(options.message, n))
            await session.close()
    except Exception as exc:  # every failure is a data point, never a crash
        session.abort()
        rec.note_tls(session.tls_reused)
        rec.failure(clock.now(), classify(exc, session.phase))
        return
    rec.note_tls(session.tls_reused)
    rec.success(clock.now(), time.perf_counter() - started, session.phases, len(options.message))


async def submit_worker(
    rec: Recorder,
    gate: Gate,
    clock: Clock,
    users: Sequence[Credential],
    options: Options,
    worker: int = 0,
) -> None:
    context = rec.tls_context(worker, options)
    while gate.take():
        await submit_once(rec, clock, rec.take_user(users), options, context)


def closest(sizes: dict[int, int], wanted: int) -> tuple[int, int] | None:
    """The (number, size) of the message whose size is nearest ``wanted``; latest on ties."""
    if not sizes:
        return None
    number = min(sizes, key=lambda n: (abs(sizes[n] - wanted), -n))
    return number, sizes[number]


async def fetch_worker(
    rec: Recorder,
    gate: Gate,
    clock: Clock,
    user: Credential,
    options: Options,
    wanted: int,
) -> None:
    """Log in once, then FETCH/RETR the message nearest ``wanted`` bytes until the gate shuts.

    A failed session is counted and reopened on the next ticket; an INBOX without a
    suitable message stops this worker, since retrying cannot help.
    """
    session: Session | None = None
    number = size = 0
    while gate.take():
        try:
            async with asyncio.timeout(options.timeout):
                if session is None:
                    session = Session(rec.endpoint, options)
                    count = await session.open(user)
                    found = closest(await session.sizes(count), wanted)
                    if found is None or found[1] < wanted // 2 or found[1] > wanted * 2:
                        raise BenchError(
                            "no-message", f"{user.login}: INBOX has no message near {wanted} B"
                        )
                    number, size = found
                    rec.message_size = size
                session.phase = "fetch"
                started = time.perf_counter()
                got = await session.fetch(number)
                if got != size:
                    raise BenchError("size-mismatch", f"fetched {got} bytes, expected {size}")
            rec.success(clock.now(), time.perf_counter() - started, {}, got)
        except Exception as exc:
            phase = session.phase if session is not None else "connect"
            error = classify(exc, phase)
            rec.failure(clock.now(), error)
            if session is not None:
                session.abort()
                session = None
            if error.kind == "no-message":
                return
    if session is not None:
        try:
            async with asyncio.timeout(options.timeout):
                await session.close()
        except Exception:
            session.abort()


async def run_rounds(
    recorders: Sequence[Recorder],
    rounds: Sequence[Round],
    workers: int,
    start_worker: Callable[[Recorder, Gate, int], asyncio.Task[None]],
    max_time: float,
    on_round: Callable[[int, Round, float], None] | None = None,
    stop: Stop | None = None,
) -> list[tuple[int, float, float]]:
    """Run the rounds in order; returns (target, start, end) of each, in run seconds.

    ``max_time`` bounds a request-budgeted run too, so a dead server cannot keep it going.
    """
    spans = []
    run_deadline = time.perf_counter() + max_time
    clock_start = time.perf_counter()
    for index, rnd in enumerate(rounds):
        rec = recorders[rnd.target]
        started_mark = mark(rec)
        started = started_mark.wall
        deadline = run_deadline if rnd.seconds is None else min(started + rnd.seconds, run_deadline)
        gate = Gate(rnd.requests, deadline, stop)
        if on_round is not None:
            on_round(index, rnd, started - clock_start)
        tasks = [start_worker(rec, gate, w) for w in range(workers)]
        await asyncio.gather(*tasks)
        charge(rec, started_mark)
        ended = time.perf_counter()
        spans.append((rnd.target, started - clock_start, ended - clock_start))
        if ended >= run_deadline or gate.stop.requested:
            break
    return spans


@dataclass(frozen=True, slots=True)
class Mark:
    """Clocks at the start of a round, so the round can be charged to its target."""

    wall: float
    cpu: dict[int, float]
    client_cpu: float


def mark(rec: Recorder) -> Mark:
    cpu = cpu_by_root(rec.cpu_pids, rec.cpu_tree) if rec.cpu_pids else {}
    return Mark(time.perf_counter(), cpu, time.process_time())


def charge(rec: Recorder, since: Mark) -> None:
    """Add the round's wall time, the watched processes' CPU and our own CPU to ``rec``.

    Reading the same processes before and after each round means A and B each see only the
    CPU of their own rounds, however the rounds interleave. Our own CPU is reported too: on a
    small machine the load generator competes with the server it measures.
    """
    rec.active += time.perf_counter() - since.wall
    rec.client_cpu += time.process_time() - since.client_cpu
    if rec.cpu_pids:
        after = cpu_by_root(rec.cpu_pids, rec.cpu_tree)
        for pid, seconds in after.items():
            if pid in since.cpu:
                used = max(0.0, seconds - since.cpu[pid])
                rec.cpu_by_pid[pid] = rec.cpu_by_pid.get(pid, 0.0) + used
        rec.cpu = sum(rec.cpu_by_pid.values())
