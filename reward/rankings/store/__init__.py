"""The ranking store: SQLAlchemy schema, shipped Alembic migrations, and the Python API other modules use."""

from reward.rankings.store.accounts import ROLES, UserInfo
from reward.rankings.store.engine import redact
from reward.rankings.store.errors import Conflict, InvalidRanking, NotFound, StoreFull
from reward.rankings.store.store import Store, canonical_prompt, open_store, safe_url, task_key
from reward.rankings.store.work import FLAG_KINDS, TaskView, check_id, normalize_ranks

__all__ = [
    "FLAG_KINDS",
    "ROLES",
    "Conflict",
    "InvalidRanking",
    "NotFound",
    "Store",
    "StoreFull",
    "TaskView",
    "UserInfo",
    "canonical_prompt",
    "check_id",
    "normalize_ranks",
    "open_store",
    "redact",
    "safe_url",
    "task_key",
]
