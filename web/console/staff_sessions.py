"""Staff sessions of the console: kept on the server, named by a signed cookie.

Server-side, so signing out (or a restart) ends a session for good: a copied cookie is
worth nothing afterwards. The cookie carries a random id and its HMAC under
``[web] session_secret_file``, so a guessed or altered id is refused before any lookup.
Each session has its own CSRF token, which every form of the console posts back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from web.tokens import Principal

COOKIE = "mailfarm_console"
IDLE = 2 * 3600.0  # seconds without a request before a session ends
LIFETIME = 12 * 3600.0  # a working day, then sign in again
MAX_SESSIONS = 10_000


@dataclass
class StaffSession:
    principal: Principal
    csrf: str
    started: float
    seen: float
    flash: list[str] = field(default_factory=list)  # messages for the next page


class Sessions:
    def __init__(self, secret: bytes, now: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._now = now
        self._by_id: OrderedDict[str, StaffSession] = OrderedDict()
        self._lock = threading.Lock()

    def _sign(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode(), hashlib.sha256).hexdigest()

    def start(self, principal: Principal) -> tuple[str, StaffSession]:
        """A new session; returns the cookie value."""
        sid = secrets.token_urlsafe(24)
        now = self._now()
        session = StaffSession(principal, secrets.token_urlsafe(24), now, now)
        with self._lock:
            self._by_id[sid] = session
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return f"{sid}.{self._sign(sid)}", session

    def find(self, cookie: str | None) -> StaffSession | None:
        if not cookie or "." not in cookie or len(cookie) > 200:
            return None
        sid, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._sign(sid)):
            return None
        now = self._now()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > IDLE or now - session.started > LIFETIME:
                del self._by_id[sid]
                return None
            session.seen = now
            self._by_id.move_to_end(sid)
            return session

    def end(self, cookie: str | None) -> None:
        if cookie and "." in cookie:
            sid, _, mac = cookie.partition(".")
            if hmac.compare_digest(mac, self._sign(sid)):
                with self._lock:
                    self._by_id.pop(sid, None)

    def signin_token(self, nonce: str) -> str:
        """The sign-in form's CSRF token, tied to a pre-session cookie holding ``nonce``:
        a login forced from another site cannot know it."""
        return self._sign("signin:" + nonce)

    def check_signin(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce and token) and hmac.compare_digest(
            str(token), self.signin_token(str(nonce))
        )


def same_token(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected, given)
