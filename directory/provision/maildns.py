"""The DNS records mail needs, which a new domain gets by default (pure).

A domain that receives mail but publishes no SPF, DMARC or DKIM is one whose mail others
junk, and one without RFC 6186 SRV records makes every user type the server's name into a
mail client. So ``domain add`` (CLI, API and console alike) gives each new domain, from
``[provision]``:

* SPF: apex TXT ``default_spf``; DMARC: ``_dmarc`` TXT ``default_dmarc`` (``%s`` in either
  is the domain; an empty setting gives no record);
* the RFC 6186/8314 SRV records of :func:`.frontdoor.srv_records` (none without a front
  door);
* with ``dkim_dir`` set, a DKIM key, published as ``<selector>._domainkey`` TXT
  ``v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>`` (RFC 6376 3.6.1).

This module decides what those records are and how DKIM selectors and the signers' table
lines look; making keys and writing files (:mod:`.dkim`) and LDAP (:mod:`.domains`,
:mod:`.dnsstore`) are elsewhere, so this part is tested without either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from directory.provision import UsageError
from directory.provision.dns import APEX, check_owner, record_value, txt_text, txt_value
from directory.provision.frontdoor import srv_records
from directory.settings import ProvisionSettings

DOMAINKEY = "_domainkey"
DMARC = "_dmarc"
SELECTOR_PREFIX = "mf"  # mailfarm's own selectors: mfYYYYMMDD, mfYYYYMMDD-2, ...


@dataclass(frozen=True, slots=True)
class MailRecord:
    """One record for a new domain: owner relative to the zone, type, value in stored form."""

    owner: str
    rtype: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.owner, "type": self.rtype, "value": self.value}


REVERSE_SUFFIXES = (".in-addr.arpa", ".ip6.arpa")


def is_reverse_zone(domain: str) -> bool:
    """A reverse zone holds PTR records, never mail: no SPF, DMARC, SRV or DKIM for it."""
    return domain.endswith(REVERSE_SUFFIXES) or domain in ("in-addr.arpa", "ip6.arpa")


def expand(template: str, domain: str) -> str:
    """``%s`` → the domain. Not ``%``-formatting: SPF macros (``%{i}``) must pass as they are."""
    return template.replace("%s", domain)


def dkim_owner(selector: str) -> str:
    return f"{selector}.{DOMAINKEY}"


def selector_of(owner: str) -> str | None:
    """The selector of a ``<selector>._domainkey`` owner, else None."""
    head, dot, tail = owner.lower().rpartition(".")
    if not dot or tail != DOMAINKEY or not head or "." in head:
        return None
    return head


def check_selector(selector: str, domain: str) -> str:
    """A selector as given on the command line: one DNS label (lower case), or UsageError."""
    value = selector.strip().lower()
    problem = UsageError(f"--selector {selector!r}: give one DNS label, e.g. mf2024")
    if not value or "." in value or value == "*":
        raise problem
    try:
        check_owner(dkim_owner(value), domain)
    except UsageError:
        raise problem from None
    return value


def next_selector(today: date, taken: Collection[str]) -> str:
    """``mfYYYYMMDD``, or with a counter (``-2``, ``-3``, ...) if ``taken`` has it already:
    rotating twice on one day must not reuse, let alone overwrite, the first key."""
    base = f"{SELECTOR_PREFIX}{today:%Y%m%d}"
    lowered = {t.lower() for t in taken}
    if base not in lowered:
        return base
    n = 2
    while f"{base}-{n}" in lowered:
        n += 1
    return f"{base}-{n}"


def dkim_value(public_der: bytes) -> str:
    """The stored TXT of a DKIM public key (DER SubjectPublicKeyInfo), split into 255-byte
    strings by :func:`.dns.txt_value` (a 2048-bit key's text is about 400 bytes)."""
    key = base64.b64encode(public_der).decode("ascii")
    return txt_value(f"v=DKIM1; k=rsa; p={key}")


def dkim_tags(text: str) -> dict[str, str]:
    """The tags of a DKIM key record's text (``v=DKIM1; k=rsa; p=...``; RFC 6376 3.2): names
    lower-cased, whitespace around and inside values dropped (``p=`` may be folded)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def dkim_public_der(stored: str) -> bytes | None:
    """The DER public key of a stored DKIM TXT value, or None if it is not one (a revoked
    key's empty ``p=`` included)."""
    try:
        tags = dkim_tags(txt_text(stored))
    except UsageError:
        return None
    if tags.get("v", "DKIM1") != "DKIM1" or tags.get("k", "rsa") != "rsa" or not tags.get("p"):
        return None
    try:
        return base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        return None


def mail_records(
    settings: ProvisionSettings, domain: str, dkim: tuple[str, bytes] | None = None
) -> list[MailRecord]:
    """What a new ``domain`` gets besides NS/MX/A; ``dkim`` is (selector, public key DER)."""
    out: list[MailRecord] = []
    for owner, template in ((APEX, settings.default_spf), (DMARC, settings.default_dmarc)):
        text = expand(template, domain).strip()
        if text:
            out.append(MailRecord(owner, "TXT", record_value("TXT", text, domain)))
    for owner, value in srv_records(settings):
        out.append(MailRecord(owner, "SRV", record_value("SRV", value, domain)))
    if dkim is not None:
        selector, public_der = dkim
        out.append(MailRecord(dkim_owner(selector), "TXT", dkim_value(public_der)))
    return out


def keytable_line(domain: str, selector: str, path: Path) -> str:
    """OpenDKIM's KeyTable line for the key: ``name domain:selector:keyfile``."""
    return f"{selector}.{DOMAINKEY}.{domain} {domain}:{selector}:{path}"


def signingtable_line(domain: str, selector: str) -> str:
    """OpenDKIM's SigningTable line (``refile:``) that signs the domain's mail with it."""
    return f"*@{domain} {selector}.{DOMAINKEY}.{domain}"
