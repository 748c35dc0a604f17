"""XCLIENT for the submission relay: attributes, the command line, MAIL parameters."""

from __future__ import annotations

from proxy.session import ClientInfo
from proxy.smtp.xclient import mail_params, xclient_attributes, xclient_command

CLIENT = ClientInfo("192.0.2.7", 51234, "127.0.0.1", 587, trusted=False)


def test_attributes_and_command() -> None:
    attrs = xclient_attributes(CLIENT, "laptop.example.net", "alice_example_co_uk")
    offered = "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"
    assert xclient_command(attrs, offered) == (
        "XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.7 PORT=51234 PROTO=ESMTP"
        " HELO=laptop.example.net LOGIN=alice_example_co_uk"
    )


def test_only_offered_attributes_are_sent() -> None:
    attrs = xclient_attributes(CLIENT, "", "u")
    assert xclient_command(attrs, "addr login") == "XCLIENT ADDR=192.0.2.7 LOGIN=u"
    assert "HELO=[UNAVAILABLE]" in xclient_command(attrs, "HELO")


def test_ipv6_and_xtext() -> None:
    v6 = ClientInfo("2001:db8::1", 1, "::1", 587, trusted=False)
    attrs = xclient_attributes(v6, "a b=c", "x+y")
    line = xclient_command(attrs, "ADDR HELO LOGIN")
    assert line == "XCLIENT ADDR=IPV6:2001:db8::1 HELO=a+20b+3Dc LOGIN=x+2By"


def test_mail_params_follow_the_relay_extensions() -> None:
    options = ["BODY=8BITMIME", "SIZE=1000", "SMTPUTF8"]
    assert mail_params({"8BITMIME": "", "SIZE": "10240000"}, options) == (
        " BODY=8BITMIME SIZE=1000"
    )
    assert mail_params({}, options) == ""
    assert mail_params({"SMTPUTF8": ""}, ["smtputf8"]) == " smtputf8"
