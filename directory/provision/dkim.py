"""DKIM keys: made here, kept as files for the signer, their public halves published in DNS.

The signer (OpenDKIM, rspamd) reads ``<[provision] dkim_dir>/<domain>/<selector>.private``
(PKCS#8 PEM, unencrypted: it has no one to ask for a passphrase). Each key file is written
to a temporary name in its own directory (mode 0600, the directories 0700) and then
hard-linked to its name: a signer never reads half a key, and an existing key is never
overwritten (a link refuses an existing name; a rename would replace it). The private key
is never printed nor logged; only its path and selector are reported.

``mailfarm dns dkim`` is idempotent: a domain that has a mailfarm key (a TXT at
``<selector>._domainkey`` whose key file exists) keeps it. ``--rotate`` adds a new selector
next to the old one, which stays published until the operator removes it, after the signer
has switched, so mail signed with the old key still verifies while in transit.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from directory.provision import Refused, UsageError
from directory.provision.dnsstore import read_zone, set_record
from directory.provision.ldapwrite import LdapWriter
from directory.provision.maildns import (
    check_selector,
    dkim_owner,
    dkim_public_der,
    dkim_value,
    keytable_line,
    next_selector,
    selector_of,
    signingtable_line,
)
from directory.settings import ProvisionSettings

KEY_SUFFIX = ".private"
_SELECTOR_ATTEMPTS = 100


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A key file of one selector; ``public_der`` only for a key made in this run."""

    domain: str
    selector: str
    path: Path
    public_der: bytes = field(default=b"", repr=False)

    def as_dict(self) -> dict[str, str]:
        return {
            "selector": self.selector,
            "name": dkim_owner(self.selector),
            "key_file": str(self.path),
            "opendkim_keytable": keytable_line(self.domain, self.selector, self.path),
            "opendkim_signingtable": signingtable_line(self.domain, self.selector),
        }


def dkim_root(settings: ProvisionSettings) -> Path:
    if settings.dkim_dir is None:
        raise UsageError(
            "no DKIM keys without a place for them: set [provision] dkim_dir (the signer "
            "reads <dkim_dir>/<domain>/<selector>.private)"
        )
    return settings.dkim_dir


def key_path(root: Path, domain: str, selector: str) -> Path:
    return root / domain / f"{selector}{KEY_SUFFIX}"


def key_selectors(root: Path, domain: str) -> set[str]:
    """The selectors that have a key file (temporary files, dot-named, are not keys)."""
    directory = root / domain
    if not directory.is_dir():
        return set()
    return {
        p.name[: -len(KEY_SUFFIX)].lower()
        for p in directory.iterdir()
        if p.name.endswith(KEY_SUFFIX) and not p.name.startswith(".")
    }


def new_key_pair(bits: int) -> tuple[bytes, bytes]:
    """(private key as PKCS#8 PEM, public key as DER SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, der


def _make_dirs(directory: Path) -> None:
    """Create the missing directories of ``directory``, each 0700 whatever the umask."""
    missing = []
    here = directory
    while not here.exists():
        missing.append(here)
        here = here.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)


def _write_key(path: Path, pem: bytes) -> None:
    """Write ``pem`` to ``path`` whole or not at all; FileExistsError if ``path`` exists."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def create_key(
    settings: ProvisionSettings,
    domain: str,
    today: date,
    selector: str | None = None,
    taken: set[str] | frozenset[str] = frozenset(),
) -> DkimKey:
    """A new key pair of ``dkim_bits``, its private half written to its file.

    Without ``selector``, the first free ``mfYYYYMMDD[-N]`` not in ``taken`` (the selectors
    the zone publishes) nor on disk; a named selector that is taken is refused.
    """
    root = dkim_root(settings)
    directory = root / domain
    try:
        _make_dirs(directory)
    except OSError as exc:
        raise UsageError(
            f"[provision] dkim_dir {root}: cannot create {directory}: {exc.strerror}"
        ) from None
    pem, der = new_key_pair(settings.dkim_bits)
    for _ in range(_SELECTOR_ATTEMPTS):
        used = key_selectors(root, domain) | set(taken)
        name = selector or next_selector(today, used)
        if selector and name in used:
            raise Refused(f"DKIM selector {name} of {domain} exists already; choose another")
        path = key_path(root, domain, name)
        try:
            _write_key(path, pem)
        except FileExistsError:
            continue  # another run took the name just now: the next one, or refused above
        except OSError as exc:
            raise UsageError(
                f"[provision] dkim_dir {root}: cannot write {path}: {exc.strerror}"
            ) from None
        return DkimKey(domain, name, path, der)
    raise Refused(f"{domain}: no free DKIM selector for today in {directory}")


def remove_domain_keys(settings: ProvisionSettings, domain: str) -> tuple[str, ...]:
    """Remove a deleted domain's key files (and a rotation's leftover temporaries); the
    paths removed. Other files an operator put there, and then the directory, are kept."""
    if settings.dkim_dir is None:
        return ()
    directory = settings.dkim_dir / domain
    if not directory.is_dir():
        return ()
    removed = []
    for path in sorted(directory.iterdir()):
        ours = path.name.endswith(KEY_SUFFIX) or (
            path.name.startswith(".") and f"{KEY_SUFFIX}." in path.name  # _write_key's temp
        )
        if ours and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(str(path))
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty: what is left is not ours
    return tuple(removed)


def remove_key(key: DkimKey) -> None:
    """Take back a key that was never published (a domain add that failed)."""
    key.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class DkimResult:
    """What ``dns dkim`` did: ``key`` is the current key (new when ``created``); ``older``
    the mailfarm keys still published next to it (after a rotation, the old one)."""

    domain: str
    key: DkimKey
    created: bool
    older: tuple[DkimKey, ...]
    serial: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            **self.key.as_dict(),
            "created": self.created,
            "serial": self.serial,
            "rspamd_path": str(self.key.path.parent.parent / "$domain" / "$selector.private"),
            "older": [
                {
                    **old.as_dict(),
                    "remove_with": (
                        f"mailfarm dns del {self.domain} {dkim_owner(old.selector)} TXT"
                    ),
                }
                for old in self.older
            ],
        }


def published_keys(
    settings: ProvisionSettings, writer: LdapWriter, domain: str
) -> tuple[set[str], list[DkimKey]]:
    """(every ``*._domainkey`` selector in the zone, the mailfarm keys among them, oldest
    first): a key is mailfarm's when the zone publishes it and its file exists."""
    root = dkim_root(settings)
    zone = read_zone(writer, domain)  # NotFound for an unknown domain
    selectors: set[str] = set()
    ours: list[DkimKey] = []
    for owner, types in zone.records.items():
        name = selector_of(owner)
        if name is None:
            continue
        selectors.add(name)
        path = key_path(root, domain, name)
        if any(dkim_public_der(v) for v in types.get("TXT", [])) and path.is_file():
            ours.append(DkimKey(domain, name, path))
    ours.sort(key=lambda k: (k.path.stat().st_mtime, k.selector))
    return selectors, ours


def ensure_dkim(
    settings: ProvisionSettings,
    writer: LdapWriter,
    domain: str,
    today: date,
    rotate: bool = False,
    selector: str | None = None,
) -> DkimResult:
    """Give ``domain`` a DKIM key unless it has one (or with ``rotate``, a new one anyway)."""
    dkim_root(settings)  # the setting first: no LDAP work for a command that cannot run
    wanted = check_selector(selector, domain) if selector is not None else None
    selectors, ours = published_keys(settings, writer, domain)
    if ours and not rotate:
        named = [k for k in ours if k.selector == wanted]
        if wanted is not None and not named:
            raise Refused(
                f"{domain} has the DKIM key {ours[-1].selector} already; add --rotate to "
                f"publish {wanted} next to it"
            )
        current = named[-1] if named else ours[-1]
        others = tuple(k for k in ours if k is not current)
        return DkimResult(domain, current, False, others, None)
    # The key file comes first and stays if publishing fails: a key nobody publishes is
    # harmless (its selector is skipped next time), a published key without its file is not.
    key = create_key(settings, domain, today, wanted, frozenset(selectors))
    change = set_record(
        writer, domain, dkim_owner(key.selector), "TXT", dkim_value(key.public_der), today
    )
    return DkimResult(domain, key, True, tuple(ours), change.serial)
