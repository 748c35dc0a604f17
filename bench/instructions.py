"""``python -m bench.instructions``: user-space instructions per login, counted by callgrind.

Why a second measure next to CPU seconds: on a shared machine the CPU a login costs moves by
about 5 % between runs of the same code (the other processes' cache misses, preemption in
the middle of a write), so an optimisation worth a few per cent cannot be told from noise.
valgrind's callgrind counts the instructions the proxy process executes, which repeats to
0.2 % whatever else the machine does. It counts user space only: the kernel's work (the
socket writes, about a quarter of a login's CPU) is not in it, so the figure compares two
versions of mailfarm, not mailfarm with another proxy.

How: ``mailfarm serve -c CONFIG`` runs under ``valgrind --tool=callgrind --instr-atstart=no``
(from ``--cwd``, so another checkout's code can be counted against this one's); once it
greets, ``--warmup`` logins fill the route cache and the interpreter's caches uncounted;
then counting is switched on (``callgrind_control -i on``) for ``--logins`` logins made by
``mailfarm bench logins`` (connect, LOGIN, SELECT, LOGOUT), switched off, and dumped.
Debian's ``valgrind`` package has both programs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


class MeasureError(Exception):
    """The count could not be made; the text says which step failed."""


@dataclass(frozen=True, slots=True)
class Count:
    logins: int  # successful ones, counted
    errors: int
    instructions: int

    @property
    def per_login(self) -> int:
        return self.instructions // self.logins if self.logins else 0

    def as_dict(self) -> dict[str, int]:
        return {
            "logins": self.logins,
            "errors": self.errors,
            "instructions": self.instructions,
            "per_login": self.per_login,
        }


def totals(dump: bytes) -> int:
    """The ``totals:`` line of a callgrind dump: every event (instruction) counted."""
    found = _TOTALS.search(dump)
    if found is None:
        raise MeasureError("callgrind dump has no totals line")
    return int(found.group(1))


def _greets(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            return bool(s.recv(64))
    except OSError:
        return False


def _control(*args: str) -> None:
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise MeasureError(f"callgrind_control {' '.join(args)}: {done.stderr.strip()}")


def _logins(port: int, users: Sequence[str], count: int) -> tuple[int, int]:
    """``count`` logins through ``mailfarm bench logins``; (ok, errors)."""
    command = [
        sys.executable, "-m", "proxy.cli", "bench", "logins", "--port", str(port),
        *users, "--workers", "2", "--requests", str(count), "--quiet", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    try:
        target = json.loads(done.stdout)["targets"][0]
    except (ValueError, KeyError, IndexError):
        raise MeasureError(f"mailfarm bench logins failed: {done.stderr.strip()[-500:]}") from None
    return int(target["ok"]), int(target["error_total"])


def count(
    config: Path,
    port: int,
    users: Sequence[str],
    logins: int = 300,
    warmup: int = 100,
    cwd: Path = REPO,
    start_timeout: float = 300.0,
) -> Count:
    """Instructions the proxy runs for ``logins`` logins (see the module's docstring)."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise MeasureError(f"{tool} not found (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="mailfarm-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        log = (Path(tmp) / "valgrind.log").open("wb")
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}", sys.executable, "-m", "proxy.cli", "serve",
            "-c", str(config),
        ]  # fmt: skip
        server = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while not _greets("127.0.0.1", port):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise MeasureError(f"mailfarm did not start under valgrind (log: {log.name})")
                time.sleep(1)
            if warmup:
                _logins(port, users, warmup)
            pid = str(server.pid)
            _control("-i", "on", pid)
            ok, errors = _logins(port, users, logins)
            _control("-i", "off", pid)
            _control("-d", pid)
            dumps = sorted(Path(tmp).glob("callgrind.out.*"))
            if not dumps:
                raise MeasureError("callgrind wrote no dump")
            return Count(ok, errors, totals(dumps[-1].read_bytes()))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, required=True, help="the proxy.toml")
    parser.add_argument("--port", type=int, required=True, help="its IMAP listener")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", type=Path, help="a users file, as for mailfarm bench")
    who.add_argument("--pattern", help="login pattern, as for mailfarm bench")
    parser.add_argument("--password-pattern", help="with --pattern")
    parser.add_argument("--count", type=int, default=50, help="users from the pattern")
    parser.add_argument("--logins", type=int, default=300, help="logins counted")
    parser.add_argument("--warmup", type=int, default=100, help="logins before counting")
    parser.add_argument(
        "--cwd", type=Path, default=REPO, help="checkout whose code runs (default: this one)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.users is not None:
        users = ["--users", str(args.users)]
    elif args.password_pattern is None:
        parser.error("--pattern needs --password-pattern")
    else:
        users = [
            "--pattern", args.pattern, "--password-pattern", args.password_pattern,
            "--count", str(args.count),
        ]  # fmt: skip
    try:
        result = count(args.config, args.port, users, args.logins, args.warmup, args.cwd)
    except MeasureError as exc:
        print(f"bench.instructions: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"{result.per_login:,} instructions per login ({result.instructions:,} for "
            f"{result.logins} logins, {result.errors} errors; code from {args.cwd})"
        )
    return 0 if result.logins and not result.errors else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
