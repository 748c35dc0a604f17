"""``python -m bench.standup``: a farm with bulk users and mailfarm in front, for load tests.

Writes what a bench run needs (ports, pids, CA; with ``--peer`` also a Dovecot proxy in
front of the same backends, the peer mailfarm is measured against; IMAP, POP3 and
ManageSieve ports of all three: mailfarm, the peer, each backend) as JSON to ``--info``
and keeps everything up until Ctrl-C, SIGTERM or ``--for`` seconds, so ``mailfarm bench``
runs can be pointed at it from another shell. BENCHMARKS.md uses it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.dovecotproxy import PeerPorts, start_peer
from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port, sieve_section


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.standup", description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-users", type=int, default=1000)
    parser.add_argument("--info", type=Path, default=Path("/tmp/mailfarm-bench.json"))
    parser.add_argument("--for", dest="seconds", type=float, default=3600.0)
    parser.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [proxy] setting for mailfarm, e.g. workers=2 or auth_cache_ttl=60",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also start a Dovecot proxy in front of the same backends (the peer to beat)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.proxy:
        key, _, value = item.partition("=")
        overrides[key] = (
            json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
        )
    signal.signal(signal.SIGTERM, _stop)
    with Farm(bulk_users=args.bulk_users) as farm, tempfile.TemporaryDirectory() as tmp:
        ports = ProxyPorts()
        sieve_port = free_port()
        sections = farm_config(farm, ports, proxy=overrides, sieve=sieve_section(farm, sieve_port))
        with MailfarmProcess(Path(tmp), sections, "bench-mailfarm") as proc:
            assert proc.proc is not None
            info = {
                "proxy": {
                    "imap": ports.imap,
                    "imaps": ports.imaps,
                    "pop3": ports.pop3,
                    "pop3s": ports.pop3s,
                    "sieve": sieve_port,
                    "pid": proc.proc.pid,
                },
                "backends": {
                    name: {
                        "host": b.host,
                        "imap": b.imap_port,
                        "pop3": b.pop3_port,
                        "lmtp": b.lmtp_port,
                        **({"sieve": b.sieve_port} if b.sieve_port else {}),
                    }
                    for name, b in farm.backends.items()
                },
                "ldap_pid": farm.pids()["ldap"],
                "dovecot_pids": [farm.pids()[name] for name in farm.backends],
                "ca": str(farm.pki.ca_cert),
                "log": str(proc.log_path),
            }
            peer = None
            if args.peer:
                ports_ = PeerPorts(free_port(), free_port(), free_port(), free_port(), free_port())
                peer = start_peer(farm, Path(tmp) / "dovecot-proxy", ports_)
                info["dovecot_proxy"] = {
                    "imap": ports_.imap,
                    "imaps": ports_.imaps,
                    "pop3": ports_.pop3,
                    "pop3s": ports_.pop3s,
                    "sieve": ports_.sieve,
                    "pid": peer.pid,
                }
            args.info.write_text(json.dumps(info, indent=1))
            print(json.dumps(info), flush=True)
            try:
                time.sleep(args.seconds)
            except KeyboardInterrupt:
                pass
            finally:
                if peer is not None:
                    peer.stop()
    args.info.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
