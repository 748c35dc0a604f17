"""``mailfarm user move``'s copy rate against imapsync-style copying, in one run.

``python -m bench.moverate [--messages N] [--folders F] [--size BYTES] [--rounds R]`` starts
the local farm, writes an admin-tool config for it (``[provision] move_settle = 0``: the
settle pause is idle waiting for late deliveries, not copying, and would only measure the
setting), adds one user on Dovecot mail1 with ``mailfarm user add`` and fills its mailbox
with N messages of about BYTES each over F folders (varied flags and internal dates),
appended straight to the backend. Then, in R rounds, alternating which goes first:

* **mailfarm**: :func:`directory.provision.move.move_user` mail1 → mail2, the whole move
  (lease, copy with MULTIAPPEND + LITERAL+ batches, verification by reading the target
  back, switch, catch-up, deletion of the old copy); the copy phase alone is taken from
  the move's progress events (first ``copy`` event to the ``verify`` event). The user is
  then moved back, untimed.
* **imapsync-style**: what imapsync does, one message at a time: for each folder CREATE on
  the target, SELECT the source, and per message one ``UID FETCH (FLAGS INTERNALDATE
  BODY.PEEK[])`` then one APPEND with its flags and date (imaplib: synchronizing literals,
  so each APPEND waits for the server's "+"); no verification, nothing deleted. Both sides
  log in as the Dovecot master user. The copy is checked once, untimed, and wiped after.

Then (unless ``--no-cyrus``) one move each way between Dovecot mail1 and Cyrus mail3,
mailfarm only (an imapsync-style copy into Cyrus would need its own login handling); a
move that fails there is reported in the JSON as an ``error`` instead of ending the run,
since the Dovecot figures are the point.

Prints one JSON document: every run, medians of messages/s and MB/s (10^6 bytes), and the
ratios mailfarm / imapsync-style for the whole move and for the copy phase alone.
"""

from __future__ import annotations

import argparse
import imaplib
import itertools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.farm import BACKEND_HOSTS, Farm
from bench.proxyproc import farm_backends, render_toml
from directory.mailstores import mailstore_for
from directory.provision import ProvisionError
from directory.provision.folders import append, create_folder, digests, list_folders
from directory.provision.imapdata import Message, folder_checksum
from directory.provision.ldapwrite import LdapWriter
from directory.provision.move import MoveProgress, MoveReport, move_user
from proxy.config import Settings, load_config

REPO = Path(__file__).resolve().parents[1]
SOURCE, TARGET, CYRUS = BACKEND_HOSTS["mail1"], BACKEND_HOSTS["mail2"], BACKEND_HOSTS["mail3"]
DOMAIN = "moverate.test"
ADDRESS = f"mover@{DOMAIN}"
PASSWORD = "mover pw"
FOLDER_NAMES = [
    "INBOX", "Sent", "Drafts", "Trash", "Archive", "Work", "Family", "Lists", "Receipts", "Travel",
]  # fmt: skip
FLAG_CHOICES = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "$Forwarded", "$Label1", "Work"]
PHASES = ("copy", "verify", "switched", "catch-up", "cleanup", "done")
FILL_BATCH = 250
MB = 1e6


# -- the config and the user ------------------------------------------------------------------


def provision_sections(farm: Farm) -> dict[str, Any]:
    """The admin tool's config for ``farm``, as the integration tests write it (built here:
    bench/ must not depend on tests/), with ``move_settle = 0`` for the measurement."""
    return {
        "directory": {
            "uri": [farm.ldap_uri],
            "base": farm.base_dn,
            "bind_dn": farm.service_dn,
            "bind_password": farm.service_password,
            "disabled_attribute": "description",  # no account-status attribute in the farm
            "timeout": 3,
        },
        "provision": {
            "bind_dn": farm.admin_dn,
            "bind_password": farm.admin_password,
            "hosts": [SOURCE, TARGET],
            "backend_imap_port": farm.backends["mail1"].imap_port,
            "master_user": farm.master_user,
            "master_password": farm.master_password,
            "master_separator": farm.master_separator,
            "default_ns": ["ns1.mailfarm.test"],
            "default_mx": ["mx1.mailfarm.test:10"],
            "move_settle": 0,
        },
        # The move copies Sieve scripts too, through the backends' ManageSieve port.
        "sieve": {"backend_port": farm.backends["mail1"].sieve_port},
        "backends": farm_backends(farm),
    }


def mailfarm_cli(config: Path, pycache: Path, *args: str, stdin: str | None = None) -> Any:
    """``python -m proxy.cli ... --json -c config`` as an operator runs it; its JSON.

    Byte-code goes to ``pycache`` (outside the tree) in case the environment forbids .pyc
    files: compiling every module again for each command would cost seconds.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args, "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=180,
        cwd=REPO,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mailfarm {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return json.loads(done.stdout)


# -- the mailbox ------------------------------------------------------------------------------


def folder_names(count: int) -> list[str]:
    return [*FOLDER_NAMES, *(f"Folder{i:02d}" for i in range(len(FOLDER_NAMES), count))][:count]


def make_messages(folder: str, first: int, count: int, size: int) -> list[Message]:
    """Distinct messages of about ``size`` bytes (0.5 to 1.5 times, mean ``size``) with varied flags
    and internal dates in several zones; the filler is random, so no two bodies match."""
    out = []
    for n in range(first, first + count):
        flags = tuple(f for j, f in enumerate(FLAG_CHOICES) if (n >> j) % 3 == 0)
        zone = ["+0000", "-0700", "+0530", "+0100"][n % 4]
        month = ["Jan", "Mar", "Jul", "Nov"][n % 4]
        clock = f"1{n % 10}:{n % 60:02d}:{n * 7 % 60:02d}"
        date = f"{1 + n % 28:2d}-{month}-{2015 + n % 9} {clock} {zone}"
        head = (
            f"From: sender{n}@example.net\r\nTo: {ADDRESS}\r\nSubject: message {n} in {folder}"
            f"\r\nMessage-ID: <{n}.moverate@example.net>\r\n\r\n"
        ).encode()
        want = max(len(head) + 80, int(size * (0.5 + (n * 37 % 101) / 100)))
        filler = b64encode(random.Random(n).randbytes(want * 3 // 4))[: want - len(head)]
        lines = b"\r\n".join(filler[i : i + 76] for i in range(0, len(filler), 76))
        out.append(Message(0, flags, date, head + lines + b"\r\n"))
    return out


def fill_mailbox(
    settings: Settings, host: str, uid: str, messages: int, folders: int, size: int
) -> tuple[int, int]:
    """APPEND straight to the backend (MULTIAPPEND batches); (messages, bytes) stored."""
    names = folder_names(folders)
    stored = octets = 0
    with mailstore_for(settings, host).open_user(uid) as client:
        for i, name in enumerate(names):
            count = messages // folders + (1 if i < messages % folders else 0)
            create_folder(client, name.encode(), subscribe=True)
            for start in range(0, count, FILL_BATCH):
                batch = make_messages(name, stored, min(FILL_BATCH, count - start), size)
                append(client, name.encode(), batch)
                stored += len(batch)
                octets += sum(len(m.body) for m in batch)
    return stored, octets


def checksums(settings: Settings, host: str, uid: str) -> dict[bytes, tuple[int, str]]:
    """Folder → (messages, checksum over body, flags and date digests), as the move checks."""
    with mailstore_for(settings, host).open_user(uid) as client:
        out = {}
        for folder in list_folders(client):
            if folder.selectable:
                found = digests(client, folder.name)
                out[folder.name] = (len(found), folder_checksum(found))
        return out


# -- imapsync-style copying -------------------------------------------------------------------

_LIST_LINE = re.compile(rb'\((?P<attrs>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list_names(client: imaplib.IMAP4) -> list[str]:
    typ, lines = client.list()
    if typ != "OK":
        raise RuntimeError(f"LIST: {lines}")
    names = []
    for line in lines:
        m = _LIST_LINE.match(line) if isinstance(line, bytes) else None
        if m is None or b"\\noselect" in m["attrs"].lower():
            continue
        name = m["name"]
        if name.startswith(b'"'):
            name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
        names.append(name.decode())
    return names


def _check(result: tuple[str, Any], what: str) -> Any:
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"{what}: {typ} {data}")
    return data


def imapsync_style(
    host_from: str, host_to: str, port: int, login: str, password: str
) -> tuple[int, int]:
    """Copy every folder message by message, as imapsync does; (messages, bytes) copied.

    One round trip per FETCH, and APPEND with a synchronizing literal (the client waits for
    "+" before the body): the per-message conversation imapsync has with each server.
    """
    source = imaplib.IMAP4(host_from, port, timeout=60)
    target = imaplib.IMAP4(host_to, port, timeout=60)
    copied = octets = 0
    try:
        source.login(login, password)
        target.login(login, password)
        for name in _list_names(source):
            if name.upper() != "INBOX":
                target.create(_quoted(name))  # NO when it exists: fine, as for imapsync
            _check(source.select(_quoted(name), readonly=True), f"EXAMINE {name}")
            uids = _check(source.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()
            for uid in uids:
                data = _check(
                    source.uid("FETCH", uid, "(FLAGS INTERNALDATE BODY.PEEK[])"), "UID FETCH"
                )
                head, body = next(item for item in data if isinstance(item, tuple))
                flags = [f.decode() for f in imaplib.ParseFlags(head) if f.lower() != b"\\recent"]
                date = _INTERNALDATE.search(head)
                when = f'"{date[1].decode()}"' if date else None
                _check(
                    target.append(_quoted(name), "(" + " ".join(flags) + ")", when, body),
                    f"APPEND {name}",
                )
                copied += 1
                octets += len(body)
    finally:
        for client in (source, target):
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    return copied, octets


# -- measurements -----------------------------------------------------------------------------


def rates(messages: int, octets: int, seconds: float) -> dict[str, float]:
    return {
        "seconds": round(seconds, 3),
        "messages_per_s": round(messages / seconds, 1),
        "mb_per_s": round(octets / MB / seconds, 2),
    }


def timed_move(
    settings: Settings, writer: LdapWriter, uid: str, target: str, octets: int
) -> dict[str, Any]:
    """One ``move_user``, with the seconds at which each phase began (progress events)."""
    began: dict[str, float] = {}

    def progress(event: MoveProgress) -> None:
        began.setdefault(event.phase, event.seconds)

    started = time.perf_counter()
    report: MoveReport = move_user(settings, writer, uid, target, progress=progress)
    wall = time.perf_counter() - started
    if report.warnings or not report.old_copy_deleted:
        raise RuntimeError(f"move of {uid} to {target}: {report.as_dict()}")
    run: dict[str, Any] = {
        "from": report.source,
        "to": report.target,
        "messages": report.messages,
        **rates(report.messages, octets, wall),
        "phases_s": {
            phase: round(began[nxt] - began[phase], 3)
            for phase, nxt in itertools.pairwise(PHASES)
            if phase in began and nxt in began
        },
        "before_copy_s": round(began.get("copy", 0.0), 3),
    }
    if "copy" in began and "verify" in began:
        run["copy_phase"] = rates(report.messages, octets, began["verify"] - began["copy"])
    return run


def median_rates(runs: list[dict[str, Any]], key: str | None = None) -> dict[str, float]:
    picked = [run[key] if key else run for run in runs if key is None or key in run]
    return {
        name: round(statistics.median(p[name] for p in picked), 3)
        for name in ("seconds", "messages_per_s", "mb_per_s")
    }


def parse_size(text: str) -> int:
    """``20000``, ``20KB``, ``1.5M`` (K and M are 1024 and 1024², as ``mailfarm bench``)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmM]?)i?[bB]?", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(m[1]) * {"": 1, "k": 1024, "m": 1024**2}[m[2].lower()])


def measure(
    farm: Farm, work: Path, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    config = work / "provision.toml"
    config.write_text(render_toml(provision_sections(farm)))
    settings = load_config(config)
    pycache = work / "pycache"
    mailfarm_cli(config, pycache, "domain", "add", DOMAIN)
    added = mailfarm_cli(
        config, pycache, "user", "add", ADDRESS, "--host", SOURCE, "--password-file", "-",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    uid = added["uid"]
    messages, octets = fill_mailbox(settings, SOURCE, uid, args.messages, args.folders, args.size)
    log(f"{uid}: {messages} messages, {octets / MB:.1f} MB in {args.folders} folders")
    port = farm.backends["mail1"].imap_port
    master = f"{uid}{farm.master_separator}{farm.master_user}"
    original = checksums(settings, SOURCE, uid)
    runs: dict[str, list[dict[str, Any]]] = {"mailfarm": [], "imapsync_style": []}
    with LdapWriter(settings) as writer:

        def mailfarm_round(round_no: int) -> None:
            run = {"round": round_no, **timed_move(settings, writer, uid, TARGET, octets)}
            if run["messages"] != messages:
                raise RuntimeError(f"moved {run['messages']} of {messages} messages")
            runs["mailfarm"].append(run)
            log(f"round {round_no} mailfarm: {run}")
            move_user(settings, writer, uid, SOURCE)  # back, untimed

        def imapsync_round(round_no: int) -> None:
            started = time.perf_counter()
            copied, size = imapsync_style(SOURCE, TARGET, port, master, farm.master_password)
            wall = time.perf_counter() - started
            run: dict[str, Any] = {"round": round_no, "from": SOURCE, "to": TARGET}
            run |= {"messages": copied, **rates(copied, size, wall)}
            if copied != messages or size != octets:
                raise RuntimeError(f"copied {copied} messages, {size} bytes: not the mailbox")
            if round_no == 1:  # untimed: the copy is faithful, so the two do the same job
                run["identical"] = checksums(settings, TARGET, uid) == original
            runs["imapsync_style"].append(run)
            log(f"round {round_no} imapsync-style: {run}")
            mailstore_for(settings, TARGET).reset(uid)

        for r in range(1, args.rounds + 1):
            order = (mailfarm_round, imapsync_round) if r % 2 else (imapsync_round, mailfarm_round)
            for step in order:
                step(r)
        if checksums(settings, SOURCE, uid) != original:
            raise RuntimeError("the mailbox changed between rounds")
        cyrus: list[dict[str, Any]] = []
        if not args.no_cyrus:
            for there in (CYRUS, SOURCE):
                try:
                    cyrus.append(timed_move(settings, writer, uid, there, octets))
                    log(f"cyrus: {cyrus[-1]}")
                except (ProvisionError, RuntimeError) as exc:
                    cyrus.append({"to": there, "error": str(exc)})
                    break
    mailfarm, imapsync = median_rates(runs["mailfarm"]), median_rates(runs["imapsync_style"])
    copy = median_rates(runs["mailfarm"], "copy_phase")
    return {
        "messages": messages,
        "folders": args.folders,
        "bytes": octets,
        "mean_message_bytes": octets // max(messages, 1),
        "rounds": args.rounds,
        "move_settle_s": 0,
        "runs": runs,
        "median": {
            "mailfarm_move": mailfarm,
            "mailfarm_copy_phase": copy,
            "imapsync_style": imapsync,
        },
        "ratio_mailfarm_to_imapsync_style": {
            "whole_move": round(mailfarm["messages_per_s"] / imapsync["messages_per_s"], 3),
            "copy_phase": round(copy["messages_per_s"] / imapsync["messages_per_s"], 3),
            "per_round_whole_move": [
                round(a["messages_per_s"] / b["messages_per_s"], 3)
                for a, b in zip(runs["mailfarm"], runs["imapsync_style"], strict=True)
            ],
        },
        "dovecot_cyrus_moves": cyrus,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print its JSON document (progress lines go to stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--folders", type=int, default=10)
    parser.add_argument("--size", type=parse_size, default=20 * 1024, help="bytes per message")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cyrus", action="store_true", help="skip the Dovecot-Cyrus moves")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.folders < 1 or args.rounds < 1 or args.size < 1:
        parser.error("--messages, --folders, --rounds and --size must be positive")

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="mailfarm-moverate-"))
    try:
        with Farm() as farm:
            doc = measure(farm, work, args, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(doc, indent=2), flush=True)


if __name__ == "__main__":
    main()
