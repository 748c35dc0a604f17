"""The farm's Cyrus IMAP 3.6 backend: unpacked Debian binaries, saslauthd, a private /dev/log.

Debian's ``cyrus-imapd``/``cyrus-pop3d`` conflict with the Dovecot packages, so Cyrus is never
installed: ``.ci/fetch-cyrus`` unpacks its .debs (and the libraries they would have pulled)
into ``$MAILFARM_CYRUS_ROOT`` (default ``/var/cache/mailfarm/cyrus``) and every program runs
from there with ``LD_LIBRARY_PATH`` pointing into it. Every daemon is told its config with
``-C``, and the service commands in ``cyrus.conf`` are absolute paths into that root.

Choices that tests depend on, and why:

* Syslog only. Cyrus and saslauthd log nowhere else, and these machines have no ``/dev/log``.
  Each daemon therefore runs under ``unshare -m --propagation private``: in that private mount
  namespace a small tmpfs covers ``/dev``, the few device nodes a daemon opens are
  bind-mounted back from the real ``/dev``, and ``/dev/log`` is a bind mount of a datagram
  socket in the backend's directory, where a tiny receiver process appends each message to
  ``syslog.log`` (:attr:`CyrusBackend.log`); the daemons' stdout/stderr (start-up errors,
  saslauthd's ``-d`` echo) go to ``daemons.out``. Nothing outside the namespace sees any of it.
* Passwords are checked by saslauthd against the farm's slapd (``ldap_auth_method: bind``,
  filter ``(uid=%u)`` over the whole tree, no cache), so a password change or an LDAP outage
  shows at once, as on Dovecot. Cyrus knows users by uid only: ``erin@example.co.uk`` is no
  uid, so Cyrus refuses that login and lmtpd refuses that recipient (``virtdomains: off``),
  which is why the proxy must log in, and deliver, by uid. The admin (``cyrus``) and the
  proxy user (``mfproxy``) are also in Cyrus's own sasldb, tried first
  (``sasl_pwcheck_method: auxprop saslauthd``): with LDAP down, users are refused but the
  proxy can still vouch for a user it knows, as a production front end must.
* Mailboxes are ``user.<uid>`` (``altnamespace: no``, ``unixhierarchysep: no``): ``.``
  separates folders, so the farm's dot-free ``name_domain_tld`` uids fit. Nothing is
  autocreated (``autocreate_quota: -1``): the farm creates each mail3 user's INBOX as the
  admin ``cyrus`` at start, as a provisioning system would.
* ``proxyservers: mfproxy``: the front end logs in for a user with ``AUTHENTICATE PLAIN`` of
  ``uid\\0mfproxy\\0secret``; Cyrus does not know Dovecot's ``user*master`` LOGIN form.
* ``delete_mode``/``expunge_mode: immediate``: a deleted mailbox or message is gone at once,
  so tests need not know about ``DELETED.*`` copies or ``cyr_expire``. Tests that want the
  production-like ``delayed`` mode can rewrite :attr:`CyrusBackend.conf` and restart.
* ``failedloginpause: 0``: Cyrus would sleep 3 s after each failed login, and a
  wrong-password test must fail fast, as on Dovecot.
* ``servername: mail3`` puts the backend's name in the IMAP, POP3 and LMTP greetings, so a
  test (or a misrouted login) can tell which backend answered, as with Dovecot's greeting.
* ``master_bind_errors_fatal``: a port taken between choosing and binding it makes master
  exit with "Address already in use" in the log, so the farm retries at once with new ports
  instead of waiting for a half-started backend.
* ``lmtpd -a``: LMTP from the farm (and the proxy) is trusted without LMTP AUTH; without it
  lmtpd answers every recipient with a temporary 430.
* ``timsieved`` (ManageSieve) listens on the farm's one sieve port, as Pigeonhole does on the
  Dovecot backends, since mailfarm has one ``[sieve] backend_port``. It needs nothing of its
  own: the sources go to the user's hidden ``user.<uid>.#sieve`` mailbox, the bytecode that
  lmtpd runs under ``sievedir``, and the logins are the imapd ones (``allowplaintext``,
  saslauthd, sasldb, ``proxyservers`` for the PLAIN authzid), STARTTLS from ``tls_server_cert``.
* ``idled`` runs, so IDLE sessions hear of a delivery at once (without it Cyrus polls every
  60 s and logs an error per change); there are no EVENTS (checkpoint, expire): the farm is
  short-lived, and their start-up runs would slow its boot.
* The master starts as root and runs every service as ``cyrus`` (group ``mail``), which owns
  the config, spool and TLS key copies; saslauthd stays root, as packaged.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.farm_dovecot import MAIL_USER, DovecotPorts, LdapSettings
from bench.farm_ldap import binary
from bench.farm_proc import StartError, greets, log_tail, spawn, stop_processes, wait_until
from bench.pki import Pki

CYRUS_USER = "cyrus"
ROOT_ENV = "MAILFARM_CYRUS_ROOT"
DEFAULT_ROOT = Path("/var/cache/mailfarm/cyrus")
#: Where the .debs put their libraries (multiarch directories; .ci/fetch-cyrus checks the same).
LIB_GLOBS = ("usr/lib/*-linux-gnu", "lib/*-linux-gnu")
#: The tree under ``configdirectory`` that Debian's cyrus-makedirs creates.
CONFIG_SUBDIRS = ("db", "proc", "socket", "log", "msg", "user", "quota", "lock")
#: Device nodes the daemons (and the libraries they load) open; bind-mounted into the tmpfs.
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")

# Runs inside the new mount namespace as root: build the private /dev, then become the daemon.
# $1 is an empty directory that briefly holds the real /dev, $2 the syslog socket, which the
# receiver (started at the same time, not waited for) creates once it is bound.
_NAMESPACE_SH = r"""
set -e
hostdev=$1 logsock=$2
shift 2
tries=0
until [ -S "$logsock" ]; do
  tries=$((tries + 1))
  [ $tries -le 500 ] || { echo "mailfarm-ns: no syslog socket $logsock" >&2; exit 1; }
  sleep 0.01
done
mount --rbind /dev "$hostdev"
mount -t tmpfs -o mode=0755,size=1m,nosuid mailfarm-dev /dev
for node in {nodes}; do
  : > "/dev/$node"
  mount --bind "$hostdev/$node" "/dev/$node"
done
for dir in pts shm; do
  mkdir "/dev/$dir"
  mount --rbind "$hostdev/$dir" "/dev/$dir"
done
ln -s pts/ptmx /dev/ptmx
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
: > /dev/log
mount --bind "$logsock" /dev/log
umount -l "$hostdev"
exec "$@"
""".replace("{nodes}", " ".join(DEV_NODES))

# The syslog receiver: one datagram per message, "<PRI>" stripped, appended with a newline.
# On SIGTERM it keeps reading until the socket has been quiet for 0.3 s, so the shutdown
# messages of daemons stopped at the same moment still reach the log.
_RECEIVER = r"""
import os, re, signal, socket, sys

class Stop(Exception):
    pass

def stop(*_):
    raise Stop

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, stop)
path, log = sys.argv[1], sys.argv[2]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path + ".new")
os.chmod(path + ".new", 0o666)  # services run as cyrus
os.rename(path + ".new", path)  # appears only once bound: the namespace script waits for it
pri = re.compile(rb"^<\d{1,3}>")
with open(log, "ab", buffering=0) as out:
    try:
        while True:
            out.write(pri.sub(b"", sock.recv(65536)).rstrip(b"\0\n") + b"\n")
    except Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sock.settimeout(0.3)
        try:
            while True:
                out.write(pri.sub(b"", sock.recv(65536)).rstrip(b"\0\n") + b"\n")
        except OSError:  # the timeout
            pass
"""


def cyrus_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def check_cyrus_root(root: Path | None = None) -> Path:
    """Fail with the fix in the message when Cyrus was never unpacked (a fresh box)."""
    root = cyrus_root() if root is None else root
    if not (root / "usr/lib/cyrus/bin/master").is_file():
        raise FileNotFoundError(
            f"Cyrus IMAP is not unpacked in {root} (set {ROOT_ENV} or run .ci/fetch-cyrus as root)"
        )
    for name in ("saslauthd", "unshare", "mount"):
        binary(name)
    try:
        pwd.getpwnam(CYRUS_USER)
    except KeyError:
        raise FileNotFoundError(
            f"no {CYRUS_USER} user (run .ci/fetch-cyrus as root, which creates it)"
        ) from None
    return root


def _imapd_conf(b: CyrusBackend, admin: str, proxy_user: str) -> str:
    d = b.directory
    return f"""# generated by bench/farm_cyrus.py for backend {b.name}
servername: {b.name}
configdirectory: {d}/config
defaultpartition: default
partition-default: {d}/spool
sievedir: {d}/sieve
syslog_prefix: {b.name}
master_bind_errors_fatal: 1
altnamespace: no
unixhierarchysep: no
virtdomains: off
admins: {admin}
proxyservers: {proxy_user}
allowplaintext: yes
sasl_pwcheck_method: auxprop saslauthd
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {b.sasldb}
sasl_saslauthd_path: {b.mux}
sasl_mech_list: PLAIN LOGIN
sasl_auto_transition: no
failedloginpause: 0
autocreate_quota: -1
delete_mode: immediate
expunge_mode: immediate
lmtp_downcase_rcpt: yes
tls_server_cert: {b.tls_cert}
tls_server_key: {b.tls_key}
"""


def _cyrus_conf(b: CyrusBackend) -> str:
    bindir = b.root / "usr/lib/cyrus/bin"
    conf = f"-C {b.conf}"
    p, h = b.ports, b.host
    sieve = (
        f'  sieve cmd="{bindir}/timsieved {conf}" listen="{h}:{b.sieve_port}" prefork=1'
        " maxchild=100\n"
        if b.sieve_port
        else ""
    )
    return f"""# generated by bench/farm_cyrus.py for backend {b.name}
START {{
  recover cmd="{bindir}/ctl_cyrusdb {conf} -r"
}}
SERVICES {{
  imap  cmd="{bindir}/imapd {conf}"    listen="{h}:{p.imap}"  prefork=1 maxchild=500
  imaps cmd="{bindir}/imapd -s {conf}" listen="{h}:{p.imaps}" prefork=0 maxchild=500
  pop3  cmd="{bindir}/pop3d {conf}"    listen="{h}:{p.pop3}"  prefork=1 maxchild=500
  pop3s cmd="{bindir}/pop3d -s {conf}" listen="{h}:{p.pop3s}" prefork=0 maxchild=500
  lmtp  cmd="{bindir}/lmtpd -a {conf}" listen="{h}:{p.lmtp}"  prefork=1 maxchild=100
{sieve}}}
# No EVENTS: the usual checkpoint/expire jobs only matter to a long-lived server, and the
# checkpoint's start-up run would compete with the farm's boot for the CPU.
DAEMON {{
  idled cmd="{bindir}/idled {conf}"
}}
"""


def _saslauthd_conf(ldap: LdapSettings) -> str:
    return f"""ldap_servers: {ldap.uri}
ldap_version: 3
ldap_search_base: {ldap.base_dn}
ldap_scope: sub
ldap_deref: never
ldap_filter: (uid=%u)
ldap_auth_method: bind
ldap_bind_dn: {ldap.service_dn}
ldap_bind_pw: {ldap.service_password}
ldap_timeout: 5
ldap_time_limit: 5
"""


class CyrusBackend:
    """A Cyrus master (imap, imaps, pop3, pop3s, lmtp, sieve) on one loopback IP, with
    saslauthd."""

    def __init__(
        self,
        name: str,
        host: str,
        directory: Path,
        ports: DovecotPorts,
        pki: Pki,
        root: Path | None = None,
        sieve_port: int = 0,
    ) -> None:
        self.name = name
        self.host = host
        self.directory = directory
        self.ports = ports
        self.sieve_port = sieve_port  # timsieved (ManageSieve); 0: none
        self.pki = pki
        self.root = cyrus_root() if root is None else root
        self.conf = directory / "imapd.conf"
        self.cyrus_conf = directory / "cyrus.conf"
        self.log = directory / "syslog.log"
        self.output = directory / "daemons.out"  # stdout/stderr: startup failures, saslauthd -d
        self.mux = directory / "saslauthd" / "mux"
        self.sasldb = directory / "config" / "sasldb2"
        self.tls_cert = directory / "tls" / "server.crt"
        self.tls_key = directory / "tls" / "server.key"
        self._syslog_socket = directory / "syslog.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._saslauthd: subprocess.Popen[bytes] | None = None
        self._receiver: subprocess.Popen[bytes] | None = None

    # -- configuration ----------------------------------------------------------------------

    def configure(
        self,
        ldap: LdapSettings,
        admin_user: str,
        proxy_user: str,
        local_users: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write the configs and make the directories, owned by ``cyrus`` where it writes.

        ``local_users`` (name, password) go into Cyrus's own sasldb, checked before
        saslauthd: the admin and the proxy user must log in while LDAP is down, which is
        when the proxy vouching for a cached user matters.
        """
        shutil.rmtree(self.directory, ignore_errors=True)
        cyrus = pwd.getpwnam(CYRUS_USER)
        mail_gid = pwd.getpwnam(MAIL_USER).pw_gid
        self.directory.mkdir(parents=True)
        self.directory.chmod(0o755)
        # What Debian's cyrus-makedirs would create (Cyrus makes few directories itself).
        config_dirs = [f"config/{sub}" for sub in CONFIG_SUBDIRS]
        for sub in ("config", *config_dirs, "spool", "sieve", "tls"):
            path = self.directory / sub
            path.mkdir()
            os.chown(path, cyrus.pw_uid, mail_gid)
            path.chmod(0o750)
        (self.directory / "run").mkdir()  # master's pid file; master runs as root
        self.mux.parent.mkdir(mode=0o755)
        (self.directory / "ns-dev").mkdir(mode=0o700)
        shutil.copyfile(self.pki.cert, self.tls_cert)
        shutil.copyfile(self.pki.key, self.tls_key)
        for path, mode in ((self.tls_cert, 0o644), (self.tls_key, 0o600)):
            os.chown(path, cyrus.pw_uid, mail_gid)
            path.chmod(mode)
        self.conf.write_text(_imapd_conf(self, admin_user, proxy_user))
        self.cyrus_conf.write_text(_cyrus_conf(self))
        for name, password in local_users:
            subprocess.run(
                # The realm is Cyrus's servername, which it gives SASL as the default realm
                # (saslpasswd2 would otherwise use this machine's hostname).
                [binary("saslpasswd2"), "-f", str(self.sasldb), "-u", self.name, "-c", "-p", name],
                input=password.encode(),
                check=True,
                capture_output=True,
            )
        if local_users:
            os.chown(self.sasldb, cyrus.pw_uid, mail_gid)
            self.sasldb.chmod(0o640)
        sasl_conf = self.directory / "saslauthd.conf"
        sasl_conf.touch(mode=0o600)  # holds the service password; saslauthd runs as root
        sasl_conf.write_text(_saslauthd_conf(ldap))

    # -- processes --------------------------------------------------------------------------

    def _library_path(self) -> str:
        """LD_LIBRARY_PATH for the unpacked binaries: their libraries are in the root only."""
        libs = [str(d) for pattern in LIB_GLOBS for d in sorted(self.root.glob(pattern))]
        inherited = os.environ.get("LD_LIBRARY_PATH")
        return os.pathsep.join([*libs, inherited] if inherited else libs)

    def _in_namespace(self, argv: list[str]) -> list[str]:
        return [
            binary("unshare"),
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            _NAMESPACE_SH,
            "mailfarm-ns",
            str(self.directory / "ns-dev"),
            str(self._syslog_socket),
            *argv,
        ]

    def start(self, timeout: float = 20.0) -> None:
        self.spawn()
        self.wait(timeout)

    def spawn(self) -> None:
        """Start whatever is not running: the syslog receiver, saslauthd and master (each of
        these two in its own namespace), all at once; the namespace script waits for the
        receiver's socket, so no early log line is lost and the farm does not wait here."""
        if not _alive(self._receiver):
            self._syslog_socket.unlink(missing_ok=True)
            # -I -S: no site or user paths, for a faster start
            receiver = [sys.executable, "-I", "-S", "-c", _RECEIVER]
            self._receiver = spawn(
                [*receiver, str(self._syslog_socket), str(self.log)], self.output
            )
        if not _alive(self._saslauthd):
            self.mux.unlink(missing_ok=True)
            argv = [
                binary("saslauthd"),
                "-d",  # foreground (and its debug lines in daemons.out)
                "-a",
                "ldap",
                "-O",
                str(self.directory / "saslauthd.conf"),
                "-m",
                str(self.mux.parent),
                "-n",
                "2",
            ]
            self._saslauthd = spawn(self._in_namespace(argv), self.output, cwd=self.directory)
        if not self.running:
            # env(1), not Popen(env=): the variable must survive unshare and the namespace
            # script, and spawn() keeps the farm's environment otherwise.
            argv = [
                "env",
                f"LD_LIBRARY_PATH={self._library_path()}",
                str(self.root / "usr/lib/cyrus/bin/master"),
                "-C",
                str(self.conf),
                "-M",
                str(self.cyrus_conf),
                "-p",
                str(self.directory / "run" / "master.pid"),
                "-l",
                "1024",
            ]
            self._proc = spawn(self._in_namespace(argv), self.output, cwd=self.directory)

    def wait(self, timeout: float = 20.0) -> None:
        """Return once IMAP, POP3 and LMTP greet and saslauthd's socket is up."""
        assert self._proc is not None
        try:
            wait_until(self._ready, self._proc, timeout, f"cyrus {self.name}", self.log)
        except StartError as exc:
            if self._proc.poll() is None:
                raise
            # master said why (e.g. "Address already in use", which makes the farm retry)
            # just before exiting, but the receiver may not have written it yet.
            deadline = time.monotonic() + 2
            while "exiting" not in log_tail(self.log, 5) and time.monotonic() < deadline:
                time.sleep(0.02)
            raise StartError(str(exc).split(";", 1)[0], self.log) from None

    def _ready(self) -> bool:
        # master binds every listener before it starts a service (and exits if one fails),
        # so greetings on the preforked imap, pop3, lmtp (and sieve) mean imaps and pop3s do;
        # not probing those spares the log a "TLS negotiation failed" per start.
        for what, proc in (("saslauthd", self._saslauthd), ("syslog receiver", self._receiver)):
            if proc is not None and proc.poll() is not None:
                raise StartError(f"{what} for {self.name} exited", self.output)
        if not self.mux.exists():
            return False
        p = self.ports
        return (
            greets(self.host, p.imap, b"* OK")
            and greets(self.host, p.pop3, b"+OK")
            and greets(self.host, p.lmtp, b"220 ")
            and (not self.sieve_port or greets(self.host, self.sieve_port, b'"IMPLEMENTATION"'))
        )

    @property
    def running(self) -> bool:
        return _alive(self._proc)

    def stop(self) -> None:
        """Stop master, saslauthd and the receiver together (it drains their last words)."""
        stop_processes(self.detach_all())

    def detach(self) -> subprocess.Popen[bytes] | None:
        """Hand over the running master (as a Dovecot backend does) so it can be killed."""
        proc, self._proc = self._proc, None
        return proc

    def detach_all(self) -> list[subprocess.Popen[bytes] | None]:
        """Master, saslauthd and the syslog receiver, for the farm to stop in parallel."""
        procs = [self.detach(), self._saslauthd, self._receiver]
        self._saslauthd = self._receiver = None
        return procs

    # -- provisioning ------------------------------------------------------------------------

    def create_mailboxes(self, admin: str, password: str, uids: Iterable[str]) -> None:
        """CREATE ``user.<uid>`` for each uid as the admin; an existing one is left as is."""
        uids = list(uids)
        if not uids:
            return
        client = imaplib.IMAP4(self.host, self.ports.imap, timeout=10)
        try:
            client.login(admin, password)
            for uid in uids:
                typ, data = client.create(f"user.{uid}")
                if typ != "OK" and b"exists" not in b" ".join(d or b"" for d in data).lower():
                    raise RuntimeError(f"{self.name}: CREATE user.{uid} failed: {data!r}")
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                pass


def _alive(proc: subprocess.Popen[bytes] | None) -> bool:
    return proc is not None and proc.poll() is None
