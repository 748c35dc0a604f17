"""Checking and making LDAP ``userPassword`` values, as slapd does for a simple bind.

The embedded LDIF directory verifies passwords itself, so it must accept exactly the values
slapd accepts, and refuse everything else without raising: a malformed value in a data file
is one user who cannot log in, never a crashed proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import warnings
from types import ModuleType

log = logging.getLogger(__name__)

SALT_BYTES = 16

# scheme → (hash constructor, salted); the digest comes first, then the salt (RFC 3112 style)
_DIGESTS = {
    "SHA": (hashlib.sha1, False),
    "SSHA": (hashlib.sha1, True),
    "SHA256": (hashlib.sha256, False),
    "SSHA256": (hashlib.sha256, True),
    "SHA512": (hashlib.sha512, False),
    "SSHA512": (hashlib.sha512, True),
}

_crypt_lock = threading.Lock()
_crypt_state: list[ModuleType | None] = []  # empty until the first {CRYPT} use


def _crypt_module() -> ModuleType | None:
    """The crypt(3) binding, imported on first use so only sites with {CRYPT} pay for it.

    ``crypt_r`` is the same API, packaged for Python 3.13+ where the stdlib module is gone;
    the stdlib one warns that it is deprecated on 3.11/3.12, which is noise for us.
    """
    with _crypt_lock:
        if not _crypt_state:
            module: ModuleType | None = None
            try:
                import crypt_r as module  # type: ignore[import-not-found, no-redef]
            except ImportError:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        import crypt as module  # type: ignore[no-redef]
                except ImportError:
                    log.error("{CRYPT} passwords cannot be checked: install crypt_r")
            _crypt_state.append(module)
        return _crypt_state[0]


def crypt_available() -> bool:
    """Whether {CRYPT} values can be verified or made on this interpreter."""
    return _crypt_module() is not None


def _split_scheme(stored: bytes) -> tuple[str | None, bytes]:
    """``{SSHA}xyz`` → ("SSHA", b"xyz"); a value without a scheme is cleartext."""
    if stored.startswith(b"{"):
        end = stored.find(b"}")
        if end > 1:
            try:
                name = stored[1:end].decode("ascii").upper()
            except UnicodeDecodeError:
                return "", b""  # not any scheme we know: refused below
            return name, stored[end + 1 :]
    return None, stored


def _check_digest(scheme: str, encoded: bytes, password: bytes) -> bool:
    constructor, salted = _DIGESTS[scheme]
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    size = constructor().digest_size
    # slapd refuses a salted value with no salt, and an unsalted one of the wrong length.
    if (salted and len(raw) <= size) or (not salted and len(raw) != size):
        return False
    digest, salt = raw[:size], raw[size:]
    return hmac.compare_digest(constructor(password + salt).digest(), digest)


def _check_crypt(encoded: bytes, password: str) -> bool:
    module = _crypt_module()
    if module is None:
        return False
    try:
        setting = encoded.decode("ascii")
    except UnicodeDecodeError:
        return False
    if not setting or setting[0] in "*!":  # locked accounts, as in /etc/shadow
        return False
    try:
        result = module.crypt(password, setting)
    except (ValueError, OSError):  # NUL in the password, or libcrypt refusing the setting
        return False
    if not result or result[0] == "*":  # "*0"/"*1" is how libxcrypt reports failure
        return False
    return hmac.compare_digest(result.encode("ascii", "replace"), encoded)


def verify_password(stored: str | bytes, password: str) -> bool:
    """Whether ``password`` matches one stored ``userPassword`` value; never raises.

    Scheme names are case-insensitive; a value with no scheme, or ``{CLEARTEXT}``, is
    compared as plaintext; an unknown scheme is refused rather than compared as
    plaintext, as slapd does, so ``{FOO}bar`` never means the password ``{FOO}bar``.
    An empty password never matches: an LDAP bind without one is "unauthenticated".
    ``str`` values carrying surrogate escapes (undecodable octets from an LDIF file) are
    turned back into their original octets.
    """
    if not password:
        return False
    try:
        raw = stored if isinstance(stored, bytes) else stored.encode("utf-8", "surrogateescape")
        secret = password.encode("utf-8")
    except UnicodeError:
        return False
    if not raw:
        return False
    scheme, value = _split_scheme(raw)
    if scheme is None or scheme == "CLEARTEXT":
        return hmac.compare_digest(value, secret)
    if scheme in _DIGESTS:
        return _check_digest(scheme, value, secret)
    if scheme == "CRYPT":
        return _check_crypt(value, password)
    return False


def _digest_value(scheme: str, password: bytes, salt: bytes) -> str:
    constructor, _ = _DIGESTS[scheme]
    raw = constructor(password + salt).digest() + salt
    return "{" + scheme + "}" + base64.b64encode(raw).decode("ascii")


def hash_password(password: str, scheme: str = "{SSHA512}") -> str:
    """A new ``userPassword`` value for ``password``, with a fresh 16-byte random salt.

    slapd verifies ``{SSHA}`` and ``{CRYPT}`` natively; ``{SSHA256}``/``{SSHA512}`` need
    slapd's ``pw-sha2`` module loaded (``moduleload pw-sha2``), so pick ``{SSHA}`` for a
    directory that may be moved to a stock slapd. ``{CRYPT}`` makes a SHA-512 crypt
    (``$6$``) value with 16 salt characters. Unsalted schemes and cleartext are refused:
    this function exists to store passwords safely.
    """
    name = scheme.strip().strip("{}").upper()
    if not password:
        raise ValueError("refusing to hash an empty password: it can never be used to bind")
    if name in _DIGESTS and _DIGESTS[name][1]:
        return _digest_value(name, password.encode("utf-8"), secrets.token_bytes(SALT_BYTES))
    if name == "CRYPT":
        module = _crypt_module()
        if module is None:
            raise ValueError("{CRYPT} is not available on this interpreter (install crypt_r)")
        return "{CRYPT}" + module.crypt(password, module.mksalt(module.METHOD_SHA512))
    salted = ", ".join("{" + s + "}" for s, (_, on) in _DIGESTS.items() if on)
    raise ValueError(f"cannot make {scheme!r} values; use one of {salted} or {{CRYPT}}")
