"""Opening the submission relay connection with Postfix's XCLIENT (XCLIENT_README).

XCLIENT lets a trusted proxy tell the MTA who the real client is, so the relay logs,
restricts and rate-limits by the user and address behind mailfarm rather than by
mailfarm itself: ``LOGIN=`` makes Postfix treat the session as SASL-authenticated by that
user (``permit_sasl_authenticated``, ``reject_sender_login_mismatch``, the
"Authenticated sender" Received header). The relay must list us in
``smtpd_authorized_xclient_hosts``; a relay that does not offer XCLIENT is refused rather
than used anonymously.
"""

from __future__ import annotations

from proxy.session import ClientInfo
from proxy.smtp.lmtpclient import SmtpClient, SmtpClientError
from proxy.smtp.wire import safe_helo, xtext

UNAVAILABLE = "[UNAVAILABLE]"  # XCLIENT's word for "not known"

# Which relay extension each MAIL parameter aiosmtpd lets through depends on.
_PARAM_NEEDS = {"BODY": "8BITMIME", "SIZE": "SIZE", "SMTPUTF8": "SMTPUTF8"}


def xclient_attributes(client: ClientInfo, helo: str, login: str) -> dict[str, str]:
    """What we know about the session. NAME is left unknown: a reverse DNS lookup per
    message is the relay's business (and its cache's), not a proxy's."""
    return {
        "NAME": UNAVAILABLE,
        "ADDR": f"IPV6:{client.ip}" if ":" in client.ip else client.ip,
        "PORT": str(client.port),
        "PROTO": "ESMTP",
        "HELO": helo or UNAVAILABLE,
        "LOGIN": login,
    }


def xclient_command(attributes: dict[str, str], offered: str) -> str:
    """The XCLIENT line, with only the attributes the relay listed (it refuses others)."""
    names = set(offered.upper().split())
    parts = [f"{name}={xtext(value)}" for name, value in attributes.items() if name in names]
    return "XCLIENT " + " ".join(parts)


def mail_params(extensions: dict[str, str], options: list[str]) -> str:
    """The client's MAIL parameters the relay understands, as a suffix for MAIL FROM."""
    out = [
        option
        for option in options
        if _PARAM_NEEDS.get(option.partition("=")[0].upper()) in extensions
    ]
    return "".join(" " + option for option in out)


async def open_relay(
    address: tuple[str, int],
    step_timeout: float,
    our_name: str,
    attributes: dict[str, str],
) -> SmtpClient:
    """Connect, EHLO, XCLIENT, then EHLO again with the client's own HELO name (XCLIENT
    starts a new session, as if the client had just connected)."""
    host, port = address
    relay = await SmtpClient.connect(host, port, step_timeout)
    try:
        reply = await relay.hello(our_name)
        if reply.code != 250:
            raise SmtpClientError(f"EHLO refused: {reply.brief()}")
        offered = relay.extensions.get("XCLIENT", "")
        if not offered.strip():
            raise SmtpClientError("the relay does not offer XCLIENT to us")
        reply = await relay.command(xclient_command(attributes, offered))
        if reply.code != 220:
            raise SmtpClientError(f"XCLIENT refused: {reply.brief()}")
        helo = attributes.get("HELO", "")
        reply = await relay.hello(safe_helo(helo, our_name))
        if reply.code != 250:
            raise SmtpClientError(f"EHLO after XCLIENT refused: {reply.brief()}")
    except SmtpClientError:
        relay.abort()
        raise
    return relay
