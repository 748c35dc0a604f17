"""`.ci/install-debian-packages` names a test client that lacks a capability the tests use.

A fresh Debian box installs with --no-install-recommends, which once dropped swaks' TLS
(Net::SSLeay) and let `make test` fail ten minutes in; the script must catch that itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "install-debian-packages"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not Debian")


def _run(path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )


def test_installed_tools_pass_the_check() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr


def test_swaks_without_tls_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "swaks"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '=== Basic AUTH supported'\n"
        "echo '*** TLS not available: requires Net::SSLeay'\n"
    )
    fake.chmod(0o755)
    result = _run(tmp_path)
    assert result.returncode == 1
    assert "swaks: no TLS support" in result.stderr


def test_curl_without_pop3s_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "curl"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'curl 7.88.1'\n"
        "echo 'Protocols: http https imap imaps pop3 smtp smtps'\n"
        "echo 'Features: SSL'\n"
    )
    fake.chmod(0o755)
    result = _run(tmp_path)
    assert result.returncode == 1
    assert "curl: no pop3s protocol" in result.stderr
