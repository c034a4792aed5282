"""Bad input on the campaign, gold and best-of-N commands: one line naming the culprit, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest

from reward.rankings.store import open_store
from tests.test_bad_input import _fresh_logger, assert_one_line, rlhf  # noqa: F401  (the autouse fixture)


@pytest.fixture
def store_path(tmp_path):
    path = str(tmp_path / "rankings.db")
    open_store(path).close()
    return path


def test_campaign_mistakes_are_one_line(capsys, tmp_path, store_path):
    eval_dir = tmp_path / "eval"
    cases = [
        (["rank", "campaign", "launch", f"store={store_path}"], ["unknown campaign action 'launch'", "create"]),
        (
            ["rank", "campaign", "create", f"store={store_path}", "name=x", f"eval_dir={eval_dir}"],
            ["eval_dir:", "eval.json not found", "rlhf eval"],
        ),
        (["rank", "campaign", "create", f"store={store_path}", "eval_dir=e", "draws=0"], ["'draws' must be >= 1"]),
        (["rank", "campaign", "create", f"store={store_path}", f"eval_dir={eval_dir}"], ["needs name="]),
        (["rank", "campaign", "report", f"store={store_path}", "name=nope"], ["no campaign 'nope'"]),
        (["rank", "campaign", "report", f"store={tmp_path / 'missing.db'}", "name=a"], ["ranking store not found"]),
        (["rank", "campaign", "report", f"store={store_path}", "name=a", "unit=prompts"], ["'unit'", "prompt"]),
        (["rank", "campaign", "report", f"store={store_path}", "name=a", "bootstrap=1"], ["'bootstrap' must be >= 10"]),
        (["rank", "serve", f"store={store_path}", "gold_rate=2"], ["'gold_rate' must be >= 0 and <= 1"]),
    ]
    for args, needles in cases:
        assert_one_line(*rlhf(capsys, *args), *needles)
    (eval_dir).mkdir()
    (eval_dir / "eval.json").write_text(json.dumps({"policies": {"a": {}, "b": {}}, "config": {}}))
    (eval_dir / "samples.jsonl").write_text(json.dumps({"prompt": "p", "sample": 0, "a": {"completion": "x"}}) + "\n")
    code, err = rlhf(
        capsys,
        "rank",
        "campaign",
        "create",
        f"store={store_path}",
        "name=c",
        f"eval_dir={eval_dir}",
        "policies=[a, zz]",
    )
    assert_one_line(code, err, "policies: zz not in the eval")
    code, err = rlhf(capsys, "rank", "campaign", "create", f"store={store_path}", "name=c", f"eval_dir={eval_dir}")
    assert_one_line(code, err, "samples.jsonl:1: no completion of policy 'b'")
    code, err = rlhf(capsys, "rank", "campaign", "create", f"store={store_path}", "name=bad name", "eval_dir=e")
    assert_one_line(code, err, "campaign name must be")


def test_best_of_n_mistakes_are_one_line(capsys, tmp_path):
    out = tmp_path / "o"
    cases = [
        (
            ["eval", "configs/eval.yaml", f"output_dir={out}", "policies={a: 'bon:x:runs/sft'}"],
            ["'policies.a'", "bon:N:POLICY"],
        ),
        (
            ["eval", "configs/eval.yaml", f"output_dir={out}", "policies={a: 'bon:4:runs/sft'}", "reward_model="],
            ["'policies.a'", "set reward_model"],
        ),
        (["bon", f"output_dir={out}", "reward_model=r"], ["missing required value 'policy'"]),
        (["bon", f"output_dir={out}", "policy=p", "reward_model=r", "n=0"], ["'n' must be >= 1"]),
        (["bon", f"output_dir={out}", "policy=bon:4:p", "reward_model=r"], ["'policy'", "give the policy itself"]),
        (
            ["bon", f"output_dir={out}", "policy=p", f"reward_model={tmp_path / 'nope'}"],
            ["reward_model:", "not a folder"],
        ),
    ]
    for args, needles in cases:
        assert_one_line(*rlhf(capsys, *args), *needles)
    assert not out.exists()
