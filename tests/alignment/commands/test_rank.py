"""`rlhf rank ...`: one rank config for every command, N in the store, and one line + exit 2 for every mistake."""

from __future__ import annotations

import json
import socket

import pytest
import yaml

from alignment.commands.rank import main
from alignment.common.errors import UserError
from reward.rankings.store import open_store
from tests.reward.rankings.conftest import add_tasks, local_client


def rank_yaml(tmp_path, **extra) -> str:
    cfg = {"output_dir": str(tmp_path / "run"), "annotators_per_task": 2, "lease_seconds": 60, **extra}
    path = tmp_path / "rank.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def seeded(tmp_path, n_tasks=3):
    (tmp_path / "run").mkdir(exist_ok=True)
    store = open_store(str(tmp_path / "run" / "rankings.db"))
    add_tasks(store, n_tasks)
    return store


@pytest.mark.slow  # imports `datasets` and writes two exports
def test_one_rank_config_for_status_export_users_and_the_admin_export(tmp_path, capsys, monkeypatch):
    import uvicorn

    store = seeded(tmp_path)
    config = rank_yaml(tmp_path, export={"pairs": "adjacent", "test_size": 0})
    monkeypatch.setenv("RLHF_RANK_PASSWORD", "pw-ann")
    assert main(["users", "add", "ann", config]) == 0
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    assert main(["serve", config, "port=8766"]) == 0  # saves N = 2 in the store
    assert store.annotators_per_task() == 2
    ann = store.authenticate("ann", "pw-ann").id
    for _ in range(3):
        v = store.next_task(ann, 2, 60)
        store.submit(ann, v.task_id, [1, 2, 3], f"k{v.task_id}", 2)
    capsys.readouterr()
    # status reads the store from the same file and N from the store: 3 rankings of 3 x 2 needed
    assert main(["status", config, "json=true"]) == 0
    overview = json.loads(capsys.readouterr().out)["overview"]
    assert overview["rankings"] == 3 and overview["rankings_needed"] == 6 and overview["annotators_per_task"] == 2
    # export writes output_dir/export (where the reward stage reads) with the file's export section
    assert main(["export", config]) == 0
    manifest = json.loads((tmp_path / "run" / "export" / "manifest.json").read_text())
    assert manifest["outputs"]["kwise"]["rows"]["train"] == 3 and manifest["prompts"]["test"] == 0
    assert yaml.safe_load((tmp_path / "run" / "export" / "config.yaml").read_text())["pairs"] == "adjacent"
    # an override of the export's own keys still works, and a key of no command is refused by name
    assert main(["export", config, f"output_dir={tmp_path / 'elsewhere'}"]) == 0
    assert (tmp_path / "elsewhere" / "kwise").is_dir()
    with pytest.raises(UserError, match="unknown key 'lease_seconds'"):
        main(["export", config, "lease_seconds=5"])
    store.close()


def test_status_and_server_agree_on_completeness(tmp_path, capsys):

    from reward.rankings.app.server import create_app
    from reward.rankings.config import RankConfig

    store = seeded(tmp_path, n_tasks=2)
    store.add_user("root", role="admin", password="pw-root")
    app = create_app(RankConfig(store=store.url, annotators_per_task=3), store=store)
    client = local_client(app)
    token = client.post("/api/login", json={"username": "root", "password": "pw-root"}).json()["token"]
    server_view = client.get("/api/admin/stats", headers={"Authorization": f"Bearer {token}"}).json()["overview"]
    assert main(["status", f"store={store.url}", "json=true"]) == 0
    cli_view = json.loads(capsys.readouterr().out)["overview"]
    assert cli_view["rankings_needed"] == server_view["rankings_needed"] == 6
    store.close()


def test_numeric_settings_are_range_checked_when_the_config_loads(tmp_path):
    seeded(tmp_path)
    for bad, key in (
        ("port=0", "port"),
        ("port=70000", "port"),
        ("lease_seconds=-1", "lease_seconds"),
        ("lease_seconds=.nan", "lease_seconds"),
        ("annotators_per_task=0", "annotators_per_task"),
        ("undo_seconds=-5", "undo_seconds"),
        ("session_hours=0", "session_hours"),
        ("max_body_kb=0", "max_body_kb"),
        ("workers=0", "workers"),
        ("export.test_size=-0.5", "export.test_size"),
        ("export.flag_quorum=0", "export.flag_quorum"),
    ):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            main(["serve", rank_yaml(tmp_path), bad])
    with pytest.raises(UserError, match="token_hours"):
        main(["users", "token", "x", rank_yaml(tmp_path), "token_hours=-1"])
    with pytest.raises(UserError, match="annotators_per_task"):
        main(["status", rank_yaml(tmp_path), "annotators_per_task=-2"])


def cli(capsys, *args) -> tuple[int, str]:
    """`rlhf rank ...` in this process, through the real entry point: (exit code, stderr)."""
    from alignment.cli import main as rlhf

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        rlhf(["rank", *args])
    return done.value.code, capsys.readouterr().err


def test_store_mistakes_are_one_line_and_exit_2_on_every_command(tmp_path, capsys):
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("this is not a database\n" * 100)
    cases = {
        "missing folder": f"store={tmp_path / 'no' / 'such' / 'rankings.db'}",
        "missing file": f"store={tmp_path / 'typo.db'}",
        "not a database": f"store={not_a_db}",
        "malformed url": "store=postgresql://bob:s3cr3t@host:notaport/db",
        "unsupported url": "store=mysql://bob:s3cr3t@host/db",
    }
    commands = [
        ["serve"],
        ["status"],
        ["export"],
        ["users", "list"],
        ["annotate", "users=a", "score=len"],
    ]
    for what, store in cases.items():
        for cmd in commands:
            extra = [f"output_dir={tmp_path / 'out'}"] if cmd == ["export"] else []
            code, err = cli(capsys, *cmd, store, *extra, *(["password=pw12"] if cmd[0] == "annotate" else []))
            assert code == 2, (what, cmd, err)
            assert err.count("\n") == 1 and err.startswith("error: "), (what, cmd, err)
            assert "s3cr3t" not in err and "Traceback" not in err
    assert not (tmp_path / "no").exists() and not (tmp_path / "typo.db").exists()


def test_serve_on_a_busy_port_is_one_line_and_exit_2(tmp_path, capsys):
    store = seeded(tmp_path)
    store.close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, err = cli(capsys, "serve", f"store={tmp_path / 'run' / 'rankings.db'}", f"port={port}")
    assert code == 2 and err.count("\n") == 1 and "already in use" in err


@pytest.mark.slow  # starts a real server
def test_annotate_dry_runs_a_campaign_through_a_real_server(tmp_path, capsys):
    store = seeded(tmp_path, n_tasks=6)
    store.close()
    config = rank_yaml(tmp_path)
    args = [
        "annotate",
        config,
        "users=bot1,bot2",
        "score=alignment.assets.gold:gold_reward",
        "temperature=0",
        "password=pw-bot",
    ]
    with pytest.raises(UserError, match="bot1"):
        main(args)  # the accounts do not exist yet
    assert main([*args, "create_users=true"]) == 0
    out = capsys.readouterr().out
    assert "12 rankings" in out
    store = open_store(str(tmp_path / "run" / "rankings.db"))
    rows = store.rankings()
    assert len(rows) == 12 and {r["annotator"] for r in rows} == {"bot1", "bot2"}
    # temperature 0 and the gold score, equal for these neutral texts ("answer 2 to ..."): ties broken by position
    assert all(r["ranks"] == [1, 2, 3] for r in rows)
    store.close()
