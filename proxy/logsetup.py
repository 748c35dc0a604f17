"""The proxy's logging, set up for a process that writes one line per session at thousands
of sessions a second.

The standard library's defaults cost more per record than the session's own work in places:
every record walks the stack to find its caller (``%(filename)s``, which our format never
shows), asks for the thread and process, and formats its time with ``strftime``. The logging
HOWTO's "Optimization" section names the switches used here; the time text is made once a
second instead of once a record. The line format is unchanged.
"""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class SecondCachedFormatter(logging.Formatter):
    """``asctime`` as the default formatter writes it (``2026-12-01 15:39:19,123``), with the
    date and clock part built once per second of the record's creation time."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._text},{int(record.msecs):03d}"


def setup_logging(level: str) -> None:
    # No caller lookup (a stack walk per record), thread names or multiprocessing names:
    # the format shows none of them. The process id stays: workers share one log.
    logging._srcfile = None  # type: ignore[attr-defined]  # documented in the logging HOWTO
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SecondCachedFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
