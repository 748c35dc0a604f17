"""Bulk user creation from CSV (``address,password[,host]``), safe to run again.

Re-running an import after a partial failure is the normal way to finish it, so a user that
exists already is skipped and reported, never an error; one bad row does not stop the rest.
Passwords from the file are hashed and forgotten: they never appear in output or logs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from directory.provision import ProvisionError, Refused
from directory.provision.ldapwrite import LdapWriter
from directory.provision.replication import Replication, after_write
from directory.provision.users import add_user, check_address, host_counts, user_exists
from directory.settings import ToolConfig


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    address: str
    password: str
    host: str | None

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"Row(line={self.line}, address={self.address!r}, host={self.host!r})"


@dataclass(frozen=True, slots=True)
class RowResult:
    line: int
    address: str
    status: str  # created, skipped, failed
    host: str | None = None
    error: str | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"line": self.line, "address": self.address, "status": self.status}
        if self.host:
            out["host"] = self.host
        if self.error:
            out["error"] = self.error
        return out


def read_rows(text: str) -> Iterator[Row | RowResult]:
    """Rows of the file; a malformed row comes out as a failed :class:`RowResult` (pure).

    A first row whose first cell is ``address`` is a header; blank lines and lines starting
    with ``#`` are skipped.
    """
    reader = csv.reader(io.StringIO(text))
    for index, cells in enumerate(reader):
        line = reader.line_num
        if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
            continue
        if index == 0 and cells[0].strip().lower() == "address":
            continue
        address = cells[0].strip()
        if len(cells) not in (2, 3) or not cells[1]:
            yield RowResult(
                line, address, "failed", error="expected address,password[,host]", exit_code=2
            )
            continue
        host = cells[2].strip() if len(cells) == 3 and cells[2].strip() else None
        yield Row(line, address, cells[1], host)


def import_users(
    settings: ToolConfig,
    writer: LdapWriter,
    text: str,
    on_result: Callable[[RowResult], None] | None = None,
) -> tuple[list[RowResult], Replication | None]:
    """Create every user of ``text`` not yet in the directory; one result per row.

    With read-only consumers (``[provision] uri``) the replication check runs once, after
    the last user, not after each: syncrepl applies one provider's changes in CSN order,
    so a consumer that shows the last entry shows every one made before it, and an import
    of thousands does not wait out a round trip per user."""
    results: list[RowResult] = []
    counts = host_counts(settings, writer, settings.provision.hosts)
    seen: set[str] = set()
    last_dn: str | None = None
    for row in read_rows(text):
        if isinstance(row, Row):
            result, dn = _import_row(settings, writer, row, counts, seen)
            last_dn = dn or last_dn
        else:
            result = row
        results.append(result)
        if on_result is not None:
            on_result(result)
    replication = after_write(settings, writer, last_dn) if last_dn is not None else None
    return results, replication


def _import_row(
    settings: ToolConfig, writer: LdapWriter, row: Row, counts: dict[str, int], seen: set[str]
) -> tuple[RowResult, str | None]:
    """The row's result, and the DN of the user it created (None if it created none)."""
    try:
        local, domain = check_address(row.address)
        address = f"{local}@{domain}"
        if address in seen:
            raise Refused("appears twice in the file")
        seen.add(address)
        existing = user_exists(settings, writer, address)
        if existing is not None:
            skipped = RowResult(row.line, address, "skipped", existing.host, "exists already")
            return skipped, None
        user = add_user(
            settings, writer, address, row.password, row.host, counts, replicate=False
        )
        return RowResult(row.line, address, "created", user.host), user.dn
    except ProvisionError as exc:
        failed = RowResult(row.line, row.address, "failed", row.host, str(exc), exc.exit_code)
        return failed, None
