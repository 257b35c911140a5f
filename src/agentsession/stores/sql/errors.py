"""How a database error reaches the caller: one classification for every dialect.

``translate`` decides by the server's own code (PostgreSQL SQLSTATE, MySQL/MariaDB
error number, SQLite result code) rather than by exception class, because the drivers
disagree on classes: through asyncpg "the database system is shutting down" is a bare
``DBAPIError``, while pymysql makes "access denied" an ``OperationalError``.

* The database cannot serve now (connection refused or lost, server shutting down or
  starting up, out of connections or resources, statement or lock timeout, deadlock
  retries used up): ``StoreUnavailable``, which the API answers with 503.
* The URL or the database's set-up is wrong (no such database, user, password,
  privilege or schema; a SQLite file that cannot be opened): ``StoreMisconfigured``,
  a ``StoreUnavailable`` that is also a ``ConfigError``, saying what to fix.
* Anything else (constraint violations, SQL errors): ``None``, re-raised as it is.
"""

from __future__ import annotations

import enum

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from agentsession.errors import StoreMisconfigured, StoreUnavailable
from agentsession.stores.sql.engine import mask_url

__all__ = ["is_deadlock", "translate"]


class _Kind(enum.Enum):
    """What an error code means for the caller."""

    UNAVAILABLE = "unavailable"
    DATABASE = "the database does not exist"
    LOGIN = "the user cannot log in"
    PRIVILEGE = "the user lacks a privilege"
    SCHEMA = "the schema does not exist"
    FILE = "the SQLite file cannot be used"
    URL = "the URL's options are invalid"


_URL_KEY = "session_service.database_url"
#: What to do about each misconfiguration, after the server's own words.
_HINTS = {
    _Kind.DATABASE: f"create it or fix {_URL_KEY}",
    _Kind.LOGIN: f"check the user name and password in {_URL_KEY}, "
    "and that the server lets this user connect from this host",
    _Kind.PRIVILEGE: "grant this user the rights to create and use agentsession's tables, "
    f"or put another user in {_URL_KEY}",
    _Kind.SCHEMA: f"create the schema, or fix the search_path of the user in {_URL_KEY}",
    _Kind.FILE: "check that the file's directory exists and this process may write there, "
    f"or fix {_URL_KEY}",
    _Kind.URL: f"fix {_URL_KEY}",
}

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
# Classes 08 connection exception, 53 insufficient resources, 57 operator intervention
# (57014 statement timeout or cancel, 57P01-57P05 shutdown, starting up, terminated...).
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57")
_PG_UNAVAILABLE = {
    "25006",  # read_only_sql_transaction: a standby (failover in progress)
    "25P03",  # idle_in_transaction_session_timeout
    "25P04",  # transaction_timeout (PostgreSQL 17)
    "40000",  # transaction_rollback
    "40001",  # serialization_failure, once the deadlock retries are used up
    "40003",  # statement_completion_unknown
    "40P01",  # deadlock_detected, likewise
    "55P03",  # lock_not_available: lock_timeout
    "58000",  # system_error
    "58030",  # io_error
}
_PG_MISCONFIGURED = {
    "3D000": _Kind.DATABASE,  # invalid_catalog_name: database "x" does not exist
    "28000": _Kind.LOGIN,  # invalid_authorization_specification: role "x" does not exist
    "28P01": _Kind.LOGIN,  # invalid_password
    "42501": _Kind.PRIVILEGE,  # insufficient_privilege
    "3F000": _Kind.SCHEMA,  # invalid_schema_name
}

# MySQL/MariaDB error numbers. 2000-2999 are the client library's own (CR_*: cannot
# connect, server gone away, lost connection...), all of them about the connection.
_MYSQL_CLIENT_ERRORS = range(2000, 3000)
_MYSQL_UNAVAILABLE = {
    0,  # pymysql: not connected
    1020,  # ER_CHECKREAD: record changed since last read (MariaDB snapshot isolation)
    1021,  # ER_DISK_FULL
    1037,  # ER_OUTOFMEMORY
    1038,  # ER_OUT_OF_SORTMEMORY
    1040,  # ER_CON_COUNT_ERROR: too many connections
    1041,  # ER_OUT_OF_RESOURCES
    1053,  # ER_SERVER_SHUTDOWN
    1129,  # ER_HOST_IS_BLOCKED: too many connection errors from this host
    1135,  # ER_CANT_CREATE_THREAD
    1152,  # ER_ABORTING_CONNECTION
    *range(1154, 1162),  # ER_NET_*: read/write errors on the connection
    1184,  # ER_NEW_ABORTING_CONNECTION
    1203,  # ER_TOO_MANY_USER_CONNECTIONS
    1205,  # ER_LOCK_WAIT_TIMEOUT
    1213,  # ER_LOCK_DEADLOCK, once the deadlock retries are used up
    1226,  # ER_USER_LIMIT_REACHED: max_user_connections and similar
    1290,  # ER_OPTION_PREVENTS_STATEMENT: --read-only (failover in progress)
    1317,  # ER_QUERY_INTERRUPTED: KILL QUERY
    1792,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1836,  # ER_READ_ONLY_MODE
    1927,  # ER_CONNECTION_KILLED (MariaDB)
    1969,  # ER_STATEMENT_TIMEOUT: max_statement_time (MariaDB)
    3024,  # ER_QUERY_TIMEOUT: max_execution_time (MySQL)
    3032,  # ER_SERVER_OFFLINE_MODE (MySQL)
    4031,  # ER_CLIENT_INTERACTION_TIMEOUT: disconnected for inactivity (MySQL)
}
_MYSQL_MISCONFIGURED = {
    1049: _Kind.DATABASE,  # ER_BAD_DB_ERROR: unknown database
    1045: _Kind.LOGIN,  # ER_ACCESS_DENIED_ERROR: wrong password or unknown user
    1130: _Kind.LOGIN,  # ER_HOST_NOT_PRIVILEGED: may not connect from this host
    1251: _Kind.LOGIN,  # ER_NOT_SUPPORTED_AUTH_MODE
    1698: _Kind.LOGIN,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR (MariaDB: unknown user)
    1820: _Kind.LOGIN,  # ER_MUST_CHANGE_PASSWORD: the password expired
    1862: _Kind.LOGIN,  # ER_MUST_CHANGE_PASSWORD_LOGIN
    3118: _Kind.LOGIN,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MySQL)
    4151: _Kind.LOGIN,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB)
    1044: _Kind.PRIVILEGE,  # ER_DBACCESS_DENIED_ERROR: no access to the database
    1142: _Kind.PRIVILEGE,  # ER_TABLEACCESS_DENIED_ERROR: SELECT/INSERT/... denied
    1143: _Kind.PRIVILEGE,  # ER_COLUMNACCESS_DENIED_ERROR
    1227: _Kind.PRIVILEGE,  # ER_SPECIFIC_ACCESS_DENIED_ERROR
    1370: _Kind.PRIVILEGE,  # ER_PROCACCESS_DENIED_ERROR
}

# SQLite primary result codes (the low byte of the extended code).
_SQLITE = {
    3: _Kind.FILE,  # SQLITE_PERM
    5: _Kind.UNAVAILABLE,  # SQLITE_BUSY: another process holds the lock
    6: _Kind.UNAVAILABLE,  # SQLITE_LOCKED
    7: _Kind.UNAVAILABLE,  # SQLITE_NOMEM
    8: _Kind.FILE,  # SQLITE_READONLY
    9: _Kind.UNAVAILABLE,  # SQLITE_INTERRUPT
    10: _Kind.UNAVAILABLE,  # SQLITE_IOERR
    13: _Kind.UNAVAILABLE,  # SQLITE_FULL: the disk is full
    14: _Kind.FILE,  # SQLITE_CANTOPEN
    15: _Kind.UNAVAILABLE,  # SQLITE_PROTOCOL
    23: _Kind.FILE,  # SQLITE_AUTH
    26: _Kind.FILE,  # SQLITE_NOTADB: the file is not a SQLite database
}

_DEADLOCK_CODES = {"40P01", "40001", "1213", "1205", "1020"}
#: Modules whose exceptions carry a database code even when SQLAlchemy did not wrap them
#: (SQLAlchemy 2.0 lets asyncpg's errors at connect through as they are).
_DRIVER_MODULES = ("asyncpg", "pymysql", "aiomysql", "sqlite3")
#: DBAPI classes that, without a code, mean the connection failed (PEP 249's names).
_CONNECTION_CLASSES = {"OperationalError", "InterfaceError"}


def is_deadlock(error: BaseException) -> bool:
    """Whether the database rolled the statement back to break a deadlock or lock wait.

    ``error`` is SQLAlchemy's ``DBAPIError`` or the driver's own exception (a statement
    sent on the raw connection, as MySQL's one-request task save is).
    """
    if isinstance(error, sa_exc.DBAPIError):
        if error.orig is None:
            return False
        return _classify(_driver_error(error.orig))[1] in _DEADLOCK_CODES
    if type(error).__module__.partition(".")[0] not in _DRIVER_MODULES:
        return False
    return _classify(error)[1] in _DEADLOCK_CODES


def translate(error: BaseException, url: URL | str) -> StoreUnavailable | None:
    """The package's error for ``error`` (raise it ``from error``), or None to re-raise as is.

    ``StoreMisconfigured`` when the URL or the database's set-up needs fixing,
    ``StoreUnavailable`` when the database cannot serve now; messages name ``url`` with
    its password masked, and stay on one line.
    """
    if isinstance(error, sa_exc.DBAPIError):
        if isinstance(error, sa_exc.IntegrityError) or error.orig is None:
            return None
        driver = _driver_error(error.orig)
        lost = isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
        return _translate_driver(
            driver, url, lost=error.connection_invalidated or (lost and _codeless(driver))
        )
    if isinstance(error, sa_exc.TimeoutError):  # the pool's: every connection is busy
        detail = str(error.args[0]) if error.args else str(error)
        return StoreUnavailable(f"{mask_url(url)}: no free connection in the pool ({detail})")
    if isinstance(error, OSError):  # refused, unreachable, unknown host, timed out at connect
        return StoreUnavailable(f"{mask_url(url)}: {_describe(error)}")
    if type(error).__module__.partition(".")[0] in _DRIVER_MODULES:
        lost = any(cls.__name__ in _CONNECTION_CLASSES for cls in type(error).__mro__)
        return _translate_driver(error, url, lost=lost and _codeless(error))
    return None


def _translate_driver(
    driver: BaseException, url: URL | str, *, lost: bool
) -> StoreUnavailable | None:
    """Classify the driver's own exception; ``lost``: the connection is known to be gone."""
    kind, code = _classify(driver)
    if kind is not None and kind is not _Kind.UNAVAILABLE:
        return StoreMisconfigured(f"{mask_url(url)}: {_message(driver)}; {_HINTS[kind]}")
    if kind is _Kind.UNAVAILABLE or lost:
        suffix = f" ({code})" if code is not None else ""
        return StoreUnavailable(f"{mask_url(url)}: {_message(driver)}{suffix}")
    return None


def _classify(driver: BaseException) -> tuple[_Kind | None, str | None]:
    """What the driver's exception means, and its code as text (None when it has none)."""
    args = driver.args
    if args and type(args[0]) is int:  # pymysql and aiomysql: (errno, message)
        errno: int = args[0]
        if errno in _MYSQL_MISCONFIGURED:
            return _MYSQL_MISCONFIGURED[errno], str(errno)
        if errno in _MYSQL_UNAVAILABLE or errno in _MYSQL_CLIENT_ERRORS:
            return _Kind.UNAVAILABLE, str(errno)
        return None, str(errno)
    sqlite_code = getattr(driver, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        name = getattr(driver, "sqlite_errorname", None)
        return _SQLITE.get(sqlite_code & 0xFF), name if isinstance(name, str) else None
    sqlstate = getattr(driver, "sqlstate", None) or getattr(driver, "pgcode", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate in _PG_MISCONFIGURED:
            return _PG_MISCONFIGURED[sqlstate], sqlstate
        if sqlstate in _PG_UNAVAILABLE or sqlstate.startswith(_PG_UNAVAILABLE_CLASSES):
            return _Kind.UNAVAILABLE, sqlstate
        return None, sqlstate
    if type(driver).__name__ == "ClientConfigurationError":  # asyncpg: a bad URL option
        return _Kind.URL, None
    return None, None


def _codeless(driver: BaseException) -> bool:
    """Whether a code-less ``OperationalError``/``InterfaceError`` means a dead connection.

    aiomysql's ``InterfaceError("(0, 'Not connected')")`` and asyncpg's
    ``InterfaceError("connection is closed")`` carry no code. asyncpg's argument errors
    (``DataError``) are ``InterfaceError`` subclasses too, but also ``ValueError``: not those.
    """
    return _classify(driver) == (None, None) and not isinstance(driver, ValueError)


def _driver_error(orig: BaseException) -> BaseException:
    """The driver's own exception: SQLAlchemy's asyncpg adapter wraps asyncpg's.

    SQLAlchemy 2.1 keeps it as ``.orig`` of its emulated DBAPI error, and both 2.0 and
    2.1 raise the emulated error ``from`` it.
    """
    if type(orig).__module__.startswith("sqlalchemy."):
        inner = getattr(orig, "orig", None) or orig.__cause__
        if isinstance(inner, Exception):
            return inner
    return orig


def _message(driver: BaseException) -> str:
    """The server's or driver's own words, first line only."""
    args = driver.args
    if len(args) >= 2 and type(args[0]) is int and not isinstance(driver, OSError):
        text = str(args[1])  # MySQL: (errno, message)
    else:
        text = str(driver)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(driver).__name__


def _describe(error: OSError) -> str:
    """``ConnectionRefusedError: [Errno 111] ...``: an OS error's words say little alone."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text.splitlines()[0]}"
