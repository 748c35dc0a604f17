"""``python -m bench.instructions`` counts a real mailfarm's instructions under callgrind.

Functional only: the count is made, covers the logins asked for, and is of the size a login
costs (hundreds of thousands of instructions); no figure is asserted as a bound.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.instructions import REPO, MeasureError, count, totals
from bench.patterns import Credential, format_users
from bench.proxyproc import ProxyPorts, farm_config, render_toml

needs_valgrind = pytest.mark.skipif(
    shutil.which("callgrind_control") is None, reason="valgrind not installed"
)


def test_totals_line_is_read() -> None:
    dump = b"events: Ir\nsummary: 0\nfn=(1) main\n0 5\ntotals: 273104848\n"
    assert totals(dump) == 273104848
    with pytest.raises(MeasureError):
        totals(b"events: Ir\n")


@needs_valgrind
def test_counts_the_logins_of_a_real_proxy(farm: Farm, tmp_path: Path) -> None:
    ports = ProxyPorts()
    config = tmp_path / "counted.toml"
    config.write_text(render_toml(farm_config(farm, ports)))
    users = tmp_path / "users.txt"
    dovecot = [u for u in farm.users if farm.backend_of(u).kind == "dovecot"]
    users.write_text(format_users([Credential(u.address, u.password) for u in dovecot]))
    counted = count(config, ports.imap, ["--users", str(users)], logins=20, warmup=5)
    assert counted.logins == 20 and counted.errors == 0, counted
    assert 100_000 < counted.per_login < 100_000_000, counted

    # The command line says the same, and fails (exit 1) on logins that fail.
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(format_users([Credential(dovecot[0].address, "not the password")]))
    done = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "-c", str(config), "--port",
         str(ports.imap), "--users", str(wrong), "--logins", "3", "--warmup", "0", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert '"errors": 3' in done.stdout and '"logins": 0' in done.stdout, done.stdout
