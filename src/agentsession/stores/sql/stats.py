"""What ``agentsession stats`` shows: rows and the oldest row per table, the lease."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from agentsession.stores.base import Holder
from agentsession.stores.sql.lease import holder_query
from agentsession.stores.sql.schema import DEFAULT_TABLES, Tables

__all__ = ["TableStats", "database_stats"]


@dataclass(frozen=True, slots=True)
class TableStats:
    """One table: its row count and its oldest time (epoch ms) in ``column``."""

    table: str
    column: str
    rows: int
    oldest: int | None


async def database_stats(
    engine: AsyncEngine, now: int, lease_name: str, tables: Tables = DEFAULT_TABLES
) -> tuple[list[TableStats], int, Holder | None]:
    """Per table counts, the conversations expired at ``now``, and the lease's holder."""
    sessions, chat_tasks, feedback = tables.sessions, tables.chat_tasks, tables.feedback
    async with engine.connect() as connection:
        found = []
        for table, column in (
            (sessions, sessions.c.updated_time),
            (chat_tasks, chat_tasks.c.updated_time),
            (feedback, feedback.c.created_time),
        ):
            count, oldest = (
                await connection.execute(select(func.count(), func.min(column)).select_from(table))
            ).one()
            found.append(
                TableStats(
                    table.name, column.name, int(count), None if oldest is None else int(oldest)
                )
            )
        expired = await connection.scalar(
            select(func.count()).select_from(sessions).where(sessions.c.expires_at <= now)
        )
        row = (await connection.execute(holder_query(lease_name, tables))).first()
    holder = None if row is None else Holder(row[0], int(row[1]))
    return found, int(expired or 0), holder
