"""The ``mailfarm`` command: parse arguments, call into the packages, map errors to exit codes.

Exit codes are part of the interface operators script against: 0 success, 1 "not found" or a
refused operation, 2 bad configuration or usage, 3 a service (directory, backend) unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Sequence

from proxy.config import ConfigError, Settings, effective_settings, load_config

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3
DEFAULT_CONFIG = "proxy.toml"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help="configuration file (default: proxy.toml)"
    )


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailfarm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.set_defaults(load=_load)  # how the commands registered below read proxy.toml

    p = sub.add_parser("serve", help="run every front end the configuration names")
    _add_config(p)

    p = sub.add_parser("check-config", help="validate the configuration and print it")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser("lookup", help="show where a login is routed")
    _add_config(p)
    p.add_argument("login", help="uid (alice_example_co_uk) or address (alice@example.co.uk)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    for name in COMMAND_MODULES if plugins else ():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not exc.name or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
            continue  # not part of this build yet
        module.register(sub, _add_config)
    return parser


def _load(path: str) -> Settings:
    return load_config(path)


def _toml_tables(section: str, table: object) -> list[tuple[str, dict]]:
    """``[section]`` for a table, one ``[[section]]`` per entry of an array of tables."""
    if isinstance(table, list):
        return [(f"[[{section}]]", entry) for entry in table]
    assert isinstance(table, dict)
    return [(f"[{section}]", table)]


def certificate_report(settings: Settings) -> list[dict[str, object]]:
    """Every TLS certificate with the names it serves and its notAfter; a pair that cannot
    be served is a ConfigError naming its table and key, as at start-up."""
    from proxy.tlscerts import PairError, check_pair

    tls = settings.tls
    if tls.cert is None or tls.key is None:
        return []
    pairs = [("tls", tls.cert, tls.key)] + [
        (f"tls.certificates[{i}]", c.cert, c.key) for i, c in enumerate(tls.certificates)
    ]
    report = []
    for section, cert, key in pairs:
        try:
            info = check_pair(cert, key)
        except PairError as exc:
            raise ConfigError(settings.path, section, exc.key, str(exc)) from None
        report.append(
            {
                "section": section,
                "cert": str(cert),
                "names": list(info.names),
                "not_after": info.not_after_text,
                "days_left": int(info.days_left()),
                "expires_soon": info.expires_soon(),
            }
        )
    return report


def _warn_expiry(report: list[dict[str, object]]) -> None:
    """On stderr, and still exit 0: an expiring certificate is a job for this week, not a
    reason to refuse a configuration (or a restart) today."""
    for cert in report:
        if cert["expires_soon"]:
            print(
                f"mailfarm: warning: [{cert['section']}] {cert['cert']} expires"
                f" {cert['not_after']} (in {cert['days_left']} days)",
                file=sys.stderr,
            )


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    shown = effective_settings(settings)
    report = certificate_report(settings)
    _warn_expiry(report)
    if args.json:
        print(json.dumps({**shown, "certificates": report}, indent=2))
        return EXIT_OK
    print(f"# {settings.path}: OK")
    for section, table in shown.items():
        for header, items in _toml_tables(section, table):
            print(header)
            for key, value in items.items():
                print(f"{key} = {json.dumps(value)}")
            print()
    if report:
        print("# TLS certificates (by SNI name; [tls] for names no other one covers):")
    for cert in report:
        print(
            f"# [{cert['section']}] {cert['cert']}: names {', '.join(cert['names'])};"  # type: ignore[arg-type]
            f" notAfter {cert['not_after']} (in {cert['days_left']} days)"
        )
    return EXIT_OK


def cmd_lookup(args: argparse.Namespace) -> int:
    from directory.model import DirectoryUnavailable
    from directory.service import Directory

    settings = _load(args.config)

    async def run() -> int:
        directory = Directory(settings.directory)
        try:
            found = await directory.lookup(args.login)
        except DirectoryUnavailable as exc:
            print(f"mailfarm: directory unavailable: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        finally:
            directory.close()
        route = found.route
        if route is None:
            if args.json:
                print(json.dumps({"login": args.login, "found": False}))
            else:
                print(f"{args.login}: no such user", file=sys.stderr)
            return EXIT_NOT_FOUND
        info = {
            "login": args.login,
            "found": True,
            "uid": route.uid,
            "dn": route.dn,
            "mail": route.mail,
            "mailHost": route.host,
            "port": route.port,
            "login_disabled": route.login_disabled,
            "cached": found.from_cache,
            "stale": found.stale,
        }
        if args.json:
            print(json.dumps(info))
        else:
            for key in ("uid", "dn", "mail", "mailHost", "port", "cached"):
                value = info[key]
                if key == "port" and value is None:
                    value = "(none: protocol backend_port)"
                if key == "cached":
                    value = "yes (stale)" if found.stale else ("yes" if value else "no")
                print(f"{key}: {value}")
        return EXIT_OK

    return asyncio.run(run())


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.server import serve

    settings = _load(args.config)
    return serve(settings)


COMMANDS = {"serve": cmd_serve, "check-config": cmd_check_config, "lookup": cmd_lookup}

# Each module adds its own subcommands: ``register(subparsers, add_config)`` creates them and
# sets ``func`` (args -> exit status) with ``set_defaults``. Errors it raises map as below.
COMMAND_MODULES = ("proxy.smtp.cli", "directory.provision.cli", "bench.cli", "web.cli")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The proxy's own commands never load the admin tool or the bench: a fault there must
    # not keep a mail server from starting.
    parser = build_parser(plugins=not argv or argv[0] not in COMMANDS)
    args = parser.parse_args(argv)
    try:
        func = getattr(args, "func", None) or COMMANDS[args.command]
        return int(func(args))
    except ConfigError as exc:
        print(f"mailfarm: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
