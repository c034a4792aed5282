"""Stage 3 on the builtin tiny Llama: learns a known rule up to the noise ceiling, saves an adapter that
plain PEFT loads in a fresh process, resumes bit for bit after a kill, and rejects bad rows in one line."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from reward import data as D
from reward.model import load_reward_model, score_texts
from reward.rankings import synthetic
from tests.conftest import run_stage as run_any_stage
from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow


def run_stage(*overrides, env=None, check=True):
    # the built-in base unless a test names another (built-in models are used only when named)
    return run_any_stage("reward", "model.name_or_path=builtin:tiny-llama", *overrides, env=env, check=check)


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    """K=4 rankings, K=3 rankings and TRL pairwise rows (with margins) in one file."""
    rows = synthetic.rankings(160, k=4, seed=11)
    mixed = rows[:100]
    for row in rows[100:130]:
        mixed.append({**row, "completions": row["completions"][:3], "ranks": sorted(row["ranks"][:3])})
    for row in rows[130:]:
        best, worst = row["ranks"].index(min(row["ranks"])), row["ranks"].index(max(row["ranks"]))
        mixed.append({"prompt": row["prompt"], "chosen": row["completions"][best],
                      "rejected": row["completions"][worst], "margin": 1.0})  # fmt: skip
    return write_jsonl(tmp_path_factory.mktemp("data") / "mixed.jsonl", mixed)


LORA = ["adapter.method=lora", "adapter.alpha=64", "train.learning_rate=2e-3", "train.per_device_batch_size=4",
        "data.max_length=64", "data.reference_size=64", "train.log_steps=2", "seed=3"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """SFT-style samples (prompt/completion) for reward_stats.json."""
    from alignment.assets import reviews

    return write_jsonl(tmp_path_factory.mktemp("ref") / "sft_samples.jsonl", reviews.sft_rows(40, seed=9))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, mixed_data, reference):
    out = tmp_path_factory.mktemp("lora")
    run_stage(f"output_dir={out}", f"data.path={mixed_data}", "train.max_steps=12", "loss.margin=given",
              f"data.reference_path={reference}", "tracking.wandb=true", "tracking.mode=offline", *LORA,
              env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})  # fmt: skip
    return str(out)


def test_learns_known_rule_up_to_the_noise_ceiling(tmp_path):
    rows = synthetic.rankings(800, k=4, seed=0)
    path = write_jsonl(tmp_path / "rankings.jsonl", rows)
    out = tmp_path / "run"
    # Full fine-tuning: the 64-wide tiny model reaches the ceiling within a few hundred steps this way.
    run_stage(f"output_dir={out}", f"data.path={path}", "data.test_size=0.2", "adapter.method=full",
              "train.learning_rate=2e-3", "train.per_device_batch_size=8", "train.epochs=2", "train.log_steps=50",
              "data.max_length=64", "data.reference_size=128", "seed=0")  # fmt: skip
    report = json.loads((out / "eval.json").read_text())
    # The same split the stage made (same function, seed and rows), to score the gold rule on it.
    rankings = [D.to_ranking(r, f"{path}:{i + 1}") for i, r in enumerate(rows)]
    held = {D.prompt_key(r["prompt"]) for r in D.split_by_prompt(rankings, 0.2, 0)[1]}
    best = synthetic.best_achievable([r for r in rows if r["prompt"] in held])
    print(f"\nheld-out pairwise accuracy {report['accuracy']:.3f}; best achievable under the noise "
          f"{best['empirical']:.3f} (expected {best['expected']:.3f}) on {best['pairs']} pairs")  # fmt: skip
    assert report["pairs"] == best["pairs"]
    assert report["accuracy"] >= best["empirical"] - 0.04
    # Careful annotators (lower noise) are easier to agree with; far-apart ranks are easier than neighbours.
    assert report["per_annotator"]["careful"] > report["per_annotator"]["hasty"]
    assert report["per_rank_gap"]["3"] > report["per_rank_gap"]["1"]
    assert 0 <= report["ece"] < 0.15 and -1 <= report["length_correlation"] <= 1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in lines if "train/loss" in m]
    assert metrics[-1]["reward/accuracy"] > 0.75 and metrics[0]["train/loss"] > metrics[-1]["train/loss"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["weights"] == "." and manifest["metrics"]["eval/accuracy"] == report["accuracy"]
    # A full fine-tune is a plain sequence-classification model folder.
    model, tok = load_reward_model(str(out))
    good, bad = score_texts(model, tok, ["Review of the cafe food:"] * 2,
                            [" the food was great and the staff were friendly.", " the food was awful and cold."])  # fmt: skip
    assert good > bad


def test_adapter_loads_through_peft_in_a_fresh_process(lora_run, reference):
    folder = lora_run
    files = set(os.listdir(folder))
    assert {"adapter_config.json", "adapter_model.safetensors", "reward_stats.json", "eval.json", "manifest.json",
            "config.yaml", "metrics.jsonl", "tokenizer.json"} <= files  # fmt: skip
    assert "config.json" not in files  # an adapter folder, not a copy of the base
    saved = load_file(os.path.join(folder, "adapter_model.safetensors"))
    assert any("lora_A" in k for k in saved) and any(k.endswith("score.weight") for k in saved)
    assert not any("embed_tokens" in k or k.endswith("norm.weight") for k in saved)  # base stays frozen, unsaved
    config = json.loads(open(os.path.join(folder, "adapter_config.json")).read())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    stats = json.loads(open(os.path.join(folder, "reward_stats.json")).read())
    assert stats["count"] == 40 and stats["source"] == reference
    manifest = json.loads(open(os.path.join(folder, "manifest.json")).read())
    assert manifest["outputs"]["model"] == "." and manifest["outputs"]["adapter"] == "."

    prompts = ["Review of the hotel room:", "Review of the gym music:"]
    completions = [" the room was clean and calm, worth a visit.", " the music was noisy and the staff were rude."]
    model, tok = load_reward_model(folder)
    ours = score_texts(model, tok, prompts, completions)
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from peft import AutoPeftModelForSequenceClassification, PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        folder = {folder!r}
        tok = AutoTokenizer.from_pretrained(folder)
        texts = [p + c + tok.eos_token for p, c in zip({prompts!r}, {completions!r})]
        a = AutoPeftModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
        base = json.load(open(folder + "/adapter_config.json"))["base_model_name_or_path"]
        b = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1), folder).eval()
        out = []
        with torch.no_grad():
            for model in (a, b):
                out.append([model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts])
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    auto_peft, base_plus_peft = json.loads(proc.stdout.strip().splitlines()[-1])
    assert auto_peft == pytest.approx(ours, abs=1e-5)
    assert base_plus_peft == pytest.approx(ours, abs=1e-5)
    # reward_stats.json is the mean/std of exactly these scores on the reference samples.
    rows = [json.loads(line) for line in open(reference)]
    ref = torch.tensor(score_texts(model, tok, [r["prompt"] for r in rows], [r["completion"] for r in rows]))
    assert stats["mean"] == pytest.approx(ref.mean().item(), abs=1e-5)
    assert stats["std"] == pytest.approx(ref.std().item(), abs=1e-5)
    # The score head was trained (a fresh head would give ~0 with init std 0.02) and the adapter moved.
    assert any(abs(s) > 0.05 for s in ours)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)


def test_reward_folder_carries_its_uncertainty(lora_run, mixed_data):
    """uncertainty.safetensors: the Laplace posterior of the saved head, from the training rankings."""
    from reward import uncertainty as U

    posterior = U.load(lora_run)
    model, tok = load_reward_model(lora_run)
    weight, bias = U.head_parameters(model)
    assert torch.equal(posterior.weight, weight) and posterior.bias == pytest.approx(bias)
    manifest = json.loads(open(os.path.join(lora_run, "manifest.json")).read())
    assert manifest["outputs"]["uncertainty"] == U.FILE
    assert manifest["uncertainty"]["comparisons"] == posterior.comparisons > 0
    # The precision holds the prior plus the comparisons' curvature: tighter than the prior alone.
    h = posterior.cholesky @ posterior.cholesky.T
    assert torch.linalg.eigvalsh(h).min() >= posterior.prior_precision * (1 - 1e-9)
    assert torch.trace(h) > posterior.prior_precision * len(weight)


def test_metrics_go_to_wandb_and_metrics_jsonl(lora_run):
    rows = [json.loads(line) for line in open(os.path.join(lora_run, "metrics.jsonl"))]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    for name in ("train/loss", "reward/accuracy", "reward/margin", "train/learning_rate", "train/grad_norm"):
        assert all(name in r for r in train_rows), name
    assert {"eval/accuracy", "eval/ece", "eval/length_correlation"} <= set(rows[-1])
    runs = [d for d in os.listdir(os.path.join(lora_run, "wandb")) if d.startswith("offline-run-")]
    assert len(runs) == 1
    files = os.listdir(os.path.join(lora_run, "wandb", runs[0]))
    assert any(f.endswith(".wandb") for f in files)


def _train_rows(folder):
    # Throughput depends on the machine; every other number must match exactly.
    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    return [{k: v for k, v in r.items() if not k.endswith("_per_second")} for r in rows]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, mixed_data, reference, lora_run):
    # lora_run is the uninterrupted run: same data, seed and settings, 12 steps, no checkpoints.
    out = tmp_path / "resumed"
    common = [f"output_dir={out}", f"data.path={mixed_data}", "train.max_steps=12", "loss.margin=given",
              f"data.reference_path={reference}", "checkpoint.save_steps=4", *LORA]  # fmt: skip
    killed = run_stage(*common, env={"RLHF_KILL_AFTER_CHECKPOINT": "8"}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(os.listdir(out / "checkpoints")) == ["step-4", "step-8"]
    assert not (out / "adapter_model.safetensors").exists()
    run_stage(*common, "checkpoint.resume=auto")
    want = load_file(os.path.join(lora_run, "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert _train_rows(str(out)) == _train_rows(lora_run)
    assert json.loads((out / "eval.json").read_text()) == json.loads(open(os.path.join(lora_run, "eval.json")).read())


def test_bad_row_exits_2_with_one_line(tmp_path):
    rows = synthetic.rankings(3, k=4)
    rows[2] = {**rows[2], "ranks": [1, 2, 3]}
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    proc = run_stage(f"output_dir={tmp_path / 'out'}", f"data.path={path}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}:3: 3 ranks for 4 completions"
    proc = run_stage(f"output_dir={tmp_path / 'out'}", f"data.path={path}", "loss.ties=rao_kupper", "loss.tie_param=0.5",
                     check=False)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "loss.tie_param" in proc.stderr


def test_ppo_one_base_model_scores_like_the_reward_model(lora_run):
    # PPO carries the reward model as an adapter + score head on its frozen base; the scores must agree.
    from transformers import AutoModelForCausalLM

    from alignment.config.shared import AdapterConfig
    from alignment.ppo.model import build_ppo_model, lora_config
    from alignment.runtime.generation import right_pad as pad
    from reward.model import encode_text

    model, tok = load_reward_model(lora_run)
    prompts = ["Review of the cafe food:", "Review of the bakery view:"]
    completions = [" the food was great and fresh.", " the view was dull, not worth it."]
    ours = score_texts(model, tok, prompts, completions)
    base_path = json.loads(open(os.path.join(lora_run, "adapter_config.json")).read())["base_model_name_or_path"]
    ppo = build_ppo_model(
        AutoModelForCausalLM.from_pretrained(base_path), lora_config(AdapterConfig()), reward_adapter=lora_run
    )
    ids, mask = pad([encode_text(tok, p, c, 128)[0] for p, c in zip(prompts, completions)], tok.pad_token_id)
    assert ppo.reward_scores(ids, mask).tolist() == pytest.approx(ours, abs=1e-5)


def test_scored_rows_teach_the_scores_themselves_not_only_their_order(tmp_path):
    """Distillation: rows labelled by a judge's `scores` (here half the gold reward) train every pair toward
    sigmoid(score_i - score_j), so held-out reward gaps match the score gaps (slope 1), where the same rows' order
    alone would only fix the sign."""
    rows = synthetic.rankings(200, k=4, seed=0)
    scored = [{"prompt": r["prompt"], "completions": r["completions"], "scores": [g / 2 for g in r["meta"]["gold"]]}
              for r in rows]  # fmt: skip
    out = tmp_path / "run"
    run_stage(f"output_dir={out}", f"data.path={write_jsonl(tmp_path / 'scored.jsonl', scored)}", "data.test_size=0.2",
              "adapter.method=full", "train.learning_rate=2e-3", "train.per_device_batch_size=8", "train.epochs=4",
              "data.max_length=64", "data.reference_size=64", "seed=0")  # fmt: skip
    rankings = [D.to_ranking(r, "x") for r in scored]
    model, tok = load_reward_model(str(out))
    gaps, wanted = [], []
    for r in D.split_by_prompt(rankings, 0.2, 0)[1]:
        rewards = score_texts(model, tok, [r["prompt"]] * 4, r["completions"])
        for i in range(4):
            for j in range(i + 1, 4):
                gaps.append(rewards[i] - rewards[j])
                wanted.append(r["scores"][i] - r["scores"][j])
    x, y = torch.tensor(wanted), torch.tensor(gaps)
    slope, pearson = float((x * y).sum() / (x * x).sum()), float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    print(f"\nheld-out reward gap on score gap: slope {slope:.2f}, pearson {pearson:.3f} over {len(gaps)} pairs")
    assert 0.8 < slope < 1.25 and pearson > 0.95
