"""A real, local mail farm for tests, the demo and the load tester: slapd, two Dovecots, two Cyrus.

Everything runs on loopback from one temporary directory: OpenLDAP on 127.0.0.1, two Dovecot
backends, ``mail1`` on 127.0.0.2 and ``mail2`` on 127.0.0.3, and two Cyrus IMAP 3.6 backends,
``mail3`` on 127.0.0.4 (with users of its own) and ``mail4`` on 127.0.0.5 (empty, a target for
moves), with the same port numbers on all of them so a user's ``mailHost`` alone says where to
connect. No mocks: the proxy under test talks to the same daemons, with the same
quirks, as in production; Cyrus is there because it differs (it knows users by uid only, and
takes a front end's proxy login as SASL PLAIN authzid, see :mod:`bench.farm_cyrus`).

Privileges: the farm must be started as root. slapd binds its sockets then runs as
``openldap``; the Dovecot masters stay root and run logins as ``dovenull``, internal services
as ``dovecot`` and mail access as ``mail`` (see :mod:`bench.farm_dovecot`); the Cyrus master
and saslauthd start as root, each in a private mount namespace for its /dev/log, and Cyrus's
services run as ``cyrus``. Nothing under /etc or /var is touched, and no system service is
started. Cyrus runs from the Debian packages that ``.ci/fetch-cyrus`` unpacks (never
installs: they conflict with Dovecot's).

Set ``MAILFARM_KEEP=1`` to keep the working directory (configs, logs, mail) after ``stop()``.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from bench.farm_cyrus import CyrusBackend, check_cyrus_root
from bench.farm_dovecot import MAIL_USER, DovecotBackend, DovecotPorts, LdapSettings
from bench.farm_ldap import Slapd, binary, ldif_entry, ssha, tree_entries
from bench.farm_proc import StartError, free_ports, greets, stop_processes, wait_until
from bench.pki import Pki, make_pki

BASE_DN = "dc=mailfarm,dc=test"
BACKEND_HOSTS = {
    "mail1": "127.0.0.2",
    "mail2": "127.0.0.3",
    "mail3": "127.0.0.4",
    "mail4": "127.0.0.5",  # a second Cyrus, so moves can go Cyrus -> Cyrus
}
#: Which server each backend runs; ``Backend.kind`` carries it to tests and tools.
BACKEND_KINDS = {"mail1": "dovecot", "mail2": "dovecot", "mail3": "cyrus", "mail4": "cyrus"}
QUOTE_PASSWORD = 'p"a\\ss w0rd'
_BULK_LOGIN = re.compile(r"u(?P<i>\d+)[@_]d\d[._]test")
_START_ATTEMPTS = 3  # a port can be taken between choosing it and the daemon binding it


def uid_for(address: str) -> str:
    """The farm's uid scheme: ``alice@example.co.uk`` -> ``alice_example_co_uk``."""
    return address.lower().replace(".", "_").replace("@", "_")


@dataclass(frozen=True)
class FarmUser:
    address: str
    uid: str
    password: str
    backend: str  # "mail1" / "mail2" (Dovecot) / "mail3" (Cyrus)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    @property
    def dn(self) -> str:
        return f"uid={self.uid},ou=users,dc={self.domain},ou=domains,{BASE_DN}"


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    lmtp_port: int
    kind: str = "dovecot"  # or "cyrus"; last, with a default, so positional use still works
    #: ManageSieve (RFC 5804): Pigeonhole on Dovecot, timsieved on Cyrus; one port for all,
    #: as mailfarm has one ``[sieve] backend_port``.
    sieve_port: int = 0


@dataclass(frozen=True)
class SentMail:
    """One message a backend handed to its ``sendmail_path`` (e.g. a Sieve vacation reply)."""

    args: tuple[str, ...]  # sendmail's argv after the program, e.g. ("-f", "", "--", "a@b")
    message: str  # exactly what came on stdin: headers and body

    @property
    def recipients(self) -> tuple[str, ...]:
        """The envelope recipients: the arguments after ``--``."""
        return self.args[self.args.index("--") + 1 :] if "--" in self.args else ()


def _user(address: str, password: str, backend: str) -> FarmUser:
    return FarmUser(address=address, uid=uid_for(address), password=password, backend=backend)


def default_users() -> list[FarmUser]:
    """The named users tests rely on; kept in one place so the demo prints the same list."""
    return [
        _user("alice@example.co.uk", "alice-pw", "mail1"),
        _user("bob@example.co.uk", "bob-pw", "mail2"),
        _user("carol@example.com", "carol-pw", "mail1"),
        _user("dave@example.com", "dave-pw", "mail2"),
        _user("jo_anne@under_score.org", "jo-anne-pw", "mail1"),
        _user("quote@example.com", QUOTE_PASSWORD, "mail2"),
        _user("erin@example.co.uk", "erin-pw", "mail3"),
        _user("frank@example.com", "frank-pw", "mail3"),
    ]


@dataclass(frozen=True)
class StaffMember:
    """A console sign-in under ``ou=staff``: an inetOrgPerson with ``employeeType`` (its
    role) and no inetLocalMailRecipient, so it is never a mail login."""

    uid: str
    password: str
    role: str  # employeeType: admin / helpdesk / domain-admin
    domains: tuple[str, ...] = ()  # associatedDomain, for a domain-admin

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{STAFF_BASE_DN}"


STAFF_BASE_DN = f"ou=staff,{BASE_DN}"
#: The console's staff, one per role; the demo prints them and the web tests sign in as them.
STAFF = (
    StaffMember("ada", "ada-pw", "admin"),
    StaffMember("hal", "hal-pw", "helpdesk"),
    StaffMember("dora", "dora-pw", "domain-admin", ("example.co.uk",)),
)


def staff_entries(staff: tuple[StaffMember, ...] = STAFF) -> Iterator[str]:
    """LDIF for ``ou=staff`` and its people (after the suffix: slapadd wants parents first)."""
    yield ldif_entry(STAFF_BASE_DN, {"objectClass": ["organizationalUnit"], "ou": ["staff"]})
    for member in staff:
        attrs = {
            "objectClass": ["inetOrgPerson"],
            "uid": [member.uid],
            "cn": [f"{member.uid} ({member.role})"],
            "sn": [member.uid],
            "employeeType": [member.role],
            "userPassword": [ssha(member.password)],
        }
        if member.domains:  # domainRelatedObject (cosine) is what allows associatedDomain
            attrs["objectClass"].append("domainRelatedObject")
            attrs["associatedDomain"] = list(member.domains)
        yield ldif_entry(member.dn, attrs)


def bulk_user(i: int) -> FarmUser:
    """Bulk user ``i`` for load tests: ``u{i}@d{i%10}.test``, password ``pw{i}``."""
    return _user(f"u{i}@d{i % 10}.test", f"pw{i}", "mail1" if i % 2 == 0 else "mail2")


class Farm:
    """Start with ``with Farm() as farm:``; every attribute is valid once ``start()`` returns."""

    base_dn = BASE_DN
    admin_dn = f"cn=admin,{BASE_DN}"
    admin_password = "farm-admin-pw"
    service_dn = f"cn=mailfarm,ou=services,{BASE_DN}"
    service_password = "farm-service-pw"
    master_user = "admin"
    master_password = "farm-master-pw"
    master_separator = "*"
    # Service logins in LDAP (ou=services, not mail users: no inetLocalMailRecipient). Cyrus
    # checks them through saslauthd like any login: ``cyrus`` is its admin (creates the mail3
    # mailboxes), ``mfproxy`` the front end's proxy identity, which logs in for a user with
    # SASL PLAIN authzid on Cyrus (proxyservers) and on Dovecot (a second master user).
    cyrus_admin_user = "cyrus"
    cyrus_admin_password = "farm-cyrus-pw"
    cyrus_admin_dn = f"uid=cyrus,ou=services,{BASE_DN}"
    proxy_user = "mfproxy"
    proxy_password = "farm-mfproxy-pw"
    proxy_dn = f"uid=mfproxy,ou=services,{BASE_DN}"
    staff = STAFF
    staff_base_dn = STAFF_BASE_DN
    pki: Pki  # set by start()

    def __init__(self, workdir: Path | None = None, bulk_users: int = 0) -> None:
        self._own_workdir = workdir is None
        # With no workdir, start() makes a fresh temp dir (and stop() removes it), so a Farm
        # that is built but never started leaves nothing behind.
        self.workdir = Path(workdir) if workdir is not None else Path()
        self.bulk_users = bulk_users
        self.users: list[FarmUser] = default_users()
        self.backends: dict[str, Backend] = {}
        self.ldap_uri = ""
        self.ldapi_uri = ""
        self.ldaps_uri = ""
        self._slapd: Slapd | None = None
        self._servers: dict[str, DovecotBackend | CyrusBackend] = {}
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Farm:
        """Start slapd and all three backends; return only when all of them answer."""
        if self._started:
            return self
        if os.geteuid() != 0:
            raise PermissionError("the farm must start as root (daemons drop privileges)")
        for name in ("slapd", "slapadd", "ldapmodify", "dovecot", "openssl"):
            binary(name)
        check_cyrus_root()  # names .ci/fetch-cyrus when Cyrus was never unpacked
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="mailfarm-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # slapd (openldap) and mail processes must traverse it
        atexit.register(self.stop)
        self._started = True
        try:
            self.pki = make_pki(
                self.workdir / "pki",
                [
                    "mailfarm.test",
                    "mail1.mailfarm.test",
                    "mail2.mailfarm.test",
                    "mail3.mailfarm.test",
                    "mail4.mailfarm.test",
                    "ldap.mailfarm.test",
                ],
            )
            self._start_with_retries()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_with_retries(self) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_daemons()
                return
            except StartError as exc:
                self._stop_daemons()
                if not exc.address_in_use or attempt == _START_ATTEMPTS:
                    raise

    def _start_daemons(self) -> None:
        ldap_port, sieve_port, *ports = free_ports(7, hosts=("127.0.0.1", *BACKEND_HOSTS.values()))
        ldap_dir = self.workdir / "ldap"
        shutil.rmtree(ldap_dir, ignore_errors=True)
        ldap_dir.mkdir()
        slapd = Slapd(
            ldap_dir, ldap_port, BASE_DN, self.admin_dn, self.admin_password, pki=self.pki
        )
        slapd.load(
            itertools.chain(
                tree_entries(
                    BASE_DN,
                    self.service_dn,
                    self.service_password,
                    ((user, BACKEND_HOSTS[user.backend]) for user in self._all_users()),
                ),
                self._service_logins(),  # ou=services came first in tree_entries
                staff_entries(self.staff),
            )
        )
        self._slapd = slapd
        self.ldap_uri, self.ldapi_uri = slapd.uri, slapd.ldapi_uri
        self.ldaps_uri = slapd.ldaps_uri  # TLS is offered (also StartTLS), never required
        slapd.spawn()  # every daemon boots in parallel; then wait for each
        dports = DovecotPorts(*ports)
        settings = LdapSettings(slapd.uri, BASE_DN, self.service_dn, self.service_password)
        for name, host in BACKEND_HOSTS.items():
            kind = BACKEND_KINDS[name]
            server: DovecotBackend | CyrusBackend
            if kind == "cyrus":
                server = CyrusBackend(
                    name, host, self.workdir / name, dports, self.pki, sieve_port=sieve_port
                )
                server.configure(
                    settings,
                    self.cyrus_admin_user,
                    self.proxy_user,
                    [
                        (self.cyrus_admin_user, self.cyrus_admin_password),
                        (self.proxy_user, self.proxy_password),
                    ],
                )
            else:
                server = DovecotBackend(name, host, self.workdir / name, dports, self.pki)
                server.configure(
                    settings,
                    self.master_user,
                    self.master_password,
                    [(self.proxy_user, self.proxy_password)],
                )
                _add_pigeonhole(server, sieve_port)
            self._servers[name] = server
            self.backends[name] = Backend(name, host, *ports, kind=kind, sieve_port=sieve_port)
        # Cyrus takes longest to come up (a database recovery, then its services): first.
        for server in sorted(self._servers.values(), key=lambda s: isinstance(s, DovecotBackend)):
            server.spawn()
        slapd.wait()
        for name, server in self._servers.items():
            server.wait()
            self._wait_sieve(name)
        self._create_cyrus_mailboxes()

    def _wait_sieve(self, name: str, timeout: float = 10.0) -> None:
        """A Dovecot backend's ManageSieve greets (its wait() only checks IMAP/POP3/LMTP)."""
        server, backend = self._servers[name], self.backends[name]
        if isinstance(server, DovecotBackend) and server._proc is not None:
            wait_until(
                lambda: greets(backend.host, backend.sieve_port, b'"IMPLEMENTATION"'),
                server._proc,
                timeout,
                f"dovecot {name} managesieve",
                server.log,
            )

    def _service_logins(self) -> Iterator[str]:
        for dn, uid, password, what in (
            (self.cyrus_admin_dn, self.cyrus_admin_user, self.cyrus_admin_password, "Cyrus admin"),
            (self.proxy_dn, self.proxy_user, self.proxy_password, "front end's proxy login"),
        ):
            yield ldif_entry(
                dn,
                {
                    "objectClass": ["account", "simpleSecurityObject"],
                    "uid": [uid],
                    "description": [f"{what}; no mail user"],
                    "userPassword": [ssha(password)],
                },
            )

    def _create_cyrus_mailboxes(self) -> None:
        """Cyrus autocreates nothing here: make each of its users' INBOX, as provisioning would."""
        for name, server in self._servers.items():
            if isinstance(server, CyrusBackend):
                uids = (user.uid for user in self._all_users() if user.backend == name)
                server.create_mailboxes(self.cyrus_admin_user, self.cyrus_admin_password, uids)

    def _all_users(self) -> list[FarmUser]:
        return self.users + [bulk_user(i) for i in range(self.bulk_users)]

    def _stop_daemons(self) -> None:
        procs: list[subprocess.Popen[bytes] | None] = []
        for server in self._servers.values():
            procs += server.detach_all() if isinstance(server, CyrusBackend) else [server.detach()]
        stop_processes(procs)
        if self._slapd is not None:
            self._slapd.stop()

    def stop(self) -> None:
        """Stop every daemon (idempotent); remove the workdir if the farm created it."""
        self._stop_daemons()
        if self._started and self._own_workdir and not os.environ.get("MAILFARM_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._started = False
        atexit.unregister(self.stop)

    def __enter__(self) -> Farm:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- lookups --------------------------------------------------------------------------

    def user(self, address_or_uid: str) -> FarmUser:
        """Find a named or bulk user by address or uid (case-insensitive); KeyError if none."""
        key = address_or_uid.lower()
        for user in self.users:
            if key in (user.address.lower(), user.uid):
                return user
        bulk = _BULK_LOGIN.fullmatch(key)
        if bulk and int(bulk["i"]) < self.bulk_users:
            candidate = bulk_user(int(bulk["i"]))
            if key in (candidate.address, candidate.uid):
                return candidate
        raise KeyError(address_or_uid)

    def backend_of(self, user: FarmUser) -> Backend:
        return self.backends[user.backend]

    def log_file(self, name: str) -> Path:
        """The log of ``"ldap"`` or a backend, e.g. to check a forwarded rip.

        For Cyrus (``mail3``) it is what its master, services and saslauthd sent to syslog.
        """
        if name == "ldap":
            assert self._slapd is not None, "farm not started"
            return self._slapd.log
        return self._servers[name].log

    # -- failure injection ----------------------------------------------------------------

    def stop_ldap(self) -> None:
        assert self._slapd is not None, "farm not started"
        self._slapd.stop()

    def start_ldap(self) -> None:
        """Restart slapd on the same port and data; returns once it answers binds."""
        assert self._slapd is not None, "farm not started"
        self._slapd.start()

    def stop_backend(self, name: str) -> None:
        self._servers[name].stop()

    def pids(self) -> dict[str, int]:
        """Process ids of slapd ("ldap") and each backend's master, for CPU/memory accounting.

        A backend's pid leads its process group (Cyrus's saslauthd is not in it).
        """
        out: dict[str, int] = {}
        if self._slapd is not None and self._slapd._proc is not None:
            out["ldap"] = self._slapd._proc.pid
        for name, server in self._servers.items():
            if server._proc is not None:
                out[name] = server._proc.pid
        return out

    def kill_backend(self, name: str) -> None:
        """Kill a backend abruptly (SIGKILL to its whole process group), as a crash or a
        pulled cable would: its sessions drop without a BYE. ``start_backend`` revives it."""
        proc = self._servers[name].detach()
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def start_backend(self, name: str) -> None:
        self._servers[name].start()
        self._wait_sieve(name)

    # -- data -----------------------------------------------------------------------------

    def deliver(self, rcpt: str, message: bytes, backend: str | None = None) -> None:
        """Deliver over LMTP to the rcpt's backend (or ``backend``); raise if refused.

        ``rcpt`` may be an address or a uid; an rcpt that is no farm user goes to ``mail1``
        unless ``backend`` says otherwise, so tests can watch Dovecot refuse it. Cyrus is
        sent a farm user's uid (it refuses ``user@domain``), as the proxy must do.
        """
        try:
            user: FarmUser | None = self.user(rcpt)
        except KeyError:
            user = None
        if backend is None:
            backend = user.backend if user is not None else "mail1"
        target = self.backends[backend]
        if target.kind == "cyrus" and user is not None:
            rcpt = user.uid
        body = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        with smtplib.LMTP(target.host, target.lmtp_port, timeout=10) as lmtp:
            lmtp.sendmail("farm@mailfarm.test", [rcpt], body)

    def outbox(self, name: str) -> list[SentMail]:
        """What Dovecot backend ``name`` has sent so far through its ``sendmail_path``
        (Sieve vacation replies, redirects), oldest first; see :func:`_add_pigeonhole`."""
        return _read_outbox(self.workdir / name / "outbox.log")

    def ldap_modify(self, dn: str, changes: dict[str, list[str] | None]) -> None:
        """Replace (list) or delete (``None``) attributes of ``dn`` as the rootdn."""
        assert self._slapd is not None, "farm not started"
        self._slapd.modify(dn, changes)

    def set_password(self, user: FarmUser | str, password: str) -> FarmUser:
        """Change a user's LDAP password (SSHA); ``users``/``user()`` then report the new one.

        ``user`` is a FarmUser or an address/uid. Tests should restore the old password in a
        ``finally``: the farm is shared by the whole session.
        """
        current = self.user(user.uid if isinstance(user, FarmUser) else user)
        self.ldap_modify(current.dn, {"userPassword": [ssha(password)]})
        updated = replace(current, password=password)
        self.users = [updated if u == current else u for u in self.users]
        return updated


# Dovecot's sendmail_path for the farm: appends each message, with its argv, to outbox.log
# beside it as "=== sendmail <argv as JSON> <size>\n", then the message's bytes and "\n".
# It runs as the mail user, under Dovecot's scrubbed environment; flock keeps concurrent
# deliveries' records whole.
_SENDMAIL = """#!/usr/bin/python3 -I
import fcntl, json, sys
data = sys.stdin.buffer.read()
with open({outbox!r}, "ab") as out:
    fcntl.flock(out, fcntl.LOCK_EX)
    out.write(b"=== sendmail %s %d\\n" % (json.dumps(sys.argv[1:]).encode(), len(data)))
    out.write(data + b"\\n")
"""
_OUTBOX_RECORD = re.compile(rb"=== sendmail (\[.*\]) (\d+)\n")


def _pigeonhole_conf(sieve_port: int, sendmail: Path) -> str:
    # Dovecot 2.3 syntax, included after bench/farm_dovecot.py's config. listen, SSL (for
    # STARTTLS), plaintext auth, the master passdb (``user*admin``, and PLAIN authzid with
    # mfproxy as authcid) and the LDAP passdb/userdb are the config's global ones, so
    # ManageSieve logins work exactly as IMAP's do.
    return f"""# added by bench/farm.py: Pigeonhole (Sieve at LMTP delivery, ManageSieve)
protocols = $protocols sieve
sendmail_path = {sendmail}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  # Vacation answers only mail addressed (To/Cc/...) to the recipient: the LMTP RCPT TO
  # address, not the uid Dovecot renames the user to.
  sieve_vacation_use_original_recipient = yes
}}
service managesieve-login {{
  inet_listener sieve {{
    port = {sieve_port}
  }}
  service_count = 0
  process_min_avail = 1
  process_limit = 10
}}
service managesieve {{
  process_limit = 100
}}
"""


def _add_pigeonhole(server: DovecotBackend, sieve_port: int) -> None:
    """Give a configured Dovecot backend Sieve at delivery, ManageSieve and a sendmail outbox."""
    mail = pwd.getpwnam(MAIL_USER)
    outbox = server.directory / "outbox.log"
    outbox.write_bytes(b"")
    os.chown(outbox, mail.pw_uid, mail.pw_gid)
    outbox.chmod(0o644)
    sendmail = server.directory / "sendmail"
    sendmail.write_text(_SENDMAIL.format(outbox=str(outbox)))
    sendmail.chmod(0o755)
    conf = server.directory / "pigeonhole.conf"
    conf.write_text(_pigeonhole_conf(sieve_port, sendmail))
    with server.conf.open("a") as main_conf:
        main_conf.write(f"!include {conf}\n")


def _read_outbox(path: Path) -> list[SentMail]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    sent, pos = [], 0
    while match := _OUTBOX_RECORD.match(data, pos):
        start = match.end()
        end = start + int(match[2])
        if end + 1 > len(data):  # a record still being written
            break
        args = tuple(json.loads(match[1]))
        sent.append(SentMail(args, data[start:end].decode("utf-8", "replace")))
        pos = end + 1
    return sent


def _describe(farm: Farm) -> str:
    lines = [
        f"workdir   {farm.workdir}",
        f"ldap      {farm.ldap_uri}   {farm.ldapi_uri}",
        f"base dn   {farm.base_dn}",
        f"admin     {farm.admin_dn}  password {farm.admin_password}",
        f"service   {farm.service_dn}  password {farm.service_password}",
        f"master    <user>{farm.master_separator}{farm.master_user}"
        f"  password {farm.master_password}  (Dovecot)",
        f"proxy     authzid <uid>, authcid {farm.proxy_user}  password {farm.proxy_password}"
        "  (SASL PLAIN, Dovecot and Cyrus)",
        f"cyrus     admin {farm.cyrus_admin_user}  password {farm.cyrus_admin_password}"
        "  (mailboxes user.<uid>)",
        f"CA cert   {farm.pki.ca_cert}",
    ]
    for b in farm.backends.values():
        lines.append(
            f"{b.name}     {b.kind:8} {b.host}  imap {b.imap_port}  imaps {b.imaps_port}"
            f"  pop3 {b.pop3_port}  pop3s {b.pop3s_port}  lmtp {b.lmtp_port}"
            + (f"  sieve {b.sieve_port}" if b.sieve_port else "")
            + f"  log {farm.log_file(b.name)}"
        )
    lines.append("users:")
    for u in farm.users:
        lines.append(f"  {u.address:28} uid {u.uid:28} {u.backend}  password: {u.password}")
    if farm.bulk_users:
        lines.append(f"  + {farm.bulk_users} bulk users u<i>@d<i%10>.test, password pw<i>")
    lines.append("staff (web console):")
    for m in farm.staff:
        domains = f"  domains {','.join(m.domains)}" if m.domains else ""
        lines.append(f"  {m.uid:8} {m.role:13} password: {m.password}{domains}")
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the mailfarm test farm until Ctrl-C.")
    parser.add_argument("--bulk-users", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the demo as cleanly as Ctrl-C
    with Farm(args.workdir, bulk_users=args.bulk_users) as farm:
        print(_describe(farm), flush=True)
        print("farm running; Ctrl-C to stop", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
