"""Provisioning: the admin tool's domains, users, mailboxes, moves and DNS data.

Everything here runs in the ``mailfarm`` CLI, not in the proxies: it is synchronous (ldap3's
sync strategy, blocking IMAP sockets) because an operator's command has nothing else to do
while it waits. The proxies only ever read what this package writes.

Failures are raised as :class:`ProvisionError` subclasses whose ``exit_code`` is the CLI's
exit status, so the mapping from "what went wrong" to "what a script sees" lives in one
place: 1 not found or refused, 2 usage or configuration, 3 a service unavailable.
"""

from __future__ import annotations

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


class ProvisionError(Exception):
    """A failed admin operation; ``str()`` is the operator-facing message."""

    exit_code = EXIT_REFUSED

    def amended(self, message: str) -> ProvisionError:
        """The same failure, same class and exit status, told with more (what was undone).

        Built without calling the subclass's constructor, whose arguments (a backend's
        address and status for an IMAP refusal) differ from class to class.
        """
        new = type(self).__new__(type(self))
        Exception.__init__(new, message)
        new.__dict__.update(self.__dict__)
        return new


class NotFound(ProvisionError):
    """The domain, user or record named does not exist."""


class Refused(ProvisionError):
    """The operation would break something (a domain with users, an existing user...)."""


class UsageError(ProvisionError):
    """A malformed argument (address, domain name, record value) or missing setting."""

    exit_code = EXIT_USAGE


class Unavailable(ProvisionError):
    """LDAP, a backend or a proxy could not be reached or failed mid-way."""

    exit_code = EXIT_UNAVAILABLE


class PartlyApplied(Unavailable):
    """The change is made in LDAP, but not every mailfarm instance could be told to drop
    what it caches of the user: those may go on answering from the old state for a while.

    ``data`` is what the command reports on success plus which instances were missed, so a
    script sees what was done as well as what was not.
    """

    def __init__(self, message: str, data: dict[str, object]) -> None:
        super().__init__(message)
        self.data = data
