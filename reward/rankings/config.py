"""Configs for `rlhf rank serve|status|export|users|import|annotate`: one rank config file for them all.

`configs/rank.yaml` is a RankConfig: the run folder (`output_dir`), the store, N, the server's
settings and an `export:` section. Every rank command takes it as its CONFIG.yaml and reads what it
needs (`rank status` and `users` the store, `rank export` the store, `output_dir/export` and the
export section), so `store=` is written once. Each command's own keys (`rlhf rank <cmd> --help`) are
then overridable with `key=value`. Numeric settings are range-checked when a config loads.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import os
import socket
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.common.errors import ConfigError
from alignment.config.shared import require

MAX_N = 1000


def check_range(cfg, key: str, low=None, high=None, low_open: bool = False, prefix: str = "") -> None:
    """ConfigError naming `key` unless its value is a finite number in [low, high] ((low, high] if low_open)."""
    value = getattr(cfg, key)
    if value is None:
        return
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value <= low if low_open else value < low))
    bad = bad or (high is not None and value > high)
    if bad:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        raise ConfigError(
            f"'{prefix}{key}' must be {' and '.join(p for p in (lo, hi) if p)}, got {value}", key=prefix + key
        )


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def bound_hosts(host: str) -> list[str]:
    """The Host headers a server listening on `host` is reached by: the loopback names for a loopback address,
    this machine's names and their addresses for a wildcard (0.0.0.0, ::), the name or address itself otherwise.
    A Host header names an IPv6 address in brackets ([::1])."""
    name = host.strip("[]").lower()
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if name == "localhost" or (ip is not None and ip.is_loopback):
        return sorted({_host_header(name), *LOOPBACK_HOSTS})
    if ip is not None and ip.is_unspecified:
        names = {socket.gethostname().lower(), socket.getfqdn().lower()}
        for machine in list(names):
            try:
                names |= {info[4][0] for info in socket.getaddrinfo(machine, None)}
            except OSError:
                pass  # a name this machine cannot resolve: the name itself still counts
        return sorted({*map(_host_header, names), *LOOPBACK_HOSTS})
    return [_host_header(name)]


def _host_header(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def check_hosts(hosts: list[str]) -> None:
    """ConfigError unless `hosts` is a non-empty list of host names, `*`, or `*.domain` patterns."""
    if not hosts:
        why = "leave it out for the hosts the server is bound to, or use ['*'] to allow any host"
        raise ConfigError(f"'allowed_hosts' must not be empty ({why})", key="allowed_hosts")
    for pattern in hosts:
        if pattern != "*" and ("*" in pattern[1:] or (pattern.startswith("*") and not pattern.startswith("*."))):
            raise ConfigError(
                f"'allowed_hosts': '{pattern}' is not a host name, '*' or '*.domain'", key="allowed_hosts"
            )


def redacted(cfg):
    """A copy of a rank config whose store URL (and its export section's) has no password: safe to save or print."""
    from reward.rankings.store.engine import redact

    out = copy.deepcopy(cfg)
    for node in (out, getattr(out, "export", None)):
        if node is not None and getattr(node, "store", None):
            node.store = redact(node.store)
    return out


@dataclass
class ExportConfig:
    RUN_PATHS: ClassVar = {"store": "rankings.db", "output_dir": "export"}
    """With `run=runs/x`: reads runs/x/rankings.db, writes runs/x/export (where the reward stage reads)."""
    run: str = ""
    """Run folder (runs/x): store runs/x/rankings.db, output_dir runs/x/export."""
    store: str = ""
    """Ranking store to read (SQLite file or postgresql:// URL); from a rank config: its store."""
    output_dir: str = ""
    """Folder written: pairwise/ and kwise/ `datasets` folders, *.jsonl / *.parquet, manifest.json, config.yaml;
    from a rank config: its output_dir/export (where the reward stage reads)."""
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
    """Leave out flagged tasks: flagged or confirmed by an admin, or flagged by `flag_quorum` different people."""
    flag_quorum: int = 2
    """Distinct annotators whose (not dismissed) flags drop a task; one account alone never empties the export."""
    test_size: float = 0.1
    """Share (<1) or count (>=1) of prompts held out as the test split; 0 writes only train."""
    campaigns: list[str] = field(default_factory=list)
    """Evaluation campaigns whose rankings are exported too (default none: they judge policies, they are not
    training data). Gold tasks are never exported."""
    annotator_weights: bool = True
    """Estimate each annotator's reliability from the rankings (overlap and gold answers; reward/rankings/
    reliability.py): annotators.json, and an `annotator_weight` on every row (1 where it cannot be estimated)."""

    def check(self, prefix: str = "") -> None:
        """Ranges and choices (everything but the paths)."""
        for s in self.schemas:
            if s not in ("pairwise", "kwise"):
                raise ConfigError(f"'{prefix}schemas' items must be pairwise or kwise, got '{s}'")
        for f in self.formats:
            if f not in ("datasets", "jsonl", "parquet"):
                raise ConfigError(f"'{prefix}formats' items must be datasets, jsonl or parquet, got '{f}'")
        if not self.schemas or not self.formats:
            raise ConfigError(f"'{prefix}schemas' and '{prefix}formats' must not be empty")
        check_range(self, "test_size", 0, prefix=prefix)
        check_range(self, "margin_scale", 0, low_open=True, prefix=prefix)
        check_range(self, "min_annotators", 1, MAX_N, prefix=prefix)
        check_range(self, "flag_quorum", 1, MAX_N, prefix=prefix)

    def validate(self) -> None:
        require(self, "store", "output_dir")
        self.check()


@dataclass
class RankConfig:
    RUN_PATHS: ClassVar = {"output_dir": ""}
    """With `run=runs/x`: output_dir is runs/x (the store runs/x/rankings.db, exports runs/x/export)."""
    run: str = ""
    """Run folder (runs/x), the same key every stage takes: output_dir defaults to it."""
    output_dir: str = ""
    """Run folder (runs/x): the store defaults to output_dir/rankings.db, exports go to output_dir/export, and
    `rank serve` saves its resolved config (password-free) as output_dir/rank/config.yaml."""
    store: str = ""
    """Ranking store: a SQLite file or a postgresql://user@host:port/db URL; default output_dir/rankings.db."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    annotators_per_task: int | None = None
    """N: distinct annotators per task; saved in the store so every command agrees. None keeps the store's (1 if new)."""
    lease_seconds: float = 600.0
    """How long a task stays reserved for the annotator viewing it (renewed while they work; a countdown shows it)."""
    undo_seconds: float = 30.0
    """How long after a submit its annotator may undo it (and re-rank: the ranking is replaced); 0 turns undo off."""
    allow_ties: bool = True
    """Let annotators mark completions as equally good."""
    markdown: bool = False
    """Render completions as Markdown and code (sanitised by nh3; HTML in model text always stays text)."""
    guidelines: str | None = None
    """Markdown file shown on the guidelines page (sanitised); None shows a short default."""
    title: str = "Rank the responses"
    """Heading of the ranking page."""
    session_hours: float = 12.0
    """Browser sessions and API login tokens expire after this many hours."""
    cookie_secure: bool = False
    """Mark the session cookie Secure (set true behind HTTPS)."""
    login_max_failures: int = 10
    """Failed logins per (client, user name) within `login_window_seconds` before 429 (5x per client); 0 turns it off.
    Counted in the store, so every server process shares the budget."""
    login_window_seconds: float = 300.0
    """The window failed logins are counted over."""
    forwarded_allow_ips: list[str] = field(default_factory=list)
    """Proxies trusted to set X-Forwarded-For/-Proto (IPs or CIDRs, `*` for any); empty trusts none (the peer is the client)."""
    allowed_hosts: list[str] | None = None
    """Host headers served (e.g. [rank.example.org], `*.example.org`); others get 400. None: the hosts the server
    is bound to (`host`: 127.0.0.1, localhost and [::1] on loopback; this machine's names on 0.0.0.0). ["*"]: any."""
    docs: bool = False
    """Serve the OpenAPI schema and /api/docs (off: they map the API for anyone who can reach the server)."""
    max_body_kb: int = 1024
    """Largest request body accepted, in KiB; a larger one is refused with 413 before it is read."""
    seed: int | None = None
    """Seed for the order completions are shown in; None draws fresh randomness per view."""
    gold_rate: float | None = None
    """Share of leases that hand out a gold task (known answer) while other work is left; saved in the store like N.
    None keeps the store's (0 if never set)."""
    gold_pause_below: float | None = None
    """Gold accuracy (share of gold pairs ordered right) under which an annotator gets no more tasks; 0 never pauses.
    None keeps the store's. An admin lifts a pause on the admin page."""
    gold_min_answers: int | None = None
    """Gold answers an annotator gives before the pause rule applies; None keeps the store's (5 if never set)."""
    workers: int = 1
    """Uvicorn worker processes (the database keeps leases, counts and the login throttle consistent across them)."""
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    """Uvicorn log level."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Export options (`rlhf rank export` and the admin page's export); store and output_dir default from above."""

    def validate(self) -> None:
        if not self.store and not self.output_dir:
            raise ConfigError("missing required value 'store' (or 'output_dir', the run folder holding rankings.db)")
        check_range(self, "port", 1, 65535)
        check_range(self, "annotators_per_task", 1, MAX_N)
        check_range(self, "lease_seconds", 0, 7 * 86400, low_open=True)
        check_range(self, "undo_seconds", 0, 3600)
        check_range(self, "session_hours", 0, 24 * 365, low_open=True)
        check_range(self, "login_max_failures", 0, 10**6)
        check_range(self, "login_window_seconds", 0, 86400, low_open=True)
        check_range(self, "max_body_kb", 1, 1024 * 1024)
        check_range(self, "workers", 1, 64)
        check_range(self, "gold_rate", 0, 1)
        check_range(self, "gold_pause_below", 0, 1)
        check_range(self, "gold_min_answers", 1, 10**6)
        if self.allowed_hosts is not None:
            check_hosts(self.allowed_hosts)
        self.export.check(prefix="export.")

    def store_url(self) -> str:
        return self.store or os.path.join(self.output_dir, "rankings.db")

    def hosts_served(self) -> list[str]:
        """The Host headers the app answers: `allowed_hosts`, or by default the hosts it is bound to."""
        return list(self.allowed_hosts) if self.allowed_hosts is not None else bound_hosts(self.host)

    def export_config(self) -> ExportConfig:
        """The export this rank config describes: its section, reading its store, writing output_dir/export."""
        out = copy.deepcopy(self.export)
        out.store = out.store or self.store_url()
        out.output_dir = out.output_dir or (os.path.join(self.output_dir, "export") if self.output_dir else "")
        return out


@dataclass
class UsersConfig:
    RUN_PATHS: ClassVar = {"store": "rankings.db"}
    """With `run=runs/x`: the store runs/x/rankings.db."""
    run: str = ""
    """Run folder (runs/x): store defaults to runs/x/rankings.db."""
    store: str = ""
    """Ranking store (SQLite file or postgresql:// URL); from a rank config: its store."""
    role: Literal["annotator", "admin"] = "annotator"
    """Role for `add` and `set-role`."""
    password: str | None = None
    """Password for `add` / `set-password`; otherwise read from $RLHF_RANK_PASSWORD, a prompt, or stdin."""
    token_hours: float = 720.0
    """Lifetime of a token made by `token` (tokens always expire; revoke them early with `revoke`)."""

    def validate(self) -> None:
        require(self, "store")
        check_range(self, "token_hours", 0, 24 * 366 * 5, low_open=True)


@dataclass
class StatusConfig:
    RUN_PATHS: ClassVar = {"store": "rankings.db"}
    """With `run=runs/x`: the store runs/x/rankings.db."""
    run: str = ""
    """Run folder (runs/x): store defaults to runs/x/rankings.db."""
    store: str = ""
    """Ranking store (SQLite file or postgresql:// URL); from a rank config: its store."""
    annotators_per_task: int | None = None
    """N a task is complete at; None uses the N stored by the server (the same number the admin page shows)."""
    json: bool = False
    """Print one JSON object instead of text."""

    def validate(self) -> None:
        require(self, "store")
        check_range(self, "annotators_per_task", 1, MAX_N)


@dataclass
class ImportConfig:
    RUN_PATHS: ClassVar = {"store": "rankings.db"}
    """With `run=runs/x`: the store runs/x/rankings.db."""
    run: str = ""
    """Run folder (runs/x): store defaults to runs/x/rankings.db."""
    path: str = ""
    """What to import: a jsonl/json/parquet/csv file or a `datasets` folder (also given as the first argument)."""
    store: str = ""
    """Ranking store to add the tasks to (created if missing); from a rank config: its store."""
    format: Literal["auto", "completions", "pairwise", "kwise"] = "auto"
    """Rows: `completions` ({prompt, completions: [text or {text, model}], models?}), `pairwise` (TRL prompt/chosen/
    rejected) or `kwise` (our export: prompt/completions/ranks); `auto` tells them apart by their columns."""
    split: str = "train"
    """Split of a `datasets` folder holding several."""
    show_models: bool = False
    """Show each completion's model name to annotators (otherwise ranking is blind)."""
    tag: str = ""
    """Stored in each task's meta (e.g. the campaign)."""
    limit: int | None = None
    """Import only the first N rows."""
    dry_run: bool = False
    """Check every row and report what would be imported, writing nothing."""
    priority: float = 0.0
    """Each task's priority (the ranking app serves higher first); a row's own `priority` column wins."""
    gold: bool = False
    """Import every row as a gold task: its `ranks` (kwise rows; pairwise rows: chosen first) are the known answer.
    Rows with `"gold": true` are gold tasks whatever this says. Gold tasks are mixed into queues at `gold_rate`."""

    def validate(self) -> None:
        require(self, "path", "store")
        check_range(self, "limit", 1)
        if not math.isfinite(self.priority):
            raise ConfigError(f"'priority' must be a finite number, got {self.priority}")


@dataclass
class AnnotateConfig:
    RUN_PATHS: ClassVar = {"store": "rankings.db"}
    """With `run=runs/x`: the store runs/x/rankings.db."""
    run: str = ""
    """Run folder (runs/x): store defaults to runs/x/rankings.db."""
    users: list[str] = field(default_factory=list)
    """Accounts the scripted annotators log in as, one thread each (e.g. users=bot1,bot2)."""
    score: str = ""
    """Their hidden preference: `module:function`, f(prompt, completion) -> float (higher = better), arguments by
    name (the prompt may be left out); e.g. `alignment.assets.gold:gold_reward`."""
    temperature: float = 1.0
    """Plackett-Luce noise (0: always the score order)."""
    seed: int = 0
    """Noise seed (each annotator adds its index)."""
    password: str | None = None
    """The accounts' password; otherwise $RLHF_RANK_PASSWORD."""
    url: str = ""
    """A running server to rank through (http://host:port); empty serves this rank config on a free loopback
    port for the run."""
    store: str = ""
    """Ranking store (used when url is empty, and by create_users); from a rank config: its store."""
    annotators_per_task: int | None = None
    """N for the server started when url is empty; None keeps the store's."""
    create_users: bool = False
    """Create missing accounts (as annotators, with `password`): for a dry run on a copy of the store."""
    max_tasks: int | None = None
    """Rankings per annotator at most; None ranks until nothing is left."""

    def validate(self) -> None:
        from alignment.common.functions import check_function

        require(self, "score")
        if not self.users:
            raise ConfigError("missing required value 'users' (e.g. users=bot1,bot2)")
        if not self.url:
            require(self, "store")
        check_range(self, "temperature", 0)
        check_range(self, "annotators_per_task", 1, MAX_N)
        check_range(self, "max_tasks", 1)
        check_function(self.score, "score")  # last: it imports and calls the user's code


@dataclass
class CampaignConfig:
    RUN_PATHS: ClassVar = {"store": "rankings.db", "eval_dir": "eval"}
    """With `run=runs/x`: the store runs/x/rankings.db, the completions of `rlhf eval`'s runs/x/eval."""
    run: str = ""
    """Run folder (runs/x): store runs/x/rankings.db, eval_dir runs/x/eval."""
    store: str = ""
    """Ranking store the campaign's tasks go to (SQLite file or postgresql:// URL); from a rank config: its store."""
    name: str = ""
    """The campaign (letters, digits, '_', '.', '-'): `create` adds its tasks, `report` reads its rankings."""
    eval_dir: str = ""
    """An `rlhf eval` output folder: its samples.jsonl gives the completions (each policy's, same random draws) and
    its eval.json the automatic figures shown beside the people's."""
    policies: list[str] = field(default_factory=list)
    """The eval's policies to compare (default: all of them, bon:N ones included)."""
    draws: int = 1
    """Tasks per held-out prompt: draws 0..draws-1 of the eval's samples; each task holds one completion per policy."""
    annotators_per_task: int = 3
    """N for the campaign's tasks (its own: the store's N for training tasks is untouched)."""
    seed: int = 0
    """Seed of the order each task's completions are stored in (shown in a new random order to each annotator)."""
    output_dir: str = ""
    """`report`: folder for eval_human.json and campaign.png (default: eval_dir, beside eval.json)."""
    reference: str | None = None
    """`report`: policy the win rates are shown against (default: the first policy)."""
    bootstrap: int = 1000
    """`report`: bootstrap resamples for the 95% intervals."""
    unit: Literal["prompt", "task"] = "prompt"
    """`report`: what the bootstrap resamples: prompts (intervals for the prompt population; needs >= ~20 prompts)
    or tasks (intervals given these prompts)."""
    json: bool = False
    """`report`/`list`: print JSON instead of text."""

    def validate(self) -> None:
        require(self, "store")
        check_range(self, "draws", 1, 10_000)
        check_range(self, "annotators_per_task", 1, MAX_N)
        check_range(self, "bootstrap", 10, 100_000)
