"""CookieCodec: the signed, size-checked form of a session, for a cookie or a token header.

The value is itsdangerous' ``TimestampSigner`` format with HMAC-SHA256:
``base64url(payload) "." base64url(timestamp) "." base64url(signature)``, where the
payload is the JSON object ``{"c": client_id, "s": session_id, "t": issued, "u": user,
"d": {app data}}``: ``t`` is when the client id was first issued (epoch ms; kept
across refreshes, so a revocation covers every later re-signing of the same client)
and ``u`` the user id the session is bound to; both are left out when unset. A value
without ``t`` (written before revocation existed) counts as issued at 0: any
revocation of its client or user covers it.
Any itsdangerous ``TimestampSigner(key, salt=SALT, digest_method=hashlib.sha256)``
can verify it. Key rotation: the newest key signs; every key verifies.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import TimestampSigner
from itsdangerous.encoding import base64_encode, int_to_bytes
from itsdangerous.signer import SigningAlgorithm

from agentsession.errors import SessionTooLarge

__all__ = [
    "COOKIE_SIZE_LIMIT",
    "SALT",
    "TOKEN_PREFIX",
    "VERIFIED_CACHE_SIZE",
    "CookieCodec",
    "CookieState",
    "dump_json",
]

#: Browsers keep at most 4096 bytes of name, "=" and value for one cookie.
COOKIE_SIZE_LIMIT = 4096
#: How many verified values ``CookieCodec.decode`` remembers (at most ~4 MiB of them).
VERIFIED_CACHE_SIZE = 1024
#: itsdangerous salt: keeps these signatures apart from anything else signed with the key.
SALT = b"agentsession.session"
#: Every signed value starts with base64url('{"c":'); lets Bearer tokens be told apart.
TOKEN_PREFIX = base64_encode(b'{"c":')[:6].decode()

_DATA_KEY = ',"d":'
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: What ``_encoder`` writes for a string (``ensure_ascii=False``), without its overhead.
_encode_string: Any = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)


def _json_string(value: str | None) -> str:
    """``value`` as JSON (a string or null), by the json module's C string encoder."""
    return "null" if value is None else _encode_string(value)


def dump_json(value: Any) -> str:
    """Serialise session data the one way the codec and the dirty check both use."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request.session holds a value JSON cannot encode: {exc}") from exc


class _HmacSha256(SigningAlgorithm):
    """HMAC-SHA256 through the one-shot C implementation: same bytes, less overhead."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha256")


class _Signer(TimestampSigner):
    """A TimestampSigner that derives each key once instead of on every call."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        super().__init__(
            list(keys), salt=SALT, digest_method=hashlib.sha256, algorithm=_HmacSha256()
        )
        self._derived: dict[bytes, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else secret_key
        if isinstance(key, str):
            key = key.encode()
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derived[key] = super().derive_key(key)
        return derived


@dataclass(slots=True)
class CookieState:
    """What a verified cookie or token holds, plus when it was signed and with which key."""

    client_id: str | None
    session_id: str | None
    data: dict[str, Any]
    data_json: str
    issued_at: int
    stale_key: bool
    #: When the client id was first issued (epoch ms); 0 for a value that does not say.
    client_issued_at: int = 0
    #: The user id the session is bound to (``set_user_id``), or None.
    user_id: str | None = None


class CookieCodec:
    """Signs and verifies session values; rejects anything forged, expired or malformed."""

    def __init__(
        self,
        secret_key: str | bytes,
        fallbacks: Sequence[str | bytes] = (),
        *,
        max_age: int | None = None,
        max_size: int = COOKIE_SIZE_LIMIT,
    ) -> None:
        keys = [k.encode() if isinstance(k, str) else k for k in (*fallbacks, secret_key)]
        self._current = _Signer(keys[-1:])
        #: Derived HMAC keys, newest first: the current key, then the fallbacks.
        self._verify_keys = [self._current.derive_key(k) for k in reversed(keys)]
        self.max_age = max_age
        self.max_size = max_size
        #: The last second ``encode`` signed in, and ``"." + base64url`` of it.
        self._stamp_time, self._stamp = -1, b""
        #: Values verified lately -> their state (``decode``); oldest first.
        self._verified: dict[bytes, CookieState] = {}

    def encode(
        self,
        client_id: str | None,
        session_id: str | None,
        data_json: str,
        *,
        issued: int | None = None,
        user_id: str | None = None,
    ) -> str:
        """Sign ids and already-serialised data; raise SessionTooLarge past ``max_size``.

        ``issued``: when the client id was first issued (epoch ms); ``user_id``: the
        user the session is bound to. Each is left out when None.
        """
        text = f'{{"c":{_json_string(client_id)},"s":{_json_string(session_id)}'
        if issued is not None:
            text += f',"t":{issued:d}'
        if user_id is not None:
            text += f',"u":{_json_string(user_id)}'
        # itsdangerous' TimestampSigner.sign written out (this runs on every write):
        # payload "." base64url(timestamp) "." base64url(HMAC of what precedes it).
        now = self._current.get_timestamp()
        if now != self._stamp_time:  # the encoded timestamp changes once a second
            self._stamp_time, self._stamp = now, b"." + _b64encode(int_to_bytes(now))
        signed = _b64encode(f"{text}{_DATA_KEY}{data_json}}}".encode()) + self._stamp
        signature = _b64encode(hmac.digest(self._verify_keys[0], signed, "sha256"))
        value = (signed + b"." + signature).decode("ascii")
        if len(value) > self.max_size:
            raise SessionTooLarge(len(value), self.max_size)
        return value

    def decode(self, value: str | bytes, *, now: int | None = None) -> CookieState | None:
        """Verify and parse a signed value; None for anything that is not a valid session.

        A client sends the same value on every request until the session changes, so
        the last ``VERIFIED_CACHE_SIZE`` values verified are kept (keyed by their exact
        bytes: only a value that passed the HMAC check gets in) and a repeat is only
        checked for expiry. The state returned is shared: treat ``data`` as read-only
        (``Session`` copies it).
        """
        try:
            signed = value.encode("ascii") if isinstance(value, str) else value
        except UnicodeEncodeError:
            return None
        verified = self._verified
        state = verified.get(signed)
        if state is None:
            state = self._verify(signed)
            if state is None:
                return None
            if len(verified) >= VERIFIED_CACHE_SIZE:
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del verified[next(iter(verified))]  # the oldest
            verified[signed] = state
        if self.max_age is not None:
            age = (int(time.time()) if now is None else now) - state.issued_at
            if age > self.max_age:
                return None
        return state

    def _verify(self, signed: bytes) -> CookieState | None:
        """Verify and parse one value (itsdangerous' HMAC check written out inline: tests
        hold it, and ``encode``'s signing, to itsdangerous' own signer and verifier)."""
        try:
            if len(signed) > self.max_size:
                return None
            body, dot, sig = signed.rpartition(b".")
            if not dot:
                return None
            expected = _b64decode(sig)
            stale: bool | None = None
            for index, key in enumerate(self._verify_keys):
                if hmac.compare_digest(hmac.digest(key, body, "sha256"), expected):
                    stale = index > 0
                    break
            if stale is None:
                return None
            payload, _, stamp = body.rpartition(b".")
            issued_at = int.from_bytes(_b64decode(stamp), "big")
            text = _b64decode(payload).decode("utf-8")
            obj = json.loads(text)
            client_id, session_id, data = obj["c"], obj["s"], obj["d"]
            issued, user_id = obj.get("t", 0), obj.get("u")
            if not (
                isinstance(data, dict)
                and isinstance(client_id, str | None)
                and isinstance(session_id, str | None)
                and type(issued) is int
                and isinstance(user_id, str | None)
            ):
                return None
            data_json = text[text.index(_DATA_KEY) + len(_DATA_KEY) : -1]
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            return None
        return CookieState(
            client_id, session_id, data, data_json, issued_at, stale, issued, user_id
        )


_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64encode(value: bytes) -> bytes:
    """itsdangerous' base64url encoding (no padding), minus its wrappers."""
    return binascii.b2a_base64(value, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def _b64decode(value: bytes) -> bytes:
    """itsdangerous' base64url decoding (padding optional), minus its wrappers."""
    return binascii.a2b_base64(value.translate(_URLSAFE) + b"=" * (-len(value) % 4))
