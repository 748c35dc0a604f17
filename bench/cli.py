"""mailfarm bench: load-test a farm's IMAP/POP3/ManageSieve/submission front door (logins, IDLE,
FETCH, SMTP).

Registered into the ``mailfarm`` command by :mod:`proxy.cli`. This module parses and checks
the arguments, refuses targets that are not loopback unless ``--allow-remote`` (a load
tester pointed at someone else's server is an attack), says what it is about to do, runs
:func:`bench.run.run` on uvloop and prints the result document as text, JSON or HTML.

Exit status: 0 the run finished without errors, 1 it finished with errors (or nothing
succeeded), 2 bad arguments or a refused target, 130 interrupted by Ctrl-C (after printing
what was measured).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import secrets
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.clients import Endpoint, client_context
from bench.load import Options
from bench.patterns import Credential, PatternError, compile_pattern, expand, load_users
from bench.procstat import check_pids, raise_nofile
from bench.report import render_html, render_text
from bench.run import Progress, Spec, Watch, deliver_lmtp, elapsed_bound, make_message, run
from bench.targets import UsageError, check_host, parse_hostport, sources

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FD_MARGIN = 64  # descriptors the client needs besides its connections


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]?|[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1048576, 1M, 10MB)")
    unit = (m.group(2) or "b").lower().rstrip("b").rstrip("i")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return int(float(m.group(1)) * factor)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _common(
    p: argparse.ArgumentParser,
    workers_help: str,
    default_workers: int,
    smtp: bool = False,
    protocols: tuple[str, ...] = ("imap", "pop3"),
) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--host", default="127.0.0.1", help="server to load (default 127.0.0.1)")
    t.add_argument("--port", type=int, required=True)
    if smtp:
        p.set_defaults(protocol="smtp")
    else:
        t.add_argument("--protocol", choices=protocols, default="imap")
    tls = t.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        action="store_true",
        help="implicit TLS (port 465-style)"
        if smtp
        else "implicit TLS (IMAPS/POP3S port; ManageSieve has none)",
    )
    tls.add_argument(
        "--starttls",
        action="store_true",
        help="STARTTLS after EHLO (port 587)"
        if smtp
        else "STARTTLS / STLS after greeting (ManageSieve: after the capabilities)",
    )
    t.add_argument("--ca", type=Path, help="CA certificate file to verify the server with")
    t.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    t.add_argument("--sni", help="TLS server name (default: the host)")
    t.add_argument("--label", help="name of the target in the output (default host:port)")
    t.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="ADDR|CIDR",
        help="connect from these local addresses in turn, e.g. 127.0.1.0/24 (repeatable)",
    )
    t.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a target that is not loopback (only your own hosts)",
    )
    c = p.add_argument_group("comparison (A/B in alternating rounds)")
    c.add_argument("--compare", metavar="HOST:PORT", help="second endpoint, same load")
    c.add_argument("--compare-label", help="name of the second endpoint (default host:port)")
    c.add_argument(
        "--compare2",
        metavar="HOST:PORT",
        help="a third endpoint, same load (e.g. mailfarm vs the Dovecot proxy vs direct)",
    )
    c.add_argument("--compare2-label", help="name of the third endpoint (default host:port)")
    c.add_argument(
        "--round",
        type=_positive(float),
        default=5.0,
        metavar="S",
        help="seconds per round with --duration (default 5)",
    )
    c.add_argument(
        "--rounds",
        type=_positive(int),
        default=None,
        metavar="K",
        help="rounds per endpoint with --requests, or for idle (default 2; idle 1)",
    )
    u = p.add_argument_group("users")
    who = u.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--users", type=Path, metavar="FILE", help="one 'LOGIN<tab or space>PASSWORD' per line"
    )
    who.add_argument("--pattern", metavar="P", help="login pattern, e.g. 'u{i}@d{i%%10}.test'")
    u.add_argument("--password-pattern", metavar="P", help="password pattern, e.g. 'pw{i}'")
    u.add_argument("--count", type=_positive(int), help="users from the pattern: i = start…")
    u.add_argument("--start", type=int, default=0, help="first i of the pattern (default 0)")
    r = p.add_argument_group("load")
    r.add_argument("--workers", type=_positive(int), default=default_workers, help=workers_help)
    r.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        metavar="S",
        help="limit for each operation (default 10 s)",
    )
    r.add_argument(
        "--max-time",
        type=_positive(float),
        default=600.0,
        metavar="S",
        help="hard limit on the whole run (default 600 s)",
    )
    r.add_argument(
        "--pipeline",
        action="store_true",
        help="send MAIL+RCPT+DATA in one write (if PIPELINING is offered)"
        if smtp
        else "send LOGIN+SELECT(+LOGOUT) / USER+PASS in one write",
    )
    m = p.add_argument_group("server cost")
    m.add_argument(
        "--cpu-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="report CPU time of this process during A's rounds (repeatable)",
    )
    m.add_argument(
        "--compare-cpu-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="the same for B's rounds",
    )
    m.add_argument(
        "--compare2-cpu-pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="the same for C's rounds (--compare2)",
    )
    m.add_argument("--pid-tree", action="store_true", help="include every child process")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="one JSON document on stdout")
    o.add_argument("--report", type=Path, metavar="FILE.html", help="write an HTML report")
    o.add_argument("--progress", action="store_true", help="progress line even if not a TTY")
    o.add_argument("--quiet", action="store_true", help="do not print the plan on stderr")


def _budget(p: argparse.ArgumentParser) -> None:
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--duration", type=_positive(float), metavar="S", help="seconds per target")
    b.add_argument("--requests", type=_positive(int), metavar="N", help="operations per target")


def register(subparsers: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``mailfarm bench`` (no proxy.toml needed: it only talks to servers)."""
    bench = subparsers.add_parser(
        "bench",
        help="load-test IMAP/POP3/ManageSieve logins, IDLE sessions, FETCH throughput,"
        " SMTP submission",
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 no errors, 1 errors during the run, 2 bad arguments,"
        " 130 interrupted (the first Ctrl-C stops the run and still reports).",
    )
    modes = bench.add_subparsers(dest="bench_mode", required=True, metavar="MODE")
    p = modes.add_parser(
        "logins", help="connect → login → SELECT/STAT/LISTSCRIPTS → logout in a loop"
    )
    _common(p, "concurrent connections (default 16)", 16, protocols=("imap", "pop3", "sieve"))
    _budget(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --tls/--starttls: each worker resumes its previous TLS session (tickets),"
        " like clients reconnecting every few minutes; the report shows the share resumed,"
        " and --cpu-pid with and without it the server CPU saved",
    )
    p = modes.add_parser("idle", help="hold N logged-in IMAP sessions in IDLE, measure memory")
    _common(p, "sessions being set up at once (default 64)", 64)
    p.add_argument("--sessions", type=_positive(int), required=True)
    p.add_argument(
        "--rate",
        type=_positive(float),
        default=100.0,
        help="new sessions per second at most (default 100)",
    )
    p.add_argument(
        "--hold",
        type=_positive(float),
        default=10.0,
        metavar="S",
        help="seconds to hold all sessions (default 10)",
    )
    p.add_argument(
        "--pid",
        type=int,
        action="append",
        default=[],
        help="measure this process's memory (PSS) for A (repeatable)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="S",
        help="wait S seconds before each round's baseline (e.g. 65 for Dovecot's"
        " idle_kill, when measuring its processes)",
    )
    p.add_argument("--compare-pid", type=int, action="append", default=[], help="the same for B")
    p = modes.add_parser("fetch", help="FETCH BODY[] / RETR throughput of one message size")
    _common(p, "concurrent sessions, one per user (default 4)", 4)
    _budget(p)
    p.add_argument("--size", type=_size, required=True, help="message size (e.g. 1M, 10MB)")
    p.add_argument(
        "--deliver-lmtp",
        metavar="HOST:PORT",
        help="first deliver such a message to each user over LMTP",
    )
    p = modes.add_parser(
        "submit",
        help="connect → EHLO (→ STARTTLS → EHLO) → AUTH PLAIN → one message → QUIT in a loop",
    )
    _common(p, "concurrent connections (default 8)", 8, smtp=True)
    _budget(p)
    p.add_argument(
        "--size", type=_size, default=2048, help="message size (default 2K, e.g. 100K, 1M)"
    )
    p.add_argument(
        "--rcpt-pattern",
        metavar="P",
        help="recipient of message i, e.g. 'u{i%%100}@d0.test' (default: the sender's own"
        " login, which must then be an address)",
    )
    p.add_argument("--resume", action="store_true", help="resume TLS sessions, as for logins")
    bench.set_defaults(func=main)


def _users(args: argparse.Namespace) -> tuple[list[Credential], str]:
    if args.users is not None:
        return load_users(args.users), str(args.users)
    if args.password_pattern is None or args.count is None:
        raise UsageError("--pattern needs --password-pattern and --count")
    users = expand(args.pattern, args.password_pattern, args.count, args.start)
    return users, f"pattern {args.pattern!r} i={args.start}…{args.start + args.count - 1}"


def _tls_context(args: argparse.Namespace, resuming: bool = False) -> ssl.SSLContext | None:
    if not (args.tls or args.starttls):
        return None
    try:
        return client_context(str(args.ca) if args.ca else None, args.insecure, resuming)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca {args.ca}: {exc}") from None


def build_spec(args: argparse.Namespace) -> Spec:
    mode = args.bench_mode
    if mode == "idle" and args.protocol != "imap":
        raise UsageError("idle is IMAP only (POP3 has no IDLE)")
    if args.protocol == "sieve":
        if args.tls:
            raise UsageError(
                "ManageSieve has no implicit-TLS port (RFC 5804): use --starttls on the"
                " sieve port (4190), or neither"
            )
        if args.pipeline:
            raise UsageError("--pipeline is IMAP/POP3/SMTP only: ManageSieve logins are not")
    resume = getattr(args, "resume", False)
    if resume and not (args.tls or args.starttls):
        raise UsageError("--resume needs --tls or --starttls")
    if args.report is not None and args.report.suffix.lower() == ".png":
        raise UsageError("PNG reports are not available (no plotting dependency): use .html")
    tls = "tls" if args.tls else "starttls" if args.starttls else "none"
    hosts = [(args.host, args.port, args.label)]
    if args.compare2 and not args.compare:
        raise UsageError("--compare2 needs --compare")
    for other, label in ((args.compare, args.compare_label), (args.compare2, args.compare2_label)):
        if other:
            host, port = parse_hostport(other)
            hosts.append((host, port, label))
    targets = []
    for host, port, label in hosts:
        check_host(host, port, args.allow_remote)
        targets.append(Endpoint(host, port, args.protocol, tls, label or ""))
    users, source = _users(args)
    pids = (
        args.cpu_pid
        + args.compare_cpu_pid
        + args.compare2_cpu_pid
        + getattr(args, "pid", [])
        + getattr(args, "compare_pid", [])
    )
    missing = check_pids(pids)
    if missing:
        raise UsageError(f"no such process: {', '.join(map(str, missing))}")
    watches = (
        Watch(tuple(args.cpu_pid), tuple(getattr(args, "pid", [])), args.pid_tree),
        Watch(tuple(args.compare_cpu_pid), tuple(getattr(args, "compare_pid", [])), args.pid_tree),
        Watch(tuple(args.compare2_cpu_pid), (), args.pid_tree),
    )
    marker = secrets.token_hex(6) if mode == "submit" else None
    rcpt = getattr(args, "rcpt_pattern", None)
    options = Options(
        timeout=args.timeout,
        pipeline=args.pipeline,
        tls_context=_tls_context(args, resume),
        sni=args.sni,
        sources=sources(args.bind),
        resume=resume,
        tls_factory=(lambda: _tls_context(args, True)) if resume else None,
        message=make_message(args.size, f"submit-{marker}") if marker else b"",
        rcpt=compile_pattern(rcpt) if rcpt else None,
    )
    rounds = args.rounds or (1 if mode == "idle" else 2)
    spec = Spec(
        mode=mode,
        targets=tuple(targets),
        users=tuple(users),
        users_source=source,
        workers=args.workers,
        options=options,
        duration=getattr(args, "duration", None),
        requests=getattr(args, "requests", None),
        round_seconds=args.round,
        rounds=rounds,
        max_time=args.max_time,
        size=getattr(args, "size", 0),
        sessions=getattr(args, "sessions", 0),
        rate=getattr(args, "rate", 100.0),
        hold=getattr(args, "hold", 10.0),
        settle=max(0.0, getattr(args, "settle", 0.0)),
        watches=watches,
    )
    settings = {"description": describe(spec)} | {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in ("func", "load", "command", "config") and v not in (None, False, [])
    }
    if marker:  # in the Subject of every message sent, to find them in the mailboxes
        settings["marker"] = f"submit-{marker}"
    if "password_pattern" in settings:  # reports get mailed around; passwords should not
        settings["password_pattern"] = "(not shown)"
    return dataclasses.replace(spec, settings=settings)


def describe(spec: Spec) -> str:
    """What will be done, in one line, for the plan message and the report header."""
    a = spec.targets[0]
    proto = a.protocol.upper() + ("" if a.tls == "none" else f" over {a.tls.upper()}")
    where = " vs ".join(f"{t.name}" + (f" ({t.address})" if t.label else "") for t in spec.targets)
    if spec.mode == "idle":
        load = (
            f"{spec.sessions} IDLE sessions per target at ≤{spec.rate:g}/s,"
            f" {spec.workers} set up at once, held {spec.hold:g} s"
        )
    else:
        what = {
            "logins": "logins",
            "submit": f"messages of {spec.size:,} B",
        }.get(spec.mode, f"fetches of ~{spec.size:,} B")
        budget = f"{spec.duration:g} s" if spec.duration else f"{spec.requests} {what}"
        load = f"{spec.workers} workers, {budget} per target"
        if len(spec.targets) == 2:
            load += (
                f" in rounds of {spec.round_seconds:g} s, alternating"
                if spec.duration
                else f" in {spec.rounds} rounds each, alternating"
            )
    pipeline = ", pipelined" if spec.options.pipeline else ""
    resume = ", resuming TLS sessions" if spec.options.resume else ""
    return f"{proto} {where}; {load}{pipeline}{resume}"


def main(args: argparse.Namespace) -> int:
    try:
        spec = build_spec(args)
    except (UsageError, PatternError) as exc:
        print(f"mailfarm bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    soft, hard = raise_nofile()
    needed = (spec.sessions if spec.mode == "idle" else spec.workers) + FD_MARGIN
    if needed > soft:
        print(
            f"mailfarm bench: needs about {needed} file descriptors, the limit is {soft}"
            f" (hard {hard}); raise it (ulimit -n) or use fewer sessions/workers",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not args.quiet:
        print(
            f"mailfarm bench {spec.mode}: {spec.settings['description']}; {len(spec.users)}"
            f" users from {spec.users_source}; stops by itself within"
            f" ~{elapsed_bound(spec):.0f} s; client fd limit {soft}",
            file=sys.stderr,
        )
    if spec.mode == "fetch" and args.deliver_lmtp:
        try:
            _deliver(args, spec)
        except UsageError as exc:
            print(f"mailfarm bench: {exc}", file=sys.stderr)
            return EXIT_USAGE
    progress = Progress(sys.stderr if (args.progress or sys.stderr.isatty()) else None)
    doc = _run_loop(spec, progress)
    doc["client"] = {"nofile_soft": soft, "nofile_hard": hard}
    if args.report is not None:
        args.report.write_text(render_html(doc), encoding="utf-8")
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(render_text(doc), end="")
        if args.report is not None:
            print(f"report: {args.report}")
    if doc.get("interrupted"):
        return EXIT_INTERRUPTED
    clean = all(t["ok"] > 0 and t["error_total"] == 0 for t in doc["targets"])
    return EXIT_OK if clean else EXIT_ERRORS


def _deliver(args: argparse.Namespace, spec: Spec) -> None:
    host, port = parse_hostport(args.deliver_lmtp)
    check_host(host, port, args.allow_remote)
    recipients = sorted({u.login for u in spec.users[: spec.workers]})
    message = make_message(spec.size, secrets.token_hex(6))
    if not args.quiet:
        print(
            f"mailfarm bench: delivering a {len(message):,} B message over LMTP {host}:{port}"
            f" to {len(recipients)} user(s)",
            file=sys.stderr,
        )
    try:
        deliver_lmtp(host, port, recipients, message)
    except (OSError, RuntimeError) as exc:  # smtplib's errors are OSErrors
        raise UsageError(f"LMTP delivery to {host}:{port} failed: {exc}") from None


def _run_loop(spec: Spec, progress: Progress) -> dict[str, Any]:
    """Run on uvloop where installed (it is a mailfarm dependency), else asyncio's loop."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run(spec, progress))
