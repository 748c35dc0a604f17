"""Cyrus IMAP backends (``altnamespace: no``, ``unixhierarchysep: no``, ``virtdomains: off``):
mailboxes ``user.<uid>``, made and removed by an admin (``admins:`` in imapd.conf).

* A user's view: the admin authenticates with PLAIN for the uid (Cyrus lets its admins and
  ``proxyservers`` act for any user), so folders appear as the user sees them, ``INBOX``
  and ``INBOX.Sent``.
* Creating: ``CREATE user.<uid>`` as the admin itself (a user cannot create its own INBOX
  when ``autocreate_quota`` is -1), then ``SETQUOTA`` when a quota is known.
* Quota: Cyrus keeps it in its own quota database, not in LDAP, so a changed
  ``[directory] quota_attribute`` is sent at once: ``SETQUOTA user.<uid> (STORAGE <KiB>)``,
  or ``SETQUOTA user.<uid> ()`` to remove the limit (and the quota root with it).
* Emptying (undoing a partial copy) is deleting and creating again: Cyrus refuses to
  DELETE a special-use folder (``specialuse_protect``), even for its owner. Deleting takes
  the quota root with it, so the limit is read first and set again.
* Deleting: admins have no ``x`` right on users' mailboxes by default, so the admin grants
  itself all rights first, then ``DELETE user.<uid>`` takes the folders below with it. With
  ``delete_mode: delayed`` Cyrus keeps the mailbox as ``DELETED.user.<uid>.<stamp>``
  until ``cyr_expire`` runs: that is reported as kept, not as gone.
* The uid must not contain ``.`` (the hierarchy separator): ``alice_example_co_uk``.
* lmtpd refuses ``user@domain`` for such a mailbox and accepts ``uid`` or ``uid@anything``:
  the LMTP proxy sends the uid, and Postfix gets ``uid@domain`` as a virtual alias so its
  own domain checks still see a hosted domain.
"""

from __future__ import annotations

from directory.mailstores import Mailstore, Removal
from directory.provision import UsageError
from directory.provision.folders import summary
from directory.provision.imapclient import ImapClient, ImapError
from directory.provision.imapdata import astring, parse_response, word
from directory.provision.sieveclient import SieveClient

ALL_RIGHTS = b"lrswipkxtecda"


def mailbox_name(uid: str) -> bytes:
    if not uid or "." in uid or any(ch in uid for ch in '*%"\\\r\n\x00'):
        raise UsageError(f"{uid!r} cannot name a Cyrus mailbox (no dots: user.<uid>)")
    return f"user.{uid}".encode()


class Cyrus(Mailstore):
    kind = "cyrus"

    def open_user(self, uid: str) -> ImapClient:
        mailbox_name(uid)
        user, password = self.admin_credentials()
        client = self.client()
        try:
            client.authenticate_plain(uid, user, password)
        except BaseException:
            client.close()
            raise
        return client

    def sieve_login(self, client: SieveClient, uid: str) -> None:
        """timsieved knows users by uid; the admin acts for one with PLAIN authzid."""
        mailbox_name(uid)
        user, password = self.admin_credentials()
        client.authenticate_plain(uid, user, password)

    def open_admin(self) -> ImapClient:
        user, password = self.admin_credentials()
        client = self.client()
        try:
            client.login(user, password)
        except BaseException:
            client.close()
            raise
        return client

    def create(self, uid: str, quota_kb: int | None = None) -> None:
        name = mailbox_name(uid)
        with self.open_admin() as admin:
            arg = astring(name, admin.literal_plus)
            response = admin.run(b"CREATE", arg, check=False)
            if response.status != "OK" and not _exists(admin, name):
                raise ImapError(admin.address, "CREATE", response.status, response.text)
            if quota_kb is not None:
                admin.run(b"SETQUOTA", arg, [b"(STORAGE %d)" % quota_kb])

    def set_quota(self, uid: str, quota_kb: int | None) -> bool:
        name = mailbox_name(uid)
        limits = b"()" if quota_kb is None else b"(STORAGE %d)" % quota_kb
        with self.open_admin() as admin:
            arg = astring(name, admin.literal_plus)
            response = admin.run(b"SETQUOTA", arg, [limits], check=False)
            if response.status != "OK" and not (
                # Removing a quota the mailbox does not have is what was asked for: done.
                quota_kb is None and _exists(admin, name) and _storage_limit(admin, name) is None
            ):
                raise ImapError(admin.address, "SETQUOTA", response.status, response.text)
        return True

    def delete(self, uid: str) -> Removal:
        name = mailbox_name(uid)
        with self.open_admin() as admin:
            if not _exists(admin, name):
                return Removal(0)
            # Counted as the user: an admin may list every mailbox but read none of them.
            with self.open_user(uid) as client:
                messages = sum(summary(client).values())
            user = self.admin_credentials()[0].encode()
            arg = astring(name, admin.literal_plus)
            admin.run(b"SETACL", arg, astring(user, admin.literal_plus), [ALL_RIGHTS])
            admin.run(b"DELETE", arg)
            kept = _list(admin, b"DELETED." + name + b".*")
            return Removal(messages, kept[0].decode("utf-8", "replace") if kept else None)

    def reset(self, uid: str) -> int:
        """Delete and create again: Cyrus protects special-use folders from DELETE
        (``specialuse_protect``), but not a whole user removed by its admin."""
        with self.open_admin() as admin:
            quota_kb = _storage_limit(admin, mailbox_name(uid))
        removed = self.delete(uid).messages
        self.create(uid, quota_kb)
        return removed

    @staticmethod
    def lmtp_recipient(uid: str, address: str) -> str:
        return uid

    @staticmethod
    def postfix_alias(uid: str, address: str) -> str | None:
        domain = address.rpartition("@")[2]
        return f"{uid}@{domain}" if domain else uid


def _list(client: ImapClient, pattern: bytes) -> list[bytes]:
    """Mailbox names matching ``pattern`` (selectable or not), as the admin sees them."""
    response = client.run(b'LIST ""', astring(pattern, client.literal_plus))
    names = []
    for item in response.untagged:
        tokens = parse_response(item)
        if len(tokens) >= 4 and word(tokens[0]) == "LIST" and isinstance(tokens[3], bytes):
            names.append(bytes(tokens[3]))
    return names


def _exists(client: ImapClient, name: bytes) -> bool:
    return bool(_list(client, name))


def _storage_limit(client: ImapClient, name: bytes) -> int | None:
    """The ``STORAGE`` limit (KiB) of quota root ``name``, or ``None`` when it has none."""
    response = client.run(b"GETQUOTA", astring(name, client.literal_plus), check=False)
    if response.status != "OK":
        return None  # no such quota root
    for item in response.untagged:
        tokens = parse_response(item)
        if len(tokens) >= 3 and word(tokens[0]) == "QUOTA" and isinstance(tokens[2], list):
            resources = tokens[2]
            for i in range(0, len(resources) - 2, 3):
                if word(resources[i]) == "STORAGE":
                    return int(bytes(resources[i + 2]))
    return None
