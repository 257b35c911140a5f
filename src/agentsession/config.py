"""Configuration: the ``session``, ``session_service`` and ``data_retention`` sections.

A YAML file (``${VAR}`` / ``${VAR, default}`` substituted from the environment
before parsing) and/or the environment give one frozen ``AgentSessionConfig``.
Every value is validated here, so the rest of the package can trust it; a bad
value raises ``ConfigError`` naming the key (or the environment variable).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from agentsession.errors import ConfigError

__all__ = [
    "AgentSessionConfig",
    "CookieConfig",
    "RetentionConfig",
    "ServiceConfig",
    "check_prefix",
    "check_schema",
    "check_search_language",
    "check_table_name",
    "config_from_mapping",
    "cookie_config",
    "cookie_environment",
    "is_redis_url",
    "load_config",
    "parse_duration",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieConfig:
    """The signed-cookie layer; durations in seconds, secrets kept out of repr."""

    secret_key: str | None = field(default=None, repr=False)
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    cookie_name: str = "session"
    max_age: int | None = 14 * 24 * 3600
    path: str = "/"
    domain: str | None = None
    same_site: Literal["lax", "strict", "none"] = "lax"
    https_only: bool | Literal["auto"] = "auto"
    partitioned: bool = False
    refresh_after: int | None = None
    #: Seconds a revocation may take to reach every instance: the longest a process
    #: trusts its cached revocation list before asking the store again.
    revocation_staleness: float = 5.0

    @property
    def effective_refresh_after(self) -> int | None:
        """Age after which a cookie is re-sent: ``refresh_after``, else a tenth of ``max_age``."""
        if self.refresh_after is not None:
            return self.refresh_after
        if self.max_age is not None and self.max_age > 0:
            return self.max_age // 10
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Where conversations live: ``memory``, ``sql`` / ``redis`` at ``database_url``, or
    ``dynamodb`` in table ``table_name``."""

    type: Literal["memory", "sql", "redis", "dynamodb"] = "memory"
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    ttl: int | None = None
    pool_size: int = 10
    #: Seconds a store call may take before it fails with ``StoreUnavailable`` (a 503).
    timeout: float = 10.0
    #: Names the SQL tables ``<prefix>sessions`` etc., beside an app's own tables.
    table_prefix: str = ""
    #: PostgreSQL only: the schema that holds the tables (created if missing).
    schema: str | None = None
    #: DynamoDB only: the table (default ``agentsession``), a local or compatible
    #: endpoint instead of AWS's, and the region (else the standard AWS chain's).
    table_name: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    #: PostgreSQL only: the text search configuration that search indexes and parses
    #: with (``simple``: no stemming, so ids and code are found as written).
    search_language: str = "simple"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionConfig:
    """What the retention scheduler prunes and how often."""

    enabled: bool = True
    task_retention_days: int = 90
    feedback_retention_days: int = 90
    session_retention_days: int = 0
    cleanup_interval_hours: float = 24
    batch_size: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSessionConfig:
    """The whole validated configuration of the package."""

    session: CookieConfig = field(default_factory=CookieConfig)
    session_service: ServiceConfig = field(default_factory=ServiceConfig)
    data_retention: RetentionConfig = field(default_factory=RetentionConfig)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, env: Mapping[str, str] | None = None
    ) -> AgentSessionConfig:
        """Validate an already-parsed document, then apply env overrides (default os.environ).

        Only the three known top-level sections are read; other keys belong to the app,
        except one spelled close to a known section (``sesion``, ``data_retension``),
        which is a ``ConfigError`` naming the section it probably meant. Pass ``env={}``
        to ignore the environment.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"the configuration must be a mapping, got {_show(data)}")
        env = os.environ if env is None else env
        _refuse_misspelled_sections(data)
        raw = {name: _read_section(data, name, fields) for name, fields in _SECTIONS.items()}
        for name, overrides in _env_overrides(env).items():
            raw[name].update(overrides)
        built = {
            name: _SECTION_TYPES[name](
                **{key: _SECTIONS[name][key](value, label) for key, (value, label) in items.items()}
            )
            for name, items in raw.items()
        }
        config = cls(**built)
        service = config.session_service
        _check_dynamodb(service)
        if service.type not in ("memory", "dynamodb") and not service.database_url:
            raise ConfigError(
                "session_service.database_url is required when session_service.type is "
                f"{service.type!r} (set it in the file or with SESSION_DATABASE_URL)"
            )
        if service.schema is not None and service.type != "sql":
            raise ConfigError(
                f"session_service.schema: {service.schema!r} is set, but only PostgreSQL has "
                f"schemas and session_service.type is {service.type!r}"
            )
        if service.database_url and service.type not in ("memory", "dynamodb"):
            redis_url = is_redis_url(service.database_url)
            if redis_url != (service.type == "redis"):
                want = "redis" if redis_url else "sql"
                raise ConfigError(
                    f"session_service.type is {service.type!r}, but session_service.database_url "
                    f"is {'a Redis' if redis_url else 'a SQL database'} URL; set "
                    f"session_service.type to {want!r}"
                )
        return config


def config_from_mapping(
    data: Mapping[str, object], *, env: Mapping[str, str] | None = None
) -> AgentSessionConfig:
    """Same as ``AgentSessionConfig.from_mapping``."""
    return AgentSessionConfig.from_mapping(data, env=env)


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> AgentSessionConfig:
    """Load the YAML file at ``path`` (optional) with ``${VAR, default}`` substitution and
    environment overrides from ``env`` (default ``os.environ``); raise ConfigError if invalid."""
    env = os.environ if env is None else env
    if path is None:
        return AgentSessionConfig.from_mapping({}, env=env)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {reason}") from exc
    text = _substitute(text, env)
    import yaml  # here, not at the top: cookie-only apps never read a file

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {os.fspath(path)!r} is not valid YAML: {_yaml_error(exc)}"
        ) from None  # PyYAML's own message carries a snippet: it could show a secret
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"config file {os.fspath(path)!r} must hold a mapping at the top level, "
            f"got {type(document).__name__}"
        )
    return AgentSessionConfig.from_mapping(document, env=env)


_DURATION = re.compile(r"(-?[0-9]+)([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, key: str, *, allow_none: bool = False) -> int | None:
    """Seconds from an int or a string like ``"30s" "5m" "1h" "7d" "3600"``; ``key`` names
    the setting in errors. ``None`` is accepted only with ``allow_none``."""
    if value is None:
        if allow_none:
            return None
        raise _fail(key, value, "expected a duration, it may not be null")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise _fail(
                key, value, "expected a duration: whole seconds or a number with s, m, h or d"
            )
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
        if seconds < 0:
            raise _fail(key, value, "a duration may not be negative")
        return seconds
    return _int(value, key, minimum=0)


#: ``SessionMiddleware``'s keyword arguments (Starlette's names) and the settings of the
#: ``session`` section they set.
COOKIE_ARGUMENTS: dict[str, str] = {
    "secret_key": "secret_key",
    "session_cookie": "cookie_name",
    "max_age": "max_age",
    "path": "path",
    "same_site": "same_site",
    "https_only": "https_only",
    "domain": "domain",
    "partitioned": "partitioned",
    "secret_key_fallbacks": "secret_key_fallbacks",
    "refresh_after": "refresh_after",
    "revocation_staleness": "revocation_staleness",
}


def cookie_config(arguments: Mapping[str, object]) -> CookieConfig:
    """The cookie settings given as ``SessionMiddleware`` keyword arguments.

    Each value goes through the parser its YAML setting goes through, so a bad one
    raises the same ``ConfigError``, naming the argument (``session_cookie: ...``).
    """
    parsers = _SECTIONS["session"]
    values: dict[str, Any] = {}
    for argument, value in arguments.items():
        setting = COOKIE_ARGUMENTS[argument]
        values[setting] = parsers[setting](value, argument)
    return CookieConfig(**values)


# --- private: reading sections ------------------------------------------------------------

_Parser = Callable[[object, str], Any]
_Raw = dict[str, tuple[object, str]]  # field -> (value, name to use in errors)


def _yaml_error(exc: Exception) -> str:
    """PyYAML's own words, with the line and column of each mark, but not its snippet.

    PyYAML's context ("while scanning a quoted scalar", with where that scalar began)
    comes first: for an unclosed quote or bracket its problem mark is the end of the
    file, and the context mark is the line at fault. The snippet is left out because
    it could show a secret substituted from the environment.
    """
    parts = []
    for text, mark in (
        (getattr(exc, "context", None), getattr(exc, "context_mark", None)),
        (getattr(exc, "problem", None), getattr(exc, "problem_mark", None)),
    ):
        if text or mark:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(f"{text or 'here'}{where}")
    return "; ".join(parts) or type(exc).__name__


def _refuse_misspelled_sections(data: Mapping[str, object]) -> None:
    """A top-level key close to a known section is a typo, not the app's own key.

    Ignoring it would run with defaults nobody chose (retention without its limits).
    """
    import difflib

    for key in data:
        if not isinstance(key, str) or key in _SECTIONS:
            continue
        close = difflib.get_close_matches(key.lower(), _SECTIONS, n=1, cutoff=0.75)
        if close:
            raise ConfigError(
                f"{key}: unknown top-level section; did you mean {close[0]}? "
                f"(the sections are {', '.join(_SECTIONS)})"
            )


def _read_section(data: Mapping[str, object], name: str, fields: Mapping[str, _Parser]) -> _Raw:
    section = data.get(name)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise _fail(name, section, "expected a mapping of settings")
    raw: _Raw = {}
    for key, value in section.items():
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown setting; expected one of {', '.join(fields)}")
        raw[key] = (value, f"{name}.{key}")
    return raw


def _env_overrides(env: Mapping[str, str]) -> dict[str, _Raw]:
    """The overrides set in ``env``, as raw values labelled with their variable's name."""
    out: dict[str, _Raw] = {name: {} for name in _SECTIONS}
    out["session"] = _session_overrides(env)

    def get(var: str) -> str | None:
        value = env.get(var)
        return value if value is not None and value.strip() else None

    for var in ("SESSION_DATABASE_URL", "WEB_UI_GATEWAY_DATABASE_URL"):
        if (url := get(var)) is not None:
            out["session_service"]["database_url"] = (url, var)
            kind = "redis" if is_redis_url(url) else "sql"
            out["session_service"]["type"] = (kind, var)
            break
    for var, key in (
        ("SESSION_TABLE_PREFIX", "table_prefix"),
        ("SESSION_DATABASE_SCHEMA", "schema"),
        ("SESSION_SEARCH_LANGUAGE", "search_language"),
        *DYNAMODB_ENV.items(),
    ):
        if (text := get(var)) is not None:
            out["session_service"][key] = (text.strip(), var)
    if (text := get("SESSION_DYNAMODB_TABLE")) is not None:
        out["session_service"]["type"] = ("dynamodb", "SESSION_DYNAMODB_TABLE")
    if (enabled := get("DATA_RETENTION_ENABLED")) is not None:
        var = "DATA_RETENTION_ENABLED"
        out["data_retention"]["enabled"] = (_env_bool(enabled, var), var)
    for var, key in _RETENTION_ENV.items():
        if (text := get(var)) is not None:
            out["data_retention"][key] = (text, var)
    return out


def _session_overrides(env: Mapping[str, str]) -> _Raw:
    """The ``session`` settings set in ``env``: the secret and its fallbacks, and the
    revocation staleness."""
    out: _Raw = {}
    for var, key in (
        ("SESSION_SECRET_KEY", "secret_key"),
        ("SESSION_SECRET_KEY_FALLBACKS", "secret_key_fallbacks"),
        ("SESSION_REVOCATION_STALENESS", "revocation_staleness"),
    ):
        value = env.get(var)
        if value is not None and value.strip():
            out[key] = (value, var)
    return out


def cookie_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The cookie settings the environment gives (``SESSION_SECRET_KEY``,
    ``SESSION_SECRET_KEY_FALLBACKS``), parsed as ``load_config`` parses them.

    What ``SessionMiddleware`` falls back on for the secret when neither its arguments
    nor its ``config=`` give one.
    """
    parsers = _SECTIONS["session"]
    raw = _session_overrides(os.environ if env is None else env)
    return {key: parsers[key](value, label) for key, (value, label) in raw.items()}


#: The URL schemes of a Redis server (``unix://`` is redis-py's Unix socket form).
REDIS_SCHEMES = ("redis", "rediss", "unix")


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server rather than a SQL database."""
    return url.strip().partition("://")[0].lower() in REDIS_SCHEMES


#: The longest table prefix: every name built from it (``fk_<p>feedback_task_id_<p>
#: chat_tasks`` is the longest) stays within PostgreSQL's 63 and MySQL's 64 characters.
MAX_PREFIX_LENGTH = 16
_SEARCH_LANGUAGE = re.compile(r"(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}")
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def check_prefix(prefix: object, setting: str = "session_service.table_prefix") -> str:
    """``prefix`` if it is a usable table-name prefix, else ``ConfigError`` naming ``setting``."""
    if not isinstance(prefix, str) or (prefix and not _SQL_NAME.fullmatch(prefix)):
        raise ConfigError(
            f"{setting}: {prefix!r} is not a table prefix; use lowercase letters, digits "
            "and underscores, starting with a letter or underscore (e.g. 'agentsession_')"
        )
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ConfigError(
            f"{setting}: {prefix!r} is {len(prefix)} characters; the limit is "
            f"{MAX_PREFIX_LENGTH} (index names built from it must fit the database's limit)"
        )
    return prefix


def check_search_language(
    language: object, setting: str = "session_service.search_language"
) -> str:
    """``language`` if it can name a PostgreSQL text search configuration
    (``simple``, ``english``, ``pg_catalog.german``...), else ``ConfigError``."""
    if not isinstance(language, str) or not _SEARCH_LANGUAGE.fullmatch(language):
        raise ConfigError(
            f"{setting}: {language!r} is not a text search configuration name; use "
            "lowercase letters, digits and '_' (e.g. 'simple', 'english'), optionally "
            "after a schema and a dot"
        )
    return language


def check_schema(schema: object, setting: str = "session_service.schema") -> str | None:
    """``schema`` if it is None or a plain lowercase identifier, else ``ConfigError``."""
    if schema is None:
        return None
    if not isinstance(schema, str) or not _SQL_NAME.fullmatch(schema) or len(schema) > 63:
        raise ConfigError(
            f"{setting}: {schema!r} is not a schema name; use up to 63 lowercase letters, "
            "digits and underscores, starting with a letter or underscore"
        )
    return schema


#: The DynamoDB settings' environment variables (the table's also selects the type).
DYNAMODB_ENV = {
    "SESSION_DYNAMODB_TABLE": "table_name",
    "SESSION_DYNAMODB_ENDPOINT_URL": "endpoint_url",
    "SESSION_DYNAMODB_REGION": "region",
}
_DYNAMODB_TABLE = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-[0-9]+")


def check_table_name(name: object, setting: str = "session_service.table_name") -> str | None:
    """``name`` if it is None or a DynamoDB table name, else ``ConfigError`` naming ``setting``."""
    if name is None:
        return None
    if not isinstance(name, str) or not _DYNAMODB_TABLE.fullmatch(name):
        raise ConfigError(
            f"{setting}: {name!r} is not a DynamoDB table name; use 3 to 255 letters, "
            "digits, '_', '-' and '.' (e.g. 'agentsession')"
        )
    return name


def _endpoint_url(value: object, key: str) -> str | None:
    """An ``http(s)://host[:port]`` endpoint (DynamoDB Local, a compatible service)."""
    if value is None:
        return None
    text = _str(value, key).strip()
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(key, value, "expected an http:// or https:// URL such as http://localhost:8000")
    return text


def _region(value: object, key: str) -> str | None:
    """An AWS region name such as ``eu-west-1``."""
    if value is None:
        return None
    text = _str(value, key).strip()
    if not _REGION.fullmatch(text):
        raise _fail(key, value, "expected an AWS region such as eu-west-1")
    return text


def _check_dynamodb(service: ServiceConfig) -> None:
    """The DynamoDB settings go with ``type: dynamodb``, and it with no ``database_url``."""
    if service.type == "dynamodb":
        if service.database_url:
            raise ConfigError(
                "session_service.type is 'dynamodb', but session_service.database_url is set "
                "(DynamoDB is named by session_service.table_name and endpoint_url); remove "
                "database_url (SESSION_DATABASE_URL) or set session_service.type to "
                "'sql' or 'redis'"
            )
        return
    for key in DYNAMODB_ENV.values():
        if getattr(service, key) is not None:
            raise ConfigError(
                f"session_service.{key} is set, but it is a DynamoDB setting and "
                f"session_service.type is {service.type!r}; set session_service.type to "
                "'dynamodb' (or SESSION_DYNAMODB_TABLE)"
            )


_RETENTION_ENV = {
    "DATA_RETENTION_TASK_DAYS": "task_retention_days",
    "DATA_RETENTION_FEEDBACK_DAYS": "feedback_retention_days",
    "DATA_RETENTION_SESSION_DAYS": "session_retention_days",
    "DATA_RETENTION_CLEANUP_HOURS": "cleanup_interval_hours",
    "DATA_RETENTION_BATCH_SIZE": "batch_size",
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _env_bool(text: str, var: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise _fail(var, text, "expected true/false, 1/0, yes/no or on/off")


_VAR = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:,([^}]*))?\}")


def _substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR, default}``; an unset or empty VAR gives the default
    (stripped), or the empty string when there is none."""

    def repl(match: re.Match[str]) -> str:
        value = env.get(match[1])
        if value:
            return value
        return (match[2] or "").strip()

    return _VAR.sub(repl, text)


# --- private: one parser per kind of value -----------------------------------------------


def _show(value: object, *, secret: bool = False) -> str:
    if secret:
        return "(hidden)"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(key: str, value: object, expected: str, *, secret: bool = False) -> ConfigError:
    return ConfigError(f"{key}: {expected}, got {_show(value, secret=secret)}")


def _int(value: object, key: str, *, minimum: int) -> int:
    number = value
    if isinstance(number, str) and re.fullmatch(r"[+-]?[0-9]+", number.strip(), re.ASCII):
        number = int(number)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if not isinstance(number, int) or isinstance(number, bool):
        raise _fail(key, value, "expected a whole number")
    if number < minimum:
        raise _fail(key, value, f"must be at least {minimum}")
    return number


def _positive_float(value: object, key: str) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise _fail(key, value, "expected a number")
    if number <= 0:
        raise _fail(key, value, "must be greater than 0")
    return number


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "expected true or false")
    return value


def _str(value: object, key: str, *, secret: bool = False) -> str:
    if not isinstance(value, str):
        raise _fail(key, value, "expected a string (quote it in YAML)", secret=secret)
    return value


def _optional_str(value: object, key: str, *, secret: bool = False) -> str | None:
    """None and the empty string (e.g. an unset ``${VAR}``) both mean "not set"."""
    return None if value is None or value == "" else _str(value, key, secret=secret)


def _choice(value: object, key: str, choices: tuple[str, ...]) -> str:
    word = _str(value, key).strip().lower()
    if word not in choices:
        raise _fail(key, value, f"expected one of {', '.join(choices)}")
    return word


def _fallbacks(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, list | tuple):
        raise _fail(key, value, "expected a list of strings", secret=True)
    items = (_str(item, f"{key}[{i}]", secret=True) for i, item in enumerate(value))
    return tuple(item for item in items if item.strip())


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", re.ASCII)
_UNSAFE = re.compile(r"[\x00-\x20\x7f;,]")


def _cookie_name(value: object, key: str) -> str:
    name = _str(value, key)
    if not _TOKEN.fullmatch(name):
        raise _fail(key, value, "expected a non-empty cookie name without spaces, ';', ',' or '='")
    return name


def _path(value: object, key: str) -> str:
    path = _str(value, key)
    if not path.startswith("/") or re.search(r"[\x00-\x1f\x7f;]", path):
        raise _fail(key, value, "expected a path starting with '/' and without ';'")
    return path


def _domain(value: object, key: str) -> str | None:
    domain = _optional_str(value, key)
    if domain is not None and _UNSAFE.search(domain):
        raise _fail(key, value, "expected a domain without spaces, ';' or ','")
    return domain


def _https_only(value: object, key: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    raise _fail(key, value, "expected true, false or 'auto'")


def _seconds(value: object, key: str) -> float:
    """A positive number of seconds, fractions allowed: ``3``, ``2.5``, ``"2.5s"``, ``"1m"``."""
    if isinstance(value, str):
        text = value.strip()
        number = text[:-1] if text.endswith("s") else text
        try:
            seconds = float(number)
        except ValueError:
            whole = parse_duration(text, key)  # "1m", "1h": whole units
            assert whole is not None
            seconds = float(whole)
        if not math.isfinite(seconds):
            raise _fail(key, value, "expected a number")
        if seconds <= 0:
            raise _fail(key, value, "must be greater than 0")
        return seconds
    return _positive_float(value, key)


def _nullable_duration(value: object, key: str) -> int | None:
    return parse_duration(value, key, allow_none=True)


def _max_age(value: object, key: str) -> int | None:
    """A duration or None (a browser-session cookie). A negative whole number is taken,
    as Starlette takes it: every cookie is then already expired."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_duration(value, key, allow_none=True)


def _days(value: object, key: str) -> int:
    return _int(value, key, minimum=0)


def _at_least_one(value: object, key: str) -> int:
    return _int(value, key, minimum=1)


_SECTIONS: dict[str, dict[str, _Parser]] = {
    "session": {
        "secret_key": lambda v, k: _optional_str(v, k, secret=True),
        "secret_key_fallbacks": _fallbacks,
        "cookie_name": _cookie_name,
        "max_age": _max_age,
        "path": _path,
        "domain": _domain,
        "same_site": lambda v, k: _choice(v, k, ("lax", "strict", "none")),
        "https_only": _https_only,
        "partitioned": _bool,
        "refresh_after": _nullable_duration,
        "revocation_staleness": _seconds,
    },
    "session_service": {
        "type": lambda v, k: _choice(v, k, ("memory", "sql", "redis", "dynamodb")),
        "database_url": lambda v, k: _optional_str(v, k, secret=True),
        "ttl": _nullable_duration,
        "pool_size": _at_least_one,
        "timeout": _seconds,
        "table_prefix": lambda v, k: check_prefix(v, k),
        "schema": lambda v, k: check_schema(v, k),
        "table_name": lambda v, k: check_table_name(v, k),
        "endpoint_url": _endpoint_url,
        "region": _region,
        "search_language": lambda v, k: check_search_language(v, k),
    },
    "data_retention": {
        "enabled": _bool,
        "task_retention_days": _days,
        "feedback_retention_days": _days,
        "session_retention_days": _days,
        "cleanup_interval_hours": _positive_float,
        "batch_size": _at_least_one,
    },
}
_SECTION_TYPES: dict[str, Callable[..., Any]] = {
    "session": CookieConfig,
    "session_service": ServiceConfig,
    "data_retention": RetentionConfig,
}
