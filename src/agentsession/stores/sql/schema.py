"""The tables of the persistence layer (README: Persistence): the single source of the schema.

Column types work on SQLite, PostgreSQL and MySQL/MariaDB alike: explicit VARCHAR
lengths (MySQL needs them for keys), BigInteger epoch milliseconds for every time,
JSON kept as text (LONGTEXT on MySQL, whose TEXT stops at 64 KiB). Ids compare and
sort byte for byte on every database (``"Abc"``, ``"abc"`` and ``"abc "`` are three
conversations): the "C" collation on PostgreSQL, and on MySQL InnoDB tables in
utf8mb4 with a binary collation that does not pad (the migration picks
``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin`` on MySQL 8).
The Alembic migrations in ``migrations/`` create exactly these tables.

``tables(prefix, schema)`` builds them under a name prefix (and, on PostgreSQL, in a
schema), so the package lives beside an app's own tables
(``session_service.table_prefix`` / ``schema``); the module-level names are the
default set: ``sessions``, ``chat_tasks``, ``feedback``, ``agentsession_leases``,
``agentsession_revocations``.

Search (migration 0005): ``sessions.search_name`` and ``chat_tasks.search`` hold what
is searched, written by the statements that write the row (``stores.sql.search``):
on PostgreSQL ``search`` is a ``tsvector``, on MySQL/MariaDB and SQLite the words as
text. Only SQLite has a full-text table beside them, ``<prefix>chat_tasks_search``
(FTS5, kept in step by triggers on ``chat_tasks``, keyed by ``search_key``), which is
no ``Table`` here: ``search_objects`` names it and its triggers. Indexes made on
some databases only carry ``ddl_if`` and are listed in ``DIALECT_ONLY``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.dialects import mysql, postgresql

from agentsession.common import ID_LENGTH, NAME_LENGTH
from agentsession.config import check_prefix, check_schema

__all__ = [
    "DEFAULT_TABLES",
    "DIALECT_ONLY",
    "FTS_SHADOW_TABLES",
    "Tables",
    "chat_tasks",
    "comparison_filter",
    "feedback",
    "leases",
    "metadata",
    "revocations",
    "search_objects",
    "sessions",
    "tables",
    "tables_from",
]


_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


#: ``chat_tasks.search``: a ``tsvector`` on PostgreSQL, the words as text elsewhere.
_SEARCH_TYPE = (
    Text()
    .with_variant(postgresql.TSVECTOR(), "postgresql")
    .with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
)

#: Index name (without the prefix) -> the dialects that have it; elsewhere it is not
#: made (``Index.ddl_if``), and schema comparisons leave it out.
DIALECT_ONLY: dict[str, tuple[str, ...]] = {
    # The user's pinned conversations, for ``list_sessions(pinned=True)`` and the
    # retention rules; MySQL has no partial index (it filters the listing index).
    "ix_sessions_pinned": ("postgresql", "sqlite"),
    # SQLite: a task's row in the FTS5 table.
    "uq_chat_tasks_search_key": ("sqlite",),
}

_ID_TYPE = String(ID_LENGTH).with_variant(
    postgresql.VARCHAR(ID_LENGTH, collation="C"), "postgresql"
)


def _id(name: str, *args: object, **kwargs: object) -> Column[str]:
    return Column(name, _ID_TYPE, *args, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Tables:
    """One set of the package's tables: its ``MetaData``, the five tables, and the name
    of the Alembic version table that records their revision."""

    prefix: str
    schema: str | None
    metadata: MetaData
    sessions: Table
    chat_tasks: Table
    feedback: Table
    leases: Table
    version_table: str
    revocations: Table

    @property
    def names(self) -> tuple[str, ...]:
        """The tables' names (without the schema), parents first."""
        every = (self.sessions, self.chat_tasks, self.feedback, self.leases, self.revocations)
        return tuple(t.name for t in every)


@functools.cache
def tables(prefix: str = "", schema: str | None = None) -> Tables:
    """The package's tables named ``<prefix>sessions`` etc., in ``schema`` (PostgreSQL)."""
    p = check_prefix(prefix)
    metadata = MetaData(
        schema=check_schema(schema),
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        },
    )
    sessions = Table(
        f"{p}sessions",
        metadata,
        _id("id", primary_key=True),
        _id("user_id", nullable=False),
        _id("client_id"),
        Column("name", String(NAME_LENGTH)),
        _id("agent_id"),
        Column("state", _LONG_TEXT, nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_time", BigInteger, nullable=False),
        Column("updated_time", BigInteger, nullable=False),
        Column("last_viewed_at", BigInteger),
        Column("expires_at", BigInteger),
        # Kept out of retention's idle and chat-task rules (migration 0005).
        Column("pinned", Boolean(create_constraint=False), nullable=False, server_default=false()),
        # The name's words (``search.name_words``), for search; null without a name.
        Column("search_name", Text),
        Index(f"ix_{p}sessions_updated_time", "updated_time"),
        Index(f"ix_{p}sessions_expires_at", "expires_at"),
        **_MYSQL,
    )
    # The listing index: one user's conversations, newest first, ties by id.
    Index(
        f"ix_{p}sessions_user_id_updated_time_id",
        sessions.c.user_id,
        sessions.c.updated_time.desc(),
        sessions.c.id,
    )
    _only(
        Index(
            f"ix_{p}sessions_pinned",
            sessions.c.user_id,
            sessions.c.updated_time.desc(),
            sessions.c.id,
            # Written as the queries write it (``statements.pinned_condition``): SQLite
            # uses a partial index only for a WHERE term the same as its own.
            postgresql_where=sessions.c.pinned,
            sqlite_where=sessions.c.pinned == true(),
        ),
        "ix_sessions_pinned",
    )
    # A task id is the user's own: the key is (id, user_id), so one user's choice of id
    # is never refused because of, and never reveals, another user's tasks.
    chat_tasks = Table(
        f"{p}chat_tasks",
        metadata,
        _id("id", nullable=False),
        _id("session_id", ForeignKey(sessions.c.id, ondelete="CASCADE"), nullable=False),
        _id("user_id", nullable=False),
        Column("user_message", _LONG_TEXT),
        Column("message_bubbles", _LONG_TEXT, nullable=False),
        Column("task_metadata", _LONG_TEXT),
        Column("created_time", BigInteger, nullable=False),
        Column("updated_time", BigInteger, nullable=False),
        # What search matches (``stores.sql.search``): a tsvector on PostgreSQL, the
        # words as text elsewhere; SQLite's FTS5 row is ``search_key`` (null elsewhere).
        Column("search", _SEARCH_TYPE),
        Column("search_key", BigInteger),
        Index(f"ix_{p}chat_tasks_session_id_created_time_id", "session_id", "created_time", "id"),
        Index(f"ix_{p}chat_tasks_created_time", "created_time"),
        Index(f"ix_{p}chat_tasks_updated_time", "updated_time"),
        PrimaryKeyConstraint("id", "user_id"),
        **_MYSQL,
    )
    _only(
        Index(f"uq_{p}chat_tasks_search_key", chat_tasks.c.search_key, unique=True),
        "uq_chat_tasks_search_key",
    )
    # No foreign key to the task: one would fire a row trigger (PostgreSQL) or a
    # cascade lookup (InnoDB) for every task deleted, half of a retention batch's cost.
    # The store keeps the link instead: a rating locks its task while it is written
    # (``FOR KEY SHARE`` / ``LOCK IN SHARE MODE``), and whatever deletes tasks deletes
    # their feedback in the same transaction (migration 0004).
    feedback = Table(
        f"{p}feedback",
        metadata,
        _id("id", primary_key=True),
        _id("session_id", ForeignKey(sessions.c.id, ondelete="CASCADE"), nullable=False),
        _id("task_id", nullable=False),
        _id("user_id", nullable=False),
        Column("rating", String(8), nullable=False),
        Column("comment", _LONG_TEXT),
        Column("created_time", BigInteger, nullable=False),
        UniqueConstraint("task_id", "user_id"),
        Index(f"ix_{p}feedback_created_time", "created_time"),
        Index(f"ix_{p}feedback_user_id_created_time_id", "user_id", "created_time", "id"),
        Index(f"ix_{p}feedback_session_id", "session_id"),
        **_MYSQL,
    )
    leases = Table(
        f"{p}agentsession_leases",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("owner", String(ID_LENGTH), nullable=False),
        Column("expires_at", BigInteger, nullable=False),
        **_MYSQL,
    )
    # Revocation of signed cookies: sessions of a client or user issued at or before
    # ``revoked_at`` are void; the row may go after ``keep_until`` (null: never).
    revocations = Table(
        f"{p}agentsession_revocations",
        metadata,
        Column("kind", String(8), nullable=False),
        _id("subject", nullable=False),
        Column("revoked_at", BigInteger, nullable=False),
        Column("keep_until", BigInteger),
        PrimaryKeyConstraint("kind", "subject"),
        Index(f"ix_{p}agentsession_revocations_revoked_at", "revoked_at"),
        Index(f"ix_{p}agentsession_revocations_keep_until", "keep_until"),
        **_MYSQL,
    )
    return Tables(
        p,
        schema,
        metadata,
        sessions,
        chat_tasks,
        feedback,
        leases,
        f"{p}agentsession_alembic_version",
        revocations,
    )


def _only(index: Index, name: str) -> None:
    """Make ``index`` only on the databases ``DIALECT_ONLY[name]`` lists."""
    # A tuple of names works (``DDLIf._should_execute``); the annotation says one str.
    index.ddl_if(dialect=cast("str", DIALECT_ONLY[name]))


def search_objects(prefix: str = "") -> dict[str, str]:
    """SQLite's full-text objects outside the ``MetaData``, by kind: the FTS5 table
    (``fts``; its shadow tables are named ``<fts>_data`` etc.) and the three triggers
    that keep it in step with ``chat_tasks`` (``insert``, ``delete``, ``update``)."""
    p = check_prefix(prefix)
    return {
        "fts": f"{p}chat_tasks_search",
        "insert": f"{p}chat_tasks_search_insert",
        "delete": f"{p}chat_tasks_search_delete",
        "update": f"{p}chat_tasks_search_update",
    }


#: The shadow tables FTS5 makes for a contentless table ``<fts>`` (``<fts>_data``...).
FTS_SHADOW_TABLES = ("data", "idx", "docsize", "config")


def comparison_filter(dialect: str, prefix: str = "") -> Callable[..., bool]:
    """An Alembic ``include_object`` hook for comparing a database with the ``MetaData``:
    it leaves out what the metadata does not describe on ``dialect``, an index of
    ``DIALECT_ONLY`` made elsewhere only, and SQLite's FTS5 table with its shadow tables."""
    p = check_prefix(prefix)
    dialect = "mysql" if dialect == "mariadb" else dialect
    elsewhere = {
        name.replace("_", f"_{p}", 1)
        for name, dialects in DIALECT_ONLY.items()
        if dialect not in dialects
    }
    fts = search_objects(p)["fts"]
    full_text = {fts, *(f"{fts}_{shadow}" for shadow in FTS_SHADOW_TABLES)}

    def include(_item: object, name: str | None, kind: str, *_args: object) -> bool:
        if kind == "index":
            return name not in elsewhere
        return not (kind == "table" and name in full_text)

    return include


def tables_from(attributes: Mapping[str, Any]) -> Tables:
    """The set a migration runs on: ``attributes["tables"]`` of its Alembic ``Config``
    (put there by ``migrate``), else the default set."""
    found = attributes.get("tables")
    return found if isinstance(found, Tables) else DEFAULT_TABLES


#: The default set (no prefix, the default schema).
DEFAULT_TABLES = tables()
metadata = DEFAULT_TABLES.metadata
sessions = DEFAULT_TABLES.sessions
chat_tasks = DEFAULT_TABLES.chat_tasks
feedback = DEFAULT_TABLES.feedback
leases = DEFAULT_TABLES.leases
revocations = DEFAULT_TABLES.revocations
