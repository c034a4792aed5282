"""The ranking store: SQLAlchemy schema, shipped Alembic migrations, and the Python API other modules use."""

from reward.rankings.store.accounts import ROLES, UserInfo
from reward.rankings.store.store import (
    FLAG_KINDS,
    Conflict,
    InvalidRanking,
    Store,
    TaskView,
    normalize_ranks,
    open_store,
    safe_url,
)

__all__ = [
    "FLAG_KINDS",
    "ROLES",
    "Conflict",
    "InvalidRanking",
    "Store",
    "TaskView",
    "UserInfo",
    "normalize_ranks",
    "open_store",
    "safe_url",
]
