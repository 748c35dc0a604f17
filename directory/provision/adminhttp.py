"""HTTP to the instances' admin endpoints, where every request carries ``[admin] token``.

A plain ``urllib.request.urlopen`` would send that token further than the instance: it
follows a redirect with the Authorization header to wherever the redirect points, and it
goes through ``http_proxy``/``https_proxy`` from the environment of whoever runs the tool.
The opener here does neither, so the token reaches the URL in ``[provision] admin_urls``
and nothing else. Problems are worded to be shown as they are: they never hold the URL
(which may carry ``user:password@``) or the token; the caller says which instance.

Shared by the provisioning tool (:mod:`directory.provision.adminapi`) and the web
dashboard, which must not drift apart on this.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

TIMEOUT = 5.0  # connect, and each read


class Unreachable(Exception):
    """One request that did not give an answer. The message is safe to show (no URL, no
    token); ``refused`` when nothing listens there, which some callers treat as "down"."""

    def __init__(self, problem: str, refused: bool = False) -> None:
        super().__init__(problem)
        self.refused = refused


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error here, not a place to send the token: urllib would follow it
    with the Authorization header, to any host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener() -> urllib.request.OpenerDirector:
    """An opener for http(s) only that follows no redirect and uses no proxy.

    Built from the handlers it needs rather than by ``build_opener``, which would add a
    ProxyHandler reading the environment (and file:, ftp: and data: URLs besides).
    """
    director = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _NoRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        director.add_handler(handler)
    return director


_OPENER = opener()


def public_url(url: str) -> str:
    """The URL without any ``user:password@``, for showing and for problems."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def fetch(
    url: str,
    token: str = "",
    *,
    method: str = "GET",
    limit: int = 1 << 24,
    timeout: float = TIMEOUT,
    deadline: float | None = None,
    accept: str | None = None,
) -> bytes:
    """``method`` on ``url`` with the token; the answer's body (at most ``limit`` bytes,
    complete within ``deadline`` seconds when given).

    Raises :class:`Unreachable` for anything but a 2xx answer, a redirect included: the
    admin endpoints never redirect, so one means the URL points somewhere it should not.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise Unreachable("not an http:// or https:// URL")
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)
    if accept:
        request.add_header("Accept", accept)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    give_up = None if deadline is None else time.monotonic() + deadline
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = answer.read1(65536)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise Unreachable(f"answer larger than {_size(limit)}")
                chunks.append(chunk)
                if give_up is not None and time.monotonic() > give_up:
                    raise Unreachable(f"answer not complete within {deadline:g} s")
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise Unreachable(f"answered {exc.code}: redirects are not followed") from None
        reason = str(exc.reason)[:100]
        if token:
            reason = reason.replace(token, "[token]")  # an answer echoing what it was sent
        hint = " (is [admin] token the instances' token?)" if exc.code == 401 else ""
        raise Unreachable(f"HTTP {exc.code} {reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise Unreachable(os_problem(exc.reason, timeout), _refused(exc.reason)) from None
    except http.client.InvalidURL:  # its message quotes the URL, password and all
        raise Unreachable("invalid URL") from None
    except http.client.HTTPException as exc:
        raise Unreachable(f"bad HTTP answer ({type(exc).__name__})") from None
    except (OSError, ValueError) as exc:
        raise Unreachable(os_problem(exc, timeout), _refused(exc)) from None


def _refused(reason: object) -> bool:
    return isinstance(reason, ConnectionRefusedError)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"


def os_problem(reason: object, timeout: float) -> str:
    """What went wrong below HTTP, in words that hold neither the URL nor the token (an
    exception's own text may quote the URL)."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return f"name not resolved ({reason.strerror or reason})"
    if isinstance(reason, OSError):
        return reason.strerror or type(reason).__name__
    if isinstance(reason, ValueError):
        return "invalid URL"
    return str(reason)[:200]
