"""Tests of agentsession.config: files, ${VAR} substitution, env overrides, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agentsession.config import (
    AgentSessionConfig,
    CookieConfig,
    RetentionConfig,
    ServiceConfig,
    config_from_mapping,
    load_config,
    parse_duration,
)
from agentsession.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentsession.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def build(env: dict[str, str] | None = None, /, **sections: object) -> AgentSessionConfig:
    return AgentSessionConfig.from_mapping(sections, env=env or {})


# --- defaults --------------------------------------------------------------------------------


def test_defaults_without_file_or_env() -> None:
    config = load_config(env={})
    assert config == AgentSessionConfig()
    assert config.session == CookieConfig()
    assert config.session.cookie_name == "session"
    assert config.session.max_age == 14 * 24 * 3600
    assert config.session.same_site == "lax"
    assert config.session.https_only == "auto"
    assert config.session.secret_key is None
    assert config.session_service == ServiceConfig(type="memory", database_url=None, pool_size=10)
    assert config.data_retention == RetentionConfig()
    assert config.data_retention.cleanup_interval_hours == 24
    assert config.data_retention.batch_size == 1000


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_SECRET_KEY", "from-the-real-environment")
    monkeypatch.setenv("DATA_RETENTION_BATCH_SIZE", "7")
    config = load_config()
    assert config.session.secret_key == "from-the-real-environment"
    assert config.data_retention.batch_size == 7


def test_configs_are_frozen() -> None:
    config = AgentSessionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.session.cookie_name = "x"  # type: ignore[misc]


def test_secrets_are_not_in_repr() -> None:
    config = build(
        session={"secret_key": "s3cr3t-value", "secret_key_fallbacks": ["old-s3cr3t"]},
        session_service={"type": "sql", "database_url": "postgresql://u:pw-s3cr3t@h/db"},
    )
    assert "s3cr3t" not in repr(config)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing here\n"), env={}) == AgentSessionConfig()


def test_null_sections_give_defaults(tmp_path: Path) -> None:
    text = "session:\nsession_service:\ndata_retention:\n"
    assert load_config(write(tmp_path, text), env={}) == AgentSessionConfig()


def test_unknown_top_level_keys_are_ignored(tmp_path: Path) -> None:
    text = "app_name: chat\nagents: [a, b]\nsession:\n  cookie_name: sid\n"
    assert load_config(write(tmp_path, text), env={}).session.cookie_name == "sid"


def test_str_path_and_pathlike_both_work(tmp_path: Path) -> None:
    path = write(tmp_path, "session:\n  cookie_name: sid\n")
    assert load_config(str(path), env={}) == load_config(path, env={})


# --- a full file -------------------------------------------------------------------------------


FULL = """\
session:
  secret_key: "${SESSION_SECRET_KEY}"
  secret_key_fallbacks: [old-1, old-2]
  cookie_name: "agent_sid"
  max_age: "7d"
  path: "/app"
  domain: example.com
  same_site: "STRICT"
  https_only: true
  partitioned: true
  refresh_after: "1h"
session_service:
  type: "SQL"
  database_url: "${WEB_UI_GATEWAY_DATABASE_URL, sqlite:///webui-gateway.db}"
  ttl: "30m"
  pool_size: 5
data_retention:
  enabled: false
  task_retention_days: 30
  feedback_retention_days: 60
  session_retention_days: 365
  cleanup_interval_hours: 0.5
  batch_size: 250
"""


def test_full_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), env={"SESSION_SECRET_KEY": "k" * 40})
    assert config.session == CookieConfig(
        secret_key="k" * 40,
        secret_key_fallbacks=("old-1", "old-2"),
        cookie_name="agent_sid",
        max_age=7 * 86400,
        path="/app",
        domain="example.com",
        same_site="strict",
        https_only=True,
        partitioned=True,
        refresh_after=3600,
    )
    assert config.session_service == ServiceConfig(
        type="sql", database_url="sqlite:///webui-gateway.db", ttl=1800, pool_size=5
    )
    assert config.data_retention == RetentionConfig(
        enabled=False,
        task_retention_days=30,
        feedback_retention_days=60,
        session_retention_days=365,
        cleanup_interval_hours=0.5,
        batch_size=250,
    )


def test_from_mapping_and_config_from_mapping_agree() -> None:
    data = {"session": {"cookie_name": "sid"}, "data_retention": {"batch_size": 5}}
    assert config_from_mapping(data, env={}) == AgentSessionConfig.from_mapping(data, env={})
    assert config_from_mapping(data, env={}).data_retention.batch_size == 5


# --- ${VAR} substitution --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${NAME}", {"NAME": "sid"}, "sid"),
        ("${ NAME }", {"NAME": "sid"}, "sid"),
        ("${NAME, fallback}", {"NAME": "sid"}, "sid"),
        ("${NAME, fallback}", {}, "fallback"),
        ("${NAME,fallback}", {}, "fallback"),
        ("${ NAME , fallback }", {}, "fallback"),
        ("${NAME, fallback}", {"NAME": ""}, "fallback"),
        ("pre_${A}_${B, two}_post", {"A": "one"}, "pre_one_two_post"),
    ],
)
def test_substitution(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    path = write(tmp_path, f'session:\n  cookie_name: "{text}"\n')
    assert load_config(path, env=env).session.cookie_name == expected


def test_default_may_contain_colons_and_slashes(tmp_path: Path) -> None:
    path = write(tmp_path, 'session_service:\n  database_url: "${DB, mysql://u:p@h:3306/d?x=1}"\n')
    assert load_config(path, env={}).session_service.database_url == "mysql://u:p@h:3306/d?x=1"


def test_unset_variable_without_default_is_empty_string(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'session:\n  path: "/${PREFIX}"\n  secret_key: "${SESSION_SECRET_KEY}"\n'
    )
    config = load_config(path, env={})
    assert config.session.path == "/"
    assert config.session.secret_key is None  # an empty secret means "not set"


def test_empty_default(tmp_path: Path) -> None:
    path = write(tmp_path, 'session:\n  domain: "${COOKIE_DOMAIN, }"\n')
    assert load_config(path, env={}).session.domain is None


def test_substituted_values_keep_yaml_types(tmp_path: Path) -> None:
    text = (
        "data_retention:\n"
        "  task_retention_days: ${TASK_DAYS, 90}\n"
        "  enabled: ${ENABLED, true}\n"
        "  cleanup_interval_hours: ${HOURS, 1.5}\n"
        "session:\n"
        "  partitioned: ${PARTITIONED}\n"
        "  max_age: ${MAX_AGE, 3600}\n"
    )
    path = write(tmp_path, text)
    config = load_config(path, env={"PARTITIONED": "false"})
    assert config.data_retention.task_retention_days == 90
    assert type(config.data_retention.task_retention_days) is int
    assert config.data_retention.enabled is True
    assert config.data_retention.cleanup_interval_hours == 1.5
    assert config.session.partitioned is False
    assert config.session.max_age == 3600

    config = load_config(path, env={"TASK_DAYS": "7", "ENABLED": "false", "PARTITIONED": "true"})
    assert config.data_retention.task_retention_days == 7
    assert config.data_retention.enabled is False
    assert config.session.partitioned is True


def test_substitution_only_recognises_variable_names(tmp_path: Path) -> None:
    path = write(tmp_path, "session:\n  cookie_name: \"$HOME\"\n  path: '/${1X}'\n")
    config = load_config(path, env={"HOME": "/root"})
    assert config.session.cookie_name == "$HOME"
    assert config.session.path == "/${1X}"


# --- environment overrides ------------------------------------------------------------------


def test_env_secret_key_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "session:\n  secret_key: from-file\n")
    assert load_config(path, env={}).session.secret_key == "from-file"
    assert load_config(path, env={"SESSION_SECRET_KEY": "env"}).session.secret_key == "env"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a,b", ("a", "b")),
        (" a , b ,, ", ("a", "b")),
        ("single", ("single",)),
        (",,", ()),
    ],
)
def test_env_secret_key_fallbacks(value: str, expected: tuple[str, ...]) -> None:
    config = build({"SESSION_SECRET_KEY_FALLBACKS": value})
    assert config.session.secret_key_fallbacks == expected


@pytest.mark.parametrize("var", ["SESSION_DATABASE_URL", "WEB_UI_GATEWAY_DATABASE_URL"])
def test_env_database_url_switches_to_sql(var: str) -> None:
    config = build({var: "sqlite:///x.db"}, session_service={"type": "memory"})
    assert config.session_service.type == "sql"
    assert config.session_service.database_url == "sqlite:///x.db"


def test_session_database_url_wins_over_alias() -> None:
    env = {
        "SESSION_DATABASE_URL": "sqlite:///a.db",
        "WEB_UI_GATEWAY_DATABASE_URL": "sqlite:///b.db",
    }
    assert build(env).session_service.database_url == "sqlite:///a.db"


def test_env_database_url_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "session_service:\n  type: sql\n  database_url: sqlite:///file.db\n")
    config = load_config(path, env={"SESSION_DATABASE_URL": "postgresql://h/db"})
    assert config.session_service.database_url == "postgresql://h/db"


@pytest.mark.parametrize(
    ("var", "value", "attr", "expected"),
    [
        ("DATA_RETENTION_ENABLED", "false", "enabled", False),
        ("DATA_RETENTION_ENABLED", "FALSE", "enabled", False),
        ("DATA_RETENTION_ENABLED", "0", "enabled", False),
        ("DATA_RETENTION_ENABLED", "no", "enabled", False),
        ("DATA_RETENTION_ENABLED", "Off", "enabled", False),
        ("DATA_RETENTION_ENABLED", "true", "enabled", True),
        ("DATA_RETENTION_ENABLED", "1", "enabled", True),
        ("DATA_RETENTION_ENABLED", "YES", "enabled", True),
        ("DATA_RETENTION_ENABLED", " on ", "enabled", True),
        ("DATA_RETENTION_TASK_DAYS", "7", "task_retention_days", 7),
        ("DATA_RETENTION_TASK_DAYS", "0", "task_retention_days", 0),
        ("DATA_RETENTION_FEEDBACK_DAYS", "14", "feedback_retention_days", 14),
        ("DATA_RETENTION_SESSION_DAYS", " 30 ", "session_retention_days", 30),
        ("DATA_RETENTION_CLEANUP_HOURS", "6", "cleanup_interval_hours", 6.0),
        ("DATA_RETENTION_CLEANUP_HOURS", "0.25", "cleanup_interval_hours", 0.25),
        ("DATA_RETENTION_BATCH_SIZE", "50", "batch_size", 50),
    ],
)
def test_env_retention_overrides(var: str, value: str, attr: str, expected: object) -> None:
    enabled_in_file = {"enabled": not expected} if attr == "enabled" else {}
    config = build({var: value}, data_retention=enabled_in_file)
    assert getattr(config.data_retention, attr) == expected
    assert type(getattr(config.data_retention, attr)) is type(expected)


def test_env_overrides_beat_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, "data_retention:\n  task_retention_days: 90\n  batch_size: 10\n")
    config = load_config(path, env={"DATA_RETENTION_TASK_DAYS": "3"})
    assert config.data_retention.task_retention_days == 3
    assert config.data_retention.batch_size == 10


@pytest.mark.parametrize(
    "var",
    [
        "SESSION_SECRET_KEY",
        "SESSION_SECRET_KEY_FALLBACKS",
        "SESSION_DATABASE_URL",
        "WEB_UI_GATEWAY_DATABASE_URL",
        "DATA_RETENTION_ENABLED",
        "DATA_RETENTION_TASK_DAYS",
        "DATA_RETENTION_FEEDBACK_DAYS",
        "DATA_RETENTION_SESSION_DAYS",
        "DATA_RETENTION_CLEANUP_HOURS",
        "DATA_RETENTION_BATCH_SIZE",
    ],
)
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_env_values_are_ignored(var: str, value: str) -> None:
    assert build({var: value}) == AgentSessionConfig()


def test_unrelated_env_is_ignored() -> None:
    assert build({"PATH": "/bin", "SESSION_COOKIE": "x"}) == AgentSessionConfig()


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DATA_RETENTION_ENABLED", "maybe"),
        ("DATA_RETENTION_ENABLED", "2"),
        ("DATA_RETENTION_TASK_DAYS", "abc"),
        ("DATA_RETENTION_TASK_DAYS", "-1"),
        ("DATA_RETENTION_TASK_DAYS", "1.5"),
        ("DATA_RETENTION_FEEDBACK_DAYS", "ten"),
        ("DATA_RETENTION_SESSION_DAYS", "-3"),
        ("DATA_RETENTION_CLEANUP_HOURS", "0"),
        ("DATA_RETENTION_CLEANUP_HOURS", "-1"),
        ("DATA_RETENTION_CLEANUP_HOURS", "soon"),
        ("DATA_RETENTION_CLEANUP_HOURS", "nan"),
        ("DATA_RETENTION_CLEANUP_HOURS", "inf"),
        ("DATA_RETENTION_BATCH_SIZE", "0"),
        ("DATA_RETENTION_BATCH_SIZE", "many"),
    ],
)
def test_bad_env_values(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({var: value})
    assert var in str(info.value)
    assert repr(value) in str(info.value)


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("24h", 86400),
        ("7d", 604800),
        ("3600", 3600),
        (" 5m ", 300),
        ("0", 0),
        ("0s", 0),
        (3600, 3600),
        (0, 0),
        (60.0, 60),
    ],
)
def test_parse_duration(value: object, seconds: int) -> None:
    assert parse_duration(value, "x.y") == seconds


def test_parse_duration_none() -> None:
    assert parse_duration(None, "x.y", allow_none=True) is None
    with pytest.raises(ConfigError, match=r"x\.y"):
        parse_duration(None, "x.y")


@pytest.mark.parametrize(
    "value",
    ["1.5h", "5 m", "5M", "5w", "h", "", "-5m", "-1", -1, True, False, 1.5, [], {}, "ten"],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "session.max_age")
    assert "session.max_age" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("key", ["max_age", "refresh_after"])
@pytest.mark.parametrize(("value", "seconds"), [("7d", 604800), (60, 60), (None, None)])
def test_cookie_durations(key: str, value: object, seconds: int | None) -> None:
    assert getattr(build(session={key: value}).session, key) == seconds


@pytest.mark.parametrize(("value", "seconds"), [("30m", 1800), (86400, 86400), (None, None)])
def test_service_ttl(value: object, seconds: int | None) -> None:
    assert build(session_service={"ttl": value}).session_service.ttl == seconds


def test_durations_from_yaml(tmp_path: Path) -> None:
    text = "session:\n  max_age: null\n  refresh_after: 3600\nsession_service:\n  ttl: 7d\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.session.max_age is None
    assert config.session.refresh_after == 3600
    assert config.session_service.ttl == 604800


@pytest.mark.parametrize(
    ("max_age", "refresh_after", "expected"),
    [
        (14 * 86400, None, 14 * 86400 // 10),
        (1000, None, 100),
        (1000, 30, 30),
        (1000, 0, 0),
        (None, None, None),
        (None, 60, 60),
        (0, None, None),
        (-1, None, None),
        (5, None, 0),
    ],
)
def test_effective_refresh_after(
    max_age: int | None, refresh_after: int | None, expected: int | None
) -> None:
    cookie = CookieConfig(max_age=max_age, refresh_after=refresh_after)
    assert cookie.effective_refresh_after == expected


# --- other valid values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"), [("lax", "lax"), ("Strict", "strict"), ("NONE", "none")]
)
def test_same_site_is_case_insensitive(value: str, stored: str) -> None:
    assert build(session={"same_site": value}).session.same_site == stored


@pytest.mark.parametrize(
    ("value", "stored"), [(True, True), (False, False), ("auto", "auto"), ("AUTO", "auto")]
)
def test_https_only(value: object, stored: object) -> None:
    assert build(session={"https_only": value}).session.https_only == stored


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ([], ()),
        (["a", "b"], ("a", "b")),
        (["a", ""], ("a",)),
        ("a, b", ("a", "b")),
        ("", ()),
    ],
)
def test_secret_key_fallbacks(value: object, expected: tuple[str, ...]) -> None:
    assert build(session={"secret_key_fallbacks": value}).session.secret_key_fallbacks == expected


@pytest.mark.parametrize(("value", "expected"), [("", None), (None, None), ("key", "key")])
def test_secret_key(value: object, expected: str | None) -> None:
    assert build(session={"secret_key": value}).session.secret_key == expected


def test_memory_type_needs_no_url() -> None:
    config = build(session_service={"type": "memory", "database_url": ""})
    assert config.session_service == ServiceConfig()


def test_int_fields_accept_whole_floats_and_digit_strings() -> None:
    config = build(data_retention={"task_retention_days": 30.0, "batch_size": "20"})
    assert config.data_retention.task_retention_days == 30
    assert type(config.data_retention.task_retention_days) is int
    assert config.data_retention.batch_size == 20


def test_cleanup_interval_accepts_ints_and_fractions() -> None:
    assert (
        build(data_retention={"cleanup_interval_hours": 2}).data_retention.cleanup_interval_hours
        == 2
    )
    assert (
        build(data_retention={"cleanup_interval_hours": 0.1}).data_retention.cleanup_interval_hours
        == 0.1
    )


# --- invalid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("session", "max_age", "1.5h"),
        ("session", "max_age", "forever"),
        ("session", "max_age", "-5m"),
        ("session", "max_age", "-1d"),
        ("session", "max_age", True),
        ("session", "refresh_after", "10x"),
        ("session", "cookie_name", ""),
        ("session", "cookie_name", "my session"),
        ("session", "cookie_name", "a;b"),
        ("session", "cookie_name", "a,b"),
        ("session", "cookie_name", "a=b"),
        ("session", "cookie_name", 5),
        ("session", "cookie_name", None),
        ("session", "path", "app"),
        ("session", "path", ""),
        ("session", "path", "/a;b"),
        ("session", "path", None),
        ("session", "domain", "a b.com"),
        ("session", "domain", "a.com;x"),
        ("session", "domain", 5),
        ("session", "same_site", "sometimes"),
        ("session", "same_site", True),
        ("session", "same_site", None),
        ("session", "https_only", "yes-please"),
        ("session", "https_only", 1),
        ("session", "https_only", None),
        ("session", "partitioned", "true"),
        ("session", "partitioned", 1),
        ("session_service", "type", "redis"),
        ("session_service", "type", None),
        ("session_service", "ttl", "2 days"),
        ("session_service", "ttl", -1),
        ("session_service", "pool_size", 0),
        ("session_service", "pool_size", "big"),
        ("session_service", "pool_size", True),
        ("data_retention", "enabled", "yes"),
        ("data_retention", "enabled", 1),
        ("data_retention", "enabled", None),
        ("data_retention", "task_retention_days", 1.5),
        ("data_retention", "task_retention_days", -1),
        ("data_retention", "task_retention_days", True),
        ("data_retention", "task_retention_days", "90d"),
        ("data_retention", "task_retention_days", None),
        ("data_retention", "feedback_retention_days", -10),
        ("data_retention", "feedback_retention_days", 2.5),
        ("data_retention", "session_retention_days", False),
        ("data_retention", "session_retention_days", [1]),
        ("data_retention", "cleanup_interval_hours", 0),
        ("data_retention", "cleanup_interval_hours", -1),
        ("data_retention", "cleanup_interval_hours", True),
        ("data_retention", "cleanup_interval_hours", float("inf")),
        ("data_retention", "cleanup_interval_hours", "often"),
        ("data_retention", "batch_size", 0),
        ("data_retention", "batch_size", -5),
        ("data_retention", "batch_size", 10.5),
        ("data_retention", "batch_size", False),
    ],
)
def test_invalid_values(section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        build(**{section: {key: value}})
    assert f"{section}.{key}" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("session:\n  max_age: 1.5h\n", "session.max_age"),
        ("data_retention:\n  task_retention_days: 1.5\n", "data_retention.task_retention_days"),
        ("data_retention:\n  batch_size: 0\n", "data_retention.batch_size"),
        ("data_retention:\n  enabled: maybe\n", "data_retention.enabled"),
        ("data_retention:\n  cleanup_interval_hours: 0\n", "data_retention.cleanup_interval_hours"),
        ("session:\n  same_site: sometimes\n", "session.same_site"),
    ],
)
def test_invalid_values_from_file(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text), env={})


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("session", "secret"),
        ("session", "cookie"),
        ("session_service", "url"),
        ("data_retention", "task_days"),
    ],
)
def test_unknown_key_in_section(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        build(**{section: {key: "x"}})


def test_unknown_key_error_hides_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        build(session={"secret_kye": "s3cr3t-value"})
    assert "session.secret_kye" in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("section", ["session", "session_service", "data_retention"])
@pytest.mark.parametrize("value", ["text", ["a", "b"], 5, True])
def test_section_must_be_a_mapping(section: str, value: object) -> None:
    with pytest.raises(ConfigError, match=section):
        build(**{section: value})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_from_mapping_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        AgentSessionConfig.from_mapping(["session"], env={})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "session: [unclosed\n",
        "session:\n  a: b: c\n",
        'session:\n  cookie_name: "x\n',
        "\tsession: 1\n",
    ],
)
def test_bad_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="YAML") as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


def test_bad_yaml_error_does_not_show_substituted_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "session:\n  secret_key: ${SESSION_SECRET_KEY}\n  : [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"SESSION_SECRET_KEY": "s3cr3t-value"})
    assert "s3cr3t" not in str(info.value)


def test_unsafe_yaml_tags_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "session: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path, env={})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(path, env={})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, env={})


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"session:\n  cookie_name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("sections", "env"),
    [
        ({"session_service": {"type": "sql"}}, {}),
        ({"session_service": {"type": "sql", "database_url": None}}, {}),
        ({"session_service": {"type": "sql", "database_url": ""}}, {}),
        ({"session_service": {"type": "sql"}}, {"SESSION_DATABASE_URL": ""}),
    ],
)
def test_sql_requires_database_url(sections: dict[str, object], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"session_service\.database_url"):
        build(env, **sections)


def test_sql_without_url_from_unset_variable(tmp_path: Path) -> None:
    text = 'session_service:\n  type: sql\n  database_url: "${WEB_UI_GATEWAY_DATABASE_URL}"\n'
    with pytest.raises(ConfigError, match=r"session_service\.database_url"):
        load_config(write(tmp_path, text), env={})


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("session", "secret_key", 1234567890),
        ("session", "secret_key", ["s3cr3t"]),
        ("session", "secret_key_fallbacks", [1234567890]),
        ("session", "secret_key_fallbacks", {"k": "s3cr3t"}),
        ("session_service", "database_url", 1234567890),
        ("session_service", "database_url", ["postgresql://u:s3cr3t@h/db"]),
    ],
)
def test_secret_errors_hide_the_value(section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        build(**{section: {key: value}})
    message = str(info.value)
    assert f"{section}.{key}" in message
    assert "(hidden)" in message
    assert "s3cr3t" not in message
    assert "1234567890" not in message


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"data_retention\.batch_size"):
        build(data_retention={"batch_size": 0})


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://user:pw@cache.example.com:6380/2", "redis"),
        ("unix:///run/redis.sock?db=1", "redis"),
        ("REDIS://host/0", "redis"),
        ("postgresql://db/app", "sql"),
        ("sqlite:///x.db", "sql"),
    ],
)
def test_the_database_urls_scheme_picks_the_store(url: str, kind: str) -> None:
    config = AgentSessionConfig.from_mapping({}, env={"SESSION_DATABASE_URL": url})
    assert (config.session_service.type, config.session_service.database_url) == (kind, url)


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (
            {"type": "sql", "database_url": "redis://h/0"},
            "session_service.type is 'sql', but session_service.database_url is a Redis URL; "
            "set session_service.type to 'redis'",
        ),
        (
            {"type": "redis", "database_url": "postgresql://db/app"},
            "session_service.type is 'redis', but session_service.database_url is a SQL "
            "database URL; set session_service.type to 'sql'",
        ),
        (
            {"type": "redis"},
            "session_service.database_url is required when session_service.type is 'redis' "
            "(set it in the file or with SESSION_DATABASE_URL)",
        ),
        (
            {"type": "redis", "database_url": "redis://h/0", "schema": "data"},
            "session_service.schema: 'data' is set, but only PostgreSQL has schemas and "
            "session_service.type is 'redis'",
        ),
    ],
)
def test_a_store_type_that_does_not_fit_the_url_is_refused(
    service: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        AgentSessionConfig.from_mapping({"session_service": service}, env={})
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("value", "seconds"), [(3, 3.0), (2.5, 2.5), ("2.5", 2.5), ("3s", 3.0), ("1m", 60.0)]
)
def test_the_store_call_timeout(value: object, seconds: float) -> None:
    config = AgentSessionConfig.from_mapping({"session_service": {"timeout": value}}, env={})
    assert config.session_service.timeout == seconds
    assert AgentSessionConfig.from_mapping({}, env={}).session_service.timeout == 10.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "session_service.timeout: must be greater than 0, got 0"),
        ("0s", "session_service.timeout: must be greater than 0, got '0s'"),
        ("nan", "session_service.timeout: expected a number, got 'nan'"),
        (None, "session_service.timeout: expected a number, got None"),
        (
            "soon",
            "session_service.timeout: expected a duration: whole seconds or a number with s, "
            "m, h or d, got 'soon'",
        ),
    ],
)
def test_a_bad_store_call_timeout_is_refused(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        AgentSessionConfig.from_mapping({"session_service": {"timeout": value}}, env={})
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("sesion", "session"),
        ("Session", "session"),
        ("session_servce", "session_service"),
        ("sessionservice", "session_service"),
        ("data_retension", "data_retention"),
        ("dataretention", "data_retention"),
    ],
)
def test_a_misspelled_section_is_refused(key: str, meant: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentSessionConfig.from_mapping({key: {}}, env={})
    assert str(info.value) == (
        f"{key}: unknown top-level section; did you mean {meant}? "
        "(the sections are session, session_service, data_retention)"
    )


@pytest.mark.parametrize("key", ["my_app", "agents", "logging", "server", "retention_of_logs"])
def test_the_apps_own_sections_are_left_alone(key: str) -> None:
    config = AgentSessionConfig.from_mapping({key: {"anything": 1}}, env={})
    assert config == AgentSessionConfig.from_mapping({}, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'session:\n  cookie_name: "x\n',
            "while scanning a quoted scalar (line 2, column 16); "
            "found unexpected end of stream (line 3, column 1)",
        ),
        (
            "session:\n  max_age: [1, 2\nfoo: 1\n",
            "while parsing a flow sequence (line 2, column 12); "
            "expected ',' or ']', but got ':' (line 3, column 4)",
        ),
        (
            "session:\n  max_age: 1\n   bad: 2\n",
            "mapping values are not allowed here (line 3, column 7)",
        ),
    ],
)
def test_bad_yaml_is_reported_with_pyyamls_context(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"config file {str(path)!r} is not valid YAML: {message}"
