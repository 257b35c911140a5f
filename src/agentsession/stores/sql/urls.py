"""Database URLs as users write them: masked for messages, and the query parameters of
PostgreSQL and MySQL/MariaDB URLs, checked and turned into driver arguments.

``connect_params`` checks a server URL's parameters (libpq's ``sslmode``,
``sslrootcert``, ``sslcert``, ``sslkey``, ``connect_timeout``, ``application_name``;
MySQL's ``ssl_*``, ``connect_timeout``) and says what ``engine.create_engine`` must
pass the driver; ``ssl_context`` builds the TLS context they ask for, with libpq's or
the MySQL client's checks; ``aiomysql_connect`` keeps aiomysql from falling back to
plain text when TLS is required.
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.engine import URL

from agentsession.common import mask_url as common_mask_url
from agentsession.errors import ConfigError

__all__ = [
    "CONNECT_TIMEOUT",
    "ConnectParams",
    "aiomysql_connect",
    "connect_params",
    "mask_url",
    "ssl_context",
]

#: Seconds to wait for a connection to open, or for a free one in the pool.
#: A URL's ``connect_timeout`` replaces it for that engine.
CONNECT_TIMEOUT = 5.0

# URL query parameters of the server dialects. The translated ones become driver
# arguments in ``create_engine`` and are removed from the URL (asyncpg and aiomysql
# would reject them as unknown keyword arguments); the passed ones stay in the URL
# for SQLAlchemy's dialect, which reads them itself.
_PG_TRANSLATED = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
)
# host/port: SQLAlchemy's multi-host and Unix-socket forms (?host=/run/postgresql);
# target_session_attrs: asyncpg takes libpq's values as they are;
# prepared_statement_cache_size: SQLAlchemy's asyncpg adapter's own setting.
_PG_PASSED = ("host", "port", "target_session_attrs", "prepared_statement_cache_size")
_PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PG_SESSION_ATTRS = ("any", "primary", "standby", "read-write", "read-only", "prefer-standby")
_MYSQL_FLAGS = ("ssl_disabled", "ssl_verify_cert", "ssl_verify_identity", "ssl_check_hostname")
_MYSQL_TRANSLATED = (
    "ssl_mode",
    "ssl-mode",
    "ssl_ca",
    "ssl_capath",
    "ssl_cert",
    "ssl_key",
    *_MYSQL_FLAGS,
    "connect_timeout",
    "charset",
)
# unix_socket: aiomysql's own argument, passed on by SQLAlchemy.
_MYSQL_PASSED = ("unix_socket",)
_MYSQL_SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
# what each MySQL flag is under each ssl_mode: the flags must agree with the mode
_MYSQL_FLAG_MEANING: dict[str, Callable[[str], bool]] = {
    "ssl_disabled": lambda mode: mode == "DISABLED",
    "ssl_verify_cert": lambda mode: mode in ("VERIFY_CA", "VERIFY_IDENTITY"),
    "ssl_verify_identity": lambda mode: mode == "VERIFY_IDENTITY",
    "ssl_check_hostname": lambda mode: mode == "VERIFY_IDENTITY",
}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def mask_url(url: str | URL) -> str:
    """``url`` (text or a SQLAlchemy ``URL``) as text with its password and password-like
    query values replaced by ``***`` (``common.mask_url``)."""
    if isinstance(url, URL):  # as text, its query parameters in their given order
        pairs = [
            (name, value)
            for name, values in url.query.items()
            for value in (values if isinstance(values, tuple) else (values,))
        ]
        base = url.set(query={}).render_as_string(hide_password=False)
        url = f"{base}?{urlencode(pairs, quote_via=quote)}" if pairs else base
    return common_mask_url(url)


# Query parameters


@dataclass(frozen=True)
class _File:
    """A certificate file and where its name came from (a URL parameter or libpq default)."""

    path: str
    source: str


@dataclass(frozen=True)
class _Tls:
    """What a URL asks of TLS, checked; ``mode`` is spelt as the dialect spells it."""

    mode: str
    verify: bool = False  # check the server's certificate chain...
    check_hostname: bool = False  # ...and that it names the host
    ca: _File | None = None  # with verify and neither ca nor capath: the system's CAs
    capath: _File | None = None
    cert: _File | None = None
    key: _File | None = None


@dataclass(frozen=True)
class ConnectParams:
    """A server URL's query parameters, checked, as ``create_engine`` applies them."""

    url: URL  # without the translated parameters: what SQLAlchemy's dialect gets
    timeout: float
    application_name: str = "agentsession"
    tls: _Tls | None = None  # None: the driver's default (asyncpg: prefer; aiomysql: none)


def connect_params(url: URL, dialect: str) -> ConnectParams:
    """The checked query parameters of a PostgreSQL or MySQL ``url``."""
    if dialect == "postgresql":
        return _postgresql_params(url)
    return _mysql_params(url)


def _bad(url: URL, detail: str) -> ConfigError:
    return ConfigError(f"session_service.database_url: {mask_url(url)!r}: {detail}")


def _check_names(url: URL, accepted: tuple[str, ...], repeatable: Iterable[str] = ()) -> None:
    """Every query parameter is one of ``accepted``, and given once unless repeatable."""
    unknown = [name for name in url.query if name not in accepted]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise _bad(
            url,
            f"unsupported query parameter{'s' if len(unknown) > 1 else ''} {names}; "
            f"accepted are {', '.join(accepted)}",
        )
    for name, value in url.query.items():
        if isinstance(value, tuple) and name not in repeatable:
            raise _bad(url, f"{name} is given {len(value)} times; give it once")


def _get(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    assert not isinstance(value, tuple)  # _check_names refused it
    return value


def _timeout(url: URL) -> float:
    text = _get(url, "connect_timeout")
    if text is None:
        return CONNECT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        # libpq's 0 (wait forever) included: a dead server must not hang the app.
        raise _bad(url, f"connect_timeout={text!r} is not a number of seconds above 0")
    return seconds


def _file(url: URL, source: str, path: str, *, directory: bool = False) -> _File:
    """``path`` if it exists (the file is read by ``create_engine``); ``source`` names it."""
    exists = os.path.isdir(path) if directory else os.path.isfile(path)
    if not exists:
        kind = "directory" if directory else "file"
        raise _bad(url, f"{source}={path!r}: no such {kind}")
    return _File(path, source)


def _libpq_default(url: URL, variable: str, filename: str) -> _File | None:
    """The file libpq uses when the URL names none: ``$variable``, else ``~/.postgresql/``."""
    value = os.environ.get(variable)
    if value:
        return _file(url, variable, value)
    try:
        path = Path.home() / ".postgresql" / filename
    except RuntimeError:  # no home directory
        return None
    return _File(str(path), f"~/.postgresql/{filename}") if path.is_file() else None


def _postgresql_params(url: URL) -> ConnectParams:
    _check_names(url, _PG_TRANSLATED + _PG_PASSED, repeatable=("host", "port"))
    attrs = _get(url, "target_session_attrs")
    if attrs is not None and attrs not in _PG_SESSION_ATTRS:
        raise _bad(
            url,
            f"target_session_attrs={attrs!r} is not one of {', '.join(_PG_SESSION_ATTRS)}",
        )
    cache_size = _get(url, "prepared_statement_cache_size")
    if cache_size is not None and not (cache_size.isascii() and cache_size.isdigit()):
        raise _bad(url, f"prepared_statement_cache_size={cache_size!r} is not a whole number >= 0")
    return ConnectParams(
        url=url.difference_update_query(_PG_TRANSLATED),
        timeout=_timeout(url),
        application_name=_get(url, "application_name") or "agentsession",
        tls=_postgresql_tls(url),
    )


def _postgresql_tls(url: URL) -> _Tls | None:
    """libpq's ``sslmode`` and certificate parameters, checked."""
    text = _get(url, "sslmode")
    rootcert, cert, key = (_get(url, name) for name in ("sslrootcert", "sslcert", "sslkey"))
    files = [
        name
        for name, value in (("sslrootcert", rootcert), ("sslcert", cert), ("sslkey", key))
        if value
    ]
    if text is None:
        if rootcert == "system":
            mode = "verify-full"  # libpq 16's default for sslrootcert=system
        elif files:
            raise _bad(url, f"{files[0]} needs sslmode=require, verify-ca or verify-full")
        else:
            return None
    else:
        mode = text.lower()
        if mode not in _PG_SSLMODES:
            raise _bad(url, f"sslmode={text!r} is not one of {', '.join(_PG_SSLMODES)}")
    if mode in ("disable", "allow", "prefer"):
        if files:
            # asyncpg can fall back to plain text only with its own SSL context,
            # which takes no files; with prefer libpq would not check a CA either.
            raise _bad(
                url,
                f"{files[0]} is not used with sslmode={mode}; "
                "use sslmode=require, verify-ca or verify-full",
            )
        return _Tls(mode)
    if key and not cert:
        raise _bad(url, "sslkey needs sslcert, the client certificate it belongs to")
    if rootcert == "system":
        if mode != "verify-full":
            # libpq refuses it too: any public CA could sign a certificate for any host.
            raise _bad(url, f"sslrootcert=system needs sslmode=verify-full, not {mode}")
        ca = None
    else:
        ca = (
            _file(url, "sslrootcert", rootcert)
            if rootcert
            else _libpq_default(url, "PGSSLROOTCERT", "root.crt")
        )
        if ca is None and mode != "require":
            raise _bad(
                url,
                f"sslmode={mode} needs the CA certificate that signed the server's: add "
                "sslrootcert=/path/to/ca.pem, or sslrootcert=system for the system's CAs",
            )
    client_cert = (
        _file(url, "sslcert", cert) if cert else _libpq_default(url, "PGSSLCERT", "postgresql.crt")
    )
    client_key = None
    if key:
        client_key = _file(url, "sslkey", key)
    elif client_cert is not None:
        client_key = _libpq_default(url, "PGSSLKEY", "postgresql.key")
    return _Tls(
        mode=mode,
        # libpq: require checks the CA too when there is a root certificate
        verify=mode != "require" or ca is not None,
        check_hostname=mode == "verify-full",
        ca=ca,
        cert=client_cert,
        key=client_key,
    )


def _mysql_params(url: URL) -> ConnectParams:
    _check_names(url, _MYSQL_TRANSLATED + _MYSQL_PASSED)
    charset = _get(url, "charset")
    if charset is not None and charset.lower() != "utf8mb4":
        raise _bad(
            url,
            f"charset={charset!r}: the session store needs utf8mb4, which it always "
            "uses; leave charset out",
        )
    return ConnectParams(
        url=url.difference_update_query(_MYSQL_TRANSLATED),
        timeout=_timeout(url),
        tls=_mysql_tls(url),
    )


def _flag(url: URL, name: str) -> bool:
    text = _get(url, name)
    assert text is not None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _bad(url, f"{name}={text!r} is not true or false")


def _mysql_tls(url: URL) -> _Tls | None:
    """MySQL's ``ssl_mode`` and the ``ssl_*`` parameters, checked against each other."""
    given = [name for name in ("ssl_mode", "ssl-mode") if name in url.query]
    if len(given) > 1:
        raise _bad(url, "give ssl_mode or ssl-mode, not both")
    flags = {name: _flag(url, name) for name in _MYSQL_FLAGS if name in url.query}
    ca, capath, cert, key = (_get(url, n) for n in ("ssl_ca", "ssl_capath", "ssl_cert", "ssl_key"))
    files = [
        name
        for name, value in (
            ("ssl_ca", ca),
            ("ssl_capath", capath),
            ("ssl_cert", cert),
            ("ssl_key", key),
        )
        if value
    ]
    if given:
        text = _get(url, given[0]) or ""
        mode = text.upper()
        if mode not in _MYSQL_SSL_MODES:
            raise _bad(url, f"{given[0]}={text!r} is not one of {', '.join(_MYSQL_SSL_MODES)}")
        source = f"{given[0]}={mode}"
    else:
        implied = _implied_mysql_mode(flags, has_ca=bool(ca or capath), has_files=bool(files))
        if implied is None:
            return None
        mode, source = implied, f"the other ssl parameters (which mean ssl_mode={implied})"
    for name, value in flags.items():
        if value != _MYSQL_FLAG_MEANING[name](mode):
            raise _bad(url, f"{name}={str(value).lower()} contradicts {source}")
    if mode == "DISABLED":
        if files:
            raise _bad(url, f"{files[0]} is not used with TLS disabled ({source})")
        return None
    verify = mode in ("VERIFY_CA", "VERIFY_IDENTITY")
    if (ca or capath) and not verify:
        raise _bad(
            url,
            f"{'ssl_ca' if ca else 'ssl_capath'} is not used with ssl_mode={mode}, which "
            "checks no certificate; use ssl_mode=VERIFY_CA or VERIFY_IDENTITY",
        )
    if key and not cert:
        raise _bad(url, "ssl_key needs ssl_cert, the client certificate it belongs to")
    if "unix_socket" in url.query:
        raise _bad(url, f"unix_socket connections do not use TLS; drop it or {source}")
    return _Tls(
        mode=mode,
        verify=verify,
        check_hostname=mode == "VERIFY_IDENTITY",
        ca=_file(url, "ssl_ca", ca) if ca else None,
        capath=_file(url, "ssl_capath", capath, directory=True) if capath else None,
        cert=_file(url, "ssl_cert", cert) if cert else None,
        key=_file(url, "ssl_key", key) if key else None,
    )


def _implied_mysql_mode(flags: dict[str, bool], *, has_ca: bool, has_files: bool) -> str | None:
    """The ``ssl_mode`` that ``ssl_*`` parameters without one mean; None: no TLS asked."""
    if flags.get("ssl_disabled"):
        return "DISABLED"
    identity = flags.get("ssl_verify_identity", flags.get("ssl_check_hostname"))
    verify = flags.get("ssl_verify_cert", has_ca or identity is True)
    if identity is None:
        identity = has_ca and verify  # SQLAlchemy + PyMySQL check the host name with a CA
    if verify:
        return "VERIFY_IDENTITY" if identity else "VERIFY_CA"
    if has_files or any(name != "ssl_disabled" for name in flags):
        return "REQUIRED"
    return "PREFERRED" if "ssl_disabled" in flags else None  # ssl_disabled=false alone


def ssl_context(url: URL, tls: _Tls, dialect: str) -> ssl.SSLContext:
    """The client ``SSLContext`` for ``tls``, its files read now; ``ConfigError`` if unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE
    if tls.verify:
        if tls.ca is None and tls.capath is None:
            context.load_default_certs()
        for file, keyword in ((tls.ca, "cafile"), (tls.capath, "capath")):
            if file is not None:
                try:
                    context.load_verify_locations(**{keyword: file.path})
                except (OSError, ValueError) as error:
                    raise _unloadable(url, [file], error) from None
    if tls.cert is not None:
        try:
            # password "": an encrypted key fails here instead of OpenSSL asking on the terminal
            context.load_cert_chain(tls.cert.path, tls.key.path if tls.key else None, "")
        except (OSError, ValueError) as error:
            raise _unloadable(url, [tls.cert, *([tls.key] if tls.key else [])], error) from None
    if dialect == "postgresql" and ssl.HAS_ALPN:
        context.set_alpn_protocols(["postgresql"])  # as asyncpg does for its own
    return context


def _unloadable(url: URL, files: list[_File], error: Exception) -> ConfigError:
    named = " with ".join(f"{file.source}={file.path!r}" for file in files)
    return _bad(url, f"{named} could not be loaded: {error}")


def aiomysql_connect(required: str | None) -> Callable[..., Awaitable[Any]]:
    """``aiomysql.connect`` that keeps ``required`` (an ssl_mode) and names TLS failures.

    aiomysql goes on in plain text when the server offers no TLS (and would even answer
    a request for the password in clear text): with ``required``, the server's offer
    is checked before logging in, as the MySQL client does since CVE-2017-3305. A
    certificate that fails verification, which aiomysql reports only as "Can't connect
    to MySQL server", becomes MySQL's error 2026 with the reason.
    """
    import aiomysql  # type: ignore[import-untyped]
    from pymysql.constants import CLIENT  # type: ignore[import-untyped]
    from pymysql.err import OperationalError  # type: ignore[import-untyped]

    def refused() -> Exception:
        # 2026 is the MySQL client's CR_SSL_CONNECTION_ERROR
        return OperationalError(  # type: ignore[no-any-return]
            2026,
            f"SSL connection error: ssl_mode={required} requires TLS but the server "
            "does not support it",
        )

    class TlsFirst(aiomysql.Connection):  # type: ignore[misc]
        """An aiomysql connection that logs in only if the server offers TLS."""

        async def _request_authentication(self) -> None:
            if not self.server_capabilities & CLIENT.SSL:
                raise refused()
            await super()._request_authentication()

    async def connect(**kwargs: Any) -> Any:
        try:
            if required is None:
                connection = await aiomysql.connect(**kwargs)
            else:
                connection = TlsFirst(**kwargs)
                await connection._connect()  # what aiomysql.connect() does
        except OperationalError as error:
            cause = error.__cause__
            if isinstance(cause, ssl.SSLError):
                raise OperationalError(2026, f"SSL connection error: {cause}") from cause
            raise
        if required is not None and not _tls_in_use(connection):
            # aiomysql changed so that TlsFirst no longer takes effect: still no plain text
            connection.close()
            raise refused()
        return connection

    return connect


def _tls_in_use(connection: Any) -> bool:
    """Whether an aiomysql connection is encrypted.

    aiomysql has no public flag for it: read its stream's transport. Should its
    internals change, this says False and TLS-requiring connections fail, loudly.
    """
    get_extra_info = getattr(getattr(connection, "_writer", None), "get_extra_info", None)
    return get_extra_info is not None and get_extra_info("ssl_object") is not None
