"""Further certificates from the farm's CA, for the proxy's per-name (SNI) tests.

Kept apart from :mod:`bench.pki` (which makes the CA and the farm's one server certificate at
start) because only some tests need these, each with its own names and lifetime, e.g. a
certificate a few days from expiry for ``check-config``'s warning.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bench.pki import Pki, _ec_key_args, _openssl


@dataclass(frozen=True)
class IssuedCert:
    cert: Path
    key: Path


def issue_cert(
    pki: Pki, directory: Path, stem: str, dns_names: list[str], days: int = 90
) -> IssuedCert:
    """Sign ``stem.crt``/``stem.key`` in ``directory`` for ``dns_names`` with the farm CA
    (whose key lies next to ``pki.ca_cert``); the first name is also the subject CN.

    Writing over an existing ``stem`` replaces the files in place, which is what a
    certificate renewal followed by SIGHUP looks like to the proxy."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = pki.ca_cert.with_name("ca.key")
    ext = directory / f"{stem}.ext"
    ext.write_text(
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid,issuer\n"
        f"subjectAltName = {','.join(f'DNS:{n}' for n in dns_names)}\n"
    )
    old_umask = os.umask(0o077)
    try:
        _openssl(
            "req",
            "-new",
            *_ec_key_args(f"{stem}.key"),
            "-out",
            f"{stem}.csr",
            "-subj",
            f"/O=mailfarm test/CN={dns_names[0]}",
            cwd=directory,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{stem}.csr",
            "-CA",
            str(pki.ca_cert),
            "-CAkey",
            str(ca_key),
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            str(days),
            "-extfile",
            str(ext),
            "-out",
            f"{stem}.crt",
            cwd=directory,
        )
    finally:
        os.umask(old_umask)
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.chmod(0o644)
    key.chmod(0o644)  # the proxy under test may run as another user than the test
    return IssuedCert(cert, key)
