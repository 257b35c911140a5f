"""Query parameters of PostgreSQL and MySQL URLs: TLS, timeouts, application_name.

What a URL's parameters become is read where the driver gets it: SQLAlchemy's
``do_connect`` event sees the exact keyword arguments of ``asyncpg.connect()`` /
``aiomysql.connect()``. Real connections go to the servers of
``AGENTSESSION_TEST_POSTGRES_URL`` / ``AGENTSESSION_TEST_MYSQL_URL``; as their TLS is
off (and shared, so not ours to turn on), encrypted connections go through
``TlsTerminator``: a small TLS server in front of the real one, as a TLS-terminating
proxy is in production. Certificates are made with the ``openssl`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from agentsession.errors import ConfigError, StoreUnavailable
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.engine import CONNECT_TIMEOUT, create_engine, mask_url, normalize_url
from tests.databases import fresh_database, server_url
from tests.proxy import Proxy

pytestmark = pytest.mark.anyio

PG = "postgresql://u:secretpw@db.example:5433/app"
MY = "mysql://u:secretpw@db.example:3307/app"


@pytest.fixture(autouse=True)
def no_libpq_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PGSSL* variables and an empty home: libpq's default files are the test's to make."""
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def with_params(url: str, params: dict[str, str]) -> str:
    return f"{url}?{urlencode(params)}" if params else url


# Certificates


@dataclass(frozen=True)
class Certs:
    """A CA, a server certificate it signed for ``localhost`` only, a client
    certificate it signed, and an unrelated CA."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path
    client_key_encrypted: Path  # with a passphrase
    other_ca: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificates")
    where = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl(
            *["req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem"],
            *["-days", "2", "-subj", f"/CN={ca}"],
            *["-addext", "basicConstraints=critical,CA:TRUE"],
            *["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        )
    leaves = {
        "server": "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for serial, (name, extensions) in enumerate(leaves.items(), start=1):
        (where / f"{name}.ext").write_text(extensions)
        openssl(
            *["req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr"],
            *["-subj", f"/CN=agentsession-test-{name}"],
        )
        openssl(
            *["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key"],
            *["-set_serial", str(serial), "-days", "2", "-out", f"{name}.pem"],
            *["-extfile", f"{name}.ext"],
        )
    openssl(
        *["pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret"],
        *["-out", "client-encrypted.key"],
    )
    return Certs(
        ca=where / "ca.pem",
        server=where / "server.pem",
        server_key=where / "server.key",
        client=where / "client.pem",
        client_key=where / "client.key",
        client_key_encrypted=where / "client-encrypted.key",
        other_ca=where / "other-ca.pem",
    )


# What reaches the driver


class _Captured(Exception):
    pass


async def driver_kwargs(url: str) -> dict[str, Any]:
    """The keyword arguments ``create_engine(url)`` gives the driver's ``connect()``."""
    engine = create_engine(url)
    seen: dict[str, Any] = {}

    def capture(_dialect: Any, _record: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.update(kwargs)
        raise _Captured

    event.listen(engine.sync_engine, "do_connect", capture)
    try:
        with pytest.raises(_Captured):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    return seen


def context_of(kwargs: dict[str, Any]) -> ssl.SSLContext:
    context = kwargs["ssl"]
    assert isinstance(context, ssl.SSLContext)
    return context


def checks(context: ssl.SSLContext) -> tuple[bool, bool]:
    """(verifies the certificate chain, checks the host name)."""
    return context.verify_mode == ssl.CERT_REQUIRED, context.check_hostname


def ca_names(context: ssl.SSLContext) -> set[str]:
    return {value for cert in context.get_ca_certs() for rdn in cert["subject"] for _, value in rdn}


# PostgreSQL: translation


async def test_postgresql_defaults_are_unchanged() -> None:
    kwargs = await driver_kwargs(PG)
    assert kwargs["timeout"] == CONNECT_TIMEOUT
    assert kwargs["server_settings"] == {
        "application_name": "agentsession",
        "plan_cache_mode": "force_custom_plan",
    }
    assert "ssl" not in kwargs  # asyncpg's default: prefer (or $PGSSLMODE)
    assert {kwargs["host"], kwargs["port"], kwargs["database"]} == {"db.example", 5433, "app"}


async def test_postgresql_timeout_and_application_name() -> None:
    url = with_params(PG, {"connect_timeout": "2", "application_name": "foo"})
    kwargs = await driver_kwargs(url)
    assert kwargs["timeout"] == 2.0
    assert kwargs["server_settings"] == {
        "application_name": "foo",
        "plan_cache_mode": "force_custom_plan",
    }
    assert not {"connect_timeout", "application_name"} & set(kwargs)
    engine = create_engine(with_params(PG, {"connect_timeout": "0.5"}))
    try:
        # CONNECT_TIMEOUT is also the wait for a free pooled connection: replaced too
        assert engine.sync_engine.pool.timeout() == 0.5  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "PREFER"])
async def test_postgresql_weak_sslmodes_are_asyncpgs_own(mode: str) -> None:
    """asyncpg implements libpq's fallback to plain text (or to TLS) for these."""
    kwargs = await driver_kwargs(with_params(PG, {"sslmode": mode}))
    assert kwargs["ssl"] == mode.lower()
    assert "sslmode" not in kwargs


async def test_postgresql_require_encrypts_without_checking() -> None:
    context = context_of(await driver_kwargs(with_params(PG, {"sslmode": "require"})))
    assert checks(context) == (False, False)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("require", (True, False)), ("verify-ca", (True, False)), ("verify-full", (True, True))],
)
async def test_postgresql_verifying_modes(
    mode: str, expected: tuple[bool, bool], certs: Certs
) -> None:
    """libpq: require with a root certificate checks the CA as verify-ca does."""
    url = with_params(PG, {"sslmode": mode, "sslrootcert": str(certs.ca)})
    kwargs = await driver_kwargs(url)
    context = context_of(kwargs)
    assert checks(context) == expected
    assert ca_names(context) == {"ca"}
    assert not {"sslmode", "sslrootcert"} & set(kwargs)


async def test_postgresql_system_roots() -> None:
    for params in ({"sslmode": "verify-full", "sslrootcert": "system"}, {"sslrootcert": "system"}):
        # libpq 16: sslrootcert=system alone means verify-full
        context = context_of(await driver_kwargs(with_params(PG, params)))
        assert checks(context) == (True, True)


async def test_postgresql_client_certificate(certs: Certs) -> None:
    params = {
        "sslmode": "verify-full",
        "sslrootcert": str(certs.ca),
        "sslcert": str(certs.client),
        "sslkey": str(certs.client_key),
    }
    kwargs = await driver_kwargs(with_params(PG, params))
    assert checks(context_of(kwargs)) == (True, True)
    assert not {"sslcert", "sslkey"} & set(kwargs)


async def test_postgresql_libpq_default_files(no_libpq_defaults: Path, certs: Certs) -> None:
    """Without sslrootcert, ~/.postgresql/root.crt is the CA, as in libpq: then
    verify-full works and require checks the CA."""
    url = with_params(PG, {"sslmode": "verify-full"})
    with pytest.raises(ConfigError, match="needs the CA certificate"):
        normalize_url(url)
    directory = no_libpq_defaults / ".postgresql"
    directory.mkdir()
    shutil.copy(certs.other_ca, directory / "root.crt")
    assert ca_names(context_of(await driver_kwargs(url))) == {"other-ca"}
    context = context_of(await driver_kwargs(with_params(PG, {"sslmode": "require"})))
    assert checks(context) == (True, False)


async def test_postgresql_libpq_environment(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    url = with_params(PG, {"sslmode": "verify-ca"})
    monkeypatch.setenv("PGSSLROOTCERT", str(certs.ca))
    assert ca_names(context_of(await driver_kwargs(url))) == {"ca"}
    monkeypatch.setenv("PGSSLROOTCERT", "/nonexistent/root.crt")
    with pytest.raises(ConfigError, match=r"PGSSLROOTCERT='/nonexistent/root.crt': no such file"):
        normalize_url(url)


async def test_postgresql_parameters_sqlalchemy_reads() -> None:
    """host/port (multi-host, Unix sockets), target_session_attrs and
    prepared_statement_cache_size stay in the URL for SQLAlchemy and asyncpg."""
    url = (
        "postgresql://u@/app?host=h1:5432&host=h2:5433"
        "&target_session_attrs=read-write&prepared_statement_cache_size=0"
    )
    kwargs = await driver_kwargs(url)
    assert (kwargs["host"], kwargs["port"]) == (["h1", "h2"], [5432, 5433])
    assert kwargs["target_session_attrs"] == "read-write"
    assert kwargs["prepared_statement_cache_size"] == 0
    kwargs = await driver_kwargs("postgresql://u@/app?host=/run/postgresql&sslmode=disable")
    assert (kwargs["host"], kwargs["ssl"]) == ("/run/postgresql", "disable")


async def test_normalized_url_keeps_the_parameters_the_engine_does_not(certs: Certs) -> None:
    """``SqlStore`` hands ``normalize_url``'s result to ``create_engine``: the
    parameters survive normalising (idempotently), and only the engine drops them."""
    url = with_params(
        PG,
        {"sslmode": "verify-ca", "sslrootcert": str(certs.ca), "target_session_attrs": "any"},
    )
    normalized = normalize_url(url)
    assert normalized.drivername == "postgresql+asyncpg"
    assert dict(normalized.query) == {
        "sslmode": "verify-ca",
        "sslrootcert": str(certs.ca),
        "target_session_attrs": "any",
    }
    assert normalize_url(normalized) == normalized
    engine = create_engine(normalized)
    try:
        assert dict(engine.url.query) == {"target_session_attrs": "any"}
    finally:
        await engine.dispose()


# MySQL: translation


async def test_mysql_defaults_are_unchanged() -> None:
    kwargs = await driver_kwargs(MY)
    assert kwargs["connect_timeout"] == CONNECT_TIMEOUT
    assert kwargs["charset"] == "utf8mb4"
    assert "ssl" not in kwargs  # aiomysql's default: plain text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ssl_mode": "DISABLED"}, None),
        ({"ssl_disabled": "true"}, None),
        ({"ssl_mode": "PREFERRED"}, (False, False)),
        ({"ssl_disabled": "false"}, (False, False)),  # PREFERRED, as in PyMySQL
        ({"ssl_mode": "REQUIRED"}, (False, False)),
        ({"ssl-mode": "required"}, (False, False)),
        ({"ssl_mode": "VERIFY_CA"}, (True, False)),
        ({"ssl_mode": "VERIFY_IDENTITY"}, (True, True)),
        ({"ssl_verify_cert": "true"}, (True, False)),
        ({"ssl_verify_cert": "1", "ssl_check_hostname": "yes"}, (True, True)),
        ({"ssl_verify_identity": "true"}, (True, True)),
        ({"ssl_verify_cert": "false"}, (False, False)),  # REQUIRED
        ({"ssl_mode": "VERIFY_IDENTITY", "ssl_verify_cert": "true"}, (True, True)),
    ],
)
async def test_mysql_ssl_modes(params: dict[str, str], expected: tuple[bool, bool] | None) -> None:
    kwargs = await driver_kwargs(with_params(MY, params))
    if expected is None:
        assert "ssl" not in kwargs
    else:
        assert checks(context_of(kwargs)) == expected
    assert not set(params) & set(kwargs)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # As SQLAlchemy documents for PyMySQL: a CA means the host name is checked too...
        ({}, (True, True)),
        # ...unless ssl_check_hostname=false
        ({"ssl_check_hostname": "false"}, (True, False)),
        ({"ssl_verify_identity": "false"}, (True, False)),
        ({"ssl_mode": "VERIFY_CA"}, (True, False)),
    ],
)
async def test_mysql_ca(params: dict[str, str], expected: tuple[bool, bool], certs: Certs) -> None:
    for where in ({"ssl_ca": str(certs.ca)}, {"ssl_capath": str(certs.ca.parent)}):
        context = context_of(await driver_kwargs(with_params(MY, {**where, **params})))
        assert checks(context) == expected
    context = context_of(await driver_kwargs(with_params(MY, {"ssl_ca": str(certs.ca), **params})))
    assert ca_names(context) == {"ca"}


async def test_mysql_client_certificate_and_timeout(certs: Certs) -> None:
    params = {"ssl_cert": str(certs.client), "ssl_key": str(certs.client_key)}
    kwargs = await driver_kwargs(with_params(MY, {**params, "connect_timeout": "2"}))
    assert checks(context_of(kwargs)) == (False, False)  # REQUIRED: encrypted, unchecked
    assert kwargs["connect_timeout"] == 2.0
    assert not {"ssl_cert", "ssl_key"} & set(kwargs)


async def test_mysql_parameters_kept() -> None:
    kwargs = await driver_kwargs(f"{MY}?charset=UTF8MB4&unix_socket=/run/mysqld/mysqld.sock")
    assert kwargs["charset"] == "utf8mb4"
    assert kwargs["unix_socket"] == "/run/mysqld/mysqld.sock"
    kwargs = await driver_kwargs("mariadb://u@h/app?ssl_mode=VERIFY_IDENTITY")
    assert checks(context_of(kwargs)) == (True, True)


async def test_sqlite_query_is_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}?timeout=3"
    assert dict(normalize_url(url).query) == {"timeout": "3"}


# Refused URLs


def refused(template: str, certs: Certs, tmp_path: Path) -> str:
    """``template`` with {ca}, {cert}, {key}, {encrypted}, {dir}, {garbage} filled in."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return template.format(
        ca=certs.ca,
        cert=certs.client,
        key=certs.client_key,
        encrypted=certs.client_key_encrypted,
        dir=tmp_path,
        garbage=garbage,
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        # PostgreSQL
        (
            f"{PG}?sslmode=bogus",
            "sslmode='bogus' is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (f"{PG}?connect_timeout=abc", "connect_timeout='abc' is not a number of seconds above 0"),
        (f"{PG}?connect_timeout=0", "connect_timeout='0' is not a number of seconds above 0"),
        (f"{PG}?connect_timeout=-1", "connect_timeout='-1' is not a number of seconds above 0"),
        (f"{PG}?connect_timeout=nan", "connect_timeout='nan' is not a number of seconds above 0"),
        (f"{PG}?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem", "sslrootcert='/nonexistent/"),
        (f"{PG}?sslmode=verify-ca&sslrootcert={{dir}}", "no such file"),
        (f"{PG}?sslmode=require&sslcert=/nonexistent/c.pem", "sslcert='/nonexistent/c.pem': no"),
        (
            f"{PG}?sslmode=require&sslcert={{cert}}&sslkey=/nonexistent/k.pem",
            "sslkey='/nonexistent/k.pem': no such file",
        ),
        (f"{PG}?sslcert={{cert}}", "sslcert needs sslmode=require, verify-ca or verify-full"),
        (
            f"{PG}?sslmode=prefer&sslrootcert={{ca}}",
            "sslrootcert is not used with sslmode=prefer; use sslmode=require, verify-ca or "
            "verify-full",
        ),
        (f"{PG}?sslmode=disable&sslcert={{cert}}", "sslcert is not used with sslmode=disable"),
        (f"{PG}?sslmode=require&sslkey={{key}}", "sslkey needs sslcert"),
        (
            f"{PG}?sslmode=require&sslrootcert=system",
            "sslrootcert=system needs sslmode=verify-full, not require",
        ),
        (
            f"{PG}?sslmode=verify-full",
            "sslmode=verify-full needs the CA certificate that signed the server's: add "
            "sslrootcert=/path/to/ca.pem, or sslrootcert=system",
        ),
        (
            f"{PG}?sslmode=require&sslmode=disable",
            "sslmode is given 2 times; give it once",
        ),
        (
            f"{PG}?ssl=true&password=secretpw",
            "unsupported query parameters 'ssl', 'password'; accepted are sslmode, "
            "sslrootcert, sslcert, sslkey, connect_timeout, application_name, host, port, "
            "target_session_attrs, prepared_statement_cache_size",
        ),
        (f"{PG}?sslpassword=secretpw", "unsupported query parameter 'sslpassword'; accepted"),
        (f"{PG}?target_session_attrs=master", "target_session_attrs='master' is not one of"),
        (
            f"{PG}?prepared_statement_cache_size=-1",
            "prepared_statement_cache_size='-1' is not a whole number >= 0",
        ),
        # MySQL / MariaDB
        (
            f"{MY}?ssl_mode=bogus",
            "ssl_mode='bogus' is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, "
            "VERIFY_IDENTITY",
        ),
        (f"{MY}?ssl-mode=VERIFY", "ssl-mode='VERIFY' is not one of DISABLED"),
        (f"{MY}?ssl_mode=REQUIRED&ssl-mode=REQUIRED", "give ssl_mode or ssl-mode, not both"),
        (f"{MY}?ssl_verify_cert=maybe", "ssl_verify_cert='maybe' is not true or false"),
        (
            f"{MY}?ssl_mode=VERIFY_CA&ssl_verify_cert=false",
            "ssl_verify_cert=false contradicts ssl_mode=VERIFY_CA",
        ),
        (
            f"{MY}?ssl_mode=REQUIRED&ssl_disabled=true",
            "ssl_disabled=true contradicts ssl_mode=REQUIRED",
        ),
        (
            f"{MY}?ssl_verify_cert=false&ssl_verify_identity=true",
            "ssl_verify_identity=true contradicts the other ssl parameters (which mean "
            "ssl_mode=REQUIRED)",
        ),
        (f"{MY}?ssl_disabled=true&ssl_cert={{cert}}", "ssl_cert is not used with TLS disabled"),
        (
            f"{MY}?ssl_mode=REQUIRED&ssl_ca={{ca}}",
            "ssl_ca is not used with ssl_mode=REQUIRED, which checks no certificate; use "
            "ssl_mode=VERIFY_CA or VERIFY_IDENTITY",
        ),
        (
            f"{MY}?ssl_ca={{ca}}&ssl_verify_cert=false",
            "ssl_ca is not used with ssl_mode=REQUIRED",
        ),
        (f"{MY}?ssl_mode=REQUIRED&ssl_key={{key}}", "ssl_key needs ssl_cert"),
        (
            f"{MY}?ssl_mode=REQUIRED&unix_socket=/run/mysqld/mysqld.sock",
            "unix_socket connections do not use TLS",
        ),
        (f"{MY}?ssl_ca=/nonexistent/ca.pem", "ssl_ca='/nonexistent/ca.pem': no such file"),
        (f"{MY}?ssl_capath=/nonexistent", "ssl_capath='/nonexistent': no such directory"),
        (f"{MY}?charset=latin1", "charset='latin1': the session store needs utf8mb4"),
        (f"{MY}?connect_timeout=soon", "connect_timeout='soon' is not a number of seconds"),
        (
            f"{MY}?read_timeout=5",
            "unsupported query parameter 'read_timeout'; accepted are ssl_mode, ssl-mode, "
            "ssl_ca, ssl_capath, ssl_cert, ssl_key, ssl_disabled, ssl_verify_cert, "
            "ssl_verify_identity, ssl_check_hostname, connect_timeout, charset, unix_socket",
        ),
        ("mariadb://u:secretpw@h/app?ssl=1", "unsupported query parameter 'ssl'"),
    ],
)
def test_bad_parameters_are_config_errors(
    template: str, message: str, certs: Certs, tmp_path: Path
) -> None:
    url = refused(template, certs, tmp_path)
    for make in (normalize_url, create_engine):
        with pytest.raises(ConfigError) as raised:
            make(url)
        text = str(raised.value)
        assert text.startswith(f"session_service.database_url: {mask_url(url)!r}: ")
        assert message in text
        assert "secretpw" not in text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            f"{PG}?sslmode=verify-ca&sslrootcert={{garbage}}",
            "sslrootcert='{garbage}' could not be loaded: ",
        ),
        (
            f"{PG}?sslmode=require&sslcert={{garbage}}&sslkey={{key}}",
            "sslcert='{garbage}' with sslkey='{key}' could not be loaded: ",
        ),
        (
            # a key that is not the certificate's
            f"{PG}?sslmode=require&sslcert={{cert}}&sslkey={{ca}}",
            "sslcert='{cert}' with sslkey='{ca}' could not be loaded: ",
        ),
        (
            # a key with a passphrase fails (rather than OpenSSL asking for it)
            f"{MY}?ssl_cert={{cert}}&ssl_key={{encrypted}}",
            "ssl_cert='{cert}' with ssl_key='{encrypted}' could not be loaded: ",
        ),
        (f"{MY}?ssl_ca={{garbage}}", "ssl_ca='{garbage}' could not be loaded: "),
        (f"{MY}?ssl_cert={{garbage}}", "ssl_cert='{garbage}' could not be loaded: "),
    ],
)
def test_unreadable_certificates_fail_in_create_engine(
    template: str, message: str, certs: Certs, tmp_path: Path
) -> None:
    """``normalize_url`` (configuration time) reads no file; ``create_engine`` (startup) does."""
    url = refused(template, certs, tmp_path)
    normalize_url(url)
    with pytest.raises(ConfigError) as raised:
        create_engine(url)
    assert str(raised.value).startswith(f"session_service.database_url: {mask_url(url)!r}: ")
    assert refused(message, certs, tmp_path) in str(raised.value)


def test_mask_url_hides_password_parameters() -> None:
    masked = mask_url("postgresql://u:pw1@h/db?password=pw2&sslpassword=pw3&sslmode=require")
    assert masked == "postgresql://u:***@h/db?password=***&sslpassword=***&sslmode=require"
    # paths stay readable; what must be escaped is
    masked = mask_url("postgresql://u@h/db?sslrootcert=/etc/ssl/my%20ca.pem&host=a:1,b:2")
    assert masked == "postgresql://u@h/db?sslrootcert=/etc/ssl/my%20ca.pem&host=a:1,b:2"


# A TLS server in front of the real one


@dataclass
class Seen:
    """One client connection as the ``TlsTerminator`` saw it."""

    tls: bool = False
    client_cert: str | None = None  # the common name of the certificate the client sent
    error: str | None = None  # why the TLS handshake failed
    plain_login: bool = False  # (MySQL) the client sent its login without TLS


@dataclass
class TlsTerminator:
    """Speaks TLS with clients on 127.0.0.1:``port`` and forwards them, in plain text,
    to the real server at ``target``, as a TLS-terminating proxy does.

    PostgreSQL clients ask for TLS with an SSLRequest before anything else. MySQL
    clients answer the server's greeting (where this adds the TLS capability) with an
    SSLRequest packet, so the sequence numbers of the login exchange differ by one
    between the two sides; once the server has said OK, bytes pass as they are.
    What comes before TLS is read from the socket byte-exact (aiomysql sends its TLS
    hello right behind its SSLRequest, which a buffered stream would swallow).
    """

    dialect: str
    target: tuple[str, int]
    context: ssl.SSLContext
    offer_tls: bool = True  # MySQL: False passes the server's greeting on as it is
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _listener: socket.socket | None = None
    _transports: list[asyncio.BaseTransport | socket.socket] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> TlsTerminator:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept(self._listener))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in self._transports:
            if isinstance(transport, socket.socket):
                transport.close()
            else:
                transport.abort()  # type: ignore[attr-defined]

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(listener)
            client.setblocking(False)
            self._transports.append(client)
            seen = Seen()
            self.seen.append(seen)
            handle = self._postgresql if self.dialect == "postgresql" else self._mysql
            self._spawn(self._quietly(handle(client, seen)))

    @staticmethod
    async def _quietly(work: Awaitable[None]) -> None:
        with contextlib.suppress(OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError):
            await work

    async def _stream(
        self, sock: socket.socket, seen: Seen, *, tls: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams over the accepted ``sock``, after a TLS handshake if ``tls``."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self.context if tls else None
            )
        except (OSError, ssl.SSLError) as error:
            seen.error = str(error)
            raise
        self._transports.append(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if tls:
            seen.tls = True
            peer = writer.get_extra_info("peercert")
            if peer:
                seen.client_cert = dict(rdn[0] for rdn in peer["subject"])["commonName"]
        return reader, writer

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*self.target)
        self._transports.append(writer.transport)
        return reader, writer

    async def _postgresql(self, sock: socket.socket, seen: Seen) -> None:
        loop = asyncio.get_running_loop()
        first = await _receive(sock, 8)
        tls = first == struct.pack("!ii", 8, 80877103)  # SSLRequest
        if tls:
            await loop.sock_sendall(sock, b"S")
            first = b""
        with contextlib.ExitStack() as cleanup:
            reader, writer = await self._stream(sock, seen, tls=tls)
            cleanup.callback(writer.transport.abort)
            up_reader, up_writer = await self._upstream()
            cleanup.callback(up_writer.transport.abort)
            up_writer.write(first)
            await _pipe_both(reader, writer, up_reader, up_writer)

    async def _mysql(self, sock: socket.socket, seen: Seen) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as cleanup:
            up_reader, up_writer = await self._upstream()
            cleanup.callback(up_writer.transport.abort)
            number, greeting = await _read_packet(up_reader)
            # capability flags: after the version (NUL-ended), thread id, 8 scramble
            # bytes and a filler byte
            at = greeting.index(0, 1) + 1 + 4 + 8 + 1
            if self.offer_tls:
                greeting[at + 1] |= _CLIENT_SSL >> 8
            await loop.sock_sendall(sock, _packet(number, greeting))
            header = await _receive(sock, 4)
            answer = bytearray(await _receive(sock, int.from_bytes(header[:3], "little")))
            number = header[3]
            tls = len(answer) == 32 and bool(int.from_bytes(answer[:4], "little") & _CLIENT_SSL)
            seen.plain_login = not tls
            reader, writer = await self._stream(sock, seen, tls=tls)
            cleanup.callback(writer.transport.abort)
            shift = 0
            if tls:  # that was an SSLRequest: the login comes over TLS
                number, answer = await _read_packet(reader)
                shift = 1
            flags = int.from_bytes(answer[:4], "little") & ~_CLIENT_SSL
            answer[:4] = flags.to_bytes(4, "little")
            while True:  # the login exchange, until the server's OK or error
                up_writer.write(_packet(number - shift, answer))
                number, reply = await _read_packet(up_reader)
                writer.write(_packet(number + shift, reply))
                if reply[0] in (0x00, 0xFF):
                    break
                number, answer = await _read_packet(reader)
            await _pipe_both(reader, writer, up_reader, up_writer)


_CLIENT_SSL = 0x800


async def _receive(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from ``sock``, reading no further."""
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytearray]:
    header = await reader.readexactly(4)
    return header[3], bytearray(await reader.readexactly(int.from_bytes(header[:3], "little")))


def _packet(number: int, payload: bytearray) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([number % 256]) + payload


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        sink.transport.abort()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def server_context(certs: Certs) -> ssl.SSLContext:
    """The TLS server's context: the ``localhost`` certificate; client certificates of
    the test CA are asked for (and recorded) but not required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server, certs.server_key)
    context.load_verify_locations(cafile=certs.ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@contextlib.asynccontextmanager
async def tls_in_front(
    backend: str, certs: Certs, tmp_path: Path, *, offer_tls: bool = True
) -> AsyncIterator[tuple[TlsTerminator, Callable[..., str]]]:
    """A ``TlsTerminator`` in front of a fresh database of ``backend``, and a function
    ``url(host="127.0.0.1", **params)`` for URLs that reach it."""
    async with fresh_database(backend, tmp_path) as real_url:
        parts = urlsplit(real_url)
        target = (parts.hostname or "127.0.0.1", parts.port or 0)
        terminator = TlsTerminator(backend, target, server_context(certs), offer_tls)
        async with terminator:

            def url(host: str = "127.0.0.1", **params: str) -> str:
                netloc = f"{parts.username}@{host}:{terminator.port}"
                return with_params(parts._replace(netloc=netloc).geturl(), params)

            yield terminator, url


async def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar_one()
    finally:
        await engine.dispose()


async def connect_error(url: str) -> BaseException:
    """What ``engine.connect()`` raises for ``url``."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect():
            pass
    except Exception as error:
        return error
    finally:
        await engine.dispose()
    raise AssertionError(f"{url} connected")


async def store_error(url: str) -> StoreUnavailable:
    """What the store raises for ``url``: a TLS failure is ``StoreUnavailable``."""
    store = SqlStore(url, pool_size=1)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.get_session("alice", "x", 0)
    finally:
        await store.close()
    return raised.value


async def within(seconds: float, work: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(work, seconds)


# PostgreSQL: real connections

_PG_TLS_OF_SESSION = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


async def postgres_ssl_is_on() -> bool:
    return str(await scalar(server_url("AGENTSESSION_TEST_POSTGRES_URL"), "SHOW ssl")) == "on"


async def test_postgresql_sslmodes_against_the_server(tmp_path: Path) -> None:
    """With the server's own TLS: require is TLS and disable is not (pg_stat_ssl).
    Without (as here): require fails at once and names the reason; prefer and allow
    fall back to plain text."""
    async with fresh_database("postgresql", tmp_path) as url:
        assert await scalar(with_params(url, {"sslmode": "disable"}), _PG_TLS_OF_SESSION) is False
        if await postgres_ssl_is_on():
            for mode in ("require", "prefer"):
                assert await scalar(with_params(url, {"sslmode": mode}), _PG_TLS_OF_SESSION)
            return
        for mode in ("prefer", "allow"):
            assert await scalar(with_params(url, {"sslmode": mode}), _PG_TLS_OF_SESSION) is False
        required = with_params(url, {"sslmode": "require"})
        error = await within(5, connect_error(required))
        assert isinstance(error, ConnectionError)  # asyncpg's, not wrapped by SQLAlchemy
        assert "rejected SSL upgrade" in str(error)
        unavailable = await within(5, store_error(required))
        assert "rejected SSL upgrade" in str(unavailable)


async def test_postgresql_application_name(tmp_path: Path) -> None:
    sql = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    async with fresh_database("postgresql", tmp_path) as url:
        assert await scalar(url, sql) == "agentsession"
        assert await scalar(with_params(url, {"application_name": "foo"}), sql) == "foo"
        # plan_cache_mode is still set
        named = with_params(url, {"application_name": "foo"})
        assert await scalar(named, "SHOW plan_cache_mode") == "force_custom_plan"


async def test_postgresql_connect_timeout_reaches_asyncpg(tmp_path: Path) -> None:
    """A server that accepts and never answers: the URL's 2 s, not the default 5 s."""
    async with fresh_database("postgresql", tmp_path) as url:
        parts = urlsplit(url)
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        try:
            await proxy.hang()
            hanging = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
            started = time.monotonic()
            error = await within(10, connect_error(with_params(hanging, {"connect_timeout": "2"})))
            elapsed = time.monotonic() - started
            assert isinstance(error, TimeoutError)
            assert 1.5 < elapsed < 4
        finally:
            await proxy.stop()


async def test_postgresql_tls(certs: Certs, tmp_path: Path) -> None:
    """Through a TLS server whose certificate names localhost, signed by ``certs.ca``."""
    async with tls_in_front("postgresql", certs, tmp_path) as (terminator, url):
        ca = str(certs.ca)
        works = [
            url(sslmode="require"),
            url(sslmode="prefer"),
            url(sslmode="require", sslrootcert=ca),
            url(sslmode="verify-ca", sslrootcert=ca),  # 127.0.0.1 is not in the certificate
            url(host="localhost", sslmode="verify-full", sslrootcert=ca),
        ]
        for good in works:
            terminator.seen.clear()
            assert await scalar(good, "SELECT 1") == 1
            assert [seen.tls for seen in terminator.seen] == [True], good
            assert terminator.seen[0].client_cert is None

        terminator.seen.clear()
        assert await scalar(url(sslmode="disable"), "SELECT 1") == 1
        assert [seen.tls for seen in terminator.seen] == [False]

        terminator.seen.clear()
        client = url(
            sslmode="verify-full",
            host="localhost",
            sslrootcert=ca,
            sslcert=str(certs.client),
            sslkey=str(certs.client_key),
        )
        assert await scalar(client, "SELECT 1") == 1
        assert [seen.client_cert for seen in terminator.seen] == ["agentsession-test-client"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        # a CA that did not sign the server's certificate
        ({"host": "localhost", "sslmode": "verify-full", "sslrootcert": "other"}, "verify failed"),
        ({"sslmode": "verify-ca", "sslrootcert": "other"}, "verify failed"),
        # libpq's require checks the CA when given one
        ({"sslmode": "require", "sslrootcert": "other"}, "verify failed"),
        # the right CA, but 127.0.0.1 is not the name in the certificate
        ({"sslmode": "verify-full", "sslrootcert": "ca"}, "IP address mismatch"),
    ],
)
async def test_postgresql_tls_refused(
    params: dict[str, str], reason: str, certs: Certs, tmp_path: Path
) -> None:
    files = {"other": str(certs.other_ca), "ca": str(certs.ca)}
    params = {**params, "sslrootcert": files[params["sslrootcert"]]}
    async with tls_in_front("postgresql", certs, tmp_path) as (terminator, url):
        bad = url(**params)
        # engine.connect(): the ssl module's error, as asyncpg raises it
        error = await within(5, connect_error(bad))
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert reason in str(error)
        # through the store: StoreUnavailable, naming the cause and the masked URL
        unavailable = await within(5, store_error(bad))
        assert isinstance(unavailable.__cause__, ssl.SSLCertVerificationError)
        assert reason in str(unavailable)
        assert not any(seen.tls for seen in terminator.seen)


# MySQL / MariaDB: real connections

_MY_TLS_OF_SESSION = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS " + (
    "WHERE VARIABLE_NAME = 'Ssl_cipher'"
)


async def mysql_has_ssl() -> bool:
    url = server_url("AGENTSESSION_TEST_MYSQL_URL")
    return str(await scalar(url, "SELECT @@have_ssl")) == "YES"


async def test_mysql_ssl_modes_against_the_server(tmp_path: Path) -> None:
    """Without the server's own TLS (as here): DISABLED and PREFERRED connect in plain
    text; REQUIRED is refused at once with MySQL's error 2026, not silently plain
    (which is what aiomysql alone does)."""
    async with fresh_database("mysql", tmp_path) as url:
        plain = with_params(url, {"ssl_mode": "DISABLED"})
        assert await scalar(plain, _MY_TLS_OF_SESSION) == ""
        if await mysql_has_ssl():
            for mode in ("REQUIRED", "PREFERRED"):
                assert await scalar(with_params(url, {"ssl_mode": mode}), _MY_TLS_OF_SESSION)
            return
        assert await scalar(with_params(url, {"ssl_mode": "PREFERRED"}), _MY_TLS_OF_SESSION) == ""
        for params in ({"ssl_mode": "REQUIRED"}, {"ssl_verify_cert": "false"}):
            required = with_params(url, params)
            error = await within(5, connect_error(required))
            assert "(2026, 'SSL connection error: ssl_mode=REQUIRED requires TLS but the " in str(
                error
            )
            unavailable = await within(5, store_error(required))
            assert "SSL connection error" in str(unavailable)


async def test_mysql_tls(certs: Certs, tmp_path: Path) -> None:
    async with tls_in_front("mysql", certs, tmp_path) as (terminator, url):
        ca = str(certs.ca)
        works = [
            url(ssl_mode="REQUIRED"),
            url(ssl_mode="PREFERRED"),
            url(ssl_mode="VERIFY_CA", ssl_ca=ca),  # 127.0.0.1 is not in the certificate
            url(ssl_ca=ca, ssl_check_hostname="false"),
            url(host="localhost", ssl_mode="VERIFY_IDENTITY", ssl_ca=ca),
            url(host="localhost", ssl_ca=ca),
        ]
        for good in works:
            terminator.seen.clear()
            # the server itself sees plain text: only the terminator knows
            assert await scalar(good, _MY_TLS_OF_SESSION) == "", good
            assert [seen.tls for seen in terminator.seen] == [True], good

        terminator.seen.clear()
        assert await scalar(url(ssl_mode="DISABLED"), "SELECT 1") == 1
        assert [seen.tls for seen in terminator.seen] == [False]

        terminator.seen.clear()
        client = url(ssl_mode="REQUIRED", ssl_cert=str(certs.client), ssl_key=str(certs.client_key))
        assert await scalar(client, "SELECT 1") == 1
        assert [seen.client_cert for seen in terminator.seen] == ["agentsession-test-client"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"host": "localhost", "ssl_mode": "VERIFY_IDENTITY", "ssl_ca": "other"}, "verify failed"),
        ({"ssl_mode": "VERIFY_CA", "ssl_ca": "other"}, "verify failed"),
        ({"ssl_mode": "VERIFY_IDENTITY", "ssl_ca": "ca"}, "IP address mismatch"),
        ({"ssl_ca": "ca"}, "IP address mismatch"),
    ],
)
async def test_mysql_tls_refused(
    params: dict[str, str], reason: str, certs: Certs, tmp_path: Path
) -> None:
    files = {"other": str(certs.other_ca), "ca": str(certs.ca)}
    params = {**params, "ssl_ca": files[params["ssl_ca"]]}
    async with tls_in_front("mysql", certs, tmp_path) as (terminator, url):
        bad = url(**params)
        # aiomysql itself says only "Can't connect to MySQL server": the engine's
        # connect function names the TLS failure, with MySQL's error number
        error = await within(5, connect_error(bad))
        assert isinstance(error, DBAPIError)
        assert error.orig is not None
        assert error.orig.args[0] == 2026
        assert isinstance(error.orig.__cause__, ssl.SSLCertVerificationError)
        assert "SSL connection error: [SSL: CERTIFICATE_VERIFY_FAILED]" in str(error)
        assert reason in str(error)
        unavailable = await within(5, store_error(bad))
        assert "SSL connection error: [SSL: CERTIFICATE_VERIFY_FAILED]" in str(unavailable)
        assert reason in str(unavailable)
        assert not any(seen.tls for seen in terminator.seen)


async def test_mysql_required_refuses_before_logging_in(certs: Certs, tmp_path: Path) -> None:
    """A server, or a man in the middle, that offers no TLS gets no login (aiomysql
    alone logs in in plain text, and would send the password in clear if asked:
    CVE-2017-3305's flaw)."""
    async with tls_in_front("mysql", certs, tmp_path, offer_tls=False) as (terminator, url):
        for params in ({"ssl_mode": "REQUIRED"}, {"host": "localhost", "ssl_ca": str(certs.ca)}):
            terminator.seen.clear()
            error = await within(5, connect_error(url(**params)))
            assert isinstance(error, DBAPIError)
            assert error.orig is not None
            assert error.orig.args[0] == 2026
            assert "requires TLS but the server does not support it" in str(error)
            assert len(terminator.seen) == 1
            assert not terminator.seen[0].plain_login
        # PREFERRED goes on in plain text, as it should
        terminator.seen.clear()
        assert await scalar(url(ssl_mode="PREFERRED"), "SELECT 1") == 1
        assert [seen.plain_login for seen in terminator.seen] == [True]
