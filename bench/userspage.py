"""How long does the console's users page take for one domain of 100,000 users?

``python -m bench.userspage [--users N] [--runs R] [--json]`` loads one domain of N users
into the farm's slapd (:class:`bench.farm_ldap.Slapd`, bulk-loaded with ``slapadd``: the
entries are laid out exactly as ``mailfarm domain add`` and ``mailfarm user add`` write them,
without mailboxes), then times :func:`web.users.users_page` against it for page 1, a middle
page, the last page, a search matching about 1% of the users and one matching a single user.

Each case runs ``--runs`` times with a fresh connection, as the console makes one per
request, and the median is reported, for ``baseline`` (the code before the page was made
fast, kept here so both are measured in the same run) and for ``users_page`` as it is now,
cold (its cache emptied before every run: the first request of a session) and warm.
BENCHMARKS.md reports the figures. Needs root (slapd drops to ``openldap``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from bench.farm_ldap import Slapd, ldif_entry, ssha
from bench.farm_proc import free_ports
from bench.proxyproc import render_toml
from directory.names import escape_filter_value
from directory.provision import NotFound
from directory.provision.dns import fqdn
from directory.provision.dnsstore import NAME_CLASSES, domain_dn, name_dn
from directory.provision.domains import DOMAIN_CLASSES, dns_attributes
from directory.provision.ldapwrite import LdapWriter
from directory.provision.users import USER_CLASSES, uid_for_address, user_attributes
from directory.provision.users import user_from_entry as _user_from_entry
from directory.settings import ToolConfig
from proxy.config import load_config
from web import users as web_users

BASE_DN = "dc=mailfarm,dc=test"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "bench-admin-pw"
DOMAIN = "big.example"
HOSTS = ("127.0.0.2", "127.0.0.3")
# 92 first names, none a substring of another or of the domain: ``q=<name>`` matches ~1%.
NAMES = (
    "abel adam alba alma amos anja arlo axel bert bodo cara cleo cruz dana dora duke ebba "
    "egon elin emil enzo erik ezra fay finn flor gaby gus hana hugo ida igor ines ivan jack "
    "jade jens joel juno kai karl kira knut lars lena levi lily luca lutz mara mats mika "
    "milo nadia nero nils noor olga omar otto pia quin rafe remo rhea rolf rosa ruth sami "
    "sara seth sina sven taro thea tina tove ugo ulf uma vera vito wendy xena yara yuri "
    "zack zeno zoe ziva wim oona"
).split()
SEPARATORS = (".", "_", "-", "")  # "." and "_" sort differently in addresses and in uids


def address(i: int) -> str:
    name = NAMES[i % len(NAMES)]
    return f"{name}{SEPARATORS[i // len(NAMES) % len(SEPARATORS)]}{i:06d}@{DOMAIN}"


def domain_entries(domain: str, today: date) -> Iterator[str]:
    """The branch ``add_domain`` makes: the domain entry with its DNS apex, ``ou=users``."""
    dn = f"dc={domain},ou=domains,{BASE_DN}"
    apex, names = dns_attributes(domain, ["mx1.mailfarm.test:10"], ["ns1.mailfarm.test"], [], today)
    yield ldif_entry(dn, {"objectClass": list(DOMAIN_CLASSES), "dc": [domain],
                          "associatedDomain": [domain], **apex})  # fmt: skip
    yield ldif_entry(f"ou=users,{dn}", {"objectClass": ["organizationalUnit"], "ou": ["users"]})
    for owner, ips in names.items():
        yield ldif_entry(name_dn(dn, owner), {"objectClass": list(NAME_CLASSES), "dc": [owner],
                                              "associatedDomain": [fqdn(owner, domain)],
                                              "aRecord": ips})  # fmt: skip


def user_entry(i: int, hashed: str) -> str:
    """What ``add_user`` writes for user ``i`` (placed round-robin on the two hosts)."""
    mail = address(i)
    local, domain = mail.split("@")
    uid = uid_for_address(mail)
    return ldif_entry(
        f"uid={uid},ou=users,dc={domain},ou=domains,{BASE_DN}",
        {
            "objectClass": list(USER_CLASSES),
            "uid": [uid],
            "mail": [mail],
            "cn": [mail],
            "sn": [local],
            "mailHost": [HOSTS[i % len(HOSTS)]],
            "userPassword": [hashed],
        },
    )


def tree(users: int) -> Iterator[str]:
    yield ldif_entry(BASE_DN, {"objectClass": ["dcObject", "organization"], "dc": ["mailfarm"],
                               "o": ["userspage bench"]})  # fmt: skip
    yield ldif_entry(f"ou=domains,{BASE_DN}", {"objectClass": ["organizationalUnit"],
                                               "ou": ["domains"]})  # fmt: skip
    yield from domain_entries(DOMAIN, date.today())
    hashed = ssha("bench-user-pw")  # one hash for all: slapadd time is not what is measured
    for i in range(users):
        yield user_entry(i, hashed)


def settings_for(workdir: Path, uri: str) -> ToolConfig:
    config = workdir / "bench.toml"
    sections = {
        "directory": {"uri": [uri], "base": BASE_DN, "bind_dn": ADMIN_DN,
                      "bind_password": ADMIN_PASSWORD, "timeout": 30},
        "provision": {"bind_dn": ADMIN_DN, "bind_password": ADMIN_PASSWORD,
                      "hosts": list(HOSTS)},
    }  # fmt: skip
    config.write_text(render_toml(sections))
    return load_config(config)


# -- the code path before this bench: every entry with its mail, sorted in Python --------

_USERS = "(objectClass=inetLocalMailRecipient)"


def baseline(
    settings: ToolConfig, writer: LdapWriter, domain: str, q: str, page: int
) -> dict[str, Any]:
    page_size = 50
    zone = domain_dn(writer, domain)
    if writer.get(zone, ("1.1",)) is None:
        raise NotFound(f"domain {domain}: no such domain")
    search = _USERS
    if q:
        value = escape_filter_value(q.lower())
        search = f"(&{_USERS}(|(uid=*{value}*)(mail=*{value}*)))"
    base = f"ou=users,{zone}"
    try:
        found = sorted(
            (e.first("mail") or "", e.dn) for e in writer.search(base, search, "sub", ("mail",))
        )
    except NotFound:
        found = []
    chosen = found[(page - 1) * page_size : page * page_size]
    users = []
    if chosen:
        wanted = "".join(f"(mail={escape_filter_value(mail)})" for mail, _ in chosen if mail)
        dns = {dn for _, dn in chosen}
        entries = writer.search(base, f"(&{_USERS}(|{wanted}))", "sub", user_attributes(settings))
        page_users = (_user_from_entry(e, settings) for e in entries if e.dn in dns)
        users = sorted(page_users, key=lambda u: u.mail)
    return {
        "domain": domain,
        "q": q,
        "page": page,
        "page_size": page_size,
        "total": len(found),
        "users": [web_users.user_dict(u) for u in users],
    }


# -- timing ------------------------------------------------------------------------------

Page = Callable[[ToolConfig, LdapWriter, str, str, int], dict[str, Any]]


def cases(users: int) -> list[tuple[str, str, int]]:
    last = max(1, -(-users // 50))
    return [
        ("page 1", "", 1),
        ("middle page", "", max(1, last // 2)),
        ("last page", "", last),
        ("q ~1%", NAMES[7], 1),  # "axel": 1 user in 92
        ("q 1 user", f"{users // 3:06d}", 1),
    ]


def time_case(
    settings: ToolConfig, fn: Page, q: str, page: int, runs: int, cold: bool
) -> tuple[float, dict[str, Any]]:
    samples = []
    result: dict[str, Any] = {}
    for _ in range(runs):
        if cold:
            web_users.forget_all()
        started = time.perf_counter()
        with LdapWriter(settings) as writer:
            result = fn(settings, writer, DOMAIN, q, page)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, result


def measure(plain: ToolConfig, sorting: ToolConfig, users: int, runs: int) -> list[dict[str, Any]]:
    """Per case: the baseline and the fallback (cold, warm) on ``plain`` slapd, and
    ``users_page`` on ``sorting`` slapd (with sssvlv); every answer checked against the
    baseline's."""
    rows = []
    for label, q, page in cases(users):
        base_ms, expected = time_case(plain, baseline, q, page, runs, cold=False)
        timed = {}
        for name, settings, cold in (
            ("sssvlv_ms", sorting, True),
            ("fallback_cold_ms", plain, True),
            ("fallback_warm_ms", plain, False),
        ):
            ms, got = time_case(settings, web_users.users_page, q, page, runs, cold)
            assert got == expected, f"{label}: users_page ({name}) differs from the baseline"
            timed[name] = round(ms, 1)
        rows.append(
            {
                "case": label,
                "q": q,
                "page": page,
                "total": expected["total"],
                "shown": len(expected["users"]),
                "baseline_ms": round(base_ms, 1),
                **timed,
            }
        )
    return rows


def start_slapd(workdir: Path, users: int, sssvlv: bool) -> Slapd:
    (port,) = free_ports(1, hosts=("127.0.0.1",))
    slapd = Slapd(workdir, port, BASE_DN, ADMIN_DN, ADMIN_PASSWORD, sssvlv=sssvlv)
    slapd.load(tree(users))
    slapd.start()
    return slapd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="userspage-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # slapd runs as openldap and must reach its directory
        started = time.perf_counter()
        plain = start_slapd(workdir / "plain", args.users, sssvlv=False)
        load_s = time.perf_counter() - started
        try:
            sorting = start_slapd(workdir / "sssvlv", args.users, sssvlv=True)
            try:
                rows = measure(
                    settings_for(workdir / "plain", plain.uri),
                    settings_for(workdir / "sssvlv", sorting.uri),
                    args.users,
                    args.runs,
                )
            finally:
                sorting.stop()
        finally:
            plain.stop()
    if args.json:
        machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
        print(json.dumps({"users": args.users, "runs": args.runs, "load_s": round(load_s, 1),
                          "machine": machine, "cases": rows}, indent=2))  # fmt: skip
        return
    print(
        f"{args.users} users in {DOMAIN} (slapadd {load_s:.1f} s), median of {args.runs} runs, ms"
    )
    print(f"{'case':<12} {'total':>7} {'baseline':>9} {'sssvlv':>8} {'ratio':>6} "
          f"{'fallback cold':>14} {'warm':>7}")  # fmt: skip
    for row in rows:
        ratio = row["baseline_ms"] / max(row["sssvlv_ms"], 0.1)
        print(
            f"{row['case']:<12} {row['total']:>7} {row['baseline_ms']:>9.1f}"
            f" {row['sssvlv_ms']:>8.1f} {ratio:>5.0f}x"
            f" {row['fallback_cold_ms']:>14.1f} {row['fallback_warm_ms']:>7.1f}"
        )


if __name__ == "__main__":
    main()
