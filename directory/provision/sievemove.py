"""A user's Sieve scripts in a move: read from the old backend, written to the new one,
checked there, removed from the old one, all over ManageSieve (:mod:`.sieveclient`).

Scripts live outside IMAP (Pigeonhole: the user's sieve directory; Cyrus: the hidden
``user.<uid>.#sieve`` mailbox and the bytecode lmtpd runs), so the folder copy does not see
them; which login reaches them is each kind's (:meth:`Mailstore.sieve_login`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from directory.provision import Refused, Unavailable
from directory.provision.sieveclient import SieveClient, SieveEndpoint, SieveError
from directory.settings import ToolConfig


@dataclass(frozen=True, slots=True)
class SieveScript:
    name: str
    content: bytes
    active: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bytes": len(self.content),
            "active": self.active,
            "sha256": hashlib.sha256(self.content).hexdigest(),
        }


def endpoint(settings: ToolConfig) -> SieveEndpoint:
    """The backends' ManageSieve as the proxy's ``[sieve]`` reaches it."""
    sieve = settings.sieve
    return SieveEndpoint(
        sieve.backend_port,
        sieve.backend_tls,
        sieve.backend_tls_verify,
        sieve.backend_ca,
        max(sieve.backend_timeout, 30.0),  # an admin's PUTSCRIPT may compile for a while
    )


def read_scripts(client: SieveClient) -> list[SieveScript]:
    return [SieveScript(s.name, client.getscript(s.name), s.active) for s in client.listscripts()]


def write_scripts(client: SieveClient, scripts: list[SieveScript], host: str) -> None:
    """PUTSCRIPT each under its name, then SETACTIVE the active one; a refusal names the
    script and carries the server's text (an extension the target lacks...). Refused, not
    Unavailable: trying again later changes nothing; the script or the target must change."""
    for script in scripts:
        try:
            client.putscript(script.name, script.content)
        except SieveError as exc:
            raise Refused(
                f"{host} refused Sieve script {script.name!r}: {exc.status}"
                + (f" ({exc.code})" if exc.code else "")
                + f" {exc.text}"
            ) from None
    for script in scripts:
        if script.active:
            client.setactive(script.name)


def verify_scripts(client: SieveClient, scripts: list[SieveScript], host: str) -> None:
    """The target lists the same names with the same active one, and each reads back as
    the same bytes."""
    listed = {s.name: s.active for s in client.listscripts()}
    wanted = {s.name: s.active for s in scripts}
    if listed != wanted:
        raise Unavailable(
            f"verification failed: Sieve scripts on {host} are {_shown(listed)}, "
            f"copied were {_shown(wanted)}"
        )
    for script in scripts:
        if client.getscript(script.name) != script.content:
            raise Unavailable(
                f"verification failed: Sieve script {script.name!r} differs on {host}"
            )


def delete_scripts(client: SieveClient, host: str) -> int:
    """Deactivate and delete every script of the session's user; check none is left."""
    found = client.listscripts()
    if any(s.active for s in found):
        client.setactive("")
    for script in found:
        client.deletescript(script.name)
    left = client.listscripts()
    if left:
        shown = _shown({s.name: s.active for s in left})
        raise Unavailable(f"Sieve scripts still on {host} after deleting them: {shown}")
    return len(found)


def _shown(scripts: dict[str, bool]) -> str:
    if not scripts:
        return "none"
    return ", ".join(f"{name!r}{' (active)' if active else ''}" for name, active in scripts.items())
