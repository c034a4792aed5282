"""`rlhf rank serve|status|export|import|annotate|users|campaign`: the ranking app and its store (stage 2).

Every command takes the same rank config (configs/rank.yaml: the run folder, the store, N, the
server, an export section) and its own key=value overrides (`rlhf rank <command> --help`):

rlhf rank serve CONFIG.yaml [key=value ...]            serve the ranking pages and JSON API
rlhf rank status CONFIG.yaml [json=true]               progress (N as stored by the server)
rlhf rank export CONFIG.yaml [key=value ...]           rankings -> preference datasets (output_dir/export)
rlhf rank import FILE CONFIG.yaml [format=...] [show_models=true]
                                                       tasks from jsonl/json/parquet/csv or a datasets folder
rlhf rank annotate CONFIG.yaml users=a,b score=module:function [temperature=1]
                                                       scripted annotators: dry-run a campaign
rlhf rank campaign create|report|list CONFIG.yaml name=... [eval_dir=...] [annotators_per_task=3]
                                                       blind evaluation campaigns (reward/rankings/campaign.py)
rlhf rank users add|list|set-password|set-role|token|revoke|deactivate|activate [NAME] CONFIG.yaml [role=...]
(`store=S` works in place of CONFIG.yaml everywhere.)
"""

from __future__ import annotations

import dataclasses
import errno
import getpass
import json
import os
import socket
import sys

from alignment.common.errors import ConfigError, UserError
from alignment.config.command_line import print_help
from alignment.config.loader import (
    apply_overrides,
    apply_run,
    from_dict,
    load_config,
    resolve_unchecked,
    save_config,
    to_dict,
    validated,
)
from reward.rankings.config import (
    AnnotateConfig,
    CampaignConfig,
    ExportConfig,
    ImportConfig,
    RankConfig,
    StatusConfig,
    UsersConfig,
    redacted,
)
from reward.rankings.store import open_store, safe_url

SUBCOMMANDS = ("serve", "status", "export", "import", "annotate", "users", "campaign")
CAMPAIGN_ACTIONS = ("create", "report", "list")
SHARED_KEYS = {"store", "annotators_per_task"}
USER_ACTIONS = ("add", "list", "set-password", "set-role", "token", "revoke", "deactivate", "activate")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    sub, rest = argv[0], argv[1:]
    commands = {"serve": serve, "status": status, "export": export_cmd, "import": import_cmd, "users": users}
    commands["annotate"] = annotate
    commands["campaign"] = campaign
    if sub in commands:
        return commands[sub](rest)
    import difflib

    close = difflib.get_close_matches(sub, SUBCOMMANDS, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserError(f"unknown rank command '{sub}'{hint} (one of {', '.join(SUBCOMMANDS)})")


# ----------------------------------------------------------------------------------------------
# One rank config for every command


def _split(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(CONFIG.yaml or None, other positional arguments, key=value overrides)."""
    config, positional, overrides = None, [], []
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        elif arg.endswith((".yaml", ".yml")) and config is None:
            config = arg
        else:
            positional.append(arg)
    return config, positional, overrides


def _derived(cls: type, rank: RankConfig) -> dict:
    """What a command's config takes from the rank config."""
    if cls is ExportConfig:
        return to_dict(rank.export_config())
    out = {"store": rank.store_url()}
    if cls is CampaignConfig and rank.output_dir:
        out["eval_dir"] = os.path.join(rank.output_dir, "eval")  # where `rlhf eval run=...` writes
    if cls in (StatusConfig, AnnotateConfig):
        out["annotators_per_task"] = rank.annotators_per_task
    return out


def load_command(cls: type, config: str | None, overrides: list[str], check: bool = True):
    """`cls` from the rank config file (what this command needs of it), then this command's overrides; with
    `check` false, type-checked but not validated (what --help shows)."""
    if cls is RankConfig or config is None:
        return load_config(cls, config, overrides) if check else resolve_unchecked(cls, config, overrides)
    own = {f.name for f in dataclasses.fields(cls)}
    # Overrides of the keys that mean the same in the rank config also settle what the file leaves out
    # (not output_dir: the run folder there, the export folder for `rank export`).
    shared = [o for o in overrides if o.split("=", 1)[0].strip() in own & SHARED_KEYS]
    rank = load_config(RankConfig, config, shared)
    base = {k: v for k, v in _derived(cls, rank).items() if k in own}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in own:
            import difflib

            close = difflib.get_close_matches(key, sorted(own), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (keys: {', '.join(sorted(own))})"
            raise ConfigError(f"override '{item}': unknown key '{key}' for this command{hint}")
    return _merge(cls, base, overrides, config, check)


def _merge(cls: type, base: dict, overrides: list[str], source: str, check: bool = True):
    """`cls` from what the rank config gave (`base`) and this command's overrides; errors name their origin."""
    data = dict(base)
    origins = apply_overrides(cls, data, overrides)
    if any(o.split("=", 1)[0].strip() == "run" for o in overrides):
        for key in getattr(cls, "RUN_PATHS", {}):  # run= given here beats what the rank config derived
            if key not in origins:
                data.pop(key, None)
        apply_run(cls, data)
    cfg = from_dict(cls, data, source=source)
    return validated(cfg, origins, source) if check else cfg


def parse(prog: str, cls: type, argv: list[str], doc: str, positional: int = 0):
    """(config or None after --help, the positional arguments)."""
    config, extra, overrides = _split([a for a in argv if a not in ("-h", "--help")])
    if any(a in ("-h", "--help") for a in argv):
        values = load_command(cls, config, overrides, check=False) if config or overrides else None
        print_help(prog, cls, doc, values, config, overrides)
        return None, []
    if len(extra) > positional:
        raise UserError(f"unexpected argument '{extra[positional]}': give CONFIG.yaml, then key=value overrides")
    return load_command(cls, config, overrides), extra


# ----------------------------------------------------------------------------------------------
# serve


def check_port(host: str, port: int) -> None:
    """One line and exit 2 for a port that is taken or a host this machine does not have (not six uvicorn lines)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"host '{host}': cannot listen there ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use (another server?); choose port=...") from None
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror})") from None


def serve(argv: list[str]) -> int:
    cfg, _ = parse("rlhf rank serve", RankConfig, argv, "Serve the ranking pages and JSON API.")
    if cfg is None:
        return 0
    import uvicorn

    from reward.rankings.app.server import CONFIG_ENV

    if cfg.guidelines and not os.path.isfile(cfg.guidelines):
        raise UserError(f"guidelines: file not found: {cfg.guidelines}")
    # Migrate once here, fail with one line if the store is missing or unreachable, and save N in it.
    store = open_store(cfg.store_url(), create=False)
    if cfg.annotators_per_task is not None:
        store.set_annotators_per_task(cfg.annotators_per_task)
    n = store.annotators_per_task()
    store.close()
    check_port(cfg.host, cfg.port)
    if cfg.output_dir:
        save_config(redacted(cfg), os.path.join(cfg.output_dir, "rank", "config.yaml"))
    os.environ[CONFIG_ENV] = json.dumps(to_dict(cfg))
    hosts = ", ".join(cfg.hosts_served())
    print(
        f"ranking app on http://{cfg.host}:{cfg.port}/ (store {safe_url(cfg.store_url())}, N={n}; "
        f"Host headers served: {hosts}, see allowed_hosts)",
        flush=True,
    )
    uvicorn.run(
        "reward.rankings.app.server:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        log_level=cfg.log_level,
        # X-Forwarded-* only from the configured proxies: uvicorn's default trusts any loopback peer, which
        # would let a client on this machine (or behind an unconfigured proxy) pick its own address. The
        # app applies the same rule itself (server.py), for any other way of serving it.
        proxy_headers=bool(cfg.forwarded_allow_ips),
        forwarded_allow_ips=",".join(cfg.forwarded_allow_ips),
        server_header=False,
    )
    return 0


# ----------------------------------------------------------------------------------------------
# users


def _password(cfg: UsersConfig, name: str) -> str:
    pw = cfg.password or os.environ.get("RLHF_RANK_PASSWORD")
    if not pw:
        if sys.stdin.isatty():
            pw = getpass.getpass(f"password for {name}: ")
        else:
            pw = sys.stdin.readline().rstrip("\n")
    if len(pw) < 4:
        raise UserError("password must be at least 4 characters (password=..., $RLHF_RANK_PASSWORD or stdin)")
    return pw


def action_of(argv: list[str], what: str, actions: tuple, prog: str, cls: type, doc: str):
    """(ACTION, the rest) of `rlhf rank <what> ACTION ...`; None after printing --help; UserError for another."""
    if not argv or argv[0] in ("-h", "--help"):
        print_help(prog, cls, doc)
        return None
    if argv[0] not in actions:
        raise UserError(f"unknown {what} action '{argv[0]}' (one of {', '.join(actions)})")
    return argv[0], argv[1:]


def users(argv: list[str]) -> int:
    doc = "Manage annotators and admins: " + " | ".join(USER_ACTIONS) + " (NAME after the action)."
    found = action_of(argv, "users", USER_ACTIONS, "rlhf rank users ACTION [NAME]", UsersConfig, doc)
    if found is None:
        return 0
    action, rest = found
    cfg, extra = parse(f"rlhf rank users {action}", UsersConfig, rest, doc, positional=0 if action == "list" else 1)
    if cfg is None:
        return 0
    if action != "list" and not extra:
        raise UserError(f"`rlhf rank users {action}` needs a user NAME")
    name = extra[0] if extra else None

    # Only `add` may create a new store: a typo in store= for the other actions should fail, not make an empty file.
    store = open_store(cfg.store, create=action == "add")
    try:
        print(_user_action(store, cfg, action, name))
    finally:
        store.close()
    return 0


def _user_action(store, cfg: UsersConfig, action: str, name: str | None) -> str:
    if action == "add":
        store.add_user(name, role=cfg.role, password=_password(cfg, name))
        return f"added {cfg.role} '{name}'"
    if action == "list":
        rows = store.list_users()
        return "\n".join(
            f"{u['name']:<24} {u['role']:<10} {'active' if u['active'] else 'inactive':<9} rankings={u['rankings']}"
            for u in rows
        )
    if action == "set-password":
        revoked = store.set_password(name, _password(cfg, name))
        return f"password changed for '{name}' ({revoked} sessions and tokens revoked)"
    if action == "set-role":
        store.set_role(name, cfg.role)
        return f"'{name}' is now {cfg.role}"
    if action == "revoke":
        return f"revoked {store.revoke_tokens(name)} sessions and tokens of '{name}'"
    if action == "deactivate":
        return f"'{name}' deactivated ({store.set_active(name, False)} sessions and tokens revoked)"
    if action == "activate":
        store.set_active(name, True)
        return f"'{name}' can log in again"
    token, _ = store.create_token(name, kind="api", ttl_seconds=cfg.token_hours * 3600)
    return token  # printed once; only its hash is stored


# ----------------------------------------------------------------------------------------------
# status, export, import, annotate


def status(argv: list[str]) -> int:
    cfg, _ = parse("rlhf rank status", StatusConfig, argv, "Print collection progress.")
    if cfg is None:
        return 0
    store = open_store(cfg.store, create=False)
    try:
        n = cfg.annotators_per_task or store.annotators_per_task()
        overview = store.overview(n)
        annotators = store.annotator_rows()
    finally:
        store.close()
    if cfg.json:
        print(json.dumps({"overview": {**overview, "annotators_per_task": n}, "annotators": annotators}))
        return 0
    o = overview
    print(
        f"tasks {o['tasks']} (N={n}): complete {o['complete']}, partly ranked {o['in_progress']}, "
        f"open now {o['leased_now']}; rankings {o['rankings']}/{o['rankings_needed']}; flags {o['flags']}"
    )
    for a in annotators:
        med = f"{a['median_seconds']:.1f}s" if a["median_seconds"] is not None else "-"
        print(f"  {a['name']:<20} {a['role']:<10} rankings {a['rankings']:<6} skips {a['skips']:<4} median {med}")
    return 0


def export_cmd(argv: list[str]) -> int:
    cfg, _ = parse("rlhf rank export", ExportConfig, argv, "Export rankings as preference datasets.")
    if cfg is None:
        return 0
    from reward.rankings.export import export

    if os.path.exists(cfg.output_dir) and not os.path.isdir(cfg.output_dir):
        raise UserError(f"output_dir {cfg.output_dir} is a file, not a folder")
    print(f"exporting rankings from {safe_url(cfg.store)} ...", flush=True)
    manifest = export(cfg)
    for schema, out in manifest["outputs"].items():
        rows = ", ".join(f"{n} {split}" for split, n in out["rows"].items())
        print(f"  {schema}: {rows} rows -> {', '.join(out['written'].values())}")
    prompts = manifest["prompts"]
    print(f"export: done; {prompts['train']} train / {prompts['test']} test prompts; wrote {cfg.output_dir}")
    return 0


def import_cmd(argv: list[str]) -> int:
    doc = "Add tasks (a prompt and K completions) from a file or datasets folder; the first argument may be the path."
    if any(a in ("-h", "--help") for a in argv):
        return parse("rlhf rank import [PATH]", ImportConfig, argv, doc, positional=1)[0] or 0
    config, extra, overrides = _split(argv)
    if len(extra) > 1:
        raise UserError(f"unexpected argument '{extra[1]}': give PATH, CONFIG.yaml, then key=value overrides")
    if extra:
        overrides = [f"path={extra[0]}", *overrides]
    cfg = load_command(ImportConfig, config, overrides)
    from reward.rankings.importer import import_tasks

    report = import_tasks(cfg)
    print(report["summary"])
    return 0


def annotate(argv: list[str]) -> int:
    cfg, _ = parse("rlhf rank annotate", AnnotateConfig, argv, "Scripted annotators rank through the server's API.")
    if cfg is None:
        return 0
    from reward.rankings.annotator import run_scripted

    result = run_scripted(cfg)
    for name, count in result["per_annotator"].items():
        print(f"{name}: {count} rankings")
    print(f"annotate: done in {result['seconds']:.1f} s; {result['rankings']} rankings through {result['url']}")
    return 0


def campaign(argv: list[str]) -> int:
    doc = "Evaluation campaigns: " + " | ".join(CAMPAIGN_ACTIONS) + " (people rank policies blind; see campaign.py)."
    found = action_of(argv, "campaign", CAMPAIGN_ACTIONS, "rlhf rank campaign ACTION", CampaignConfig, doc)
    if found is None:
        return 0
    action, rest = found
    cfg, _ = parse(f"rlhf rank campaign {action}", CampaignConfig, rest, doc)
    if cfg is None:
        return 0
    from reward.rankings.campaign import run

    print(run(action, cfg))
    return 0
