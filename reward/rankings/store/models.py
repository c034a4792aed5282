"""The ranking store's tables (SQLAlchemy 2 declarative models).

Times are float seconds since the epoch: SQLite has no timezone-aware timestamp type, and lease
expiry is a plain comparison on both backends. JSON columns hold small lists (ranks, order shown,
generation settings) that are always read whole.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    """The prompt string, or the JSON of a message list when `is_chat`."""
    is_chat: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class Task(Base):
    """One prompt with its K completions: the unit an annotator ranks."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 of the prompt and the sorted completion texts: re-adding the same task is a no-op."""
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    """Rankings committed; raised with a conditional UPDATE so a task never gets more than N."""
    created_at: Mapped[float] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Acquisition score (active ranking, reward/acquisition.py): within a fill level the highest is served first."""
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), nullable=True, index=True)
    """The evaluation campaign this task belongs to (None: a training task); never exported for training unless asked."""
    annotators: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """N for this task alone (a campaign's); None: the store's N (`annotators_per_task`)."""
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A gold task: its known answer is in `gold_answers`; served at the gold rate to everyone, never exported."""
    # The assignment queue walks open tasks by fill level, then priority (highest first), then age (Store._candidates).
    __table_args__ = (
        Index("ix_tasks_queue", "n_done", text("priority DESC"), "id"),
        Index("ix_tasks_gold", "is_gold", "n_done", "id"),
    )


class Campaign(Base):
    """An evaluation campaign: blind side-by-side rankings of policies' completions (store/quality.py)."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    """The policies, where their completions came from (the eval folder), N, the seed; admins only."""
    created_at: Mapped[float] = mapped_column(Float)


class GoldAnswer(Base):
    """The known ranking of a gold task, apart from the task so no read of a task can carry it."""

    __tablename__ = "gold_answers"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    ranks: Mapped[list] = mapped_column(JSON)
    """ranks[position], 1 = best, ties share (as in `rankings.ranks`)."""
    created_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Completion(Base):
    __tablename__ = "completions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    """Index within the task; rankings' `ranks` lists are aligned to it."""
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text, default="")
    gen: Mapped[dict] = mapped_column(JSON, default=dict)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (UniqueConstraint("task_id", "position"),)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)


class Token(Base):
    """Browser sessions and API tokens. Only a sha256 of the secret is stored."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """`session` (cookie, needs the CSRF token on writes) or `api` (bearer)."""
    csrf: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Lease(Base):
    """One row per task; the holder changes. A conditional UPDATE claims it, so only one holder at a time."""

    __tablename__ = "leases"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    view_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    order_shown: Mapped[list | None] = mapped_column(JSON, nullable=True)
    acquired_at: Mapped[float] = mapped_column(Float, default=0.0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


class Ranking(Base):
    __tablename__ = "rankings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    ranks: Mapped[list] = mapped_column(JSON)
    """ranks[position] for each completion, 1 = best, tied completions share the lowest rank (1, 1, 3)."""
    order_shown: Mapped[list] = mapped_column(JSON)
    """Completion positions in the order the annotator first saw them."""
    seconds: Mapped[float] = mapped_column(Float)
    """Time from taking the lease to submitting."""
    created_at: Mapped[float] = mapped_column(Float)
    revisable_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Set by an undo: until then its annotator's next submit on the task replaces these ranks (same row)."""
    revisions: Mapped[int] = mapped_column(Integer, default=0)
    """How often the annotator replaced this ranking through undo."""
    __table_args__ = (UniqueConstraint("task_id", "annotator_id"),)


class Skip(Base):
    __tablename__ = "skips"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)


class Flag(Base):
    __tablename__ = "flags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="open")
    """`open` (an annotator's report), `confirmed` (by an admin, or an admin's own flag) or `dismissed`."""
    # One flag per person and task: repeating a flag cannot add weight to it.
    __table_args__ = (UniqueConstraint("task_id", "user_id", name="uq_flags_task_user"),)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class Setting(Base):
    """Project settings every process must agree on (e.g. N, the annotators per task)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON)


class LoginFailure(Base):
    """Failed logins, shared by every server process (the throttle counts these rows in its window)."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    """The client address (hashed: the table is not a log of who tried what)."""
    username: Mapped[str] = mapped_column(String(64))
    """sha256 of the user name tried."""
    at: Mapped[float] = mapped_column(Float, index=True)
    __table_args__ = (Index("ix_login_failures_client", "client", "at"),)
