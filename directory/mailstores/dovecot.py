"""Dovecot backends: users found in LDAP by Dovecot itself, reached by a master user.

The master user logs in as ``uid<separator>master`` (``[provision] master_separator``,
Dovecot's ``auth_master_user_separator``) and then sees exactly what the user sees. A
mailbox needs no creating: Dovecot makes the store at its first SELECT, and removing one
means emptying it (the home directory stays, as a fresh login would make it anyway).
Quota comes from the userdb (``user_attrs = ..., mailQuota=quota_rule=*:storage=%$k``, the
attribute of ``[directory] quota_attribute``), so neither ``create`` nor ``set_quota`` sends
anything: Dovecot reads the attribute at each login. Its LMTP takes the address, as its userdb
finds either.
"""

from __future__ import annotations

from directory.mailstores import Mailstore, Removal
from directory.provision.folders import ensure_inbox, wipe
from directory.provision.imapclient import ImapClient
from directory.provision.sieveclient import SieveClient


class Dovecot(Mailstore):
    kind = "dovecot"

    def open_user(self, uid: str) -> ImapClient:
        user, password = self.admin_credentials()
        client = self.client()
        try:
            client.login(f"{uid}{self.provision.master_separator}{user}", password)
        except BaseException:
            client.close()
            raise
        return client

    def sieve_login(self, client: SieveClient, uid: str) -> None:
        """Pigeonhole's logins are IMAP's: the master user as ``uid<separator>master``."""
        user, password = self.admin_credentials()
        client.authenticate_plain("", f"{uid}{self.provision.master_separator}{user}", password)

    def create(self, uid: str, quota_kb: int | None = None) -> None:
        with self.open_user(uid) as client:
            ensure_inbox(client)

    def delete(self, uid: str) -> Removal:
        return Removal(self.reset(uid))

    def set_quota(self, uid: str, quota_kb: int | None) -> bool:
        """Nothing to send: the userdb's ``quota_rule`` comes from the attribute just written,
        so the quota holds from the user's next login (or delivery) on. Sessions already open
        keep the limit they started with."""
        return False

    def reset(self, uid: str) -> int:
        with self.open_user(uid) as client:
            return wipe(client)

    @staticmethod
    def lmtp_recipient(uid: str, address: str) -> str:
        return address

    @staticmethod
    def postfix_alias(uid: str, address: str) -> str | None:
        return None
