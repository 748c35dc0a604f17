"""The farm's OpenLDAP server: an old-style ``slapd.conf``, an mdb database, LDIF loading.

Data goes in with ``slapadd -q`` before the server starts: it writes the database directly,
so ten thousand bulk users load in about a second where ``ldapadd`` would take far longer.
slapd starts as root (to bind its ports and create the ldapi socket) and then drops to
``openldap:openldap`` with ``-u``/``-g``; its directory is chowned to that account first.
It runs in the foreground (``-d``) so its output lands in ``slapd.log``: level ``none`` logs
only errors (a bind failure, a config typo); set ``MAILFARM_SLAPD_DEBUG=stats`` to log every
operation while diagnosing a test.

Given the farm's PKI, slapd also serves TLS: StartTLS on the plain port and ``ldaps://`` on a
second one, with the farm's CA-signed certificate (it names 127.0.0.1). TLS is offered, never
required, so everything that talks plain ``ldap://`` keeps working.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from bench.farm_proc import free_ports, port_open, spawn, stop_process, wait_until
from bench.pki import Pki

# dnsdomain2 (Debian pdns-backend-ldap): PowerDNS's record attributes (AAAA, TXT, SRV, ...) and
# objectClass dNSDomain2, which the admin tool writes for every DNS name.
SCHEMAS = ("core", "cosine", "inetorgperson", "nis", "misc", "dnsdomain2")
SCHEMA_DIR = Path("/etc/ldap/schema")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
SLAPD_USER = "openldap"

# An anonymous simple bind (messageID 1): the cheapest request whose answer proves that slapd
# is serving, not merely that the kernel accepted the connection into its backlog.
_ANON_BIND = bytes.fromhex("300c020101600702010304008000")


def binary(name: str) -> str:
    """Resolve a daemon binary, looking in sbin even when PATH (as for non-root) lacks it."""
    found = shutil.which(name, path=SBIN_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} not found (install the Debian package)")
    return found


def ssha(password: str, salt: bytes | None = None) -> str:
    """``{SSHA}`` hash as slapd checks it: base64(sha1(password + salt) + salt)."""
    salt = secrets.token_bytes(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _ldif_line(attr: str, value: str) -> str:
    """One ``attr: value`` line, base64-encoded whenever LDIF's SAFE-STRING rules demand it."""
    unsafe = (
        not value.isascii()
        or any(ch in value for ch in "\0\n\r")
        or value[:1] in (" ", ":", "<")
        or value.endswith(" ")
    )
    if unsafe:
        return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"
    return f"{attr}: {value}"


def ldif_entry(dn: str, attrs: Mapping[str, Sequence[str]]) -> str:
    lines = [_ldif_line("dn", dn)]
    for attr, values in attrs.items():
        lines.extend(_ldif_line(attr, value) for value in values)
    return "\n".join(lines) + "\n\n"


def ldif_modify(dn: str, changes: Mapping[str, Sequence[str] | None]) -> str:
    """LDIF for ``ldapmodify``: a list replaces the attribute's values, ``None`` deletes it."""
    lines = [_ldif_line("dn", dn), "changetype: modify"]
    for attr, values in changes.items():
        if values is None:
            lines.append(f"delete: {attr}")
        else:
            lines.append(f"replace: {attr}")
            lines.extend(_ldif_line(attr, value) for value in values)
        lines.append("-")
    return "\n".join(lines) + "\n\n"


class DirectoryUser(Protocol):
    """What the LDIF needs of a user; :class:`bench.farm.FarmUser` plus its mailHost."""

    address: str
    uid: str
    password: str

    @property
    def dn(self) -> str: ...

    @property
    def domain(self) -> str: ...


def tree_entries(
    base_dn: str,
    service_dn: str,
    service_password: str,
    users: Iterable[tuple[DirectoryUser, str]],
) -> Iterator[str]:
    """LDIF for the whole tree: suffix, service account, domains and ``(user, mailHost)``.

    Parents come before children (slapadd insists) and each domain entry is written once,
    just before its first user, so bulk users can be streamed without collecting them.
    """
    top = base_dn.split(",")[0].split("=", 1)[1]
    yield ldif_entry(
        base_dn,
        {"objectClass": ["dcObject", "organization"], "dc": [top], "o": ["mailfarm test farm"]},
    )
    services = service_dn.split(",", 1)[1]
    domains = f"ou=domains,{base_dn}"
    for ou_dn in (services, domains):
        ou = ou_dn.split(",")[0].split("=", 1)[1]
        yield ldif_entry(ou_dn, {"objectClass": ["organizationalUnit"], "ou": [ou]})
    yield ldif_entry(
        service_dn,
        {
            "objectClass": ["organizationalRole", "simpleSecurityObject"],
            "cn": [service_dn.split(",")[0].split("=", 1)[1]],
            "description": ["read-only account the proxy and Dovecot search with"],
            "userPassword": [ssha(service_password)],
        },
    )
    seen: set[str] = set()
    for user, mail_host in users:
        if user.domain not in seen:
            seen.add(user.domain)
            domain_dn = f"dc={user.domain},{domains}"
            yield ldif_entry(
                domain_dn,
                {
                    "objectClass": ["dNSDomain", "domainRelatedObject"],
                    "dc": [user.domain],
                    "associatedDomain": [user.domain],
                },
            )
            yield ldif_entry(
                f"ou=users,{domain_dn}", {"objectClass": ["organizationalUnit"], "ou": ["users"]}
            )
        local = user.address.rsplit("@", 1)[0]
        yield ldif_entry(
            user.dn,
            {
                "objectClass": ["inetOrgPerson", "inetLocalMailRecipient"],
                "uid": [user.uid],
                "mail": [user.address],
                "cn": [f"{local} of {user.domain}"],
                "sn": [local],
                "mailHost": [mail_host],
                "userPassword": [ssha(user.password)],
            },
        )


def _tls_conf(tls_dir: Path | None) -> str:
    """Global TLS directives: the farm certificate, offered to clients that ask for it."""
    if tls_dir is None:
        return ""
    return (
        f"TLSCACertificateFile {tls_dir / 'ca.crt'}\n"
        f"TLSCertificateFile {tls_dir / 'server.crt'}\n"
        f"TLSCertificateKeyFile {tls_dir / 'server.key'}\n"
        "TLSVerifyClient allow\n"
    )


def _slapd_conf(
    directory: Path,
    base_dn: str,
    admin_dn: str,
    admin_password: str,
    tls_dir: Path | None = None,
    sssvlv: bool = True,
) -> str:
    # sssvlv, as OPERATIONS.md tells operators: the console's users pages then sort and page
    # on the server (web/users.py); ``sssvlv=False`` gives the fallback path to measure it.
    module, overlay = ("moduleload sssvlv\n", "overlay sssvlv\n") if sssvlv else ("", "")
    includes = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in SCHEMAS)
    return f"""# generated by bench/farm_ldap.py
{includes}
{_tls_conf(tls_dir)}pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload pw-sha2
{module}sizelimit unlimited
timelimit unlimited

database mdb
maxsize 1073741824
suffix "{base_dn}"
rootdn "{admin_dn}"
rootpw {ssha(admin_password)}
directory {directory}/data
dbnosync
{overlay}index objectClass eq
index uid,mail,mailLocalAddress,associatedDomain,mailHost eq

# Passwords are for binding and for their owner to change, never for reading: the proxy
# and Dovecot (auth_bind) must prove a password by binding, as in production.
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by * read
"""


class Slapd:
    """One slapd on ``127.0.0.1:port`` plus an ldapi socket, restartable on the same data;
    with ``pki``, also StartTLS on that port and ``ldaps://`` on ``ldaps_port`` (picked if 0)."""

    def __init__(
        self,
        directory: Path,
        port: int,
        base_dn: str,
        admin_dn: str,
        admin_password: str,
        pki: Pki | None = None,
        ldaps_port: int = 0,
        sssvlv: bool = True,
    ) -> None:
        self.directory = directory
        self.sssvlv = sssvlv
        self.port = port
        self.base_dn = base_dn
        self.admin_dn = admin_dn
        self.admin_password = admin_password
        self.conf = directory / "slapd.conf"
        self.log = directory / "slapd.log"
        self.socket = directory / "ldapi"
        if len(os.fsencode(self.socket)) > 100:  # sun_path is 108 bytes
            raise ValueError(f"workdir too deep for an ldapi socket: {self.socket}")
        self.uri = f"ldap://127.0.0.1:{port}"
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(str(self.socket), safe="")
        self.pki = pki
        # Copies inside the directory: slapd reads them after dropping to openldap, and the
        # farm's own key is root's, mode 0600.
        self.tls_dir = directory / "tls" if pki is not None else None
        if pki is not None and not ldaps_port:
            ldaps_port = free_ports(1, hosts=("127.0.0.1",))[0]
        self.ldaps_port = ldaps_port
        self.ldaps_uri = f"ldaps://127.0.0.1:{ldaps_port}" if pki is not None else ""
        self._proc: subprocess.Popen[bytes] | None = None

    def load(self, entries: Iterable[str]) -> None:
        """Write the config and bulk-load LDIF ``entries`` into a fresh database."""
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        if self.pki is not None and self.tls_dir is not None:
            self.tls_dir.mkdir(exist_ok=True)
            for source, name in (
                (self.pki.ca_cert, "ca.crt"),
                (self.pki.cert, "server.crt"),
                (self.pki.key, "server.key"),
            ):
                shutil.copyfile(source, self.tls_dir / name)
            (self.tls_dir / "server.key").chmod(0o600)  # chowned to openldap below
        self.conf.write_text(
            _slapd_conf(
                self.directory,
                self.base_dn,
                self.admin_dn,
                self.admin_password,
                self.tls_dir,
                self.sssvlv,
            )
        )
        ldif = self.directory / "farm.ldif"
        with ldif.open("w") as out:
            out.writelines(entries)
        proc = subprocess.run(
            [binary("slapadd"), "-q", "-f", str(self.conf), "-l", str(ldif)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"slapadd failed ({proc.returncode}): {proc.stderr.strip()}")
        account = pwd.getpwnam(SLAPD_USER)
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        self.conf.chmod(0o640)  # holds the rootpw hash

    def start(self, timeout: float = 15.0) -> None:
        """Start slapd (no-op if running) and wait until it answers a bind."""
        self.spawn()
        self.wait(timeout)

    def spawn(self) -> None:
        if self.running:
            return
        argv = [
            binary("slapd"),
            "-d",
            os.environ.get("MAILFARM_SLAPD_DEBUG", "none"),
            "-f",
            str(self.conf),
            "-h",
            " ".join(
                [
                    f"{self.uri}/",
                    self.ldapi_uri,
                    *([f"{self.ldaps_uri}/"] if self.ldaps_uri else []),
                ]
            ),
            "-u",
            SLAPD_USER,
            "-g",
            SLAPD_USER,
        ]
        self._proc = spawn(argv, self.log, cwd=self.directory)

    def wait(self, timeout: float = 15.0) -> None:
        assert self._proc is not None
        wait_until(self._answers, self._proc, timeout, "slapd", self.log)

    def _answers(self) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(_ANON_BIND)
                return sock.recv(64)[:1] == b"\x30"
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def modify(self, dn: str, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Apply ``changes`` as the rootdn over ldapi (works whatever the ACLs say)."""
        proc = subprocess.run(
            [
                binary("ldapmodify"),
                "-x",
                "-H",
                self.ldapi_uri,
                "-D",
                self.admin_dn,
                "-w",
                self.admin_password,
            ],
            input=ldif_modify(dn, changes),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ldapmodify {dn} failed: {proc.stderr.strip()}")
