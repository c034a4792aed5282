"""Configs for `rlhf rank serve|users|export|status` (the ranking app and the preference export).

Same machinery as alignment/config.py: a plain dataclass per command, a docstring under each field,
loaded from YAML and `key=value` overrides by `alignment.cli.parse_stage_args`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from alignment.config import ConfigError, require


@dataclass
class RankConfig:
    store: str = ""
    """Ranking store: a SQLite file (created if missing) or a postgresql://user@host:port/db URL."""
    output_dir: str = ""
    """Where the server writes its resolved config and where the admin export button exports (output_dir/export)."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    annotators_per_task: int = 1
    """N: each task is ranked by exactly this many distinct annotators (N > 1 makes agreement measurable)."""
    lease_seconds: float = 600.0
    """How long a task stays reserved for the annotator viewing it before it goes back to the pool."""
    allow_ties: bool = True
    """Let annotators mark completions as equally good."""
    guidelines: str | None = None
    """Markdown file shown on the guidelines page; None shows a short default."""
    title: str = "Rank the responses"
    """Heading of the ranking page."""
    session_hours: float = 12.0
    """Browser sessions and API login tokens expire after this many hours."""
    cookie_secure: bool = False
    """Mark the session cookie Secure (set true behind HTTPS)."""
    login_max_failures: int = 10
    """Failed logins per (client, user name) within `login_window_seconds` before 429 (5x per client); 0 turns it off."""
    login_window_seconds: float = 300.0
    """The window failed logins are counted over."""
    export_config: str | None = None
    """YAML of export options the admin export button uses; None uses the export defaults."""
    seed: int | None = None
    """Seed for the order completions are shown in; None draws fresh randomness per view."""
    workers: int = 1
    """Uvicorn worker processes (the database keeps leases and counts consistent across them)."""
    log_level: str = "info"
    """Uvicorn log level."""

    def validate(self) -> None:
        require(self, "store")
        if self.annotators_per_task < 1:
            raise ConfigError(f"'annotators_per_task' must be >= 1, got {self.annotators_per_task}")
        if self.lease_seconds <= 0:
            raise ConfigError(f"'lease_seconds' must be > 0, got {self.lease_seconds}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"'port' must be 1-65535, got {self.port}")


@dataclass
class UsersConfig:
    store: str = ""
    """Ranking store (SQLite file or postgresql:// URL)."""
    role: Literal["annotator", "admin"] = "annotator"
    """Role for `add` and `set-role`."""
    password: str | None = None
    """Password for `add` / `set-password`; otherwise read from $RLHF_RANK_PASSWORD, a prompt, or stdin."""
    token_hours: float | None = None
    """Lifetime of a token made by `token`; None never expires."""

    def validate(self) -> None:
        require(self, "store")


@dataclass
class StatusConfig:
    store: str = ""
    """Ranking store (SQLite file or postgresql:// URL)."""
    annotators_per_task: int = 1
    """N the tasks are collected with (a task is complete at N rankings)."""
    json: bool = False
    """Print one JSON object instead of text."""

    def validate(self) -> None:
        require(self, "store")


@dataclass
class ExportConfig:
    store: str = ""
    """Ranking store to read (SQLite file or postgresql:// URL)."""
    output_dir: str = ""
    """Folder written: pairwise/ and kwise/ `datasets` folders, *.jsonl / *.parquet, manifest.json, config.yaml."""
    seed: int = 42
    """Seed for the train/test split and for random tie-breaking."""
    schemas: list[str] = field(default_factory=lambda: ["pairwise", "kwise"])
    """Which schemas to write: `pairwise` (TRL prompt/chosen/rejected) and/or `kwise` (prompt/completions/ranks)."""
    formats: list[str] = field(default_factory=lambda: ["datasets"])
    """Output formats: `datasets` (load_from_disk folder), `jsonl`, `parquet`."""
    pairs: Literal["all", "adjacent", "best_vs_rest"] = "all"
    """Pairs per ranking: every ordered pair, neighbours in rank order, or the best against each other."""
    ties: Literal["drop", "drop_ranking", "random"] = "drop"
    """Tied completions: no pair between them, drop the whole ranking, or order them at random."""
    margin: bool = False
    """Add a `margin` column: rank gap between rejected and chosen (times margin_scale)."""
    margin_scale: float = 1.0
    """Multiplier for the margin."""
    aggregate: Literal["per_annotator", "consensus"] = "per_annotator"
    """One row per annotator's ranking, or one consensus ranking per task (mean rank, i.e. Borda)."""
    min_annotators: int = 1
    """Skip tasks with fewer rankings than this."""
    drop_flagged: bool = True
    """Leave out tasks that any annotator flagged (unsafe, all bad, not rankable)."""
    test_size: float = 0.1
    """Share (<1) or count (>=1) of prompts held out as the test split; 0 writes only train."""

    def validate(self) -> None:
        require(self, "store", "output_dir")
        for s in self.schemas:
            if s not in ("pairwise", "kwise"):
                raise ConfigError(f"'schemas' items must be pairwise or kwise, got '{s}'")
        for f in self.formats:
            if f not in ("datasets", "jsonl", "parquet"):
                raise ConfigError(f"'formats' items must be datasets, jsonl or parquet, got '{f}'")
        if not self.schemas or not self.formats:
            raise ConfigError("'schemas' and 'formats' must not be empty")
        if self.test_size < 0:
            raise ConfigError(f"'test_size' must be >= 0, got {self.test_size}")
