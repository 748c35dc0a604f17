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


def _fake(directory: Path, tool: str, *lines: str) -> Path:
    """A stand-in ``tool`` on PATH that prints ``lines``, whatever it is asked."""
    fake = directory / tool
    fake.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in lines))
    fake.chmod(0o755)
    return directory


def test_installed_tools_pass_the_check() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr


def test_swaks_without_tls_is_named(tmp_path: Path) -> None:
    swaks = ("=== Basic AUTH supported", "*** TLS not available: requires Net::SSLeay")
    result = _run(_fake(tmp_path, "swaks", *swaks))
    assert result.returncode == 1
    assert "swaks: no TLS support" in result.stderr


def test_curl_without_pop3s_is_named(tmp_path: Path) -> None:
    curl = ("curl 7.88.1", "Protocols: http https imap imaps pop3 smtp smtps", "Features: SSL")
    result = _run(_fake(tmp_path, "curl", *curl))
    assert result.returncode == 1
    assert "curl: no pop3s protocol" in result.stderr
