"""`rlhf rank serve|users|export|status`: run and manage the ranking app.

rlhf rank serve CONFIG.yaml [key=value ...]            serve the ranking pages and JSON API
rlhf rank users add NAME store=S [role=admin] [password=...]
rlhf rank users list|set-password NAME|set-role NAME role=R|token NAME   (store=S on each)
rlhf rank export CONFIG.yaml [key=value ...]           rankings -> preference datasets
rlhf rank status store=S [annotators_per_task=N]       progress summary
"""

from __future__ import annotations

import getpass
import json
import os
import sys

from alignment.cli import parse_stage_args
from alignment.config import UserError, save_config, to_dict
from reward.rankings.app.server import CONFIG_ENV
from reward.rankings.config import ExportConfig, RankConfig, StatusConfig, UsersConfig
from reward.rankings.export import export
from reward.rankings.store import open_store

SUBCOMMANDS = ("serve", "users", "export", "status")
USER_ACTIONS = ("add", "list", "set-password", "set-role", "token")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    sub, rest = argv[0], argv[1:]
    if sub == "serve":
        return serve(rest)
    if sub == "users":
        return users(rest)
    if sub == "export":
        return export_cmd(rest)
    if sub == "status":
        return status(rest)
    import difflib

    close = difflib.get_close_matches(sub, SUBCOMMANDS, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserError(f"unknown rank command '{sub}'{hint} (one of {', '.join(SUBCOMMANDS)})")


def serve(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf rank serve", RankConfig, argv, "Serve the ranking pages and JSON API.")
    if cfg is None:
        return 0
    import uvicorn

    if cfg.guidelines and not os.path.isfile(cfg.guidelines):
        raise UserError(f"guidelines: file not found: {cfg.guidelines}")
    open_store(cfg.store).close()  # migrate once here, and fail with one line if the store is unreachable
    if cfg.output_dir:
        save_config(cfg, os.path.join(cfg.output_dir, "rank_config.yaml"))
    os.environ[CONFIG_ENV] = json.dumps(to_dict(cfg))
    print(f"ranking app on http://{cfg.host}:{cfg.port}/ (store {cfg.store}, N={cfg.annotators_per_task})", flush=True)
    uvicorn.run(
        "reward.rankings.app.server:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        log_level=cfg.log_level,
    )
    return 0


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


def users(argv: list[str]) -> int:
    doc = "Manage annotators and admins: " + " | ".join(USER_ACTIONS) + " (NAME after the action)."
    if not argv or argv[0] in ("-h", "--help"):
        parse_stage_args("rlhf rank users ACTION [NAME]", UsersConfig, ["--help"], doc)
        return 0
    action, rest = argv[0], argv[1:]
    if action not in USER_ACTIONS:
        raise UserError(f"unknown users action '{action}' (one of {', '.join(USER_ACTIONS)})")
    name = None
    if action != "list":
        if not rest or "=" in rest[0] or rest[0].startswith("-"):
            raise UserError(f"`rlhf rank users {action}` needs a user NAME")
        name, rest = rest[0], rest[1:]
    cfg = parse_stage_args(f"rlhf rank users {action}", UsersConfig, rest, doc)
    if cfg is None:
        return 0

    # Only `add` may create a new store: a typo in store= for the other actions should fail, not make an empty file.
    store = open_store(cfg.store, create=action == "add")
    try:
        if action == "add":
            store.add_user(name, role=cfg.role, password=_password(cfg, name))
            print(f"added {cfg.role} '{name}'")
        elif action == "list":
            for u in store.list_users():
                print(f"{u['name']:<24} {u['role']:<10} rankings={u['rankings']}")
        elif action == "set-password":
            store.set_password(name, _password(cfg, name))
            print(f"password changed for '{name}' (their sessions were ended)")
        elif action == "set-role":
            store.set_role(name, cfg.role)
            print(f"'{name}' is now {cfg.role}")
        elif action == "token":
            ttl = cfg.token_hours * 3600 if cfg.token_hours else None
            token, _ = store.create_token(name, kind="api", ttl_seconds=ttl)
            # Printed once; only its hash is stored.
            print(token)
    finally:
        store.close()
    return 0


def export_cmd(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf rank export", ExportConfig, argv, "Export rankings as preference datasets.")
    if cfg is None:
        return 0

    print(f"exporting rankings from {cfg.store} ...", flush=True)
    manifest = export(cfg)
    for schema, out in manifest["outputs"].items():
        print(f"{schema}: {out['rows']} -> {', '.join(out['written'].values())}")
    print(
        f"prompts train/test: {manifest['prompts']['train']}/{manifest['prompts']['test']}; {cfg.output_dir}/manifest.json"
    )
    return 0


def status(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf rank status", StatusConfig, argv, "Print collection progress.")
    if cfg is None:
        return 0

    store = open_store(cfg.store, create=False)
    try:
        overview = store.overview(cfg.annotators_per_task)
        annotators = store.annotator_rows()
    finally:
        store.close()
    if cfg.json:
        print(json.dumps({"overview": overview, "annotators": annotators}))
        return 0
    o = overview
    print(
        f"tasks {o['tasks']}: complete {o['complete']}, partly ranked {o['in_progress']}, open now {o['leased_now']}; "
        f"rankings {o['rankings']}/{o['rankings_needed']}; flags {o['flags']}"
    )
    for a in annotators:
        med = f"{a['median_seconds']:.1f}s" if a["median_seconds"] is not None else "-"
        print(f"  {a['name']:<20} {a['role']:<10} rankings {a['rankings']:<6} skips {a['skips']:<4} median {med}")
    return 0
