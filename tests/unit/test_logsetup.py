"""The proxy's cheaper log formatting must write exactly what the standard formatter does."""

from __future__ import annotations

import logging

from proxy.logsetup import FORMAT, SecondCachedFormatter


def record(created: float, msg: str = "session proto=imap") -> logging.LogRecord:
    rec = logging.LogRecord("mailfarm.session", logging.INFO, "x.py", 1, msg, None, None)
    rec.created = created
    rec.msecs = (created - int(created)) * 1000
    return rec


def test_lines_equal_the_standard_formatters() -> None:
    ours, standard = SecondCachedFormatter(), logging.Formatter(FORMAT)
    # the same second twice (cached text reused), then the next second, then back in time
    for created in (1764603559.123, 1764603559.987, 1764603560.004, 1764600000.5):
        rec = record(created)
        assert ours.format(rec) == standard.format(rec)


def test_a_new_second_is_not_served_from_the_cache() -> None:
    ours = SecondCachedFormatter()
    first = ours.format(record(1764603559.9))
    second = ours.format(record(1764603560.1))
    assert first[:19] != second[:19]
