"""Stage 4 on the embedded tiny model: SFT -> reward -> PPO / RLOO / GRPO, the folder contracts between them, the
exactness checks (ratio 1 on every update's first minibatch, KL 0 at step 0, frozen roles untouched), bit-exact
resume after SIGKILL, and the other reward sources."""

import json
import os

import pytest
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# One thread: the tiny model gains nothing from more, and shared CI cores make extra threads much slower.
ENV = {"OMP_NUM_THREADS": "1"}
PPO = ["configs/ppo.yaml", "rollout.per_device_batch_size=8", "rollout.response_length=12", "ppo.epochs=2",
       "ppo.num_minibatches=2", "ppo.gradient_accumulation_steps=2", "train.log_steps=1",
       "train.sample_steps=2"]  # fmt: skip
REQUIRED = [
    "objective/kl", "objective/entropy", "objective/rlhf_reward", "objective/scores", "policy/approxkl",
    "policy/clipfrac", "loss/policy", "loss/value", "val/ratio", "val/num_eos", "train/learning_rate", "train/episodes",
    "time/generation_share",
]  # fmt: skip
# RLOO and GRPO: no value loss, and TRL GRPO's group statistics.
REQUIRED_GROUP = [*(name for name in REQUIRED if name != "loss/value"), "reward_std", "frac_reward_zero_std"]
# The short SFT run ends most samples at once with EOS; a hot sampler gives a prompt's k samples different scores.
GROUP = {
    "rloo": ["configs/rloo.yaml", "rollout.temperature=2.0"],
    "grpo": ["configs/grpo.yaml", "rollout.temperature=2.0", "kl.mode=loss", "loss.aggregation=token_mean"],
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """A short SFT run (merged model = PPO's base) and a short reward run on it (an adapter on the same base)."""
    root = tmp_path_factory.mktemp("pipeline")
    sft, reward = root / "sft", root / "reward"
    r = run_cli("sft", "configs/sft.yaml", f"output_dir={sft}", "data.limit=256", "data.eval_size=0",
                "train.max_steps=10", "train.log_steps=5", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("reward", "configs/reward.yaml", f"output_dir={reward}", f"model.name_or_path={sft}",
                "data.path=builtin:reviews-rankings", "data.eval_path=null", "train.max_steps=10", "data.reference_size=32", "train.log_steps=5", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (root / "reward.log").write_text(r.stderr)
    return str(sft), str(reward)


def lines(folder, name="metrics.jsonl"):
    with open(os.path.join(folder, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "adapter_model.safetensors"))


def train_on_one_thread(cfg) -> dict:
    """The stage in this process (to inspect the trained model), on one thread like the CLI runs."""
    from alignment.ppo.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(threads)


def test_tiny_run_end_to_end_with_exact_first_minibatch_and_frozen_roles(tmp_path, stages):
    """In process, to inspect the trained model: reference and reward roles equal a freshly built model's."""
    from transformers import AutoModelForCausalLM

    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig
    from alignment.ppo.model import build_ppo_model, lora_config

    sft, reward = stages
    out = tmp_path / "ppo"
    cfg = load_config(PPOConfig, "configs/ppo.yaml", [
        *PPO[1:], f"output_dir={out}", f"model.name_or_path={sft}", f"reward.path={reward}",
        "train.total_episodes=32", "train.learning_rate=5e-3",
    ])  # fmt: skip
    result = train_on_one_thread(cfg)

    rows = lines(out)
    assert [x["step"] for x in rows] == [1, 2, 3, 4]
    for x in rows:
        assert set(REQUIRED) <= set(x), set(REQUIRED) - set(x)
        # the first minibatch of every update is exactly on-policy: scoring and training see the same logits
        assert x["val/ratio_first_minibatch"] == 1.0
        assert x["policy/approxkl_first_minibatch"] == 0.0 and x["policy/clipfrac_first_minibatch"] == 0.0
    assert rows[0]["objective/kl"] == 0.0  # policy == reference bit for bit before the first update
    assert rows[-1]["objective/kl"] != 0.0 and rows[-1]["policy/approxkl"] > 0  # and it moved after
    assert [x["train/episodes"] for x in rows] == [8, 16, 24, 32]
    assert 0 < rows[0]["time/generation_share"] < 1
    # peak RSS on CPU (a process-wide high-water mark: never falls), in GB
    peaks = [x["memory/peak_gb"] for x in rows]
    assert 0.1 < peaks[0] <= peaks[-1] < 64 and peaks == sorted(peaks)
    samples = lines(out, "samples.jsonl")
    assert {s["step"] for s in samples} == {1, 2, 4} and all(
        {"prompt", "completion", "score"} <= set(s) for s in samples
    )

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"] == {"adapter": ".", "model": "."} and manifest["reward_kind"] == "adapter"
    assert 0.1 < manifest["peak_memory_gb"]["rss"] < 64
    assert (out / "config.yaml").is_file()

    # Reference (adapters off) and reward (adapter + head) outputs are bit-identical to an untrained model's.
    base_dir = os.path.join(sft, "merged")
    trained = result["model"].eval()
    fresh = build_ppo_model(
        AutoModelForCausalLM.from_pretrained(base_dir), lora_config(cfg.policy), lora_config(cfg.value.adapter), reward
    ).eval()
    ids = torch.tensor([[0, 0, 1, 40, 50, 60, 2, 0], [1, 30, 31, 32, 33, 34, 35, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        assert torch.equal(trained(ids, mask, role="reference"), fresh(ids, mask, role="reference"))
        assert torch.equal(trained(ids, mask, role="reward"), fresh(ids, mask, role="reward"))
        assert not torch.equal(trained(ids, mask, role="policy"), fresh(ids, mask, role="policy"))

    assert_saved_policy_is_the_trained_one(out, base_dir, trained)


def assert_saved_policy_is_the_trained_one(out, base_dir, trained):
    """The saved policy is a PEFT adapter on the SFT model that reproduces the trained policy."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 0, 1, 40, 50, 60, 2, 0], [1, 30, 31, 32, 33, 34, 35, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(out)).eval()
    with torch.no_grad():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        got = policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(got, trained(ids, mask, role="policy"), rtol=0, atol=1e-5)


def test_a_reward_model_without_preference_is_named_and_never_scaled_up_past_the_floor(tmp_path, stages):
    """Ten steps teach the reward model almost nothing (scores spread ~0.01): the reward stage says so, and PPO
    divides by `reward.min_std` (or by 1 for a model at chance on its held-out pairs), not by the spread, and says so."""
    sft, reward = stages
    stats = json.loads(open(os.path.join(reward, "reward_stats.json")).read())
    assert stats["std"] < 0.1, stats
    said = [line for line in open(os.path.join(os.path.dirname(reward), "reward.log")) if "reward: warning:" in line]
    assert any("learned almost no preference" in line for line in said), said
    out = tmp_path / "ppo"
    r = run_cli("ppo", *PPO, f"output_dir={out}", f"model.name_or_path={sft}", f"reward.path={reward}",
                "train.total_episodes=8", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    found = [line for line in r.stderr.splitlines() if "ppo: warning: the reward model's scores spread" in line]
    assert len(found) == 1 and "not by their spread" in found[0], r.stderr[-3000:]
    floor = "1" if json.loads(open(os.path.join(reward, "eval.json")).read())["accuracy"] <= 0.5 else "0.1"
    assert f"divided by {floor}," in found[0], found


@pytest.mark.parametrize("algorithm", list(GROUP))
def test_rloo_and_grpo_train_the_policy_without_a_value_adapter(tmp_path, stages, algorithm):
    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig

    sft, reward = stages
    out = tmp_path / algorithm
    config, *extra = GROUP[algorithm]
    cfg = load_config(PPOConfig, config, [
        *PPO[1:], *extra, "rollout.samples_per_prompt=4", f"output_dir={out}", f"model.name_or_path={sft}",
        f"reward.path={reward}", "train.total_episodes=16", "train.learning_rate=5e-3",
    ])  # fmt: skip
    result = train_on_one_thread(cfg)

    rows = lines(out)
    assert [x["step"] for x in rows] == [1, 2] and [x["train/episodes"] for x in rows] == [8, 16]
    for x in rows:
        assert set(REQUIRED_GROUP) <= set(x), set(REQUIRED_GROUP) - set(x)
        assert "loss/value" not in x and "val/clipfrac" not in x
        assert ("loss/kl" in x) == (algorithm == "grpo")  # the k3 term in the loss only with kl.mode=loss
        assert x["val/ratio_first_minibatch"] == 1.0 and x["policy/approxkl_first_minibatch"] == 0.0
        assert 0 <= x["frac_reward_zero_std"] < 1 and x["reward_std"] > 0
    assert rows[0]["objective/kl"] == 0.0 and rows[-1]["objective/kl"] != 0.0
    if algorithm == "grpo":
        assert rows[-1]["loss/kl"] > 0  # k3 is never negative, and the policy has moved
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["algorithm"] == algorithm and manifest["reward_kind"] == "adapter"

    # One base with the policy and reward adapters only: no value adapter, no value head, nothing of them saved.
    trained = result["model"].eval()
    assert set(trained.peft.peft_config) == {"policy", "reward"} and trained.value_head is None
    assert all(".value." not in n and not n.startswith("value_head") for n in trained.trainable_parameter_names())
    assert not any("value" in k for k in adapter_tensors(out))
    assert_saved_policy_is_the_trained_one(out, os.path.join(sft, "merged"), trained)


@pytest.mark.parametrize(("algorithm", "micro_batches"), [("rloo", 1), ("grpo", 2), ("ppo", 1), ("ppo-own-value", 1)])
def test_old_logprobs_from_the_update_equal_a_scoring_pass(tmp_path, stages, algorithm, micro_batches):
    """The rollout's log-probs taken from the update's forward pass (no scoring pass) give the same run bit for bit
    as scoring first: weights, every metric (ratio 1, KL, entropy, values), samples. RLOO and GRPO take one
    optimizer step per rollout; RLOO puts the KL in the reward (its advantages wait for the forward pass); GRPO's k3
    term sits in the loss (2 micro-batches). PPO with policy and value on one adapter takes its log-probs and values
    from the first minibatch's pass, then GAE, then 2 epochs; with a value adapter of its own, its values are scored
    first and the log-probs come from that minibatch's policy pass, whose backward runs before the value pass."""
    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig
    from alignment.ppo.train import old_logprobs_from_update

    sft, reward = stages
    own_value = algorithm == "ppo-own-value"
    algorithm = "ppo" if own_value else algorithm
    config, *extra = GROUP.get(algorithm, [PPO[0], f"value.share_with_policy={str(not own_value).lower()}"])
    runs = {}
    for fused in (True, False):
        out = tmp_path / str(fused)
        k = 1 if algorithm == "ppo" else 4
        cfg = load_config(PPOConfig, config, [
            *PPO[1:], *extra, f"rollout.samples_per_prompt={k}", f"output_dir={out}", f"model.name_or_path={sft}",
            f"reward.path={reward}", "train.total_episodes=16", "train.learning_rate=5e-3",
            f"ppo.epochs={2 if algorithm == 'ppo' else 1}", "ppo.num_minibatches=1",
            f"ppo.gradient_accumulation_steps={micro_batches}", f"ppo.old_logprobs_from_update={str(fused).lower()}",
        ])  # fmt: skip
        assert old_logprobs_from_update(cfg) == fused
        train_on_one_thread(cfg)
        rows = [{k: v for k, v in x.items() if not k.startswith(("time/", "memory/"))} for x in lines(out)]
        runs[fused] = rows, adapter_tensors(out), lines(out, "samples.jsonl")
    (rows, weights, samples), (ref_rows, ref_weights, ref_samples) = runs[True], runs[False]
    assert rows == ref_rows and samples == ref_samples
    assert all(x["val/ratio_first_minibatch"] == 1.0 for x in rows) and rows[-1]["objective/kl"] != 0.0
    assert weights.keys() == ref_weights.keys() and all(torch.equal(weights[k], ref_weights[k]) for k in weights)


def test_target_kl_skips_the_rest_of_an_update_once_the_policy_has_moved_that_far(tmp_path, stages):
    """`ppo.target_kl`: with a target every moved policy exceeds, each update takes its first two steps (the first
    minibatch is on-policy, approxkl 0) and skips the other two, while the schedule still ends where a full run's
    does; with a target no step reaches, the run is the run without one, bit for bit."""
    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig

    sft, reward = stages
    runs = {}
    for label, target in (("none", "null"), ("tiny", "1e-12"), ("huge", "100")):
        out = tmp_path / label
        cfg = load_config(PPOConfig, PPO[0], [
            *PPO[1:], f"output_dir={out}", f"model.name_or_path={sft}", f"reward.path={reward}",
            "train.total_episodes=16", "train.learning_rate=5e-3", f"ppo.target_kl={target}",
        ])  # fmt: skip
        train_on_one_thread(cfg)
        runs[label] = lines(out), adapter_tensors(out)

    def strip(rows):
        return [{k: v for k, v in x.items() if not k.startswith(("time/", "memory/", "policy/steps_"))} for x in rows]

    (none, w_none), (tiny, w_tiny), (huge, w_huge) = runs["none"], runs["tiny"], runs["huge"]
    assert "policy/steps_skipped" not in none[0]
    assert [x["policy/steps_skipped"] for x in tiny] == [2.0, 2.0]  # 2 epochs x 2 minibatches, 2 taken
    assert [x["policy/steps_skipped"] for x in huge] == [0.0, 0.0]
    assert strip(huge) == strip(none) and all(torch.equal(w_huge[k], w_none[k]) for k in w_none)
    assert [x["train/learning_rate"] for x in tiny] == [x["train/learning_rate"] for x in none]
    assert any(not torch.equal(w_tiny[k], w_none[k]) for k in w_none)  # fewer steps, another policy


@pytest.mark.parametrize(
    "algorithm",
    ["ppo", "grpo", pytest.param("rloo", marks=pytest.mark.extended)],  # RLOO resumes by GRPO's path
)
def test_kill_after_checkpoint_then_resume_equals_uninterrupted_run(tmp_path, stages, algorithm):
    sft, reward = stages
    config, *group = [*GROUP[algorithm], "rollout.samples_per_prompt=2"] if algorithm in GROUP else PPO[:1]
    # adaptive KL and running score statistics: both must come back from the checkpoint for the runs to agree
    args = [config, *PPO[1:], *group, f"model.name_or_path={sft}", f"reward.path={reward}", "train.total_episodes=32",
            "kl.controller=adaptive", "kl.target=0.5", "kl.horizon=64", "reward.normalize=running",
            "checkpoint.save_steps=2", "checkpoint.keep_last=1"]  # fmt: skip
    full = run_cli("ppo", *args, f"output_dir={tmp_path / 'full'}", env=ENV)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run_cli("ppo", *args, f"output_dir={tmp_path / 'cut'}", env={**ENV, "RLHF_KILL_AFTER_CHECKPOINT": "2"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL right after the step-2 checkpoint
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    resumed = run_cli("ppo", *args, f"output_dir={tmp_path / 'cut'}", "checkpoint.resume=auto", env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = adapter_tensors(tmp_path / "full"), adapter_tensors(tmp_path / "cut")
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit

    def strip(rows):
        return [{k: v for k, v in x.items() if not k.startswith("time/")} for x in rows]

    full_rows, cut_rows = strip(lines(tmp_path / "full")), strip(lines(tmp_path / "cut"))
    assert full_rows == cut_rows
    assert len({x["objective/kl_coef"] for x in full_rows}) > 1  # the controller really moved
    assert lines(tmp_path / "full", "samples.jsonl") == lines(tmp_path / "cut", "samples.jsonl")


def test_python_reward_function(tmp_path, stages):
    from alignment.assets.gold import gold_reward

    sft, _ = stages
    out = tmp_path / "fn"
    r = run_cli("ppo", *PPO, f"output_dir={out}", f"model.name_or_path={sft}", "reward.path=null",
                "reward.function=alignment.assets.gold:gold", "rollout.missing_eos_penalty=null",
                "value.share_with_policy=true", "rollout.stop_at_eos=false", "train.total_episodes=16",
                "reward.monitor=alignment.assets.gold:gold", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["reward_kind"] == "function"
    assert all(x["val/response_length"] == 12 for x in lines(out))
    # The monitor scores every rollout; here it is the reward itself, so it equals the unnormalised scores.
    assert all(x["objective/monitor"] == pytest.approx(x["objective/raw_scores"]) for x in lines(out))
    samples = lines(out, "samples.jsonl")
    assert samples and all(s["score"] == gold_reward(s["completion"]) for s in samples)  # no normalisation, no penalty
    assert "lora_A" in "".join(adapter_tensors(out))


def test_separate_reward_model(tmp_path, stages):
    sft, reward = stages
    out = tmp_path / "sep"
    r = run_cli("ppo", *PPO, f"output_dir={out}", f"model.name_or_path={sft}", f"reward.path={reward}",
                "reward.separate=true", "train.total_episodes=16", "save_merged=true", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reward_kind"] == "model" and manifest["outputs"]["model"] == "merged"
    assert (out / "merged" / "config.json").is_file()


def test_bad_reward_settings_are_one_line_errors(tmp_path, stages):
    sft, reward = stages
    r = run_cli("ppo", "configs/ppo.yaml", f"output_dir={tmp_path}", f"model.name_or_path={sft}", "reward.path=null",
                "reward.function=no_such_module:fn", env=ENV)  # fmt: skip
    assert r.returncode == 2 and "reward.function" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("ppo", "configs/ppo.yaml", f"output_dir={tmp_path}", f"model.name_or_path={sft}",
                f"reward.path={reward}", "reward.monitor=gold_without_module", env=ENV)  # fmt: skip
    assert r.returncode == 2 and "reward.monitor" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("ppo", "configs/ppo.yaml", f"output_dir={tmp_path}", "rollout.per_device_batch_size=6",
                "ppo.num_minibatches=4", env=ENV)  # fmt: skip
    assert r.returncode == 2 and "rollout.per_device_batch_size" in r.stderr


def test_running_moments_left_padding_and_reward_kind(tmp_path, stages):
    """The small pieces the stage leans on: chunked running statistics, the rollout layout, reward routing."""
    from alignment.ppo.rewards import RunningMoments, reward_kind
    from alignment.runtime.generation import left_pad

    torch.manual_seed(0)
    chunks = [torch.randn(n) * 3 + 1 for n in (5, 1, 17, 8)]
    moments = RunningMoments()
    for chunk in chunks:
        moments.update(chunk)
    everything = torch.cat(chunks).double()
    assert moments.count == everything.numel()
    assert moments.mean == pytest.approx(everything.mean().item(), abs=1e-12)
    assert moments.var == pytest.approx(everything.var(unbiased=False).item(), abs=1e-12)
    restored = RunningMoments()
    restored.load_state_dict(json.loads(json.dumps(moments.state_dict())))  # through JSON, as in a checkpoint
    assert restored.state_dict() == moments.state_dict()

    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]

    sft, reward = stages
    merged = os.path.join(sft, "merged")
    assert reward_kind(reward, None, merged, separate=False) == "adapter"  # trained on this very base
    assert reward_kind(reward, None, merged, separate=True) == "model"
    assert reward_kind(reward, None, str(tmp_path), separate=False) == "model"  # another base: its own model
    assert reward_kind(None, "m:f", merged, separate=False) == "function"


def test_sampling_stops_at_eos_only_when_asked(stages):
    """With stop_at_eos off the model's own EOS must not end generation; with it on, only padding follows EOS."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.config.shared import AdapterConfig
    from alignment.ppo.model import build_ppo_model, lora_config
    from alignment.ppo.rollout import sample
    from alignment.runtime.generation import left_pad

    merged = os.path.join(stages[0], "merged")
    tok = AutoTokenizer.from_pretrained(merged)
    model = build_ppo_model(AutoModelForCausalLM.from_pretrained(merged), lora_config(AdapterConfig(r=4)))
    queries, mask = left_pad([tok("Review of the cafe:")["input_ids"], tok("Review of the gym:")["input_ids"]] * 8, 0)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(0)
    free = sample(Accelerator(cpu=True), model, queries, mask, 48, 1.0, pad, None)
    assert free.responses.shape == (16, 48) and bool(free.response_mask.all()) and not free.contains_eos.any()
    after_eos = [row[(row == eos).nonzero()[0, 0] + 1 :] for row in free.responses if (row == eos).any()]
    assert any((rest != pad).any() for rest in after_eos)  # generation went on past an EOS
    stopped = sample(Accelerator(cpu=True), model, queries, mask, 48, 1.0, pad, eos)
    assert stopped.contains_eos.any()
    for row, m in zip(stopped.responses, stopped.response_mask):
        assert (row[~m] == pad).all() and (row[m] != pad).all()
