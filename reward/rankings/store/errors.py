"""What the store refuses, by kind: the app maps each to one HTTP status with a one-line detail."""

from __future__ import annotations

from alignment.common.errors import UserError


class Conflict(Exception):
    """A request the current state refuses (lease lost, task complete, already ranked); HTTP 409."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class NotFound(UserError, LookupError):
    """An id that names nothing (no such task, ranking or user); HTTP 404 (one line and exit 2 in the CLI)."""


class InvalidRanking(ValueError):
    """Ranks that do not fit the task (wrong length, values, ties when not allowed); HTTP 422."""


class StoreFull(UserError):
    """The disk (or quota) holding the store is full, so a write could not be committed and nothing was saved;
    HTTP 507 (one line and exit 2 in the CLI). Clients retry with the same idempotency key once space is freed."""
