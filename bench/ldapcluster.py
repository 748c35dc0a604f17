"""A replicated OpenLDAP for tests: one provider (syncprov) and syncrepl consumers.

Production farms put the proxies on read-only consumers and the admin tool on the provider
(``[directory] uri`` / ``[provision] uri``); this builds the same shape on loopback, each
member a :class:`bench.farm_ldap.Slapd` of its own (own port, own directory, running as the
slapd account like the farm's). The provider is bulk-loaded with the farm's tree; the
consumers start empty and fill themselves by ``refreshAndPersist`` replication, bound as
the provider's rootdn (which reads every attribute, passwords included, whatever the ACLs
say) and retrying every second for as long as the provider is away; with the farm's PKI
over StartTLS that must succeed (``starttls=critical``) against the farm's CA. A write sent to a
consumer is answered with a referral to the provider (``updateref``), as in production.

Each member's ``slapd.conf`` is the farm's, amended: whatever :class:`Slapd` learns (TLS,
say) comes along, and ``slapd_options`` are handed to every member's constructor for it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from ldap3 import BASE, NONE, SIMPLE, Connection, Server
from ldap3.core.exceptions import LDAPException

from bench.farm import BACKEND_HOSTS, BASE_DN, Farm, FarmUser, default_users
from bench.farm_ldap import Slapd, tree_entries
from bench.farm_proc import free_ports


def _quoted(value: str) -> str:
    """A slapd.conf value in double quotes (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Member(Slapd):
    """One cluster slapd: the farm's config plus ``global_lines`` (before the database) and
    ``database_lines`` (appended to it, where overlays and syncrepl belong)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        port: int,
        admin_dn: str,
        admin_password: str,
        **slapd_options: Any,
    ) -> None:
        super().__init__(directory, port, BASE_DN, admin_dn, admin_password, **slapd_options)
        self.name = name

    def configure(
        self, entries: Iterable[str], global_lines: str = "", database_lines: str = ""
    ) -> None:
        """Load ``entries`` (as the farm does: slapadd), then amend the written config."""
        self.load(entries)
        text = self.conf.read_text()
        marker = "\ndatabase "
        if marker not in text:
            raise RuntimeError(f"{self.conf}: no database section to amend")
        head, tail = text.split(marker, 1)
        # Rewritten in place: the file keeps the owner and mode load() gave it.
        self.conf.write_text(f"{head}\n{global_lines}{marker}{tail.rstrip()}\n\n{database_lines}")


def _syncrepl_tls(consumer: Member) -> str:
    """With the farm's PKI the replication link is TLS too, never plaintext: it carries every
    password hash. StartTLS is ``critical`` (no TLS, no replication) and the provider's
    certificate is checked against the CA and its name (127.0.0.1)."""
    if consumer.tls_dir is None:
        return ""
    ca = consumer.tls_dir / "ca.crt"
    return f" starttls=critical tls_cacert={_quoted(str(ca))} tls_reqcert=demand"


class LdapCluster:
    """``with LdapCluster(farm) as cluster:`` — a provider and ``consumers`` consumers with
    the farm's users (or ``users``), all caught up when ``start()`` returns."""

    admin_dn = Farm.admin_dn
    admin_password = Farm.admin_password

    def __init__(
        self,
        farm: Farm | None = None,
        consumers: int = 2,
        workdir: Path | None = None,
        users: Iterable[FarmUser] | None = None,
        **slapd_options: Any,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path()
        self._farm = farm
        self._users = (
            list(users)
            if users is not None
            else (farm.users if farm is not None else default_users())
        )
        self._count = consumers
        self._options = slapd_options
        self.provider: Member | None = None
        self.consumers: list[Member] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LdapCluster:
        if self.provider is not None:
            return self
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="mf-ldapc-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # slapd (openldap) must traverse it
        try:
            self._build()
            for member in self.members:
                member.spawn()
            for member in self.members:
                member.wait()
            self.wait_caught_up(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        ports = free_ports(1 + self._count, hosts=("127.0.0.1",))
        provider = self._member("provider", ports[0])
        provider.configure(
            self._entries(),
            global_lines="moduleload syncprov\n",
            database_lines=(
                "index entryCSN,entryUUID eq\n"
                "overlay syncprov\n"
                "syncprov-checkpoint 100 1\n"
                "syncprov-sessionlog 1000\n"
            ),
        )
        self.provider = provider
        for i, port in enumerate(ports[1:], start=1):
            consumer = self._member(f"consumer{i}", port)
            consumer.configure(
                (),
                database_lines=(
                    "index entryCSN,entryUUID eq\n"
                    f"syncrepl rid={i:03d} provider={provider.uri} type=refreshAndPersist "
                    f'retry="1 +" searchbase={_quoted(BASE_DN)} scope=sub '
                    f"bindmethod=simple binddn={_quoted(self.admin_dn)} "
                    f"credentials={_quoted(self.admin_password)} "
                    f"network-timeout=2 timeout=2{_syncrepl_tls(consumer)}\n"
                    f"updateref {provider.uri}\n"
                ),
            )
            self.consumers.append(consumer)

    def _member(self, name: str, port: int) -> Member:
        directory = self.workdir / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        return Member(name, directory, port, self.admin_dn, self.admin_password, **self._options)

    def _entries(self) -> Iterator[str]:
        """The farm's tree (suffix, service account, domains, users with their mailHost)."""
        service_dn, service_password = Farm.service_dn, Farm.service_password
        pairs = ((user, BACKEND_HOSTS[user.backend]) for user in self._users)
        return tree_entries(BASE_DN, service_dn, service_password, pairs)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        if self._own_workdir and self.workdir != Path():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.provider, self.consumers = None, []

    def __enter__(self) -> LdapCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- members --------------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return ([self.provider] if self.provider is not None else []) + self.consumers

    def member(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    @property
    def uris(self) -> list[str]:
        """The consumers' URIs: what the proxies read (``[directory] uri``)."""
        return [consumer.uri for consumer in self.consumers]

    @property
    def provider_uri(self) -> str:
        assert self.provider is not None
        return self.provider.uri

    def start_member(self, name: str) -> None:
        self.member(name).start()

    def stop_member(self, name: str) -> None:
        self.member(name).stop()

    # -- replication state ----------------------------------------------------------------

    def context_csn(self, member: Member) -> tuple[str, ...]:
        """The suffix's ``contextCSN`` values (one per provider serverID) on ``member``."""
        server = Server(member.uri, get_info=NONE, connect_timeout=2)
        conn = Connection(
            server,
            self.admin_dn,
            self.admin_password,
            authentication=SIMPLE,
            receive_timeout=2,
            raise_exceptions=False,
        )
        try:
            if not conn.bind():
                return ()
            conn.search(BASE_DN, "(objectClass=*)", BASE, attributes=["contextCSN"])
            for item in conn.response or []:
                if item.get("type") == "searchResEntry":
                    raw = item.get("raw_attributes", {}).get("contextCSN", [])
                    return tuple(sorted(v.decode() for v in raw))
            return ()
        except LDAPException:
            return ()
        finally:
            try:
                conn.unbind()
            except Exception:
                pass

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until every running consumer's contextCSN equals the provider's."""
        assert self.provider is not None
        deadline = time.monotonic() + timeout
        while True:
            wanted = self.context_csn(self.provider)
            behind = [c.name for c in self.consumers if c.running and self.context_csn(c) != wanted]
            if wanted and not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"consumers {', '.join(behind)} did not catch up with the provider "
                    f"(contextCSN {wanted}) within {timeout} s"
                )
            time.sleep(0.1)
