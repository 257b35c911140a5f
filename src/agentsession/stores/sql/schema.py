"""The tables of the persistence layer (README: Persistence): the single source of the schema.

Column types work on SQLite, PostgreSQL and MySQL/MariaDB alike: explicit VARCHAR
lengths (MySQL needs them for keys), BigInteger epoch milliseconds for every time,
JSON kept as text (LONGTEXT on MySQL, whose TEXT stops at 64 KiB). Ids compare and
sort byte for byte on every database (``"Abc"``, ``"abc"`` and ``"abc "`` are three
conversations): the "C" collation on PostgreSQL, and on MySQL InnoDB tables in
utf8mb4 with a binary collation that does not pad (the migration picks
``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin`` on MySQL 8).
The Alembic migrations in ``migrations/`` create exactly these tables.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql

from agentsession.common import ID_LENGTH, NAME_LENGTH

__all__ = [
    "chat_tasks",
    "feedback",
    "leases",
    "metadata",
    "sessions",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


_ID_TYPE = String(ID_LENGTH).with_variant(
    postgresql.VARCHAR(ID_LENGTH, collation="C"), "postgresql"
)


def _id(name: str, *args: object, **kwargs: object) -> Column[str]:
    return Column(name, _ID_TYPE, *args, **kwargs)  # type: ignore[arg-type]


sessions = Table(
    "sessions",
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
    Index("ix_sessions_updated_time", "updated_time"),
    Index("ix_sessions_expires_at", "expires_at"),
    **_MYSQL,
)

# The listing index: one user's conversations, newest first, ties by id.
Index(
    "ix_sessions_user_id_updated_time_id",
    sessions.c.user_id,
    sessions.c.updated_time.desc(),
    sessions.c.id,
)

chat_tasks = Table(
    "chat_tasks",
    metadata,
    _id("id", primary_key=True),
    _id("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    _id("user_id", nullable=False),
    Column("user_message", _LONG_TEXT),
    Column("message_bubbles", _LONG_TEXT, nullable=False),
    Column("task_metadata", _LONG_TEXT),
    Column("created_time", BigInteger, nullable=False),
    Column("updated_time", BigInteger, nullable=False),
    Index("ix_chat_tasks_session_id_created_time_id", "session_id", "created_time", "id"),
    Index("ix_chat_tasks_created_time", "created_time"),
    Index("ix_chat_tasks_updated_time", "updated_time"),
    **_MYSQL,
)

feedback = Table(
    "feedback",
    metadata,
    _id("id", primary_key=True),
    _id("session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    _id("task_id", ForeignKey("chat_tasks.id", ondelete="CASCADE"), nullable=False),
    _id("user_id", nullable=False),
    Column("rating", String(8), nullable=False),
    Column("comment", _LONG_TEXT),
    Column("created_time", BigInteger, nullable=False),
    UniqueConstraint("task_id", "user_id"),
    Index("ix_feedback_created_time", "created_time"),
    Index("ix_feedback_user_id_created_time_id", "user_id", "created_time", "id"),
    Index("ix_feedback_session_id", "session_id"),
    **_MYSQL,
)

leases = Table(
    "agentsession_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(ID_LENGTH), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    **_MYSQL,
)
