"""``make demo``: the local farm with mailfarm in front, ready for a real mail client.

Starts slapd, the Dovecot and Cyrus backends on loopback, then ``mailfarm serve`` in front
of them and ``mailfarm web`` (the staff console and the REST API, with a demo staff login
and token per role), prints where to point a client and who can log in, and runs until
Ctrl-C. ``--check`` logs in once through the proxy as every demo user, asks the REST API
for the domains, signs in to the console as each staff member, and exits (used by the test
suite, so the README's first command is known to work).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import imaplib
import json
import re
import secrets
import signal
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, farm_provision, free_port

ROLES = ("admin", "helpdesk")


def start_api(
    farm: Farm, workdir: Path, admin_url: str, admin_token: str, ports: ProxyPorts
) -> tuple[MailfarmProcess, str, dict[str, str]]:
    """``mailfarm web`` for the farm: the console (the farm's staff sign in) and the API,
    with one demo token per role (the domain admin owns example.com); the tokens file
    lives in the demo's temporary directory. It reaches the proxy's admin endpoint, so the
    dashboard and the sessions page show the demo's own sessions."""
    port = free_port()
    tokens = {role: secrets.token_urlsafe(18) for role in (*ROLES, "domain-admin")}
    lines = [f"{role} {tokens[role]}" for role in ROLES]
    lines.append(f"domain-admin {tokens['domain-admin']} example.com")
    tokens_file = workdir / "api-tokens"
    tokens_file.write_text("\n".join(lines) + "\n")
    tokens_file.chmod(0o600)
    sections = farm_config(farm, ProxyPorts())
    sections = {
        "directory": sections["directory"],
        "backends": sections["backends"],
        "sieve": sections["sieve"],  # a move from the console copies Sieve scripts there
        "provision": {
            **farm_provision(farm),
            "admin_urls": [admin_url],
            # autoconfig and Autodiscover name the demo's own listeners (no submission here)
            **front_door(ports),
        },
        "admin": {"token": admin_token},
        "web": {
            "listen": [f"127.0.0.1:{port}"],
            "api_tokens_file": str(tokens_file),
            "audit_log": str(workdir / "audit.jsonl"),
        },
    }
    proc = MailfarmProcess(workdir, sections, "demo-web", command="web").start()
    return proc, f"http://127.0.0.1:{port}", tokens


def front_door(ports: ProxyPorts) -> dict[str, object]:
    return {
        "front_door": "127.0.0.1",
        "front_door_imap": ports.imap,
        "front_door_imaps": ports.imaps,
        "front_door_pop3": ports.pop3,
        "front_door_pop3s": ports.pop3s,
        "front_door_submission": 0,
        "front_door_submissions": 0,
    }


def describe(farm: Farm, ports: ProxyPorts, proc: MailfarmProcess) -> str:
    lines = [
        "mailfarm demo is running. Point a mail client at:",
        f"  IMAP   127.0.0.1:{ports.imap} (STARTTLS)   IMAPS 127.0.0.1:{ports.imaps}",
    ]
    if "pop3" in proc.sections:
        lines.append(f"  POP3   127.0.0.1:{ports.pop3} (STLS)       POP3S 127.0.0.1:{ports.pop3s}")
    lines += [
        f"  TLS CA certificate: {farm.pki.ca_cert}",
        "  Plaintext logins are allowed from 127.0.0.0/8 (a trusted network).",
        "",
        "Users (log in with the address or the uid):",
    ]
    for user in farm.users:
        backend = farm.backends[user.backend]
        lines.append(
            f"  {user.address:28} {user.uid:28} password {user.password!r:16}"
            f" on {user.backend} ({backend.host})"
        )
    lines += [
        "",
        f"Config: {proc.config}   Log: {proc.log_path}",
        f"Try:    curl -u alice@example.co.uk:{farm.user('alice@example.co.uk').password}"
        f" imap://127.0.0.1:{ports.imap}/INBOX",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def describe_web(farm: Farm, url: str, tokens: dict[str, str]) -> str:
    lines = [
        "",
        f"Web console: {url}/console/  (sign in as one of the farm's staff)",
    ]
    for m in farm.staff:
        domains = f" (domains: {', '.join(m.domains)})" if m.domains else ""
        lines.append(f"  {m.role:13} user {m.uid:6} password {m.password}{domains}")
    api = f"{url}/api/v1"
    lines.append(f"REST API: {api}  (OpenAPI: {api}/openapi.json)")
    lines += [f"  {role:13} token {token}" for role, token in tokens.items()]
    lines.append(f"Try:    curl -H 'Authorization: Bearer {tokens['admin']}' {api}/domains")
    lines.append(
        f"Mail clients' autoconfig: curl '{url}/mail/config-v1.1.xml"
        "?emailaddress=alice@example.co.uk'"
    )
    return "\n".join(lines)


def check(farm: Farm, ports: ProxyPorts) -> int:
    for user in farm.users:
        client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
        client.login(user.address, user.password)
        typ, _ = client.select("INBOX")
        client.logout()
        if typ != "OK":
            print(f"demo check FAILED for {user.address}", file=sys.stderr)
            return 1
        print(f"demo check: {user.address} logged in through mailfarm to {user.backend}")
    return 0


def check_console(url: str, farm: Farm) -> int:
    """Sign in as each demo staff member, as a browser would (cookie, form token)."""
    for member in farm.staff:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(f"{url}/console/signin", timeout=15) as answer:
            token = re.search(r'name="token" value="([^"]*)"', answer.read().decode())
        form = {"token": token.group(1) if token else "", "login": member.uid}
        form["password"] = member.password
        body = urllib.parse.urlencode(form).encode()
        with opener.open(f"{url}/console/signin", body, timeout=30) as answer:
            page = answer.read().decode()
        if f"{member.uid} ({member.role})" not in page:
            print(f"demo check FAILED: {member.uid} cannot sign in to the console", file=sys.stderr)
            return 1
        print(f"demo check: {member.uid} ({member.role}) signed in to the console")
    return 0


def check_api(url: str, token: str) -> int:
    url += "/api/v1"
    request = urllib.request.Request(f"{url}/domains", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=15) as answer:
        domains = [d["domain"] for d in json.load(answer)["domains"]]
    if "example.co.uk" not in domains:
        print(f"demo check FAILED: the REST API lists {domains}", file=sys.stderr)
        return 1
    print(f"demo check: the REST API at {url} lists {len(domains)} domains")
    return 0


def check_autoconfig(url: str, ports: ProxyPorts) -> int:
    """What Thunderbird would be told for a hosted domain: the demo's IMAPS port first."""
    query = f"{url}/mail/config-v1.1.xml?emailaddress=alice@example.co.uk"
    with urllib.request.urlopen(query, timeout=15) as answer:
        text = answer.read().decode()
    if f"<port>{ports.imaps}</port>" not in text:
        print(f"demo check FAILED: autoconfig answered {text[:300]!r}", file=sys.stderr)
        return 1
    print(f"demo check: autoconfig for example.co.uk names IMAPS 127.0.0.1:{ports.imaps}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="log in once per user and exit")
    args = parser.parse_args(argv)
    with Farm() as farm, tempfile.TemporaryDirectory(prefix="mailfarm-demo-") as tmp:
        ports, admin_port, admin_token = ProxyPorts(), free_port(), secrets.token_urlsafe(18)
        config = farm_config(
            farm, ports, admin={"listen": [f"127.0.0.1:{admin_port}"], "token": admin_token}
        )
        proc = MailfarmProcess(Path(tmp), config, "demo").start()
        api: MailfarmProcess | None = None
        try:
            admin_url = f"http://127.0.0.1:{admin_port}"
            api, url, tokens = start_api(farm, Path(tmp), admin_url, admin_token, ports)
            if args.check:
                return (
                    check(farm, ports)
                    or check_api(url, tokens["admin"])
                    or check_console(url, farm)
                    or check_autoconfig(url, ports)
                )
            print(describe(farm, ports, proc), flush=True)
            print(describe_web(farm, url, tokens), flush=True)
            try:
                while True:
                    signal.pause()
            except KeyboardInterrupt:
                # A second Ctrl-C must not cut the clean-up short and leave daemons behind.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                return 0
        finally:
            if api is not None:
                api.stop()
            proc.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
