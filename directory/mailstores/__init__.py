"""Mailstore drivers: everything that differs between the kinds of backend server.

mailfarm treats a backend as a place where a uid's mailbox lives; what that takes depends on
the server. Dovecot finds users in LDAP on its own and lets a master user in as anyone;
Cyrus keeps mailboxes as ``user.<uid>`` that its admin must create and delete, and its
lmtpd knows recipients only by uid. Each kind has one module here, with one class of the
same shape (:class:`Mailstore`), and :func:`mailstore_for` picks it from ``[[backends]]``:
nowhere else in the tree asks which kind a host is.

The mailbox operations are blocking IMAP (the admin tool's); the recipient forms are pure
and also used by the proxy's LMTP front end and lookup maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from common.configschema import ConfigError
from directory.model import Route
from directory.provision.imapclient import ImapClient
from directory.provision.sieveclient import SieveClient, SieveEndpoint
from directory.settings import Backends, BackendSettings, ProvisionSettings, ToolConfig

#: Seconds an admin IMAP command may take (a MULTIAPPEND of a batch included).
TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Removal:
    """What deleting a mailbox did: the messages it held, and where the server kept a copy
    (Cyrus ``delete_mode: delayed`` keeps ``DELETED.user.<uid>.<stamp>``) if it did."""

    messages: int
    kept_as: str | None = None
    sieve_scripts: int | None = None  # deleted over ManageSieve first; None: not reached
    warnings: tuple[str, ...] = ()


class Mailstore:
    """The shape every kind's driver has; the subclasses fill it in."""

    kind = ""

    def __init__(self, backend: BackendSettings, provision: ProvisionSettings, path: Path):
        self.backend = backend
        self.provision = provision
        self.path = path  # of proxy.toml, to name it in a configuration error

    def open_user(self, uid: str) -> ImapClient:
        """An IMAP session that sees ``uid``'s mailbox as the user does (its namespace)."""
        raise NotImplementedError

    def create(self, uid: str, quota_kb: int | None = None) -> None:
        """Make the mailbox exist, empty, with the quota when given; idempotent."""
        raise NotImplementedError

    def delete(self, uid: str) -> Removal:
        """Remove the mailbox and everything in it, telling truthfully what was kept."""
        raise NotImplementedError

    def set_quota(self, uid: str, quota_kb: int | None) -> bool:
        """Make the backend hold the mailbox to ``quota_kb`` KiB (``None``: no quota), the
        value just written to ``[directory] quota_attribute``. True when it holds from now on;
        False when the server reads it from the directory itself, at the user's next login."""
        raise NotImplementedError

    def reset(self, uid: str) -> int:
        """Leave the mailbox existing and empty (a partial copy undone); messages removed."""
        raise NotImplementedError

    def sieve_login(self, client: SieveClient, uid: str) -> None:
        """Log a ManageSieve connection in on ``uid``'s Sieve scripts with the host's admin
        credentials, as :meth:`open_user` does for IMAP. Neither kind removes the scripts
        with :meth:`delete` for certain (Dovecot keeps the user's sieve directory, Cyrus
        its bytecode beside ``#sieve``), so a move deletes them over ManageSieve itself."""
        raise NotImplementedError

    def open_sieve(self, uid: str, endpoint: SieveEndpoint) -> SieveClient:
        """A ManageSieve session on ``uid``'s scripts (see :meth:`sieve_login`)."""
        client = SieveClient(self.backend.host, endpoint)
        try:
            self.sieve_login(client, uid)
        except BaseException:
            client.close()
            raise
        return client

    @staticmethod
    def lmtp_recipient(uid: str, address: str) -> str:
        """The RCPT TO this kind's LMTP server files into ``uid``'s INBOX."""
        raise NotImplementedError

    @staticmethod
    def postfix_alias(uid: str, address: str) -> str | None:
        """The address Postfix must hand this kind's LMTP server instead of ``address``
        (a virtual alias), or ``None`` when the address itself is delivered as it is."""
        raise NotImplementedError

    # -- shared by the kinds --------------------------------------------------------------

    def admin_credentials(self) -> tuple[str, str]:
        """The host's admin user and password, or a configuration error naming the key."""
        if self.backend.admin_user and self.backend.admin_password:
            return self.backend.admin_user, self.backend.admin_password
        if self.backend.listed:
            section, key = f"[[backends]] host = {self.backend.host!r}", "admin_user"
            if self.backend.admin_user:
                key = "admin_password"
        else:
            section, key = "provision", "master_user"
            if self.backend.admin_user:
                key = "master_password"
        raise ConfigError(self.path, section, key, "is required for mailbox operations")

    def client(self) -> ImapClient:
        return ImapClient(self.backend.host, self.provision.backend_imap_port, TIMEOUT)


@functools.cache
def _kinds() -> dict[str, type[Mailstore]]:
    """Imported once, on first use: the kind modules import this one."""
    from directory.mailstores.cyrus import Cyrus
    from directory.mailstores.dovecot import Dovecot

    return {Dovecot.kind: Dovecot, Cyrus.kind: Cyrus}


def kind_class(kind: str) -> type[Mailstore]:
    return _kinds()[kind]


def mailstore_for(settings: ToolConfig, host: str) -> Mailstore:
    """The driver of ``host``, with its admin credentials from ``[[backends]]`` (or the
    ``[provision]`` master user for hosts not listed there)."""
    backend = settings.backends.get(host)
    return kind_class(backend.kind)(backend, settings.provision, settings.path)


def postfix_alias(backends: Backends, route: Route) -> str | None:
    """The address Postfix must deliver ``route``'s mail to, when its backend's kind
    files mail by another name than the user's address (Cyrus: ``uid@domain``)."""
    return kind_class(backends.get(route.host).kind).postfix_alias(route.uid, route.mail or "")


@functools.lru_cache(maxsize=8)  # asked on every lookup of an unknown recipient
def aliasing_hosts(backends: Backends) -> tuple[str, ...]:
    """The listed hosts whose kind needs recipients renamed (see :func:`postfix_alias`)."""
    return tuple(
        b.host for b in backends.listed if kind_class(b.kind).postfix_alias("u", "u@d") is not None
    )
