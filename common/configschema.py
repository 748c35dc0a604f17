"""The machinery that checks one TOML table against a declared list of keys.

Kept apart from :mod:`proxy.config` so that the list of sections reads as data there. Every
error names the file, the section and the key, because an operator fixing a config at 3 a.m.
should not have to guess which of forty keys is wrong.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A bad configuration; ``str()`` is the whole operator-facing message."""

    def __init__(self, file: str | Path, section: str | None, key: str | None, problem: str):
        self.file = str(file)
        self.section = section
        self.key = key
        self.problem = problem
        where = self.file
        if section:
            where += f": [{section}]"
        if key:
            where += f" {key}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Key:
    """One allowed key: its kind, default and an optional extra check returning the value."""

    kind: str  # str, int, float, bool, strlist, path, secret, networks, listen
    default: Any = None
    check: Callable[[Any], Any] | None = None
    secret: bool = False


def _expect(cond: bool, problem: str) -> None:
    if not cond:
        raise ValueError(problem)


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:143"``, ``"[::1]:143"`` or ``":143"`` (all addresses) → (host, port)."""
    host, sep, port_text = value.rpartition(":")
    _expect(bool(sep) and port_text.isdigit(), f"{value!r} is not HOST:PORT")
    port = int(port_text)
    _expect(0 < port < 65536, f"port {port} out of range in {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("", "*"):
        host = ""
    return host, port


def _convert(kind: str, value: Any) -> Any:
    if kind == "any":
        return value
    if kind in ("str", "secret"):
        _expect(isinstance(value, str), f"must be a string, not {type(value).__name__}")
        return value
    if kind == "bool":
        _expect(isinstance(value, bool), f"must be true or false, not {value!r}")
        return value
    if kind == "int":
        _expect(
            isinstance(value, int) and not isinstance(value, bool),
            f"must be an integer, not {value!r}",
        )
        return value
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _expect(ok, f"must be a number, not {value!r}")
        _expect(value >= 0, f"must not be negative, not {value!r}")
        return float(value)
    if kind in ("strlist", "listen", "networks"):
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        _expect(ok, "must be a string or a list of strings")
        if kind == "listen":
            return tuple(parse_listen(v) for v in value)
        if kind == "networks":
            try:
                return tuple(ipaddress.ip_network(v, strict=False) for v in value)
            except ValueError as exc:
                raise ValueError(f"not a network address: {exc}") from None
        return tuple(value)
    if kind == "path":
        _expect(isinstance(value, str) and value != "", "must be a file path")
        path = Path(value)
        _expect(path.is_file(), f"{value}: no such file")
        _expect(os.access(path, os.R_OK), f"{value}: not readable")
        return path
    if kind == "outpath":  # a file the program writes: its directory must be writable
        _expect(isinstance(value, str) and value != "", "must be a file path")
        path = Path(value)
        _expect(not path.is_dir(), f"{value}: is a directory")
        _expect(path.parent.is_dir(), f"{path.parent}: no such directory")
        writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
        _expect(writable, f"{value}: not writable")
        return path
    raise AssertionError(kind)


def read_table(
    file: str | Path, section: str, table: Any, keys: Mapping[str, Key]
) -> dict[str, Any]:
    """Validate one table; returns every declared key, defaults filled in."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError(file, section, None, "must be a table")
    for name in table:
        if name not in keys:
            known = ", ".join(sorted(keys))
            raise ConfigError(file, section, name, f"unknown key (known keys: {known})")
    out: dict[str, Any] = {}
    for name, key in keys.items():
        if name not in table:
            out[name] = key.default
            continue
        try:
            value = _convert(key.kind, table[name])
            if key.check is not None:
                value = key.check(value)
        except ValueError as exc:
            raise ConfigError(file, section, name, str(exc)) from None
        out[name] = value
    return out


def one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        _expect(value in choices, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def positive(value: float) -> float:
    _expect(value > 0, f"must be greater than zero, not {value!r}")
    return value


def port_number(value: int) -> int:
    _expect(0 < value < 65536, f"port {value} out of range")
    return value


def resolve_secret(
    file: str | Path, section: str, values: dict[str, Any], key: str
) -> dict[str, Any]:
    """Resolve ``key`` / ``key_file`` (one, not both) into ``key``, read from the file with
    its trailing newline dropped: secrets belong in files, not in a config others read."""
    file_key = f"{key}_file"
    if values[key] and values[file_key]:
        raise ConfigError(file, section, file_key, f"give {key} or {file_key}, not both")
    if values[file_key] is not None:
        try:
            text = values[file_key].read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(file, section, file_key, f"cannot read: {exc.strerror}") from None
        values = {**values, key: text.rstrip("\r\n")}
    return values
