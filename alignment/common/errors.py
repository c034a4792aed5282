"""The two errors a user sees as one line (never a traceback): a mistake in their input, and a bad config value.

Small and import-free on purpose: the ranking store and app import it without the config loader or torch.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, row, key). Printed as one line, never a traceback."""


class ConfigError(UserError):
    """A bad config value. `key` (dotted) lets `load_config` say where the value came from: the YAML file,
    an `override 'k=v'`, or the pipeline stage that passed it."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key
