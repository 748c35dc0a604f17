"""A throw-away certificate authority for the test farm and the proxy's TLS tests.

Made with the ``openssl`` CLI rather than the ``cryptography`` package so the project needs
no extra dependency (the CLI is on every box that has Dovecot). Keys are EC P-256: they take
milliseconds to make, where RSA would dominate the farm's start-up time.

The leaf certificate carries what strict verifiers (Python 3.13's ``VERIFY_X509_STRICT``)
insist on: a critical ``basicConstraints`` on the CA, and subject/authority key identifiers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Addresses every farm certificate is valid for: LDAP lives on .1, the backends on .2/.3.
FARM_IPS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _ec_key_args(keyout: str) -> list[str]:
    return [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        keyout,
    ]


def make_pki(directory: Path, hostnames: list[str]) -> Pki:
    """Create ``ca.crt`` and a server ``server.crt``/``server.key`` in ``directory``.

    The server certificate names ``hostnames``, ``localhost`` and the three farm loopback IPs,
    so one certificate serves the LDAP server, both backends and the proxy under test.
    Keys are mode 0600 owned by the caller; daemons that read them start as root.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([*hostnames, "localhost"]))
    sans = [f"DNS:{name}" for name in names] + [f"IP:{ip}" for ip in FARM_IPS]
    old_umask = os.umask(0o077)
    try:
        _openssl(
            "req",
            "-x509",
            "-new",
            *_ec_key_args("ca.key"),
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/O=mailfarm test/CN=mailfarm test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )
        (directory / "server.ext").write_text(
            "basicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid,issuer\n"
            f"subjectAltName = {','.join(sans)}\n"
        )
        _openssl(
            "req",
            "-new",
            *_ec_key_args("server.key"),
            "-out",
            "server.csr",
            "-subj",
            f"/O=mailfarm test/CN={names[0]}",
            cwd=directory,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            "825",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
            cwd=directory,
        )
    finally:
        os.umask(old_umask)
    for public in ("ca.crt", "server.crt"):
        (directory / public).chmod(0o644)
    return Pki(
        ca_cert=directory / "ca.crt",
        cert=directory / "server.crt",
        key=directory / "server.key",
    )
