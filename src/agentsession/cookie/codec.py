"""CookieCodec: the signed, size-checked form of a session, for a cookie or a token header.

The value is itsdangerous' ``TimestampSigner`` format with HMAC-SHA256:
``base64url(payload) "." base64url(timestamp) "." base64url(signature)``, where the
payload is the JSON object ``{"c": client_id, "s": session_id, "d": {app data}}``.
Any itsdangerous ``TimestampSigner(key, salt=SALT, digest_method=hashlib.sha256)``
can verify it. Key rotation: the newest key signs; every key verifies.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import TimestampSigner
from itsdangerous.encoding import base64_encode
from itsdangerous.signer import SigningAlgorithm

from agentsession.errors import SessionTooLarge

__all__ = ["COOKIE_SIZE_LIMIT", "SALT", "TOKEN_PREFIX", "CookieCodec", "CookieState", "dump_json"]

#: Browsers keep at most 4096 bytes of name, "=" and value for one cookie.
COOKIE_SIZE_LIMIT = 4096
#: itsdangerous salt: keeps these signatures apart from anything else signed with the key.
SALT = b"agentsession.session"
#: Every signed value starts with base64url('{"c":'); lets Bearer tokens be told apart.
TOKEN_PREFIX = base64_encode(b'{"c":')[:6].decode()

_DATA_KEY = ',"d":'
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


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

    def encode(self, client_id: str | None, session_id: str | None, data_json: str) -> str:
        """Sign ids and already-serialised data; raise SessionTooLarge past ``max_size``."""
        text = f'{{"c":{_encoder.encode(client_id)},"s":{_encoder.encode(session_id)}'
        payload = base64_encode(f"{text}{_DATA_KEY}{data_json}}}".encode())
        value = self._current.sign(payload).decode("ascii")
        if len(value) > self.max_size:
            raise SessionTooLarge(len(value), self.max_size)
        return value

    def decode(self, value: str | bytes, *, now: int | None = None) -> CookieState | None:
        """Verify and parse a signed value; None for anything that is not a valid session.

        Verification is itsdangerous' HMAC check written out inline (this runs on every
        request that reads the session); tests hold it to itsdangerous' own verifier.
        """
        try:
            signed = value.encode("ascii") if isinstance(value, str) else value
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
            if self.max_age is not None:
                age = (int(time.time()) if now is None else now) - issued_at
                if age > self.max_age:
                    return None
            text = _b64decode(payload).decode("utf-8")
            obj = json.loads(text)
            client_id, session_id, data = obj["c"], obj["s"], obj["d"]
            if not (
                isinstance(data, dict)
                and isinstance(client_id, str | None)
                and isinstance(session_id, str | None)
            ):
                return None
            data_json = text[text.index(_DATA_KEY) + len(_DATA_KEY) : -1]
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            return None
        return CookieState(client_id, session_id, data, data_json, issued_at, stale)


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(value: bytes) -> bytes:
    """itsdangerous' base64url decoding (padding optional), minus its wrappers."""
    return binascii.a2b_base64(value.translate(_URLSAFE) + b"=" * (-len(value) % 4))
