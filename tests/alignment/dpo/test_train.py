"""`rlhf dpo` on the builtin tiny Llama: learns K-wise and pairwise preferences, writes a policy adapter that plain
PEFT loads in a fresh process, resumes bit for bit after a kill, equals sigmoid DPO with Plackett-Luce at K = 2,
and rejects bad rows in one line."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from alignment.config.loader import load_config
from alignment.dpo.config import DPOConfig
from reward.rankings import synthetic
from tests.conftest import run_stage as run_any_stage
from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow

# 16 rows, 8 a step: each logged window of 2 steps is one epoch, so the logged losses are over the same rankings
# (8 a step on pairs too: train.min_pairs_per_step would take 24 pairs a step, more than the file holds)
COMMON = ["model.name_or_path=builtin:tiny-llama", "adapter.alpha=64", "train.learning_rate=5e-3",
          "train.per_device_batch_size=8", "train.min_pairs_per_step=0", "data.max_length=48",
          "data.max_prompt_length=16", "data.test_size=0", "train.max_steps=8", "train.log_steps=2", "seed=3"]  # fmt: skip
TRL_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected", "train/loss", "train/learning_rate", "train/grad_norm", "train/epoch")  # fmt: skip


def run_stage(*overrides, env=None, check=True):
    return run_any_stage("dpo", *overrides, env=env, check=check)


@pytest.fixture(scope="module")
def kwise_data(tmp_path_factory):
    """K=4 rankings, a K=3 ranking with a tie for first, and a TRL pairwise row in one file."""
    rows = synthetic.rankings(14, k=4, seed=1)
    rows.append({**rows[0], "completions": rows[0]["completions"][:3], "ranks": [1, 1, 3]})
    for row in rows[:1]:
        best, worst = row["ranks"].index(min(row["ranks"])), row["ranks"].index(max(row["ranks"]))
        rows.append(
            {"prompt": row["prompt"], "chosen": row["completions"][best], "rejected": row["completions"][worst]}
        )
    return write_jsonl(tmp_path_factory.mktemp("data") / "kwise.jsonl", rows)


@pytest.fixture(scope="module")
def kwise_run(tmp_path_factory, kwise_data):
    """Plackett-Luce over whole rankings, reference log-probs precomputed, W&B offline: the uninterrupted run."""
    out = tmp_path_factory.mktemp("kwise")
    run_stage(f"output_dir={out}", f"data.path={kwise_data}", f"data.eval_path={kwise_data}", "loss.type=plackett_luce", "loss.precompute_ref=true",
              "tracking.wandb=true", "tracking.mode=offline", *COMMON,
              env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})  # fmt: skip
    return str(out)


def metric_rows(folder):
    # Throughput depends on the machine; every other number must match exactly.
    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    return [{k: v for k, v in r.items() if not k.endswith("_per_second")} for r in rows]


def test_kwise_stage_learns_and_writes_its_folder(kwise_run):
    files = set(os.listdir(kwise_run))
    assert {"adapter_config.json", "adapter_model.safetensors", "eval.json", "manifest.json", "config.yaml",
            "metrics.jsonl", "tokenizer.json"} <= files  # fmt: skip
    assert "config.json" not in files  # an adapter folder, not a copy of the base
    rows = metric_rows(kwise_run)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
    for name in TRL_NAMES:
        assert all(name in r for r in train_rows), name
    # At the start policy = reference, so every ranking costs log K! / (K - 1): log(24) / 3 for K = 4.
    losses = [r["train/loss"] for r in train_rows]
    assert losses == sorted(losses, reverse=True) and losses[0] <= math.log(24) / 3 + 1e-3, losses
    report = json.loads(open(os.path.join(kwise_run, "eval.json")).read())  # evaluated on the training rankings
    assert report["eval/prompts"] == 16 and report["eval/loss"] < losses[-1]
    assert report["eval/rewards/accuracies"] > 0.7 and report["eval/rewards/margins"] > 0
    manifest = json.loads(open(os.path.join(kwise_run, "manifest.json")).read())
    assert manifest["stage"] == "dpo" and manifest["outputs"]["adapter"] == "."
    assert manifest["data"]["k"] == [2, 3, 4] and manifest["loss"]["type"] == "plackett_luce"
    assert manifest["metrics"]["eval/loss"] == report["eval/loss"]
    runs = [d for d in os.listdir(os.path.join(kwise_run, "wandb")) if d.startswith("offline-run-")]
    assert len(runs) == 1


def test_policy_adapter_loads_through_peft_in_a_fresh_process(kwise_run):
    from alignment.runtime import models

    config = json.loads(open(os.path.join(kwise_run, "adapter_config.json")).read())
    base = config["base_model_name_or_path"]
    assert os.path.isabs(base) and os.path.isdir(base) and config["task_type"] == "CAUSAL_LM"
    saved = load_file(os.path.join(kwise_run, "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)  # the base stays frozen and unsaved
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # the adapter moved
    script = textwrap.dedent(
        f"""
        import json, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({kwise_run!r})
        ids = tok("Review of the cafe food: the staff were friendly.", return_tensors="pt")["input_ids"]
        base = AutoModelForCausalLM.from_pretrained({base!r}).eval()
        with torch.no_grad():
            plain = base(ids).logits[0, -1]
            policy = PeftModel.from_pretrained(base, {kwise_run!r}).eval()
            tuned = policy(ids).logits[0, -1]
        print(json.dumps([plain.tolist(), tuned.tolist(), ids[0].tolist()]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain, tuned, ids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(abs(a - b) for a, b in zip(plain, tuned)) > 1e-4
    ours = models.load_causal_lm(
        load_config(DPOConfig, overrides=["output_dir=x", *COMMON[:1], "data.path=x"]).model, kwise_run
    ).eval()
    with torch.no_grad():
        assert ours(torch.tensor([ids])).logits[0, -1].tolist() == pytest.approx(tuned, abs=1e-5)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, kwise_data, kwise_run):
    out = tmp_path / "resumed"
    common = [f"output_dir={out}", f"data.path={kwise_data}", f"data.eval_path={kwise_data}",
              "loss.type=plackett_luce", "loss.precompute_ref=true",
              "checkpoint.save_steps=4", *COMMON]  # fmt: skip
    killed = run_stage(*common, env={"RLHF_KILL_AFTER_CHECKPOINT": "4"}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert os.listdir(out / "checkpoints") == ["step-4"] and not (out / "adapter_model.safetensors").exists()
    run_stage(*common, "checkpoint.resume=auto")
    want = load_file(os.path.join(kwise_run, "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert metric_rows(str(out)) == metric_rows(kwise_run)
    assert json.loads((out / "eval.json").read_text()) == json.loads(open(os.path.join(kwise_run, "eval.json")).read())


def test_plackett_luce_at_k2_through_the_stage_equals_sigmoid_dpo(tmp_path, kwise_data):
    """On pairwise rows the listwise loss is DPO's: the same adapter and metrics from the same data and seed.
    Also a soft label column on every row, and reference log-probs computed in each step; and the same soft label
    as K-wise rows' `scores` (sigmoid(logit 0.8 - 0) = 0.8)."""
    from alignment.dpo.train import train

    rows = [json.loads(line) for line in open(kwise_data)]
    pairs = [{"prompt": r["prompt"], "chosen": r["completions"][r["ranks"].index(1)],
              "rejected": r["completions"][r["ranks"].index(max(r["ranks"]))], "chosen_probability": 0.8}
             for r in rows if "ranks" in r and len(set(r["ranks"])) == 4]  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    scored = [{"prompt": p["prompt"], "completions": [p["chosen"], p["rejected"]], "scores": [math.log(4), 0]}
              for p in pairs]  # fmt: skip
    runs = {"sigmoid": data, "plackett_luce": data, "scores": write_jsonl(tmp_path / "scored.jsonl", scored)}
    reports = {}
    for name, path in runs.items():
        loss_type = "sigmoid" if name == "sigmoid" else "plackett_luce"
        cfg = load_config(DPOConfig, overrides=[f"output_dir={tmp_path / name}", f"data.path={path}",
                                                f"data.eval_path={path}", f"loss.type={loss_type}", *COMMON,
                                                "train.max_steps=4"])  # fmt: skip
        reports[name] = train(cfg)
    sigmoid = load_file(str(tmp_path / "sigmoid" / "adapter_model.safetensors"))
    for name in ("plackett_luce", "scores"):
        listwise = load_file(str(tmp_path / name / "adapter_model.safetensors"))
        for key in sigmoid:
            # Equal up to float rounding, compared tensor by tensor: Adam turns rounding in a near-zero gradient
            # element into a step of the learning rate's size, so one element in 2,048 differed by 5e-5 on an EPYC.
            gap = (listwise[key] - sigmoid[key]).norm() / sigmoid[key].norm().clamp(min=1e-12)
            assert gap < 1e-3, (name, key, gap.item())
        assert reports[name] == pytest.approx(reports["sigmoid"], rel=1e-5), name
    # soft labels 0.8: the loss at the start is the binary cross-entropy at 1/2, log 2, and learning lowers it
    first = next(row for row in metric_rows(str(tmp_path / "sigmoid")) if "train/loss" in row)
    assert first["train/loss"] < math.log(2) + 1e-3 and reports["sigmoid"]["eval/loss"] < math.log(2)


def test_bad_rows_exit_2_with_one_line(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b", "rejected": "c",
            "chosen_probability": 2}]  # fmt: skip
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    proc = run_stage(f"output_dir={tmp_path / 'out'}", f"data.path={path}", *COMMON, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"error: {path}:2: 'chosen_probability' must be a number in [0, 1], got 2", lines
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
