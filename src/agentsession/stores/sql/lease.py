"""A named lease in ``agentsession_leases``: one holder at a time across instances.

Taking, renewing and re-taking a lease is one conditional statement that succeeds
when the row is new, expired, or already ours, so two instances can never both hold
it, and a holder that crashed blocks the others only until its ``expires_at``. Times
are epoch milliseconds from the callers' clocks (keep instances NTP-synced; a skew is
harmless while it stays well below the lease's length).

* PostgreSQL and SQLite: ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE expired
  OR ours RETURNING owner``: a row comes back exactly when the lease was taken.
* MySQL/MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE`` with ``IF()``. The row count
  cannot tell (SQLAlchemy sets ``CLIENT.FOUND_ROWS``: 1 for an insert and for an
  unchanged row alike), so a refused update hands the holder's ``expires_at`` back
  through ``LAST_INSERT_ID(expr)``: the statement's insert id is 0 when taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Executable, func, or_, select, update
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from agentsession.stores.sql.schema import DEFAULT_TABLES, Tables

__all__ = ["acquire_statement", "holder_query", "lease_taken", "release_statement"]


def acquire_statement(
    dialect: str, name: str, owner: str, expires_at: int, now: int, tables: Tables = DEFAULT_TABLES
) -> Executable:
    """The one statement that takes or renews lease ``name`` for ``owner`` until ``expires_at``.

    It succeeds when there is no row, the row expired at ``now``, or ``owner`` holds it;
    ``lease_taken`` reads the outcome from its result.
    """
    leases = tables.leases
    values = {"name": name, "owner": owner, "expires_at": expires_at}
    if dialect == "mysql":
        insert = mysql_dialect.insert(leases).values(values)
        new = insert.inserted
        takeable = or_(leases.c.expires_at <= now, leases.c.owner == new.owner)
        # Assignments run left to right: once ``owner`` is ours, the lease was takeable.
        return insert.on_duplicate_key_update(
            [
                ("owner", func.IF(takeable, new.owner, leases.c.owner)),
                (
                    "expires_at",
                    func.IF(
                        leases.c.owner == new.owner,
                        new.expires_at,
                        func.LAST_INSERT_ID(leases.c.expires_at),
                    ),
                ),
            ]
        )
    upsert = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(leases)
    upsert = upsert.values(values)
    new = upsert.excluded
    return upsert.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={"owner": new.owner, "expires_at": new.expires_at},
        where=or_(leases.c.expires_at <= now, leases.c.owner == new.owner),
    ).returning(leases.c.owner)


def lease_taken(dialect: str, rows: Sequence[Any], last_insert_id: int | None) -> bool:
    """Whether ``acquire_statement`` took the lease, from its rows or its insert id."""
    if dialect == "mysql":
        return not last_insert_id
    return bool(rows)


def release_statement(
    name: str, owner: str, now: int, tables: Tables = DEFAULT_TABLES
) -> Executable:
    """Let go of the lease if ``owner`` still holds it (it expires at ``now``)."""
    leases = tables.leases
    return (
        update(leases).where(leases.c.name == name, leases.c.owner == owner).values(expires_at=now)
    )


def holder_query(name: str, tables: Tables = DEFAULT_TABLES) -> Executable:
    """The lease row's ``owner`` and ``expires_at`` (for messages and ``stats``)."""
    leases = tables.leases
    return select(leases.c.owner, leases.c.expires_at).where(leases.c.name == name)
