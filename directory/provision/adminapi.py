"""Telling every mailfarm instance about a user change: ``POST /flush`` and ``POST /kick``.

A move only keeps its promise ("nothing lost") if no session keeps writing to the old
backend, so a proxy that answers with an error stops the move. A proxy that refuses the
connection is a warning only: an instance that is down holds no sessions, and once it starts
it has an empty route cache.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from directory.provision import Unavailable

TIMEOUT = 5.0


def action_url(base: str, action: str, uid: str) -> str:
    """``http://h:p/admin`` + ``kick`` + uid → ``http://h:p/admin/kick?user=<uid>``."""
    query = urllib.parse.urlencode({"user": uid})
    return f"{base.rstrip('/')}/{action}?{query}"


def _refused(exc: urllib.error.URLError) -> bool:
    return isinstance(exc.reason, ConnectionRefusedError)


def call(urls: Sequence[str], token: str, action: str, uid: str, strict: bool = True) -> list[str]:
    """POST ``action`` for ``uid`` to every admin URL; the warnings to show the operator.

    With ``strict``, an instance that answers an error (or not at all, a timeout) raises
    :class:`Unavailable`; without, every failure is a warning (used after the point where a
    move can no longer be undone).
    """
    warnings: list[str] = []
    for base in urls:
        url = action_url(base, action, uid)
        request = urllib.request.Request(url, data=b"", method="POST")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            problem = f"{action} on {base}: HTTP {exc.code} {exc.reason}"
            if strict:
                raise Unavailable(problem) from None
            warnings.append(problem)
        except urllib.error.URLError as exc:
            problem = f"{action} on {base}: {exc.reason}"
            if strict and not _refused(exc):
                raise Unavailable(problem) from None
            warnings.append(
                problem + (" (instance down: nothing to do there)" if _refused(exc) else "")
            )
        except (TimeoutError, OSError) as exc:
            problem = f"{action} on {base}: {exc or type(exc).__name__}"
            if strict:
                raise Unavailable(problem) from None
            warnings.append(problem)
    return warnings
