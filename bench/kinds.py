"""Logins per backend kind and backend_auth mode, against direct, in one run.

``python -m bench.kinds [--logins N] [--rounds R]`` starts a farm (Dovecot mail1, Cyrus
mail3) and two mailfarms (``backend_auth = "password"`` and ``"proxy"``), then, for a user
on each kind, times N sequential sessions (connect, LOGIN, EXAMINE INBOX, LOGOUT) straight
to the backend and through each mailfarm, alternating in R rounds so drift hits all three
alike. Prints the median sessions/s and the ratios to direct, as one JSON object per kind.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config

USERS = {"dovecot": "alice@example.co.uk", "cyrus": "erin@example.co.uk"}
MODES = ("password", "proxy")


def sessions_per_second(host: str, port: int, login: str, password: str, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client = imaplib.IMAP4(host, port)
        client.login(login, password)
        client.select("INBOX", readonly=True)
        client.logout()
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=200, help="sessions per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with Farm() as farm:
        work = Path(tempfile.mkdtemp(prefix="mailfarm-kinds-"))
        fronts: dict[str, tuple[ProxyPorts, MailfarmProcess]] = {}
        try:
            for mode in MODES:
                ports = ProxyPorts()
                sections = farm_config(
                    farm, ports, imap={"backend_auth": mode}, pop3={"backend_auth": mode}
                )
                (work / mode).mkdir()
                fronts[mode] = (ports, MailfarmProcess(work / mode, sections, mode).start())
            for kind, address in USERS.items():
                user = farm.user(address)
                backend = farm.backends[user.backend]
                rates: dict[str, list[float]] = {"direct": [], **{m: [] for m in MODES}}
                for _ in range(args.rounds):
                    rates["direct"].append(
                        sessions_per_second(
                            backend.host, backend.imap_port, user.uid, user.password, args.logins
                        )
                    )
                    for mode, (ports, _) in fronts.items():
                        rates[mode].append(
                            sessions_per_second(
                                "127.0.0.1", ports.imap, user.address, user.password, args.logins
                            )
                        )
                median = {name: statistics.median(values) for name, values in rates.items()}
                report = {
                    "kind": kind,
                    "sessions_per_s": {k: round(v, 1) for k, v in median.items()},
                    "ratio_to_direct": {m: round(median[m] / median["direct"], 3) for m in MODES},
                }
                print(json.dumps(report), flush=True)
        finally:
            for _, process in fronts.values():
                process.stop()


if __name__ == "__main__":
    main()
