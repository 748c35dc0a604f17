"""``mailfarm domain|user|dns|import|sessions``: the admin tool's commands, as scripted.

Each command prints a short human answer, or with ``--json`` one JSON object on stdout
(``"ok": true`` plus the data; on failure ``"ok": false`` and ``"error"``, with the data too
when the change was made but not every mailfarm instance could be told). Messages and
warnings go to stderr. Exit status: 0 done, 1 not found or refused, 2 usage or
configuration, 3 LDAP, a backend or a proxy unavailable.

Passwords are never command-line arguments (they would show in ``ps`` and shell history):
``--password-file FILE``, ``--password-file -`` for stdin, or a getpass prompt on a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.configschema import ConfigError
from directory.provision import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    PartlyApplied,
    ProvisionError,
    UsageError,
)
from directory.settings import ToolConfig

if TYPE_CHECKING:  # ldap3 is imported only when a command of ours runs
    from directory.provision.ldapwrite import LdapWriter

Action = Callable[[argparse.Namespace, ToolConfig, "LdapWriter"], int]


def _emit(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    for warning in data.get("warnings", []):
        print(f"mailfarm: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": True, **data}, indent=None))
    else:
        for line in lines:
            print(line)


def _run(args: argparse.Namespace, action: Action) -> int:
    """Load the config, open the LDAP connection, run ``action``, map errors to exit codes.

    The config is loaded by ``args.load``, which the ``mailfarm`` command (the layer above,
    which knows every section of the file) puts on the parsed arguments.
    """
    from directory.provision.ldapwrite import LdapWriter

    try:
        settings = args.load(args.config)
        with LdapWriter(settings) as writer:
            return action(args, settings, writer)
    except (ProvisionError, ConfigError) as exc:
        code = exc.exit_code if isinstance(exc, ProvisionError) else 2
        print(f"mailfarm: {exc}", file=sys.stderr)
        if args.json:
            data = exc.data if isinstance(exc, PartlyApplied) else {}
            print(json.dumps({"ok": False, **data, "error": str(exc), "exit": code}))
        return code


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    return lambda args: _run(args, action)


AdminAction = Callable[[argparse.Namespace, ToolConfig], int]


def _admin_command(action: AdminAction) -> Callable[[argparse.Namespace], int]:
    """Like :func:`_command` for the commands that only talk to the mailfarm instances:
    no LDAP connection, so they work while the directory is down (when they matter most)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return action(args, args.load(args.config))
        except (ProvisionError, ConfigError) as exc:
            code = exc.exit_code if isinstance(exc, ProvisionError) else 2
            print(f"mailfarm: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"ok": False, "error": str(exc), "exit": code}))
            return code

    return run


def read_password(source: str | None, prompt: str = "New password: ") -> str:
    """The password from a file, stdin (``-``) or a prompt; never from the command line."""
    if source == "-":
        text = sys.stdin.readline()
    elif source:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--password-file {source}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        text = getpass.getpass(prompt)
        if getpass.getpass("Again: ") != text:
            raise UsageError("the passwords differ")
    else:
        raise UsageError("no password: give --password-file FILE, or --password-file - for stdin")
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if not password:
        raise UsageError("empty password")
    return password


# -- domain ---------------------------------------------------------------------------------


def domain_add(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.domains import add_domain

    domain = add_domain(
        settings,
        writer,
        args.domain,
        args.mx,
        args.ns,
        args.a,
        date.today(),
        mail_dns=not args.no_mail_dns,
    )
    lines = [f"domain {domain.name} added ({domain.dn})"]
    for record in domain.mail_dns or ():
        shown = "(DKIM public key)" if record.value.startswith('"v=DKIM1;') else record.value
        lines.append(f"  {record.owner} {record.rtype} {shown}")
    if domain.dkim is not None:
        lines.extend(_dkim_lines(domain.dkim.as_dict()))
    _emit(args, domain.as_dict(), lines)
    return EXIT_OK


def domain_list(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.domains import list_domains

    domains = list_domains(writer)
    lines = [f"{d.name}\t{d.users} users" for d in domains]
    _emit(args, {"domains": [d.as_dict() for d in domains]}, lines)
    return EXIT_OK


def domain_del(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.domains import delete_domain

    gone = delete_domain(settings, writer, args.domain, args.force)
    lines = [f"domain {gone.domain.name} deleted with {len(gone.users)} users"]
    lines += [f"DKIM key removed: {path}" for path in gone.dkim_keys_removed]
    _emit(args, gone.as_dict(), lines)
    return EXIT_OK


# -- user -----------------------------------------------------------------------------------


def user_add(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.users import add_user, quota_attribute

    if args.quota is not None:
        quota_attribute(settings)  # before asking for a password
    password = read_password(args.password_file)
    user = add_user(settings, writer, args.address, password, args.host, quota_kb=args.quota)
    data, line = user.as_dict(), f"{user.mail} added as {user.uid} on {user.host}"
    if user.quota_kb is not None:
        data["quota_kb"] = user.quota_kb
        line += f" with a quota of {user.quota_kb} KiB"
    _emit(args, data, [line])
    return EXIT_OK


def _quota_arg(text: str) -> int | None:
    """An argparse type: KiB as a whole number, or ``none`` (argparse exits 2 otherwise)."""
    if text.strip().lower() == "none":
        return None
    return _count(1)(text)  # the upper bound is the service's (users.check_quota)


def user_quota(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.users import set_quota

    change = set_quota(settings, writer, args.login, args.kib)
    user = change.user
    what = f"{user.quota_kb} KiB" if user.quota_kb is not None else "none"
    when = "applied now" if change.applied else "applies at the user's next login"
    _emit(args, change.as_dict(), [f"quota of {user.mail} on {user.host}: {what} ({when})"])
    return EXIT_OK


def _told(change: Any) -> str:
    count = len(change.notified.reached)
    return f"; flushed on {count} mailfarm instance{'s' * (count != 1)}" if count else ""


def user_del(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.users import delete_user

    change = delete_user(settings, writer, args.login)
    user, removed = change.user, change.extra["messages_removed"]
    line = f"{user.mail} deleted ({removed} messages removed from {user.host}){_told(change)}"
    if "backend_kept_copy" in change.extra:
        kept = change.extra["backend_kept_copy"]
        line += f"; {user.host} keeps a copy as {kept} until it expires it (delete_mode)"
    _emit(args, change.as_dict(), [line])
    return EXIT_OK


def user_passwd(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.users import find_user, set_password

    find_user(settings, writer, args.login)  # "no such user" before asking for a password
    change = set_password(settings, writer, args.login, read_password(args.password_file))
    _emit(args, change.as_dict(), [f"password of {change.user.mail} changed{_told(change)}"])
    return EXIT_OK


def _set_disabled(
    args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter, disabled: bool
) -> int:
    from directory.provision.users import set_login_disabled

    change = set_login_disabled(settings, writer, args.login, disabled)
    what = "disabled" if disabled else "enabled"
    _emit(args, change.as_dict(), [f"logins of {change.user.mail} {what}{_told(change)}"])
    return EXIT_OK


def user_disable(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    return _set_disabled(args, settings, writer, True)


def user_enable(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    return _set_disabled(args, settings, writer, False)


def user_list(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.users import list_users

    users = list_users(settings, writer, args.domain)
    lines = [
        f"{u.mail}\t{u.uid}\t{u.host}" + ("\tlogins disabled" if u.login_disabled else "")
        for u in users
    ]
    _emit(args, {"users": [u.as_dict() for u in users]}, lines)
    return EXIT_OK


def user_show(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.users import find_user

    user = find_user(settings, writer, args.login)
    data = user.as_dict()
    if settings.directory.quota_attribute:
        data["quota_kb"] = user.quota_kb
    _emit(args, data, [f"{key}: {value}" for key, value in data.items()])
    return EXIT_OK


def user_move(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    _check_move_selectors(args)
    if args.login is None:
        return _user_move_batch(args, settings, writer)
    from directory.provision.move import move_user
    from directory.provision.progressview import ProgressView

    view = ProgressView(sys.stderr, json_events=args.json)
    report = move_user(
        settings,
        writer,
        args.login,
        args.to,
        args.force,
        view.update,
        keep_old=args.keep_old,
        no_sieve=args.no_sieve,
    )
    view.close()
    line = (
        f"{report.uid} moved from {report.source} to {report.target}: {report.messages} "
        f"messages in {len(report.folders)} folders, {report.seconds:.1f} s"
    )
    lines = [line, *_verified(report.folders)]
    if report.caught_up:
        lines.append(f"  caught up {report.caught_up} messages delivered during the move")
    if report.old_copy_kept_as:
        lines.append(f"  old copy kept: {report.old_copy_kept_as}")
    if report.sieve_scripts:
        active = [s["name"] for s in report.sieve_scripts if s["active"]]
        lines.append(
            f"  {len(report.sieve_scripts)} Sieve scripts copied"
            + (f" ({active[0]} active)" if active else "")
        )
    _emit(args, report.as_dict(), lines)
    return EXIT_OK


def _check_move_selectors(args: argparse.Namespace) -> None:
    """Exactly one of LOGIN, --from, --list; the batch options only where they mean
    something (a --limit on a fixed list, or a --domain without --from, would be ignored)."""
    given = [
        name
        for name, value in (("LOGIN", args.login), ("--from", args.source), ("--list", args.list))
        if value is not None
    ]
    if not given:
        raise UsageError("user move: give a LOGIN, --from HOST or --list FILE")
    if len(given) > 1:
        raise UsageError(f"user move: {' and '.join(given)} exclude each other: give one")
    for option, value in (("--limit", args.limit), ("--domain", args.domain)):
        if value is not None and args.source is None:
            raise UsageError(f"user move: {option} is for --from HOST")
    if args.jobs is not None and args.login is not None:
        raise UsageError("user move: --jobs is for --from HOST or --list FILE")
    if args.source is not None and args.source == args.to:
        raise UsageError(f"user move: --from and --to are both {args.to}")


def _read_list(source: str) -> str:
    try:
        if source == "-":
            return sys.stdin.read()
        return Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--list {source}: {getattr(exc, 'strerror', None) or exc}") from None


def _user_move_batch(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.drain import (
        DEFAULT_JOBS,
        FAILED,
        BatchView,
        move_many,
        parse_list,
        select_source,
    )

    if args.list is not None:
        logins = parse_list(_read_list(args.list))
    else:
        logins = select_source(settings, writer, args.source, args.domain, args.limit)
    view = BatchView(sys.stderr, json_events=args.json)
    report = move_many(
        settings,
        logins,
        args.to,
        source=args.source,
        jobs=DEFAULT_JOBS if args.jobs is None else args.jobs,
        force=args.force,
        keep_old=args.keep_old,
        no_sieve=args.no_sieve,
        progress=view.progress,
        done=view.done,
        note=view.note,
    )
    failed = [r for r in report.results if r.status == FAILED]
    lines = [report.summary(), *(f"  {r.uid or r.login}: {r.error}" for r in failed)]
    _emit(args, report.as_dict(), lines)
    return report.exit_code()


def _count(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] (argparse exits 2 otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value}: must be {bound}")
        return value

    return parse


def _verified(folders: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, info in folders.items():
        to = f" -> {info['to']}" if info.get("to") not in (None, name) else ""
        if "sha256" in info:
            out.append(f"  {name}{to}: {info['messages']} messages, sha256 {info['sha256'][:16]}")
        else:
            out.append(f"  {name}{to}: {info.get('copied', 0)} messages caught up")
    return out


# -- the instances: kick, flush, sessions ----------------------------------------------------


def _admin_urls(settings: ToolConfig, command: str) -> tuple[str, ...]:
    urls = settings.provision.admin_urls
    if not urls:
        raise UsageError(f"{command}: no [provision] admin_urls: which instances to ask?")
    return tuple(urls)


def _report_each(
    args: argparse.Namespace, told: list[Any], key: str, verb: str, data: dict[str, Any]
) -> int:
    """One line per worker URL (ok, with the count it gave, or its problem) and a total;
    exit 3 when one was missed, after showing what the others did."""
    lines = []
    for one in told:
        if one.ok:
            count = one.total(key)
            what = "" if count is None else f", {count} {verb}"
            lines.append(f"{one.url}\tok{what}")
        else:
            lines.append(f"{one.url}\tproblem: {one.problem}")
    total = sum(one.total(key) or 0 for one in told)
    missed = [one for one in told if not one.ok]
    lines.append(
        f"{total} {verb} on {len(told) - len(missed)} of {len(told)} instances (worker URLs)"
    )
    data = {**data, key: total, "instances": [one.as_dict() for one in told]}
    if not missed:
        _emit(args, data, lines)
        return EXIT_OK
    error = f"{len(missed)} of {len(told)} instances could not be told"
    if args.json:
        print(json.dumps({"ok": False, **data, "error": error, "exit": EXIT_UNAVAILABLE}))
    else:
        for line in lines:
            print(line)
        print(f"mailfarm: {error}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def user_kick(args: argparse.Namespace, settings: ToolConfig) -> int:
    from directory.provision.adminapi import tell_each

    urls = _admin_urls(settings, "user kick")
    told = tell_each(urls, settings.admin_token, [args.login], ["kick"])
    return _report_each(args, told, "kicked", "sessions kicked", {"user": args.login})


def user_flush(args: argparse.Namespace, settings: ToolConfig) -> int:
    from directory.provision.adminapi import tell_each

    if (args.login is None) == (not args.all):
        raise UsageError("user flush: give a LOGIN, or --all for every user's cached route")
    urls = _admin_urls(settings, "user flush")
    told = tell_each(urls, settings.admin_token, [args.login], ["flush"])
    return _report_each(args, told, "flushed", "cache entries flushed", {"user": args.login})


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def sessions(args: argparse.Namespace, settings: ToolConfig) -> int:
    """Who is logged in where: every worker of every instance asked at once; those that
    could not say are listed after the table, and make the exit status 3."""
    from directory.provision.adminapi import gather_sessions

    urls = _admin_urls(settings, "sessions")
    found, missed = gather_sessions(urls, settings.admin_token, args.user)

    found.sort(key=lambda e: (str(e.get("mail") or e.get("uid")), str(e["instance"])))
    unreachable = [{"instance": url, "problem": problem} for url, problem in missed]
    data = {"user": args.user, "sessions": found, "unreachable": unreachable}
    if args.json:
        ok = not missed
        error = f"{len(missed)} instances could not say"
        extra = {} if ok else {"error": error, "exit": EXIT_UNAVAILABLE}
        print(json.dumps({"ok": ok, **data, **extra}))
        return EXIT_OK if ok else EXIT_UNAVAILABLE
    head = ("USER", "PROTOCOL", "BACKEND", "CLIENT", "DURATION", "INSTANCE", "WORKER")
    rows = [
        tuple(
            str(v)
            for v in (
                entry.get("mail") or entry.get("uid"),
                entry.get("protocol", "?"),
                entry.get("backend", "?"),
                entry.get("client", "?"),
                _duration(entry.get("seconds")),
                entry["instance"],
                entry.get("worker", "?"),
            )
        )
        for entry in found
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"{len(found)} sessions" + (f" of {args.user}" if args.user else ""))
    for url, problem in missed:
        print(f"unreachable: {url}: {problem}")
    if missed:
        print(f"mailfarm: {len(missed)} instances could not say who is logged in", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK


# -- dns ------------------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    """A zone file is read by named at any moment: it must never be seen half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dns_export(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.dns import check_domain, render_zone
    from directory.provision.dnsstore import read_zone

    domain = check_domain(args.domain)
    zone = read_zone(writer, domain)
    if zone.soa is None:
        raise ProvisionError(f"domain {domain} has no DNS data (no SOA)")
    text = render_zone(domain, zone.soa, zone.records)
    if args.output:
        try:
            _write_atomically(Path(args.output), text)
        except OSError as exc:
            raise UsageError(f"-o {args.output}: {exc.strerror}") from None
        _emit(
            args,
            {"domain": domain, "serial": zone.soa.serial, "file": args.output},
            [f"zone {domain} (serial {zone.soa.serial}) written to {args.output}"],
        )
    elif args.json:
        _emit(args, {"domain": domain, "serial": zone.soa.serial, "zone": text}, [])
    else:
        sys.stdout.write(text)
    return EXIT_OK


def dns_set(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.dns import check_domain
    from directory.provision.dnsstore import set_record

    domain = check_domain(args.domain)
    change = set_record(writer, domain, args.name, args.type, " ".join(args.value), date.today())
    return _dns_report(args, change, "set" if change.changed else "unchanged")


def dns_del(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.dns import check_domain
    from directory.provision.dnsstore import delete_record

    domain = check_domain(args.domain)
    value = " ".join(args.value) if args.value else None
    change = delete_record(writer, domain, args.name, args.type, value, date.today())
    return _dns_report(args, change, "deleted")


def dns_repair(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    """Bring old DNS entries up to what PowerDNS's LDAP backend needs (see ``dnsstore``)."""
    from directory.provision.dns import check_domain
    from directory.provision.dnsstore import repair_domain
    from directory.provision.domains import list_domains

    if args.domain:
        names = [check_domain(args.domain)]
    else:
        names = [d.name for d in list_domains(writer)]
    report: list[dict[str, Any]] = []
    lines = []
    for name in names:
        try:
            check_domain(name)
        except UsageError:  # an entry made by hand: no name to give its entries
            report.append({"domain": name, "changed": False, "fixed": {}, "skipped": True})
            lines.append(f"{name}: skipped, not a domain name")
            continue
        fixed = repair_domain(writer, name)
        report.append({"domain": name, "changed": bool(fixed), "fixed": fixed})
        if not fixed:
            lines.append(f"{name}: nothing to repair")
        for owner, done in fixed.items():
            lines.append(f"{name}: {owner}: {'; '.join(done)}")
    changed = sum(bool(item["fixed"]) for item in report)
    lines.append(f"{len(names)} domains checked, {changed} repaired")
    _emit(args, {"domains": report, "repaired": changed}, lines)
    return EXIT_OK


def _dkim_lines(key: dict[str, Any]) -> list[str]:
    """Where the signer finds a key: its file, and OpenDKIM's table lines for it."""
    return [
        f"  DKIM selector {key['selector']}: private key {key['key_file']}",
        f"  OpenDKIM KeyTable:     {key['opendkim_keytable']}",
        f"  OpenDKIM SigningTable: {key['opendkim_signingtable']}",
    ]


def dns_dkim(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.dkim import ensure_dkim
    from directory.provision.dns import check_domain

    domain = check_domain(args.domain)
    result = ensure_dkim(
        settings.provision, writer, domain, date.today(), args.rotate, args.selector
    )
    data = result.as_dict()
    if result.created:
        lines = [f"{domain}: DKIM key {result.key.selector} published (serial {result.serial})"]
    else:
        lines = [f"{domain}: has the DKIM key {result.key.selector} already; nothing changed"]
    lines.extend(_dkim_lines(data))
    lines.append(f"  rspamd dkim_signing path: {data['rspamd_path']}")
    for old in data["older"]:
        lines.append(
            f"  still published: {old['selector']} ({old['key_file']}); once the signer "
            f"uses {result.key.selector}, remove it with: {old['remove_with']}"
        )
    _emit(args, data, lines)
    return EXIT_OK


def _dns_report(args: argparse.Namespace, change: Any, what: str) -> int:
    data = change.as_dict()
    line = f"{change.owner} {change.rtype} {what} in {change.domain}"
    if change.changed:
        line += f" (serial {change.serial})"
    _emit(args, data, [line])
    return EXIT_OK


# -- import ---------------------------------------------------------------------------------


def import_csv(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.csvimport import RowResult, import_users

    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{args.file}: {getattr(exc, 'strerror', None) or exc}") from None

    def show(result: RowResult) -> None:
        if not args.json:
            extra = f" on {result.host}" if result.host and result.status == "created" else ""
            why = f": {result.error}" if result.error else ""
            stream = sys.stderr if result.status == "failed" else sys.stdout
            print(f"line {result.line}: {result.address} {result.status}{extra}{why}", file=stream)

    results, replication = import_users(settings, writer, text, show)
    totals = {s: sum(r.status == s for r in results) for s in ("created", "skipped", "failed")}
    summary = ", ".join(f"{n} {s}" for s, n in totals.items())
    data: dict[str, object] = {**totals, "rows": [r.as_dict() for r in results]}
    if replication is not None:
        data.update(replication.as_dict())
        data["warnings"] = list(replication.warnings(f"{totals['created']} users added"))
    _emit(args, data, [summary])
    failed = [r.exit_code for r in results if r.status == "failed"]
    return max(failed) if failed else EXIT_OK


_WOULD = {"created": "would be created", "updated": "would be updated"}


def import_ispman(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    from directory.provision.ispman import ItemResult
    from directory.provision.ispman import import_ispman as run_import

    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{args.file}: {getattr(exc, 'strerror', None) or exc}") from None

    def show(result: ItemResult) -> None:
        if args.json:
            return
        status = _WOULD.get(result.status, result.status) if args.dry_run else result.status
        line = f"{result.kind} {result.name}: {status}"
        if result.kind == "user" and result.status == "created":
            line += f" as {result.uid} on {result.host}"
        if result.error:
            line += f": {result.error}"
        stream = sys.stderr if result.status == "failed" else sys.stdout
        print(line, file=stream)
        for detail in result.details:
            print(f"  {detail}", file=stream)
        for note in result.notes:
            print(f"  note: {note}", file=stream)

    today = date.today()
    report = run_import(
        settings, writer, text, dry_run=args.dry_run, today=today, on_result=show, source=args.file
    )
    summary = ", ".join(f"{n} {s}" for s, n in report.totals().items())
    summary += f" ({report.ignored} entries of the file are not domains, users or DNS data)"
    if args.dry_run:
        summary += "; dry run: nothing was written"
    _emit(args, report.as_dict(), [summary])
    return report.exit_code()


def import_file(args: argparse.Namespace, settings: ToolConfig, writer: LdapWriter) -> int:
    if args.ispman:
        return import_ispman(args, settings, writer)
    if args.dry_run:
        raise UsageError("--dry-run is for --ispman imports")
    return import_csv(args, settings, writer)


# -- argparse -------------------------------------------------------------------------------


def _leaf(
    group: Any,
    name: str,
    help_text: str,
    action: Action,
    add_config: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
    add_config(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_command(action))
    return p


def _admin_leaf(
    group: Any,
    name: str,
    help_text: str,
    action: AdminAction,
    add_config: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    p = _leaf(group, name, help_text, lambda *_: EXIT_OK, add_config)
    p.set_defaults(func=_admin_command(action))
    return p


def register(subparsers: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``domain``, ``user``, ``dns``, ``import`` and ``sessions`` to ``mailfarm``."""
    many = {"action": "extend", "nargs": "+", "default": []}

    group = subparsers.add_parser("domain", help="add, list and delete mail domains")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _leaf(sub, "add", "add a domain: its LDAP branch and DNS data", domain_add, add_config)
    p.add_argument("domain", help="e.g. example.co.uk")
    p.add_argument(
        "--mx", metavar="HOST:PRIO", help="mail exchanger ([provision] default_mx)", **many
    )
    p.add_argument("--ns", metavar="HOST", help="name server ([provision] default_ns)", **many)
    p.add_argument("--a", metavar="NAME:IP", help="address record, @ for the apex", **many)
    p.add_argument(
        "--no-mail-dns",
        action="store_true",
        help="no SPF, DMARC, SRV records nor DKIM key ([provision] default_spf, "
        "default_dmarc, front_door, dkim_dir)",
    )
    _leaf(sub, "list", "list domains with their number of users", domain_list, add_config)
    p = _leaf(sub, "del", "delete a domain (refused while it has users)", domain_del, add_config)
    p.add_argument("domain")
    p.add_argument("--force", action="store_true", help="delete its users and mailboxes first")

    group = subparsers.add_parser(
        "user",
        help="add, delete, disable, enable, set quotas, list, show, move, kick and flush users",
    )
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _leaf(sub, "add", "add a user: entry and mailbox", user_add, add_config)
    p.add_argument("address", help="e.g. alice@example.co.uk (uid alice_example_co_uk)")
    p.add_argument("--password-file", metavar="F", help="read the password from F (- = stdin)")
    p.add_argument(
        "--host", metavar="H", help="backend (default: fewest users of [provision] hosts)"
    )
    p.add_argument(
        "--quota",
        metavar="KIB",
        type=_count(1),
        help="mailbox quota in KiB ([directory] quota_attribute)",
    )
    p = _leaf(sub, "del", "delete a user's mailbox and entry", user_del, add_config)
    p.add_argument("login", help="uid or address")
    p = _leaf(sub, "passwd", "set a user's password", user_passwd, add_config)
    p.add_argument("login", help="uid or address")
    p.add_argument("--password-file", metavar="F", help="read the password from F (- = stdin)")
    p = _leaf(
        sub,
        "disable",
        "refuse a user's logins ([directory] disabled_attribute) and end its sessions; "
        "mail for it is deferred meanwhile (not while a move of it runs)",
        user_disable,
        add_config,
    )
    p.add_argument("login", help="uid or address")
    p = _leaf(
        sub,
        "enable",
        "allow a user's logins again (not while a move of it runs)",
        user_enable,
        add_config,
    )
    p.add_argument("login", help="uid or address")
    p = _leaf(
        sub,
        "quota",
        "set or remove a user's quota: [directory] quota_attribute, and the user's backend "
        "(Cyrus at once, Dovecot from the user's next login)",
        user_quota,
        add_config,
    )
    p.add_argument("login", help="uid or address")
    p.add_argument("kib", metavar="KIB|none", type=_quota_arg, help="KiB, or none to remove it")
    p = _leaf(sub, "list", "list users", user_list, add_config)
    p.add_argument("--domain", metavar="D", help="only the users of domain D")
    p = _leaf(sub, "show", "show one user's entry", user_show, add_config)
    p.add_argument("login", help="uid or address")
    p = _admin_leaf(
        sub,
        "kick",
        "end a user's sessions on every worker of every [provision] admin_urls instance",
        user_kick,
        add_config,
    )
    p.add_argument("login", help="uid, address or login as typed (any case)")
    p = _admin_leaf(
        sub,
        "flush",
        "forget a user's cached route and login on every [provision] admin_urls instance",
        user_flush,
        add_config,
    )
    p.add_argument("login", nargs="?", help="uid or address (any case)")
    p.add_argument("--all", action="store_true", help="every user's cached route instead")
    p = _leaf(
        sub,
        "move",
        "move a mailbox to another backend, or many: drain a backend (--from) or a list",
        user_move,
        add_config,
    )
    p.description = (
        "Move one user (LOGIN), every user of a backend (--from HOST: drain it), or the users "
        "named in a file (--list FILE); exactly one of the three. A batch runs --jobs moves "
        "at once; one user's failure does not stop the others, and each user's result is "
        "reported (moved, skipped or failed) with a summary. A batch is resumable: run the "
        "same command again and it continues (users moved are off the source, or skipped "
        "as already there; a move interrupted mid-way is finished or undone). Exit status: "
        "0 if every user moved or was skipped, else the worst failure's. With --json, a "
        "batch prints one object (the summary and a list of users) on stdout, and every "
        "move's progress events plus a user-done event per user as JSON lines on stderr."
    )
    p.add_argument(
        "login", nargs="?", metavar="LOGIN", help="uid or address of the one user to move"
    )
    p.add_argument("--to", required=True, metavar="HOST", help="the new mailHost")
    p.add_argument(
        "--from",
        dest="source",
        metavar="HOST",
        help="move every user whose mailHost is HOST (by uid), and finish the moves from "
        "HOST that were interrupted after their switch",
    )
    p.add_argument(
        "--domain",
        metavar="D",
        help="with --from: only the users of domain D",
    )
    p.add_argument(
        "--limit",
        metavar="N",
        type=_count(1),
        help="with --from: at most N users this run (interrupted moves first, then by uid)",
    )
    p.add_argument(
        "--list",
        metavar="FILE",
        help="move the users named in FILE (- = stdin): one uid or address a line, # starts "
        "a comment; users already on --to are skipped",
    )
    p.add_argument(
        "--jobs",
        metavar="J",
        type=_count(1, 16),  # drain.MAX_JOBS (not imported here: it loads ldap3)
        help="with --from or --list: how many moves run at once (default 2, at most 16)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="move even if logins are disabled or an earlier move's lease is still "
        "running, and replace whatever the target holds for the user",
    )
    p.add_argument(
        "--keep-old",
        action="store_true",
        help="leave the old copy on the old backend (default: delete it once the last "
        "catch-up is verified)",
    )
    p.add_argument(
        "--no-sieve",
        action="store_true",
        help="move without the users' Sieve scripts (filters, vacation replies): for an old "
        "backend whose ManageSieve ([sieve] backend_port) cannot be reached",
    )

    p = _admin_leaf(
        subparsers,
        "sessions",
        "list who is logged in where, across every [provision] admin_urls instance",
        sessions,
        add_config,
    )
    p.description = (
        "List the logged-in (proxied) sessions of every worker of every [provision] "
        "admin_urls instance: user, protocol, backend, client, duration, instance and worker. "
        "Instances that could not be asked are listed after the table; the exit status is "
        "then 3, and what the others said is shown all the same."
    )
    p.add_argument("--user", metavar="U", help="only U's sessions (uid, address or login)")

    group = subparsers.add_parser("dns", help="export and edit a domain's DNS data")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _leaf(sub, "export", "print the domain's BIND zone", dns_export, add_config)
    p.add_argument("domain")
    p.add_argument("-o", "--output", metavar="FILE", help="write the zone to FILE instead")
    p = _leaf(sub, "set", "add a record (a CNAME replaces)", dns_set, add_config)
    p.add_argument("domain")
    p.add_argument("name", help="@ for the apex, www, *, ...")
    p.add_argument("type", help="A, AAAA, MX, NS, CNAME, TXT, SRV, CAA, PTR or SOA")
    p.add_argument(
        "value",
        nargs="+",
        help="e.g. 192.0.2.1, '10 mx1.example.com', host., 'v=spf1 mx -all' (TXT, quoted for "
        "you), '0 1 993 mail.example.net.' (SRV), '0 issue letsencrypt.org' (CAA)",
    )
    p = _leaf(
        sub, "del", "delete a record (all of TYPE at NAME without VALUE)", dns_del, add_config
    )
    p.add_argument("domain")
    p.add_argument("name")
    p.add_argument("type")
    p.add_argument("value", nargs="*")
    p = _leaf(
        sub,
        "repair",
        "give old DNS entries the associatedDomain and object classes PowerDNS needs",
        dns_repair,
        add_config,
    )
    p.description = (
        "Give the domain entry and every DNS name entry of DOMAIN (without DOMAIN: of every "
        "domain) objectClass domainRelatedObject and dNSDomain2 and associatedDomain <full "
        "name>, which PowerDNS's LDAP backend finds names by; a wrong associatedDomain of a "
        "name entry is corrected. Records are not changed, nor the serial. Safe to run again: "
        "a second run reports nothing to repair."
    )
    p.add_argument("domain", nargs="?")
    p = _leaf(
        sub,
        "dkim",
        "give a domain a DKIM key ([provision] dkim_dir) and publish it; --rotate for a new one",
        dns_dkim,
        add_config,
    )
    p.description = (
        "Make an RSA key pair of [provision] dkim_bits, write the private key to "
        "<dkim_dir>/<domain>/<selector>.private (mode 0600) for the signer, and publish the "
        "public key as <selector>._domainkey TXT. A domain that has a mailfarm key keeps it "
        "(nothing changes). --rotate adds a new selector next to the old one, which stays "
        "published; remove it with 'mailfarm dns del DOMAIN OLD._domainkey TXT' once the "
        "signer uses the new key. The private key is never printed."
    )
    p.add_argument("domain")
    p.add_argument(
        "--rotate", action="store_true", help="a new key even if the domain has one already"
    )
    p.add_argument("--selector", metavar="S", help="the new key's selector (default mfYYYYMMDD)")

    p = _leaf(
        subparsers,
        "import",
        "create users from CSV (address,password[,host]), or bring in an ISPMan directory",
        import_file,
        add_config,
    )
    p.description = (
        "Create users from FILE.csv (address,password[,host]), or with --ispman bring in an "
        "ISPMan LDIF export: domains, their DNS data and users, keeping ISPMan's uids, "
        "password hashes and mailHosts. An ISPMan import creates no mailbox: the backends "
        "already hold them, under the same uid. Safe to run again: what exists is reported, "
        "not duplicated."
    )
    p.add_argument("file", metavar="FILE", help="FILE.csv, or with --ispman FILE.ldif")
    p.add_argument(
        "--ispman",
        action="store_true",
        help="FILE is an ISPMan LDIF export (ispmanDomain=..., o=ispman); mailboxes are not "
        "created (they exist on the backends under the same uid)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --ispman: report what would change, and write nothing",
    )
