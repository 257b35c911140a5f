"""Feedback loses its foreign key to chat_tasks; the store keeps the link itself.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

``ON DELETE CASCADE`` from ``feedback (task_id, user_id)`` to ``chat_tasks`` ran a
row trigger on PostgreSQL (an index probe of ``feedback`` through SPI) and a cascade
lookup in InnoDB for every chat task deleted, rated or not: about half of what a
retention batch cost. The link is now kept by the store, in the same transactions as
before: a rating is written by ``INSERT ... SELECT`` from its task with the task's row
locked (``FOR KEY SHARE`` on PostgreSQL, ``LOCK IN SHARE MODE`` on MySQL/MariaDB;
SQLite has one writer), and every delete of chat tasks (retention, erasing a user)
deletes their feedback in the same transaction. Feedback still goes with its
conversation by its own foreign key to ``sessions``, and the unique index
``uq_feedback_task_id_user_id`` stays.

Any feedback whose task is already gone cannot exist (the key forbade it), so no row
changes. The downgrade puts the key back (SQLite: both ways rebuild ``feedback``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from agentsession.stores.sql.schema import tables_from

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _names() -> tuple[str | None, str, str, str]:
    target = tables_from(context.config.attributes)
    p = target.prefix
    return target.schema, f"{p}chat_tasks", f"{p}feedback", f"fk_{p}feedback_task_id_{p}chat_tasks"


def upgrade() -> None:
    schema, _, feedback, fk = _names()
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(feedback, recreate="always") as batch:
            batch.drop_constraint(fk, type_="foreignkey")
        return
    op.drop_constraint(fk, feedback, type_="foreignkey", schema=schema)


def downgrade() -> None:
    schema, tasks, feedback, fk = _names()
    local, remote = ["task_id", "user_id"], ["id", "user_id"]
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(feedback, recreate="always") as batch:
            batch.create_foreign_key(fk, tasks, local, remote, ondelete="CASCADE")
        return
    op.create_foreign_key(
        fk,
        feedback,
        tasks,
        local,
        remote,
        ondelete="CASCADE",
        source_schema=schema,
        referent_schema=schema,
    )
