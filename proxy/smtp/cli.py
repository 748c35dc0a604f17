"""``mailfarm postfix-config``: Postfix's side of the configuration, derived from ours.

Generated rather than documented because the two must agree exactly (base, filter,
service account, transport), and a hand-copied filter drifts the day someone edits
``proxy.toml``.
"""

from __future__ import annotations

import argparse
import grp
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.config import load_config
from proxy.smtp.postfixconf import DEFAULT_DIR, generate

MAIN_CF_SNIPPET = "main.cf.mailfarm"


def register(subparsers: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subparsers.add_parser(
        "postfix-config",
        help="print Postfix ldap_table files and main.cf lines matching [directory]",
    )
    add_config(p)
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"write the files into DIR (and name them there in main.cf) instead of"
        f" printing them; printed output names {DEFAULT_DIR}",
    )
    p.set_defaults(func=cmd_postfix_config)


def _write(path: Path, text: str, secret: bool) -> None:
    """Write atomically; table files hold the bind password, so 0640 root:postfix."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640 if secret else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    if secret and os.geteuid() == 0:
        try:
            os.chown(tmp, 0, grp.getgrnam("postfix").gr_gid)
        except KeyError:
            pass  # no postfix group here: leave it root's
    os.replace(tmp, path)


def cmd_postfix_config(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    if args.dir is None:
        config = generate(settings)
        for name, text in config.tables.items():
            print(f"# ==> {DEFAULT_DIR / name} <==")
            print(text)
        print("# ==> main.cf <==")
        print(config.main_cf, end="")
        return 0
    directory = args.dir.resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        config = generate(settings, directory)
        for name, text in config.tables.items():
            _write(directory / name, text, secret=True)
            print(directory / name)
        _write(directory / MAIN_CF_SNIPPET, config.main_cf, secret=False)
        print(directory / MAIN_CF_SNIPPET)
    except OSError as exc:
        print(f"mailfarm: cannot write to {directory}: {exc}", file=sys.stderr)
        return 1
    return 0
