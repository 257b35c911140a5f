"""The SQL backend: SQLite, PostgreSQL and MySQL/MariaDB through SQLAlchemy 2 async Core.

Everything SQL lives here: the store (``store``), the tables (``schema``), URLs and
the engine (``engine``), the Alembic migrations and the lock they run under
(``migrate``, ``migrations/``), the retention statements (``prune``) and the lease
(``lease``). Nothing outside this package imports SQLAlchemy.
"""

from agentsession.stores.sql.store import SqlStore

__all__ = ["SqlStore"]
