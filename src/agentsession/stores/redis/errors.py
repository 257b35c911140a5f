"""How a redis-py failure reaches the caller: ``StoreUnavailable``, ``StoreMisconfigured``,
or (a bug, such as an error inside a script) the error as it is.

* The server cannot serve now: the connection is refused, lost or times out, the
  pool has no free connection, the server is loading its data set, is a replica
  after a failover (``READONLY``), is out of memory or cannot persist (``OOM``,
  ``MISCONF``), runs a slow script (``BUSY``), or a cluster is re-sharding or down
  (``TRYAGAIN``, ``CLUSTERDOWN``, ``MASTERDOWN``): ``StoreUnavailable``.
* The URL is wrong: a wrong user or password (``WRONGPASS``, ``NOAUTH``), a user
  without the rights the store needs (``NOPERM``), a database number the server does
  not have: ``StoreMisconfigured``, which names the URL (password masked) and the fix.

Errors raised by a command inside a Lua script come back wrapped in the script's
error text, so codes are looked for in the message too.
"""

from __future__ import annotations

import asyncio
import re
import ssl

from redis import exceptions as redis_errors

from agentsession.errors import StoreMisconfigured, StoreUnavailable

__all__ = ["translate"]

_URL_KEY = "session_service.database_url"
_UNAVAILABLE_CODES = frozenset(
    {
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "BUSY",
        "MISCONF",
        "OOM",
        "NOREPLICAS",
    }
)
_LOGIN_CODES = frozenset({"WRONGPASS", "NOAUTH"})
_CODE = re.compile(r"(?:^|[\s:\-])([A-Z]{3,})\b")
_LOGIN_HINT = (
    f"check the user name and password in {_URL_KEY} (and the server's requirepass or ACL users)"
)
_PRIVILEGE_HINT = (
    "give this ACL user the commands and keys the store needs (EVALSHA, EVAL, SCRIPT, "
    f"SCAN, PING and every key under its prefix), or put another user in {_URL_KEY}"
)


def _codes(error: BaseException) -> set[str]:
    """The Redis error codes (``READONLY``...) named by the error or its message."""
    found = set(_CODE.findall(str(error)))
    status = getattr(error, "status_code", None)
    if isinstance(status, str):
        found.add(status)
    return found


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = text.splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def translate(error: BaseException, masked_url: str) -> StoreUnavailable | None:
    """The package's error for ``error`` (raise it ``from error``), or None to re-raise it."""
    reason = _first_line(error)
    codes = _codes(error)
    if isinstance(
        error,
        redis_errors.AuthenticationError | redis_errors.AuthenticationWrongNumberOfArgsError,
    ) or (codes & _LOGIN_CODES and isinstance(error, redis_errors.RedisError)):
        return StoreMisconfigured(f"{masked_url}: {reason}; {_LOGIN_HINT}")
    if isinstance(error, redis_errors.AuthorizationError | redis_errors.NoPermissionError) or (
        "NOPERM" in codes and isinstance(error, redis_errors.RedisError)
    ):
        return StoreMisconfigured(f"{masked_url}: {reason}; {_PRIVILEGE_HINT}")
    if isinstance(error, redis_errors.ResponseError) and "DB index is out of range" in str(error):
        return StoreMisconfigured(
            f"{masked_url}: {reason}; the server has fewer databases: fix the number in {_URL_KEY}"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return StoreMisconfigured(
            f"{masked_url}: {reason}; trust the server's certificate (ssl_ca_certs) "
            f"or fix the host name in {_URL_KEY}"
        )
    if isinstance(
        error,
        redis_errors.ConnectionError
        | redis_errors.TimeoutError
        | redis_errors.BusyLoadingError
        | redis_errors.ReadOnlyError
        | redis_errors.ClusterDownError
        | redis_errors.TryAgainError
        | redis_errors.MasterDownError
        | redis_errors.OutOfMemoryError
        | redis_errors.ClusterError
        | OSError
        | asyncio.TimeoutError,
    ):
        return StoreUnavailable(f"{masked_url}: {reason}")
    if isinstance(error, redis_errors.RedisError) and codes & _UNAVAILABLE_CODES:
        return StoreUnavailable(f"{masked_url}: {reason}")
    return None
