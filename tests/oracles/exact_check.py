"""The exact-optimum check: one method, run by its stage with its SHIPPED config, on one exact instance at one beta.

Online methods (PPO, RLOO, GRPO) run `configs/<method>.yaml` with the instance's reward function; DPO runs
`configs/dpo.yaml` on preference data drawn from the reference and labelled exactly (pairs with Bradley-Terry
probabilities, or K-wise Plackett-Luce rankings). Only what describes the task is overridden, never a
hyperparameter: the base, the data, the response length, the sampling temperature of the objective (1), the
instance's missing-EOS penalty and beta. The saved policy is then scored exactly (tests/oracles/exact.py): the
share of the achievable gain J* - J(ref) it reached and its KL to the optimal policy pi*.

    from tests.oracles.exact_check import run
    result = run("rloo", instance("sparse"), beta=0.5, seed=1, root=tmp_path)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tests.oracles import exact
from tests.oracles.instances import Instance

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("ppo", "rloo", "grpo", "dpo", "dpo_kwise")
BETAS = (0.1, 0.5, 1.0)
PREFERENCES = 2048
"""Preference data for DPO per instance, shared out over its prompts: pairs (pairwise) or rankings of K = 4
(K-wise), drawn from the reference and labelled exactly."""
KWISE_K = 4
LABELS = ("exact", "sampled")
"""How DPO's data is labelled: `exact`, the label's distribution itself (what infinitely many annotators would say:
a pair's Bradley-Terry probability as `chosen_probability`, a ranking's rewards as `scores`, the Plackett-Luce
distribution its order is drawn from), or `sampled`, one draw (one annotator's choice: a hard pair, a ranking's
order). The check runs `exact`, so it measures the method and not the noise of 2048 draws; `sampled` measures both."""


@dataclass
class Result:
    method: str
    instance: str
    beta: float
    seed: int
    fraction: float
    """(J(pi) - J(ref)) / (J* - J(ref))."""
    kl_to_optimum: float
    """KL(pi || pi*) in nats, mean over prompts."""
    kl: float
    """KL(pi || ref)."""
    length: float
    """E_pi[tokens before EOS], mean over prompts: a policy that ends too soon or never shows here."""
    optimum_length: float
    """The same under pi*."""
    data_loss: float | None = None
    """DPO: the preference loss of the policy on its own training rows (mean per row; None for online methods)."""
    optimum_data_loss: float | None = None
    """The same for pi*: lower than the policy's, the policy stopped short of what its data teach (optimisation);
    higher, the data hold a different optimum than pi* (too few rows to pin it)."""

    def line(self) -> str:
        data = "" if self.data_loss is None else f"  data loss {self.data_loss:.4f} (pi* {self.optimum_data_loss:.4f})"
        return (
            f"{self.method:9s} {self.instance:9s} beta {self.beta:<4} seed {self.seed}: gain reached "
            f"{self.fraction:6.1%}  KL(pi || pi*) {self.kl_to_optimum:.4f}  KL(pi || ref) {self.kl:.3f}  "
            f"length {self.length:.2f} (pi* {self.optimum_length:.2f}){data}"
        )


def logprobs(base_dir: str, prompts, responses, policy_dir: str | None = None) -> torch.Tensor:
    """[P, N] float64 log-probs of every enumerated response under the base (or base + adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64)
    if policy_dir is not None:
        model = PeftModel.from_pretrained(model, policy_dir).to(torch.float64)
    return exact.sequence_logprobs(exact.causal_lm_logits_fn(model.eval()), prompts, responses, eos_token_id=1)


def stage_overrides(method: str, inst: Instance, base: str, data: str, out: str, beta: float, seed: int) -> list[str]:
    """What describes the task, for the method's shipped config: nothing it tunes."""
    common = [f"output_dir={out}", f"seed={seed}", f"model.name_or_path={base}", "run=", "checkpoint.save_steps=0"]
    if method in ("dpo", "dpo_kwise"):
        loss = "sigmoid" if method == "dpo" else "plackett_luce"
        return [*common, f"data.path={data}", "data.eval_path=null", "data.test_size=0",
                f"data.max_completion_length={inst.length}", "data.max_prompt_length=8", "data.max_length=16",
                f"loss.type={loss}", f"loss.beta={beta}", "loss.precompute_ref=true"]  # fmt: skip
    return [*common, f"reward.function={inst.reward_spec}", "reward.path=null", "reward.monitor=null",
            f"data.path={data}", f"rollout.response_length={inst.length}", "rollout.temperature=1.0",
            f"rollout.missing_eos_penalty={inst.eos_penalty}", f"kl.coef={beta}", "train.sample_steps=0"]  # fmt: skip


def preference_rows(
    method: str, ref_logp, rewards, seed: int, preferences: int = PREFERENCES, labels: str = "exact"
):  # fmt: skip
    """Preferences drawn from the reference and labelled from the exact rewards (`labels` as LABELS): pairs
    (`exact.PreferencePairs`, dpo) or K-wise rankings (`exact.sample_rankings`'s list, dpo_kwise)."""
    per_prompt = preferences // ref_logp.shape[0]
    if method == "dpo":
        pairs = exact.sample_pairs(ref_logp, rewards, per_prompt, seed=seed)
        return exact.sampled_labels(pairs, seed=seed + 99) if labels == "sampled" else pairs
    return exact.sample_rankings(ref_logp, rewards, KWISE_K, per_prompt, seed=seed)


def preference_data(method: str, inst: Instance, tokenizer, rows, rewards, path: str, labels: str = "exact") -> str:
    """`preference_rows` written as the stage reads them: TRL pairs with `chosen_probability`, or K-wise rows with
    `scores` (exact labels) or `ranks` (one sampled order)."""
    texts = exact.response_texts(tokenizer, inst.responses(), eos_token_id=1)
    if method == "dpo":
        return exact.write_pairwise_dataset(path, inst.prompts, texts, rows)
    return exact.write_ranking_dataset(path, inst.prompts, texts, rows, rewards if labels == "exact" else None)


def data_loss(method: str, rows, logp, ref_logp, rewards, beta: float, labels: str = "exact") -> float:
    """The preference loss of log-probs `logp` [P, N] on the training rows, mean per row (no off-support term)."""
    if method == "dpo":
        return exact.population_dpo_loss(logp, ref_logp, rows, beta).item()
    from alignment.dpo import losses

    p = torch.tensor([prompt for prompt, _, _ in rows])[:, None]
    i = torch.tensor([idx for _, idx, _ in rows])
    if labels == "exact":
        return (
            losses.plackett_luce_soft_loss(logp[p, i], ref_logp[p, i], rewards[p, i], None, beta).losses.mean().item()
        )
    ranks = torch.tensor([r for _, _, r in rows])
    return losses.plackett_luce_loss(logp[p, i], ref_logp[p, i], ranks, None, beta).losses.mean().item()


def run(
    method: str, inst: Instance, beta: float, seed: int, root, threads: int = 1, preferences: int = PREFERENCES,
    labels: str = "exact", overrides: tuple[str, ...] = (),
) -> Result:  # fmt: skip
    """Train `method` on `inst` at `beta` with its shipped config and score the saved policy exactly.

    preferences: DPO's rows (pairs or rankings), as PREFERENCES; more show whether a short run lacks data.
    labels: DPO's labels, as LABELS. overrides: `key=value` on top of the shipped config, to measure a change (the
    check itself runs none); the run's folder is named after them."""
    from alignment.config.loader import load_config

    folder = root / inst.name
    if not (folder / "base").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        inst.build(folder)
    from transformers import AutoTokenizer

    base = str(folder / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    responses, prompts = inst.responses(), inst.prompt_ids(tokenizer)
    rewards = inst.rewards(tokenizer)
    ref_logp = logprobs(base, prompts, responses)
    more = ("" if preferences == PREFERENCES else f"-{preferences}") + ("" if labels == "exact" else f"-{labels}")
    more += "".join(f"-{o.replace('/', '_')}" for o in overrides)
    out = str(root / f"{method}-{inst.name}-{beta}-{seed}{more}")
    offline = method in ("dpo", "dpo_kwise")
    if offline:
        from alignment.dpo.config import DPOConfig as Config
        from alignment.dpo.train import train

        rows = preference_rows(method, ref_logp, rewards, seed, preferences, labels)
        path = str(root / f"{method}-{inst.name}-{seed}-{preferences}-{labels}.jsonl")
        data = preference_data(method, inst, tokenizer, rows, rewards, path, labels)
        config = os.path.join(ROOT, "configs", "dpo.yaml")
    else:
        from alignment.ppo.config import PPOConfig as Config
        from alignment.ppo.train import train

        data, config = str(folder / "prompts.jsonl"), os.path.join(ROOT, "configs", f"{method}.yaml")
    cfg = load_config(Config, config, [*stage_overrides(method, inst, base, data, out, beta, seed), *overrides])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # a tiny model: threads only add synchronisation
    try:
        train(cfg)
    finally:
        torch.set_num_threads(previous)
    start = exact.evaluate(ref_logp, ref_logp, rewards, beta)
    logp = logprobs(base, prompts, responses, out)
    end = exact.evaluate(logp, ref_logp, rewards, beta)
    optimum = exact.optimal_logprobs(ref_logp, rewards, beta)
    kl_to_optimum = exact.exact_kl(logp, optimum).mean().item()
    fraction = exact.gain_fraction(end.objective, start.objective, end.optimum)
    lengths = [exact.expected_length(lp, responses, eos_token_id=1).mean().item() for lp in (logp, optimum)]
    losses = [data_loss(method, rows, lp, ref_logp, rewards, beta, labels) for lp in (logp, optimum)] if offline else []
    return Result(method, inst.shape, beta, seed, fraction, kl_to_optimum, end.kl, *lengths, *losses)
