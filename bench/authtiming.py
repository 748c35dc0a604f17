"""Can a client tell an unknown user from a wrong password by how long the refusal takes?

``python -m bench.authtiming [--tries N] [--delay S]`` starts the local farm and a mailfarm
in front of it, warms its LDAP connections, then alternates IMAP LOGINs of unknown users and of real
users with a wrong password, timing each from the command's last byte to the tagged NO.
It prints each kind's median and P(unknown is faster): the chance that a random unknown-user
try is answered sooner than a random wrong-password try (0.5 means indistinguishable).
BENCHMARKS.md reports the figures.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config


def p_first_faster(first: Sequence[float], second: Sequence[float]) -> float:
    """P(a random ``first`` sample < a random ``second`` one), ties counting half (the
    Mann-Whitney U statistic over all pairs)."""
    if not first or not second:
        raise ValueError("both samples must be non-empty")
    wins = 0.0
    for a in first:
        for b in second:
            wins += 1.0 if a < b else 0.5 if a == b else 0.0
    return wins / (len(first) * len(second))


@dataclass(frozen=True)
class Timing:
    unknown: list[float]
    wrong_password: list[float]

    def summary(self) -> dict[str, float]:
        return {
            "tries": len(self.unknown),
            "median_unknown_ms": statistics.median(self.unknown) * 1000,
            "median_wrong_password_ms": statistics.median(self.wrong_password) * 1000,
            "p_unknown_faster": p_first_faster(self.unknown, self.wrong_password),
        }


def _login_time(port: int, login: str, password: str, source: str) -> float:
    with socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0)) as s:
        buf = b""
        while b"\n" not in buf:
            buf += s.recv(4096)
        s.sendall(f'a LOGIN "{login}" "{password}"\r\n'.encode())
        started = time.perf_counter()
        buf = b""
        while b"a " not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the reply")
            buf += chunk
        took = time.perf_counter() - started
    if b"a NO" not in buf:
        raise AssertionError(f"expected a refusal, got {buf!r}")
    return took


def measure(port: int, real_logins: Sequence[str], tries: int, net: int = 3) -> Timing:
    """Alternate the two kinds so drift in machine load hits both alike. Each pair comes
    from its own loopback address (127.0.``net``.x) and names users of its own, so the
    growing per-address and per-login penalties are the same for both kinds (as for an
    attacker probing many names)."""
    unknown, wrong = [], []
    for i in range(tries):
        source = f"127.0.{net + i // 250}.{1 + i % 250}"
        real = real_logins[i % len(real_logins)]
        pairs = [("unknown", f"nobody{i}@d{i % 10}.test"), ("wrong", real)]
        if i % 2:
            pairs.reverse()
        for kind, login in pairs:
            took = _login_time(port, login, f"not-the-password-{i}", source)
            (unknown if kind == "unknown" else wrong).append(took)
    return Timing(unknown, wrong)


def run(tries: int, delay: float, workdir: Path) -> dict[str, float]:
    with Farm(bulk_users=tries) as farm:
        ports = ProxyPorts()
        sections = farm_config(
            farm,
            ports,
            trusted=False,
            proxy={"auth_failure_delay": delay, "plaintext_auth": True, "max_auth_failures": 3},
            directory={"cache_ttl": 3600, "negative_ttl": 3600},
        )
        sections.pop("pop3", None)
        proc = MailfarmProcess(workdir, sections, "timing").start()
        try:
            logins = [f"u{i}@d{i % 10}.test" for i in range(tries)]
            # A first pass puts every name in the route cache (found or not), as in the
            # reported measurement "with warm caches"; the second pass is the one timed.
            measure(ports.imap, logins, tries, net=3)
            return measure(ports.imap, logins, tries, net=3 + 1 + tries // 250).summary()
        finally:
            proc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.authtiming", description=__doc__)
    parser.add_argument("--tries", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.2, help="auth_failure_delay (s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mailfarm-timing-") as tmp:
        result = run(args.tries, args.delay, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:26} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
