"""The initial tables: sessions, chat_tasks, feedback, agentsession_leases.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full, with every constraint named, so it stays what it is however
``schema.py`` changes later. Every name carries the configured table prefix, and on
PostgreSQL the tables go in the configured schema (``schema.tables_from``). On
MySQL/MariaDB the tables are InnoDB, utf8mb4 with a binary collation that does not
pad (ids compare byte for byte, trailing spaces included), and the JSON text columns
are LONGTEXT. On PostgreSQL the id columns use the "C" collation, for the same
byte-for-byte order whatever the database locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql, postgresql

from agentsession.stores.sql.schema import tables_from

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = 255


def _mysql_options() -> dict[str, Any]:
    """InnoDB, utf8mb4, and a binary collation that does not pad.

    ``utf8mb4_bin`` is PAD SPACE: ``'abc'`` and ``'abc '`` would be one key. Its NO
    PAD twins are ``utf8mb4_nopad_bin`` (MariaDB 10.2+) and ``utf8mb4_0900_bin``
    (MySQL 8.0.17+); older servers keep ``utf8mb4_bin``.
    """
    dialect = op.get_bind().dialect
    if dialect.name not in ("mysql", "mariadb"):
        return {}
    version = dialect.server_version_info or ()
    if getattr(dialect, "is_mariadb", False):
        collation = "utf8mb4_nopad_bin"
    elif version >= (8, 0, 17):
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": collation}


def _id_type() -> sa.types.TypeEngine[str]:
    """VARCHAR(255); on PostgreSQL in the "C" collation, so ids sort byte for byte
    (as on the other databases) whatever the database's locale."""
    return sa.String(_ID).with_variant(postgresql.VARCHAR(_ID, collation="C"), "postgresql")


def _long_text() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    target = tables_from(context.config.attributes)
    p, schema = target.prefix, target.schema
    at = f"{schema}." if schema else ""
    mysql_options = _mysql_options()
    op.create_table(
        f"{p}sessions",
        sa.Column("id", _id_type(), nullable=False),
        sa.Column("user_id", _id_type(), nullable=False),
        sa.Column("client_id", _id_type(), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("agent_id", _id_type(), nullable=True),
        sa.Column("state", _long_text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_time", sa.BigInteger(), nullable=False),
        sa.Column("updated_time", sa.BigInteger(), nullable=False),
        sa.Column("last_viewed_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}sessions"),
        schema=schema,
        **mysql_options,
    )
    op.create_index(f"ix_{p}sessions_updated_time", f"{p}sessions", ["updated_time"], schema=schema)
    op.create_index(f"ix_{p}sessions_expires_at", f"{p}sessions", ["expires_at"], schema=schema)
    # The listing index: one user's conversations, newest first, ties by id.
    op.create_index(
        f"ix_{p}sessions_user_id_updated_time_id",
        f"{p}sessions",
        [sa.column("user_id"), sa.column("updated_time").desc(), sa.column("id")],
        schema=schema,
    )

    op.create_table(
        f"{p}chat_tasks",
        sa.Column("id", _id_type(), nullable=False),
        sa.Column("session_id", _id_type(), nullable=False),
        sa.Column("user_id", _id_type(), nullable=False),
        sa.Column("user_message", _long_text(), nullable=True),
        sa.Column("message_bubbles", _long_text(), nullable=False),
        sa.Column("task_metadata", _long_text(), nullable=True),
        sa.Column("created_time", sa.BigInteger(), nullable=False),
        sa.Column("updated_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}chat_tasks"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            [f"{at}{p}sessions.id"],
            name=f"fk_{p}chat_tasks_session_id_{p}sessions",
            ondelete="CASCADE",
        ),
        schema=schema,
        **mysql_options,
    )
    op.create_index(
        f"ix_{p}chat_tasks_session_id_created_time_id",
        f"{p}chat_tasks",
        ["session_id", "created_time", "id"],
        schema=schema,
    )
    op.create_index(
        f"ix_{p}chat_tasks_created_time", f"{p}chat_tasks", ["created_time"], schema=schema
    )
    op.create_index(
        f"ix_{p}chat_tasks_updated_time", f"{p}chat_tasks", ["updated_time"], schema=schema
    )

    op.create_table(
        f"{p}feedback",
        sa.Column("id", _id_type(), nullable=False),
        sa.Column("session_id", _id_type(), nullable=False),
        sa.Column("task_id", _id_type(), nullable=False),
        sa.Column("user_id", _id_type(), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("comment", _long_text(), nullable=True),
        sa.Column("created_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}feedback"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            [f"{at}{p}sessions.id"],
            name=f"fk_{p}feedback_session_id_{p}sessions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            [f"{at}{p}chat_tasks.id"],
            name=f"fk_{p}feedback_task_id_{p}chat_tasks",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("task_id", "user_id", name=f"uq_{p}feedback_task_id_user_id"),
        schema=schema,
        **mysql_options,
    )
    op.create_index(f"ix_{p}feedback_created_time", f"{p}feedback", ["created_time"], schema=schema)
    op.create_index(
        f"ix_{p}feedback_user_id_created_time_id",
        f"{p}feedback",
        ["user_id", "created_time", "id"],
        schema=schema,
    )
    op.create_index(f"ix_{p}feedback_session_id", f"{p}feedback", ["session_id"], schema=schema)

    op.create_table(
        f"{p}agentsession_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", _id_type(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=f"pk_{p}agentsession_leases"),
        schema=schema,
        **mysql_options,
    )


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints; children before parents.
    target = tables_from(context.config.attributes)
    for table in (target.leases, target.feedback, target.chat_tasks, target.sessions):
        op.drop_table(table.name, schema=target.schema)
