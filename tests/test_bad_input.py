"""Bad input on every command: one line on stderr naming the culprit, exit code 2, no traceback, and nothing
written to output_dir. The JSON API answers 4xx with a one-line `detail`.

Every case fails before a model loads (configs are checked when they load, inputs before the first write), so
the whole corpus runs in-process through the real entry point, `alignment.cli.main`, in a few seconds.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import socket

import pytest

from tests.reward.rankings.conftest import local_client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUNCS = "tests.alignment.common.test_functions"


@pytest.fixture(autouse=True)
def _fresh_logger(monkeypatch):
    # The `rlhf` logger keeps the stderr it first saw; each test has its own captured stderr.
    monkeypatch.setattr(logging.getLogger("rlhf"), "handlers", [])
    monkeypatch.chdir(REPO)


def rlhf(capsys, *args: str) -> tuple[int, str]:
    """`rlhf ARGS` in this process: (exit code, stderr)."""
    from alignment.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return done.value.code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str, absent: tuple[str, ...] = ()) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    for word in absent:
        assert word not in lines[0], (word, err)


def write(path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def jsonl(path, rows: list[dict]) -> str:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


SFT_ROWS = [{"prompt": f"Review {i}:", "completion": f" fine {i}."} for i in range(4)]


# ----------------------------------------------------------------------------------------------
# Configs: unknown keys, types, ranges, and where the bad value came from


CONFIG_CASES = [
    # (command and arguments, text the line must hold)
    (["sft", "configs/sft.yaml", "lr=1e-4"], ["override 'lr=1e-4'", "train.learning_rate"]),
    (["sft", "configs/sft.yaml", "train.learning_rate=-1"], ["override 'train.learning_rate=-1'", "> 0"]),
    (["sft", "configs/sft.yaml", "train.per_device_batch_size=0"], ["'train.per_device_batch_size' must be >= 1"]),
    (["sft", "configs/sft.yaml", "train.epochs=0"], ["'train.epochs' must be > 0"]),
    (["sft", "configs/sft.yaml", "train.epochs=nan"], ["'train.epochs'", "nan"]),
    (["sft", "configs/sft.yaml", "train.warmup_ratio=2"], ["'train.warmup_ratio' must be in [0, 1]"]),
    (["sft", "configs/sft.yaml", "data.max_length=0"], ["'data.max_length'"]),
    (["sft", "configs/sft.yaml", "adapter.r=0"], ["'adapter.r' must be >= 1"]),
    (["sft", "configs/sft.yaml", "checkpoint.keep_last=-1"], ["'checkpoint.keep_last'"]),
    (["sft", "train.learning_rate=abc"], ["override 'train.learning_rate=abc'", "must be a number"]),
    (["sft", "configs/sft.yaml", "extra-argument"], ["unexpected argument 'extra-argument'"]),
    (["sample", "configs/sample.yaml", "max_new_tokens=0"], ["override 'max_new_tokens=0'", ">= 1"]),
    (["sample", "configs/sample.yaml", "k=1"], ["'k' must be >= 2"]),
    (["sample", "configs/sample.yaml", "top_p=1.5"], ["'top_p' must be in (0, 1]"]),
    (["sample", "configs/sample.yaml", "batch_size=-3"], ["'batch_size'"]),
    (["reward", "configs/reward.yaml", "train.learning_rate=0"], ["override 'train.learning_rate=0'"]),
    (["reward", "configs/reward.yaml", "data.k=1"], ["'data.k' must be >= 2"]),
    (["reward", "configs/reward.yaml", "loss.ties=rao_kupper", "loss.tie_param=0.5"], ["override 'loss.tie_param"]),
    (["reward", "configs/reward.yaml", "eval.batch_size=0"], ["'eval.batch_size'"]),
    (["reward", "configs/reward.yaml", "push_to_hub=true"], ["override 'push_to_hub=true'", "hub_model_id"]),
    (["ppo", "configs/ppo.yaml", "ppo.gamma=2"], ["'ppo.gamma' must be in [0, 1]"]),
    (["ppo", "configs/ppo.yaml", "rollout.per_device_batch_size=0"], ["'rollout.per_device_batch_size'"]),
    (["ppo", "configs/ppo.yaml", "kl.coef=-1"], ["'kl.coef' must be >= 0"]),
    (["ppo", "configs/ppo.yaml", "train.total_episodes=0"], ["'train.total_episodes'"]),
    (["ppo", "configs/ppo.yaml", "reward.function=m:f", "reward.path=r"], ["exactly one of 'reward.path'"]),
    (["eval", "configs/eval.yaml", "generation.max_new_tokens=0"], ["'generation.max_new_tokens' must be >= 1"]),
    (["eval", "configs/eval.yaml", "generation.temperature=0"], ["'generation.temperature' must be > 0"]),
    (["eval", "configs/eval.yaml", "data.limit=0"], ["'data.limit'"]),
    (["eval", "configs/eval.yaml", "policies={}"], ["'policies' is empty"]),
    (["pipeline", "configs/pipeline.yaml", "rounds=0"], ["override 'rounds=0'", "'rounds' must be >= 1"]),
    (["demo", "seed=abc"], ["override 'seed=abc'", "must be an integer"]),
    (["rank", "export", "configs/rank.yaml", "test_size=-1"], ["override 'test_size=-1'"]),
    (["rank", "serve", "configs/rank.yaml", "port=0"], ["override 'port=0'", "'port'"]),
    (["rank", "status", "configs/rank.yaml", "annotators_per_task=0"], ["'annotators_per_task'"]),
    (["rank", "annotate", "configs/rank.yaml", "score=m:f"], ["missing required value 'users'"]),
    (["rank", "annotate", "configs/rank.yaml", "users=a", "score=m:f", "temperature=-1"], ["'temperature'"]),
    (["rank", "users", "token", "bob", "configs/rank.yaml", "token_hours=0"], ["'token_hours'"]),
    (["rank", "users", "add", "configs/rank.yaml"], ["needs a user NAME"]),
    # user functions: one signature (alignment/common/functions.py), checked when the config loads
    (
        ["rank", "annotate", "configs/rank.yaml", "users=a", f"score={FUNCS}:text_and_context"],
        ["score: ", "text_and_context(text, context) must be f(prompt: str, completion: str) -> float"],
    ),
    (
        ["rank", "annotate", "configs/rank.yaml", "users=a", f"score={FUNCS}:raises"],
        ["score: ", "raised KeyError", "probe call"],
    ),
    (["pipeline", "configs/pipeline.yaml", f"annotators.score={FUNCS}:unnamed"], ["annotators.score: ", "(a, b)"]),
    (
        ["ppo", "configs/ppo.yaml", "reward.function=alignment.assets.gold:gold_reward"],
        ["reward.function: ", "gold_reward(completion) must be f(prompts: list[str], completions: list[str])"],
    ),
    (["ppo", "configs/ppo.yaml", "reward.monitor=no_such_module:f"], ["reward.monitor: cannot import"]),
    (["eval", "configs/eval.yaml", "judge=alignment.assets.gold:gold"], ["judge: ", "gold(prompts, completions)"]),
    (["rank", "servee"], ["unknown rank command 'servee'", "serve"]),
    (["sfy"], ["unknown command 'sfy'", "sft"]),
]


@pytest.mark.parametrize("args, needles", CONFIG_CASES, ids=[" ".join(a[:1] + a[2:] or a) for a, _ in CONFIG_CASES])
def test_config_mistakes_are_one_line(capsys, args, needles):
    code, err = rlhf(capsys, *args)
    # a value given on the command line is never blamed on "defaults" or on a YAML file it is not in
    absent = ("defaults:",) + (("configs/",) if any("override" in n for n in needles) else ())
    assert_one_line(code, err, *needles, absent=absent)


def test_command_line_values_are_not_labelled_defaults(capsys, tmp_path):
    code, err = rlhf(capsys, "sft", f"output_dir={tmp_path / 'o'}", "data.path=x.jsonl", "train.epochs=-2")
    assert_one_line(code, err, "override 'train.epochs=-2'", absent=("defaults",))
    code, err = rlhf(capsys, "sft", f"output_dir={tmp_path / 'o'}", "model.name_or_path=builtin:tiny-llama")
    assert_one_line(code, err, "missing required value 'data.path'", absent=("defaults",))
    code, err = rlhf(capsys, "reward", f"output_dir={tmp_path / 'o'}", "data.path=d.jsonl")
    assert_one_line(code, err, "missing required value 'model.name_or_path'", "run=")
    assert not (tmp_path / "o").exists()


def test_yaml_values_name_the_file(capsys, tmp_path):
    path = write(tmp_path / "my.yaml", f"output_dir: {tmp_path / 'o'}\ndata:\n  path: d.jsonl\ntrain:\n  epochs: -1\n")
    code, err = rlhf(capsys, "sft", path)
    assert_one_line(code, err, f"{path}: 'train.epochs' must be > 0")
    code, err = rlhf(capsys, "sft", write(tmp_path / "latin1.yaml", "output_dir: caf\xe9\n".encode("latin-1")))
    assert_one_line(code, err, "latin1.yaml", "UTF-8")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "override, stage",
    [
        ("ppo=[train.learning_rate=0]", "pipeline stage ppo"),
        ("reward=[train.lr=1]", "pipeline stage reward"),
        ("sft=[train.per_device_batch_size=0]", "pipeline stage sft"),
        ("sample=[k=1]", "pipeline stage sample"),
        ("export=[pairs=some]", "pipeline stage export"),
    ],
)
def test_pipeline_checks_every_stage_before_the_first_runs(capsys, tmp_path, override, stage):
    out = tmp_path / "run"
    code, err = rlhf(capsys, "pipeline", "configs/pipeline.yaml", f"output_dir={out}", override)
    assert_one_line(code, err, stage, absent=("configs/sft.yaml", "defaults:"))
    assert not out.exists()  # no SFT ran, no logs folder was made


# ----------------------------------------------------------------------------------------------
# Output folders and data files


def test_output_dir_that_is_a_file(capsys, tmp_path):
    taken = write(tmp_path / "taken", "a file")
    data = jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    for args in (
        ["sft", "configs/sft.yaml", f"output_dir={taken}", f"data.path={data}"],
        ["reward", "configs/reward.yaml", f"output_dir={taken}/sub"],
        ["rank", "export", f"store={tmp_path / 'none.db'}", f"output_dir={taken}"],
    ):
        code, err = rlhf(capsys, *args)
        assert_one_line(code, err, "taken")
    assert open(taken).read() == "a file"


@pytest.mark.parametrize(
    "name, content, needles",
    [
        ("gz.jsonl", gzip.compress(b'{"prompt": "a", "completion": "b"}\n'), ["gz.jsonl", "gzip"]),
        ("latin1.jsonl", '{"prompt": "caf\xe9", "completion": "b"}\n'.encode("latin-1"), ["latin1.jsonl:1", "UTF-8"]),
        ("latin1.csv", "prompt,completion\ncaf\xe9,b\n".encode("latin-1"), ["latin1.csv:2", "UTF-8"]),
        ("gz.json", gzip.compress(b"[]"), ["gz.json", "gzip"]),
        ("bad.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": \n', ["bad.jsonl:2", "not valid JSON"]),
        ("rows.json", '{"not": "a list"}', ["rows.json", "list of objects"]),
        ("missing.jsonl", None, ["missing.jsonl", "does not exist"]),
    ],
)
def test_sft_data_files(capsys, tmp_path, name, content, needles):
    path = str(tmp_path / name) if content is None else write(tmp_path / name, content)
    out = tmp_path / "out"
    code, err = rlhf(capsys, "sft", "configs/sft.yaml", f"output_dir={out}", f"data.path={path}")
    assert_one_line(code, err, *needles)
    assert not out.exists()  # no config.yaml left behind


def kwise(prompt: str, completions: list[str], ranks: list[int]) -> dict:
    return {"prompt": prompt, "completions": completions, "ranks": ranks}


PAIR = {"prompt": "p", "chosen": "a good answer", "rejected": "a bad answer"}
SAME = {"prompt": "q", "chosen": "x", "rejected": "x"}
PREFERENCE_DATA = [
    # (rows, extra overrides, text the line must hold): data that carries no preference or breaks its shape
    ([SAME] * 3, [], ["no usable comparison in 3 rows", "3 with identical completions"]),
    ([kwise(f"p{i}", ["a", "b", "c"], [1, 1, 1]) for i in range(4)], [], ["4 with every completion tied"]),
    ([kwise("p", ["a", "b"], [1, 2]), SAME], ["data.unusable=error"], ["d.jsonl:2", "identical (chosen == rejected)"]),
    ([kwise("p", ["a", "a", "b"], [1, 2, 3])], ["data.unusable=error"], ["d.jsonl:1", "1 and 2 are identical but"]),
    ([kwise("p", [" a", "a "], [1, 2])], [], ["no usable comparison in 1 rows"]),  # the same text, spaced
    ([kwise("p", ["a", "b", "c"], [1, 2, 3]), kwise("q", ["a", "b"], [1, 2])], ["data.k=3"], ["d.jsonl:2", "K=3"]),
    ([PAIR], ["data.k=3"], ["d.jsonl:1", "expected K=3 completions (data.k), got a chosen/rejected pair"]),
    ([kwise("p", ["a", "b", "c"], [1, 2, 3]), kwise("q", ["a", "b"], [1, 2])], ["data.k=2"], ["d.jsonl:1", "got 3"]),
    ([{"prompt": "p", "chosen": "a"}], [], ["d.jsonl:1", "'rejected'"]),
    ([kwise("p", ["a", " "], [1, 2])], [], ["d.jsonl:1", "completion 2 is empty"]),
    ([{"prompt": "p", "chosen": "a", "rejected": ""}], [], ["d.jsonl:1", "'rejected' is missing, empty"]),
    ([kwise("p", ["a", "b"], [1, "x"])], [], ["d.jsonl:1", "ranks must be integers"]),
    ([kwise("p", ["a", "b", "c"], [1, 2])], [], ["d.jsonl:1", "2 ranks for 3 completions"]),
    # a K-wise row's soft label: one finite number per completion, in the order of any ranks it also gives
    ([{"prompt": "p", "completions": ["a", "b"], "scores": [1, "x"]}], [], ["d.jsonl:1", "'scores' must be a list"]),
    ([{"prompt": "p", "completions": ["a", "b"], "scores": [1, float("nan")]}], [], ["d.jsonl:1", "2 finite numbers"]),
    ([{**kwise("p", ["a", "b"], [1, 2]), "scores": [0, 1]}], [], ["d.jsonl:1", "'ranks' and 'scores' disagree"]),
    ([{"prompt": "p", "completions": ["a", "a"], "scores": [1, 1]}] * 2, [], ["no usable comparison in 2 rows"]),
    # ties are a label only beside rows that prefer something (equal scores everywhere: nothing to learn)
    (
        [{"prompt": f"p{i}", "completions": ["a", "b"], "scores": [1, 1]} for i in range(3)],
        [],
        ["no preference in 3 rows"],
    ),
]
STAGE_DATA_ARGS = {
    "reward": ["reward", "configs/reward.yaml"],
    "dpo": ["dpo", "configs/dpo.yaml", "loss.type=sigmoid"],
}


@pytest.mark.parametrize("stage", ["reward", "dpo"])
@pytest.mark.parametrize("rows, extra, needles", PREFERENCE_DATA, ids=[str(i) for i in range(len(PREFERENCE_DATA))])
def test_preference_data(capsys, tmp_path, stage, rows, extra, needles):
    """The reward stage and DPO read rankings through one loader and refuse the same rows with the same line."""
    data = jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out"
    args = [f"output_dir={out}", f"data.path={data}", "data.eval_path=null", "data.test_size=0"]
    code, err = rlhf(capsys, *STAGE_DATA_ARGS[stage], *args, "model.name_or_path=builtin:tiny-llama", *extra)
    assert_one_line(code, err, *needles)
    assert not out.exists()


def test_reward_drops_unusable_rows_and_counts_them(tmp_path, caplog):
    from reward import data as rdata

    rankings = [rdata.to_ranking(r, f"d:{i + 1}") for i, r in enumerate([
        kwise("p", ["a", "b"], [1, 2]), {"prompt": "q", "chosen": "x", "rejected": "x"}, kwise("r", ["a", "b"], [1, 1]),
    ])]  # fmt: skip
    log = logging.getLogger("test-drop")
    with caplog.at_level(logging.WARNING, logger="test-drop"):
        kept = rdata.drop_unusable(rankings, "drop", "drop", "data.path", log)
    assert [r["prompt"] for r in kept] == ["p"]
    assert "dropped 2 of 3 rows" in caplog.text and "1 with identical" in caplog.text and "1 with every" in caplog.text
    # a tie-aware loss learns from ties: a tied ranking of different texts is usable there
    assert len(rdata.drop_unusable(rankings, "rao_kupper", "drop", "data.path")) == 2


def test_sample_prompts_and_store(capsys, tmp_path):
    out = tmp_path / "out"
    not_db = write(tmp_path / "notes.db", "not a database\n" * 50)
    for args, needles in [
        ([f"prompts={write(tmp_path / 'p.jsonl', gzip.compress(b'{}'))}"], ["p.jsonl", "gzip"]),
        ([f"prompts={jsonl(tmp_path / 'q.jsonl', [{'text': 'no prompt'}])}"], ["q.jsonl:1", "'prompt'"]),
        ([f"store={not_db}"], ["notes.db"]),
        (["store=postgresql://u:pw@host:notaport/db"], ["not a valid database URL"]),
    ]:
        code, err = rlhf(capsys, "sample", "configs/sample.yaml", f"output_dir={out}", "model.name_or_path=nowhere/x/y",
                         *args)  # fmt: skip
        assert_one_line(code, err, *needles)
    assert not out.exists()


def test_eval_and_ppo_inputs(capsys, tmp_path):
    out = tmp_path / "out"
    prompts = write(tmp_path / "p.jsonl", b"\xff\xfe{}\n")
    for args, needles in [
        (["eval", "configs/eval.yaml", f"output_dir={out}", f"data.path={prompts}", "policies={a: builtin:tiny-llama}",
          "reward_model=null", "reference=null"], ["p.jsonl:1", "UTF-8"]),
        (["eval", "configs/eval.yaml", f"output_dir={out}", "policies={a: runs/none/sft}"], ["policies.a", "runs/none"]),
        (["ppo", "configs/ppo.yaml", f"output_dir={out}", "model.name_or_path=./runs/none/sft"], ["runs/none/sft"]),
    ]:  # fmt: skip
        code, err = rlhf(capsys, *args)
        assert_one_line(code, err, *needles)
    assert not out.exists()


def test_rank_inputs(capsys, tmp_path):
    from reward.rankings.store import open_store

    store_path = str(tmp_path / "run" / "rankings.db")
    os.makedirs(tmp_path / "run")
    open_store(store_path).close()
    for args, needles in [
        (["import", write(tmp_path / "t.jsonl", gzip.compress(b"{}")), f"store={store_path}"], ["t.jsonl", "gzip"]),
        (["import", write(tmp_path / "u.jsonl", b'{"prompt": "\xe9"}\n'), f"store={store_path}"], ["u.jsonl:1"]),
        (["status", f"store={tmp_path / 'typo.db'}"], ["typo.db"]),
        (["serve", f"store={tmp_path / 'no' / 'x.db'}"], ["x.db", "not found"]),
    ]:
        code, err = rlhf(capsys, "rank", *args)
        assert_one_line(code, err, *needles)
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "no").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        code, err = rlhf(capsys, "rank", "serve", f"store={store_path}", f"port={busy.getsockname()[1]}")
    assert_one_line(code, err, "already in use")


SLOW = pytest.mark.slow  # `rank annotate` starts a server process, or retries a closed port for seconds
UNREACHABLE_PG = "postgresql://u:secret@127.0.0.1:1/rankings"  # nothing listens on port 1
ANNOTATE = ["annotate", "users=bot", "score=alignment.assets.gold:gold_reward", "password=pw-bot"]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["status"], ["none.db: ranking store not found"]),
        (["export", "output_dir={tmp}/out"], ["none.db: ranking store not found"]),
        (["users", "list"], ["none.db: ranking store not found"]),
        (["users", "token", "bob"], ["none.db: ranking store not found"]),
        (["serve"], ["none.db: ranking store not found"]),
        pytest.param(ANNOTATE, ["server for this run exited (code 2)", "none.db: ranking store not found"], marks=SLOW),
        (["status", f"store={UNREACHABLE_PG}"], ["cannot open the ranking store", "Connection refused"]),
        (["users", "add", "bob", f"store={UNREACHABLE_PG}", "password=pw-bob"], ["cannot open the ranking store"]),
        (["import", "{tasks}", f"store={UNREACHABLE_PG}"], ["u:***@127.0.0.1:1", "cannot open the ranking store"]),
        (["export", f"store={UNREACHABLE_PG}", "output_dir={tmp}/out"], ["cannot open the ranking store"]),
        pytest.param([*ANNOTATE, f"store={UNREACHABLE_PG}"], ["exited (code 2)", "u:***@127.0.0.1:1"], marks=SLOW),
        pytest.param([*ANNOTATE, "url=http://127.0.0.1:9"], ["cannot log in", "cannot reach the ranking"], marks=SLOW),
    ],
)
def test_a_missing_or_unreachable_store_or_server_is_one_line_on_every_rank_command(capsys, tmp_path, args, needles):
    tasks = jsonl(tmp_path / "tasks.jsonl", [{"prompt": "p", "completions": ["a", "b"]}])
    args = [a.format(tmp=tmp_path, tasks=tasks) for a in args]
    if not any(a.startswith("store=") for a in args):
        args.append(f"store={tmp_path / 'none.db'}")
    code, err = rlhf(capsys, "rank", *args)
    assert_one_line(code, err, *needles, absent=("secret",))
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# User names from the safe alphabet, hosts the server answers


@pytest.mark.parametrize(
    "name, needles",
    [
        ("\u0430nn", ["user name '\\u0430nn' is not allowed", "ASCII letters, digits"]),  # Cyrillic a
        ("r\xf6\xf6t", ["user name 'r\\xf6\\xf6t' is not allowed"]),
        ("ann\u200b", ["'ann\\u200b'"]),
        ("Ann", ["user name 'Ann' is taken by 'ann'"]),
    ],
)
def test_look_alike_user_names_are_one_line(capsys, tmp_path, name, needles):
    store = str(tmp_path / "rankings.db")
    code, err = rlhf(capsys, "rank", "users", "add", "ann", f"store={store}", "password=pw-ann")
    assert code == 0, err
    code, err = rlhf(capsys, "rank", "users", "add", name, f"store={store}", "password=pw-x1")
    assert_one_line(code, err, *needles)


def test_allowed_hosts_that_serve_nothing_are_one_line(capsys, tmp_path):
    for value, needle in (("[]", "must not be empty"), ("[evil*.com]", "'evil*.com' is not a host name")):
        code, err = rlhf(capsys, "rank", "serve", f"store={tmp_path / 'r.db'}", f"allowed_hosts={value}")
        assert_one_line(code, err, "allowed_hosts", needle)


# ----------------------------------------------------------------------------------------------
# Writes that fail: a full disk, a read-only folder


@pytest.mark.parametrize("code_, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                          (errno.EACCES, "permission denied")])  # fmt: skip
def test_failed_writes_are_one_line_naming_the_folder(capsys, tmp_path, monkeypatch, code_, words):
    """The CLI boundary: an OSError of a failed write, wherever it is raised, becomes one line naming the folder."""
    import alignment.sft

    def refuse(cfg):
        raise OSError(code_, os.strerror(code_))  # as a write() on a full disk raises it: no file name

    monkeypatch.setattr(alignment.sft, "train", refuse)
    out = tmp_path / "o"
    data = jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    from alignment.config.loader import check_output_dir

    check_output_dir(str(out))
    code, err = rlhf(capsys, "sft", "configs/sft.yaml", f"output_dir={out}", f"data.path={data}")
    assert_one_line(code, err, words, str(out))


# A real full disk: training stages run as a user runs them (a fresh `python -m alignment` process) on a tmpfs
# too small for their checkpoints. torch's zip writer fails with "unexpected pos" on the 2 MB disk, safetensors
# with a SafetensorError on the 1.5 MB one.
TINY_DPO = ["model.name_or_path=builtin:tiny-llama", "data.path=builtin:reviews-rankings", "data.eval_path=null"]
FULL_DISK_STAGES = {
    "sft": ["sft", "configs/sft.yaml", "data.limit=256", "data.eval_size=32"],
    "dpo": ["dpo", "configs/dpo.yaml", *TINY_DPO, "data.limit=64"],
}
FULL_DISK_STEPS = ["train.max_steps=8", "checkpoint.save_steps=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The stage's run on an ordinary disk, once per stage: what a resumed run must equal bit for bit."""
    from tests.conftest import run_stage

    done: dict[str, str] = {}

    def get(stage: str) -> str:
        if stage not in done:
            out = str(tmp_path_factory.mktemp(f"uninterrupted-{stage}") / stage)
            run_stage(*FULL_DISK_STAGES[stage], *FULL_DISK_STEPS, f"output_dir={out}")
            done[stage] = out
        return done[stage]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("stage, size", [("sft", "2m"), ("sft", "1536k"), ("dpo", "2m")])
def test_a_full_disk_during_training_is_one_line_and_resumes_bit_exactly(small_disk, uninterrupted, stage, size):
    import torch
    from safetensors.torch import load_file

    from tests.conftest import run_cli

    disk = small_disk(size)
    out = os.path.join(disk.path, stage)
    args = [*FULL_DISK_STAGES[stage], *FULL_DISK_STEPS, f"output_dir={out}"]
    proc = run_cli(*args)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = f"error: {out}/checkpoints: no space left on the device (or quota); free space and rerun with "
    assert errors == [line + "checkpoint.resume=auto"], proc.stderr[-3000:]
    assert disk.leftovers() == [] and os.listdir(os.path.join(out, "checkpoints")) == ["step-2"]

    disk.resize("64m")  # the operator frees space; the run goes on from its last complete checkpoint
    proc = run_cli(*args, "checkpoint.resume=auto")
    assert proc.returncode == 0 and "resumed from" in proc.stderr, proc.stderr[-3000:]
    resumed = load_file(os.path.join(out, "adapter_model.safetensors"))
    reference = load_file(os.path.join(uninterrupted(stage), "adapter_model.safetensors"))
    assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_the_ranking_store_on_a_full_disk_is_one_line_and_imports_nothing(capsys, tmp_path, small_disk):
    from reward.rankings.store import open_store

    disk = small_disk("2m")
    store_path = os.path.join(disk.path, "rankings.db")
    open_store(store_path).close()
    rows = [{"prompt": f"p{i} " + "x" * 1000, "completions": [f"a{i}", f"b{i}"]} for i in range(200)]  # 200 kB
    tasks = jsonl(tmp_path / "tasks.jsonl", rows)
    disk.fill(leave_bytes=64 * 1024)
    code, err = rlhf(capsys, "rank", "import", tasks, f"store={store_path}")
    assert_one_line(code, err, store_path, "disk holding the ranking store is full", "nothing was saved")
    os.remove(os.path.join(disk.path, "filler"))
    store = open_store(store_path, create=False)
    assert store.count_tasks() == 0  # one transaction: nothing half-imported
    store.close()
    code, err = rlhf(capsys, "rank", "import", tasks, f"store={store_path}")
    assert code == 0, err


def test_an_export_on_a_full_disk_is_one_line_and_keeps_the_export_of_before(capsys, tmp_path, small_disk):
    from reward.rankings.store import open_store
    from tests.reward.rankings.conftest import add_tasks

    store_path = str(tmp_path / "rankings.db")
    store = open_store(store_path)
    ann = store.add_user("ann", password="pw-ann")
    add_tasks(store, 40, k=3, prefix="x" * 400)
    while (view := store.next_task(ann, 1, 60)) is not None:
        store.submit(ann, view.task_id, [1, 2, 3], f"k-{view.task_id}", 1)
    store.close()
    disk = small_disk("4m")
    out = os.path.join(disk.path, "export")
    code, err = rlhf(capsys, "rank", "export", f"store={store_path}", f"output_dir={out}", "formats=[datasets,jsonl]")
    assert code == 0, err
    before = sorted(os.listdir(out))
    kwise = open(os.path.join(out, "kwise_train.jsonl")).read()
    disk.fill(leave_bytes=16 * 1024)
    code, err = rlhf(capsys, "rank", "export", f"store={store_path}", f"output_dir={out}", "formats=[datasets,jsonl]")
    err = "\n".join(line for line in err.splitlines() if not line.startswith("Saving the dataset"))  # progress
    assert_one_line(code, err, f"{out}: no space left on the device", absent=("checkpoint.resume",))
    assert sorted(os.listdir(out)) == before and disk.leftovers() == []
    assert open(os.path.join(out, "kwise_train.jsonl")).read() == kwise


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    from alignment.runtime.tracking import _truncate_after, read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n{"step": 3, "train/lo')
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2]
    _truncate_after(str(path), 2)
    assert path.read_text() == '{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n'
    assert not (tmp_path / "metrics.jsonl.tmp").exists()


# ----------------------------------------------------------------------------------------------
# The JSON API: 4xx with a one-line detail


def test_json_api_bad_bodies_are_4xx_with_one_line_detail(tmp_path):

    from reward.rankings.app.server import create_app
    from reward.rankings.config import RankConfig
    from reward.rankings.store import open_store

    store = open_store(str(tmp_path / "r.db"))
    store.add_user("ann", password="pw-ann")
    task = store.add_task("p?", [{"text": "a"}, {"text": "b"}], {})
    client = local_client(create_app(RankConfig(store=store.url, annotators_per_task=1), store=store))
    token = client.post("/api/login", json={"username": "ann", "password": "pw-ann"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    client.post("/api/tasks/next", headers=auth)
    for path, body, status in [
        (f"/api/tasks/{task}/submit", '{"ranks": [NaN, 1]}', 422),
        (f"/api/tasks/{task}/submit", '{"ranks": "first"}', 422),
        (f"/api/tasks/{task}/submit", "{not json", 422),
        (f"/api/tasks/{task}/flag", '{"kind": "meh"}', 422),
        ("/api/tasks/999999/submit", '{"ranks": [1, 2], "idempotency_key": "k-1"}', 404),
        ("/api/login", '{"username": 5}', 422),
    ]:
        r = client.post(path, content=body, headers=auth)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail, (path, body, detail)
    store.close()


def test_the_corpus_covers_every_command():
    commands = {args[0] if args[0] != "rank" else f"rank {args[1]}" for args, _ in CONFIG_CASES}
    for name in ("sft", "sample", "reward", "ppo", "pipeline", "eval", "demo", "rank serve", "rank status",
                 "rank export", "rank annotate", "rank users"):  # fmt: skip
        assert name in commands, name
