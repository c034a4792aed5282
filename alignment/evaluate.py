"""`rlhf eval`: compare policies on a prompt set by reward model, judge function, win rate, KL and length.

    rlhf eval configs/eval.yaml output_dir=runs/tiny/eval
    rlhf eval configs/eval.yaml "policies={sft: runs/tiny/sft, ppo: runs/tiny/ppo}" reference=runs/tiny/sft

Each policy (a model folder, an SFT or PPO run folder, a PEFT adapter folder, a hub id or
`builtin:tiny-llama`) samples `generation.num_samples` completions per prompt with the same
settings and the same random numbers (batch b of every policy is drawn under seed + b, so two
policies are compared on common randomness and a policy against itself ties exactly). Then:
(1) mean reward by `reward_model`, (2) mean score by the `judge` function, (3) win rates between
pairs of policies, sample for sample, by each of those (ties count half), (4) KL to `reference`
(Monte Carlo: mean over samples of sum_t log pi(y_t|x, y_<t) - log pi_ref(y_t|x, y_<t), both
under softmax(logits / temperature) with the sampling temperature), (5) response length.
Writes to output_dir: `eval.jsonl` (a line per policy, a line per win-rate pair), `eval.json`
(everything, with the resolved config), `samples.jsonl` (every completion, side by side),
`metrics.jsonl` and, with tracking.wandb, the same metrics and a sample table to W&B.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from tqdm.auto import tqdm

from alignment.common import data, files, manifest
from alignment.common.errors import ConfigError, UserError
from alignment.common.functions import check_function, load_item_function
from alignment.config.loader import check_output_dir, save_config, to_dict
from alignment.config.shared import ModelConfig, TrackingConfig, check_ranges, require
from alignment.runtime import generation, health, logprobs, models
from alignment.runtime import logging as rlog
from alignment.runtime.formatting import encode_prompt, prompt_text
from alignment.runtime.generation import Responses, generate, generation_config, left_pad, position_ids_from_mask
from alignment.runtime.health import HealthConfig
from reward.model import load_reward_model, score_texts


@dataclass
class EvalDataConfig:
    RANGES: ClassVar = {"limit": ">= 1", "max_prompt_length": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    path: str = ""
    """Prompt rows (`prompt`: a string or a message list): a jsonl/json/parquet/csv file, a `datasets` folder,
    a hub id, or `builtin:reviews-prompts` (split `test`: topics no stage trained on)."""
    split: str = "test"
    """Split to read (dataset folders, hub ids and builtin data)."""
    limit: int | None = None
    """Use only the first N prompts."""
    max_prompt_length: int = 256
    """Prompt tokens kept; longer prompts lose tokens from the left."""


@dataclass
class EvalGenerationConfig:
    RANGES: ClassVar = {"num_samples": ">= 1", "max_new_tokens": ">= 1", "temperature": "> 0", "batch_size": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    num_samples: int = 16
    """Completions per prompt per policy."""
    max_new_tokens: int = 32
    """Most tokens sampled per completion."""
    temperature: float = 0.7
    """Sampling temperature, also used for every log-prob in the KL (policy and reference alike)."""
    batch_size: int = 32
    """Sequences per generate / scoring pass."""


@dataclass
class EvalConfig:
    RUN_PATHS: ClassVar = {
        "output_dir": "eval",
        "policies": {"sft": "sft", "ppo": "ppo"},
        "reference": "sft",
        "reward_model": "reward",
    }
    """With `run=runs/x`: compares runs/x/sft and runs/x/ppo, KL to runs/x/sft, scored by runs/x/reward."""
    run: str = ""
    """Run folder of the pipeline (runs/x): policies {sft: runs/x/sft, ppo: runs/x/ppo}, reference runs/x/sft,
    reward_model runs/x/reward, output_dir runs/x/eval."""
    output_dir: str = ""
    """Folder for eval.jsonl, eval.json, samples.jsonl, metrics.jsonl and config.yaml."""
    seed: int = 0
    """Sampling seed: batch b of every policy is drawn under seed + b."""
    policies: dict[str, str] = field(default_factory=dict)
    """Name -> model folder, SFT/PPO run folder, adapter folder, hub id or builtin name, e.g. {sft: runs/x/sft}."""
    reference: str | None = None
    """Model the KL is measured against (same kinds as a policy); default: the base of the first policy."""
    kl: bool = True
    """Measure KL to the reference (one more model load and a scoring pass per policy)."""
    reward_model: str | None = None
    """A reward-stage run folder; its score of every completion gives `reward` and reward win rates."""
    judge: str | None = None
    """Python score `module:function`, called per completion as f(prompt, completion) -> float with its arguments
    by name (the prompt may be left out); e.g. `alignment.assets.gold:gold_reward`."""
    pairs: list[list[str]] = field(default_factory=list)
    """Win-rate pairs [[a, b], ...] (rate of a over b); default: every other policy against the first."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype of every policy and the reference."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository."""
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    generation: EvalGenerationConfig = field(default_factory=EvalGenerationConfig)
    table_rows: int = 6
    """Prompts shown in the side-by-side sample table (first sample of each)."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """Guardrails: each policy's samples against the first policy's (EOS rate, broken characters) and the KL budget."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        require(self, "output_dir", "data.path")
        if not self.policies:
            raise ConfigError("'policies' is empty: give a mapping of name -> model, e.g. {sft: runs/x/sft}")
        for name, path in self.policies.items():
            if not isinstance(path, str) or not path:
                raise ConfigError(f"'policies.{name}' must be a model path or id, got {path!r}")
        if self.judge and ":" not in self.judge:
            raise ConfigError(f"'judge' must be module:function, got '{self.judge}'")
        for i, pair in enumerate(self.pairs):
            if len(pair) != 2 or any(name not in self.policies for name in pair):
                raise ConfigError(f"'pairs[{i}]' must name two policies of {sorted(self.policies)}, got {pair}")
        from alignment import bon

        bon.check_policies(self.policies, self.reward_model)  # bon:N:POLICY needs the reward model to choose
        check_function(self.judge, "judge")  # last: it imports and calls the user's code


# ----------------------------------------------------------------------------------------------
# Resolving what to load


def policy_path(name: str, key: str) -> str:
    """What loads as a causal LM: an SFT run folder becomes its merged model; builtin names their folder."""
    path = models.stage_model_path(models.resolve_path(name, key))
    return os.path.abspath(path) if os.path.exists(path) else path


def base_of(name: str, key: str) -> str:
    """The model a policy was trained from: an adapter's recorded base, a run's input model, else itself."""
    path = models.resolve_path(name, key)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        return models.adapter_base(path)
    manifest = os.path.join(path, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            model = json.load(f).get("inputs", {}).get("model")
        if model:
            return model
    return path


def load_judge(spec: str):
    """`judge(prompt, completion) -> float` from `module:function` (alignment/common/functions.py)."""
    return load_item_function(spec, "judge")


def load_prompts(cfg: EvalConfig) -> list:
    d = cfg.data
    return data.load_prompts(d.path, d.split, d.limit)


# ----------------------------------------------------------------------------------------------
# Sampling and scoring: the runtime's layout (alignment/runtime/generation.py), batches kept on the CPU


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: list[list[int]], g: EvalGenerationConfig, seed: int, desc: str):
    """Batches of sampled completions (`Responses`) for `prompt_ids` (already repeated num_samples times), in order."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    config = generation_config(g.max_new_tokens, g.temperature, pad, tokenizer.eos_token_id)
    batches = []
    starts = range(0, len(prompt_ids), g.batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, leave=False, dynamic_ncols=True)):
        queries, query_mask = left_pad(prompt_ids[start : start + g.batch_size], pad)
        torch.manual_seed(seed + b)  # the same draws for every policy: common random numbers
        out = generate(model, queries.to(device), query_mask.to(device), config)
        # on the CPU, so the reference can score exactly these rows later
        batches.append(
            Responses(queries, query_mask, out.responses.cpu(), out.response_mask.cpu(), out.contains_eos.cpu())
        )
    return batches


@torch.no_grad()
def sequence_logprobs(model, batch: Responses, temperature: float) -> torch.Tensor:
    """Sum over real response tokens of log p(y_t | x, y_<t) under softmax(logits / temperature): [B] float64."""
    device = next(model.parameters()).device
    ids, attention = (t.to(device) for t in batch.sequences())
    positions = position_ids_from_mask(attention)  # as generate numbered the left-padded rows
    mask = batch.response_mask.to(device)
    # the LM head on response positions only, in chunks: no [B, S, V] logits (3 GB at Qwen's vocabulary)
    return logprobs.policy_sequence_logprobs(
        model, ids, attention, mask, batch.prompt_width, temperature, positions
    ).cpu()


def decode(tokenizer, batches: list[Responses]) -> tuple[list[str], list[int], list[bool]]:
    """(texts without special tokens, as PPO's reward saw them; lengths in tokens through EOS; ended with EOS)."""
    texts, lengths, ended = [], [], []
    for b in batches:
        texts += generation.decode(tokenizer, b.responses, b.response_mask)
        lengths += b.response_mask.sum(-1).tolist()
        ended += b.contains_eos.tolist()
    return texts, lengths, ended


# ----------------------------------------------------------------------------------------------
# Statistics


def mean_std(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / max(n - 1, 1))


def win_rate(a: list[float], b: list[float]) -> dict:
    """Rate of a over b, comparing a[i] with b[i] (same prompt, same draw); ties count half; stderr of the mean."""
    outcomes = [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)]
    rate, std = mean_std(outcomes)
    return {
        "win_rate": rate,
        "stderr": std / math.sqrt(len(outcomes)),
        "wins": outcomes.count(1.0),
        "ties": outcomes.count(0.5),
        "losses": outcomes.count(0.0),
        "n": len(outcomes),
    }


# ----------------------------------------------------------------------------------------------
# The evaluation


def evaluate(cfg: EvalConfig) -> dict:
    """Run the comparison; returns {"policies": {name: metrics}, "win_rates": [...], "output_dir": ...}."""
    # 1. Setup: everything a user can get wrong is checked before any model loads.
    check_ranges(cfg)  # again: the demo builds an EvalConfig in code, without load_config
    cfg.validate()
    log = rlog.setup(True)
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    g = cfg.generation
    judge = load_judge(cfg.judge) if cfg.judge else None
    from alignment import bon

    # A bon:N:POLICY spec loads POLICY (alignment/bon.py samples N per draw and keeps the reward model's best).
    paths = {name: policy_path(bon.base_policy(p), f"policies.{name}") for name, p in cfg.policies.items()}
    first = next(iter(cfg.policies))
    reference = None
    if cfg.kl:
        ref_name = cfg.reference or base_of(bon.base_policy(cfg.policies[first]), f"policies.{first}")
        reference = policy_path(ref_name, "reference")
    if cfg.reward_model and not os.path.isdir(cfg.reward_model):
        raise UserError(f"reward_model: '{cfg.reward_model}' is not a folder (expected a reward-stage run folder)")
    pairs = cfg.pairs or [[name, first] for name in cfg.policies if name != first]
    prompts = load_prompts(cfg)
    check_output_dir(cfg.output_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rlog.announce_builtins(log, "eval", cfg)
    log.info(
        f"eval: {len(cfg.policies)} policies x {len(prompts)} prompts x {g.num_samples} samples"
        + (f", KL to {reference}" if reference else "")
    )

    # 2. Sample every policy (one loaded at a time) and keep its own log-probs of what it sampled.
    runs = {name: sample_run(cfg, name, path, prompts, device, reference is not None) for name, path in paths.items()}
    # Row i of every policy is prompt i // num_samples, draw i % num_samples.
    prompt_rows = [p for p in prompts for _ in range(g.num_samples)]
    prompt_strings = [prompt_text(runs[first]["tokenizer"], p) for p in prompt_rows]

    # 3. KL to the reference: the reference scores exactly the batches each policy sampled.
    kl = kl_to_reference(cfg, runs, reference, device, log) if reference else {}

    # 4. Scores: the reward model's and the judge's, for every completion.
    score_runs(cfg, runs, prompt_rows, prompt_strings, judge, device, log)

    # 5. Metrics per policy, and win rates per pair by every score there is.
    policies = all_policy_metrics(cfg, runs, kl, first, log)
    win_rates = [
        {"policy": a, "against": b, "by": by, **win_rate(runs[a]["scores"][by], runs[b]["scores"][by])}
        for a, b in pairs
        for by in runs[a]["scores"]
    ]

    # 6. Save, show, log.
    samples = [sample_row(runs, kl, prompt_strings[i], i, g.num_samples) for i in range(len(prompt_rows))]
    result = {
        "policies": policies,
        "win_rates": win_rates,
        "reference": reference,
        "output_dir": cfg.output_dir,
        "inputs": {"policies": paths, "reward_model": manifest.where(cfg.reward_model)},
    }
    os.makedirs(cfg.output_dir, exist_ok=True)  # the first write: every model has loaded and sampled by now
    save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    write_outputs(cfg, result, samples)
    print(format_results(result, samples, cfg.table_rows, g.num_samples))
    if cfg.tracking.wandb:
        log_wandb(cfg, result, samples)
    return result


def score_runs(cfg: EvalConfig, runs: dict, prompt_rows: list, prompt_strings: list[str], judge, device, log) -> None:
    """Every policy's completions scored by the reward model (`scores["reward"]`) and the judge (`scores["judge"]`),
    where the config names them."""
    if cfg.reward_model:
        log.info(f"eval: scoring with the reward model {cfg.reward_model}")
        reward_model, reward_tok = load_reward_model(cfg.reward_model, device=device)
        for run in runs.values():
            texts, batch_size = run["texts"], cfg.generation.batch_size
            run["scores"]["reward"] = score_texts(reward_model, reward_tok, prompt_rows, texts, batch_size)
        del reward_model
    if judge:
        for run in runs.values():
            run["scores"]["judge"] = [judge(p, t) for t, p in zip(run["texts"], prompt_strings)]


def sample_row(runs: dict, kl: dict, prompt: str, i: int, num_samples: int) -> dict:
    """Row i of samples.jsonl: the prompt, the draw, and every policy's completion with its scores and KL."""
    policies = {
        name: {
            "completion": run["texts"][i],
            **{k: v[i] for k, v in run["scores"].items()},
            **({"kl": kl[name][i]} if kl.get(name) is not None else {}),
        }
        for name, run in runs.items()
    }
    return {"prompt": prompt, "sample": i % num_samples, **policies}


def sample_policy(cfg: EvalConfig, name: str, path: str, prompts: list, device, with_logprobs: bool) -> dict:
    """One policy's samples (its own tokenizer, batches, texts, lengths, EOS) and, for the KL, its log-probs of them."""
    g = cfg.generation
    model_cfg = ModelConfig(name_or_path=path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    tokenizer = models.load_tokenizer(model_cfg)
    model = models.load_causal_lm(model_cfg).to(device).eval()
    encoded = [encode_prompt(tokenizer, p)[-cfg.data.max_prompt_length :] for p in prompts]
    repeated = [ids for ids in encoded for _ in range(g.num_samples)]
    batches = sample(model, tokenizer, repeated, g, cfg.seed, desc=f"sample {name}")
    logprobs = torch.cat([sequence_logprobs(model, b, g.temperature) for b in batches]) if with_logprobs else None
    texts, lengths, ended = decode(tokenizer, batches)
    return dict(
        tokenizer=tokenizer, batches=batches, logprobs=logprobs, texts=texts, lengths=lengths, ended=ended, scores={}
    )


def sample_run(cfg: EvalConfig, name: str, path: str, prompts: list, device, with_logprobs: bool) -> dict:
    """sample_policy, or for a `bon:N:POLICY` spec alignment/bon.py's best of N (its KL the bound, not sampled)."""
    from alignment import bon

    parsed = bon.parse_spec(cfg.policies[name], f"policies.{name}")
    if parsed:
        return bon.sample_policy(cfg, name, path, prompts, device, parsed[0])
    return sample_policy(cfg, name, path, prompts, device, with_logprobs)


def kl_to_reference(cfg: EvalConfig, runs: dict, reference: str, device, log) -> dict[str, list[float] | None]:
    """Per-sample sum_t log pi(y_t) - log pi_ref(y_t) of every policy (None where the tokenizers differ)."""
    ref_cfg = ModelConfig(name_or_path=reference, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    ref_tok = models.load_tokenizer(ref_cfg)
    ref_model = models.load_causal_lm(ref_cfg).to(device).eval()
    kl: dict[str, list[float] | None] = {}
    for name, run in runs.items():
        if run.get("kl") is not None:  # best-of-N: log N - (N - 1) / N, from its base policy (alignment/bon.py)
            kl[name] = run["kl"]
            continue
        log.info(f"eval: KL of {name} to the reference")
        if run["tokenizer"].get_vocab() != ref_tok.get_vocab():
            log.warning(f"eval: {name} and the reference tokenize differently; no KL for {name}")
            kl[name] = None
            continue
        ref_logprobs = torch.cat([sequence_logprobs(ref_model, b, cfg.generation.temperature) for b in run["batches"]])
        kl[name] = (run["logprobs"] - ref_logprobs).tolist()
    return kl


def policy_metrics(name: str, path: str, run: dict, kl: list[float] | None, limit: int) -> dict:
    """Mean and std of every score, the KL and the length; the health of the samples (`health.MEASURES`: EOS rate,
    share at the length `limit`, broken characters, repetition, distinct bigrams) and their entropy estimate."""
    m = {"policy": name, "path": path, "samples": len(run["texts"])}
    for key, values in run["scores"].items():
        m[key], m[f"{key}_std"] = mean_std(values)
    if kl is not None:
        m["kl"], m["kl_std"] = mean_std(kl)
    m["length"], m["length_std"] = mean_std([float(n) for n in run["lengths"]])
    m.update(health.completion_health(run["texts"], run["ended"], run["lengths"], limit))
    if run["logprobs"] is not None:  # E[-log pi(y | x)] over its own samples: the entropy per completion, in nats
        m["entropy"] = -float(run["logprobs"].double().mean())
    return m


def all_policy_metrics(cfg: EvalConfig, runs: dict, kl: dict, first: str, log) -> dict:
    """`policy_metrics` of every policy; the guardrails' warnings logged against the first policy's samples."""
    limit = cfg.generation.max_new_tokens
    policies = {name: policy_metrics(name, cfg.policies[name], run, kl.get(name), limit) for name, run in runs.items()}
    for line in health_warnings(cfg, policies, first):
        log.warning(f"eval: {line}")
    return policies


def health_warnings(cfg: EvalConfig, policies: dict, first: str) -> list[str]:
    """The guardrails' lines for every policy against the first one's samples (usually SFT) and the KL budget."""
    lines = []
    for name, m in policies.items():
        reference = policies[first] if name != first else None
        counts = (m.get("samples"), policies[first].get("samples"))
        found = health.warnings_for(m, reference, cfg.health, m.get("kl"), *counts)
        lines += [f"{name}: {line}" for line in found.values()]
    return lines


def write_outputs(cfg: EvalConfig, result: dict, samples: list[dict]) -> None:
    out = cfg.output_dir
    rows = [{"kind": "policy", **m} for m in result["policies"].values()]
    rows += [{"kind": "win_rate", **w} for w in result["win_rates"]]
    files.write_atomic(os.path.join(out, "eval.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    files.write_json(os.path.join(out, "eval.json"), {**result, "config": to_dict(cfg)})
    files.write_atomic(os.path.join(out, "samples.jsonl"), "".join(json.dumps(s) + "\n" for s in samples))
    files.write_atomic(os.path.join(out, "metrics.jsonl"), json.dumps({"step": 0, **flat_metrics(result)}) + "\n")
    manifest.write(  # last: like every stage's, a manifest says the folder is complete
        out,
        "eval",
        inputs={
            **result["inputs"],
            "reference": result["reference"],
            "judge": cfg.judge,
            "data": manifest.where(cfg.data.path),
        },
        outputs={"eval": "eval.json", "rows": "eval.jsonl", "samples": "samples.jsonl", "metrics": "metrics.jsonl"},
        metrics=flat_metrics(result),
    )


def flat_metrics(result: dict) -> dict:
    """`eval/<policy>/<metric>` and `eval/win_rate/<a>_over_<b>/<by>`: the names in metrics.jsonl and W&B."""
    out = {}
    for name, m in result["policies"].items():
        out.update({f"eval/{name}/{k}": v for k, v in m.items() if isinstance(v, (int, float))})
    for w in result["win_rates"]:
        out[f"eval/win_rate/{w['policy']}_over_{w['against']}/{w['by']}"] = w["win_rate"]
    return out


def log_wandb(cfg: EvalConfig, result: dict, samples: list[dict]) -> None:
    import wandb

    t = cfg.tracking
    run = wandb.init(
        project=t.project,
        entity=t.entity,
        name=t.run_name or os.path.basename(os.path.abspath(cfg.output_dir)),
        dir=cfg.output_dir,
        tags=t.tags or None,
        mode=t.mode,
        config=to_dict(cfg),
        job_type="eval",
    )
    names = list(result["policies"])
    table = wandb.Table(columns=["prompt", "sample", *names])
    for s in samples[: cfg.table_rows * cfg.generation.num_samples]:
        table.add_data(s["prompt"], s["sample"], *[s[n]["completion"] for n in names])
    run.log({**flat_metrics(result), "eval/samples": table}, step=0)
    run.finish()


# ----------------------------------------------------------------------------------------------
# Terminal output


def format_results(result: dict, samples: list[dict], table_rows: int, num_samples: int) -> str:
    """The metrics table, the win rates and a side-by-side sample table, as plain text."""
    policies = result["policies"]
    columns = [k for k in ("reward", "judge", "kl", "length") if any(k in m for m in policies.values())]
    width = max(6, *(len(n) for n in policies))
    lines = ["", f"{'policy':<{width}}  " + "  ".join(f"{c + ' (± std)':^17}" for c in columns) + "  ended with EOS"]
    for name, m in policies.items():
        cells = [f"{m[c]:>8.3f} ± {m[c + '_std']:<6.3f}" if c in m else f"{'n/a':^17}" for c in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(cells) + f"  {m['eos_rate']:>14.0%}")
    if result["win_rates"]:
        lines += ["", "win rates (ties count half):"]
        for w in result["win_rates"]:
            lines.append(
                f"  {w['policy']} over {w['against']} by {w['by']}: {w['win_rate']:.3f} ± {w['stderr']:.3f}"
                f"  ({w['wins']} wins, {w['ties']} ties, {w['losses']} losses)"
            )
    lines += ["", "health of the samples:", *(f"  {line}" for line in health.text_table(health.table(policies)))]
    if table_rows > 0:
        lines += ["", "samples (first draw per prompt):"]
        names = list(policies)
        for s in samples[: table_rows * num_samples : num_samples]:
            lines.append(f"  {s['prompt']}")
            for name in names:
                score = "  ".join(f"{k} {s[name][k]:.2f}" for k in ("reward", "judge") if k in s[name])
                text = textwrap.shorten(s[name]["completion"].strip() or "(empty)", 100, placeholder=" ...")
                lines.append(f"    {name:<{width}} [{score}] {text}" if score else f"    {name:<{width}} {text}")
    lines.append(f"\neval: done; wrote {result['output_dir']} (eval.json, eval.jsonl, samples.jsonl, manifest.json)")
    return "\n".join(lines)
