"""SASL PLAIN (RFC 4616) as the admin tool sends it: one encoder for its IMAP and
ManageSieve clients, which both log in as an admin acting for a user (the authzid)."""

from __future__ import annotations

import base64


def plain_response(authzid: str, authcid: str, password: str) -> bytes:
    """Base64 of ``authzid NUL authcid NUL password``; ValueError for what PLAIN cannot
    carry (a NUL in a field, an empty authcid or password)."""
    fields = [v.encode("utf-8") for v in (authzid, authcid, password)]
    if any(b"\x00" in f for f in fields) or not all(fields[1:]):
        raise ValueError("credentials PLAIN cannot carry")
    return base64.b64encode(b"\x00".join(fields))
