"""The store: only this package talks to the database (SQLAlchemy 2; SQLite or PostgreSQL).

Schema changes go through Alembic migrations in `migrations/`; `migrate(url)` brings any
database to the newest revision.
"""

from openpod.adapters.store.engine import Database, StoreError, migrate
from openpod.adapters.store.models import (
    Account,
    ApiKey,
    Base,
    GpuAllocation,
    GpuType,
    Node,
    Pod,
    Provider,
    SSHKey,
)
from openpod.adapters.store.wallet_models import WalletLink

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "Database",
    "GpuAllocation",
    "GpuType",
    "Node",
    "Pod",
    "Provider",
    "SSHKey",
    "StoreError",
    "WalletLink",
    "migrate",
]
