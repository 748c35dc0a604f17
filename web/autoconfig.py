"""Mail client self-configuration documents: Thunderbird autoconfig and Outlook Autodiscover.

Pure: names in, bytes out. What a request names (a Host header, an ``emailaddress``
parameter, an Autodiscover body) is validated here strictly, because it ends up in an LDAP
filter and in the document; the documents are built with ElementTree, so even a name that
slipped through would be escaped, never markup.

Autodiscover bodies come from anyone on the Internet: a DTD (entity expansion, external
entities) is refused before the parser sees the body, and the body must be UTF-8 so that
refusal cannot be dodged by an encoding (UTF-16 hides ``<!DOCTYPE`` from a byte search).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from directory.provision.frontdoor import Endpoint

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AUTOCONFIG_PREFIX = "autoconfig."

# Underscores allowed: mail domains like under_score.org exist (the farm hosts one).
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_HOST_PORT = re.compile(r":[0-9]{1,5}$")
_FORBIDDEN = ("<!doctype", "<!entity")


class BadRequest(ValueError):
    """The request cannot be answered as sent (400); the message never quotes it."""


def mail_domain(name: str) -> str | None:
    """``name`` as a DNS name (lower case, no trailing dot), or None if it is not one.

    An all-digit last label is refused: that is an IPv4 address, not a mail domain.
    """
    value = name.lower()
    value = value[:-1] if value.endswith(".") else value
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or labels[-1].isdigit():
        return None
    return value if all(_LABEL.match(label) for label in labels) else None


def host_domain(host: str, prefix: str = "") -> str | None:
    """The mail domain a ``Host`` header names (its port dropped), after ``prefix``.

    ``autoconfig.example.com:8443`` with prefix ``autoconfig.`` is ``example.com``; a host
    without the prefix, or an address literal, names none.
    """
    value = _HOST_PORT.sub("", host.strip()).lower()
    if not value.startswith(prefix):
        return None
    return mail_domain(value[len(prefix) :])


def split_address(address: str) -> tuple[str, str]:
    """A mail address, normalised (lower case), and its domain; BadRequest if not one."""
    value = address.strip().lower()
    local, at, domain = value.rpartition("@")
    checked = mail_domain(domain) if at else None
    if checked is None or not _LOCAL.match(local) or ".." in local:
        raise BadRequest("not a mail address")
    return f"{local}@{checked}", checked


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


def _document(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def thunderbird_config(domain: str, endpoints: Iterable[Endpoint]) -> bytes:
    """clientConfig version 1.1 (the Mozilla ISPDB format) for ``domain``.

    The login is the whole address (``%EMAILADDRESS%``): mailfarm's directory resolves it,
    and it is the one form that is right for every hosted domain.
    """
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _text(provider, "domain", domain)
    _text(provider, "displayName", f"Mail for {domain}")
    _text(provider, "displayShortName", domain)
    for endpoint in endpoints:
        if endpoint.service == "submission":
            server = ET.SubElement(provider, "outgoingServer", type="smtp")
        else:
            server = ET.SubElement(provider, "incomingServer", type=endpoint.service)
        _text(server, "hostname", endpoint.host)
        _text(server, "port", str(endpoint.port))
        _text(server, "socketType", "SSL" if endpoint.tls == "tls" else "STARTTLS")
        _text(server, "username", "%EMAILADDRESS%")
        _text(server, "authentication", "password-cleartext")
    return _document(root)


def autodiscover_address(body: bytes) -> str:
    """The ``EMailAddress`` of an Outlook (POX, schema 2006) Autodiscover request, normalised.

    Raises BadRequest for anything else: not UTF-8, a DTD, not XML, another request or
    response schema, no well-formed address.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the body must be UTF-8 XML") from None
    if any(ch < " " and ch not in "\t\r\n" for ch in text):
        raise BadRequest("the body must be UTF-8 XML")
    folded = text.lower()
    if any(word in folded for word in _FORBIDDEN):
        raise BadRequest("DTDs and entities are not accepted")
    try:
        # A str, not bytes: the parser then ignores any encoding the declaration names.
        root = ET.fromstring(text)
    except ET.ParseError:
        raise BadRequest("the body is not well-formed XML") from None
    if root.tag != f"{{{REQUEST_NS}}}Autodiscover":
        raise BadRequest("not an Outlook Autodiscover request (requestschema/2006)")
    request = root.find(f"{{{REQUEST_NS}}}Request")
    if request is None:
        raise BadRequest("no Request element")
    schema = request.findtext(f"{{{REQUEST_NS}}}AcceptableResponseSchema")
    if schema is not None and schema.strip() and schema.strip() != OUTLOOK_NS:
        raise BadRequest(f"only the response schema {OUTLOOK_NS} is offered")
    address = request.findtext(f"{{{REQUEST_NS}}}EMailAddress")
    if address is None:
        raise BadRequest("no EMailAddress element")
    return split_address(address)[0]


_AUTODISCOVER_TYPES = {"imap": "IMAP", "pop3": "POP3", "submission": "SMTP"}


def autodiscover_response(address: str, endpoints: Iterable[Endpoint]) -> bytes:
    """The responseschema/2006a answer: one Protocol per endpoint, preferred first.

    Outlook takes the first Protocol of each Type; ``SSL`` says the login is encrypted
    either way and ``Encryption`` (Outlook 2010 on) says how: ``SSL`` implicit, ``TLS``
    STARTTLS. The answer depends on the domain only, never on whether the user exists.
    """
    # Plain tags with literal xmlns attributes: the two nested default namespaces Outlook
    # expects, which ElementTree's prefix assignment would otherwise turn into ns0:/ns1:.
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for endpoint in endpoints:
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", _AUTODISCOVER_TYPES[endpoint.service])
        _text(protocol, "Server", endpoint.host)
        _text(protocol, "Port", str(endpoint.port))
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "LoginName", address)
        _text(protocol, "SPA", "off")
        _text(protocol, "SSL", "on")
        _text(protocol, "Encryption", "SSL" if endpoint.tls == "tls" else "TLS")
        _text(protocol, "AuthRequired", "on")
        if endpoint.service == "submission":
            _text(protocol, "UsePOPAuth", "off")
            _text(protocol, "SMTPLast", "off")
    return _document(root)
