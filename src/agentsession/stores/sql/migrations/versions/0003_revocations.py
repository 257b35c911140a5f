"""Revocation of signed cookies: the agentsession_revocations table.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-15

One row per revoked client id or user id (``kind`` is ``client`` or ``user``): every
session of it issued at or before ``revoked_at`` (epoch ms) is void. ``keep_until``
is when the row voids nothing any more (every such cookie has expired); null keeps it.
Indexed by ``revoked_at`` (each process polls the newest) and ``keep_until`` (old
rows are deleted). The subject is an id column like the others: byte-for-byte
("C" collation on PostgreSQL, a binary collation that does not pad on MySQL/MariaDB).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from agentsession.stores.sql.schema import tables_from

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _table_options() -> dict[str, Any]:
    """On MySQL/MariaDB: InnoDB, utf8mb4, the NO PAD binary collation 0001 chose."""
    dialect = op.get_bind().dialect
    if dialect.name not in ("mysql", "mariadb"):
        return {}
    if getattr(dialect, "is_mariadb", False):
        collation = "utf8mb4_nopad_bin"
    else:
        modern = (dialect.server_version_info or ()) >= (8, 0, 17)
        collation = "utf8mb4_0900_bin" if modern else "utf8mb4_bin"
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade() -> None:
    target = tables_from(context.config.attributes)
    p, schema = target.prefix, target.schema
    name = f"{p}agentsession_revocations"
    subject = sa.String(255).with_variant(postgresql.VARCHAR(255, collation="C"), "postgresql")
    op.create_table(
        name,
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", subject, nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=False),
        sa.Column("keep_until", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kind", "subject", name=f"pk_{name}"),
        schema=schema,
        **_table_options(),
    )
    op.create_index(f"ix_{name}_revoked_at", name, ["revoked_at"], schema=schema)
    op.create_index(f"ix_{name}_keep_until", name, ["keep_until"], schema=schema)


def downgrade() -> None:
    target = tables_from(context.config.attributes)
    op.drop_table(target.revocations.name, schema=target.schema)
