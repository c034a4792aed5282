"""Stage 4: PPO against the reward model, with policy, value, reward and reference on one frozen base.

    rlhf ppo configs/ppo.yaml output_dir=runs/tiny/ppo
    accelerate launch --config_file launch/ddp.yaml -m alignment ppo configs/ppo.yaml
    accelerate launch --config_file launch/zero3.yaml -m alignment ppo configs/ppo_qwen0.5b.yaml

Each update: (a) prompts, (b) sample with the policy adapter, (c) score: policy and reference
log-probs, values, rewards, (d) normalise scores and penalise missing EOS, (e) per-token KL penalty,
GAE and whitened advantages, (f) `ppo.epochs` passes of shuffled minibatches with gradient
accumulation and clipping, (g) log, adapt the KL coefficient, checkpoint.
Writes to output_dir: the policy adapter at the top level (`PeftModel.from_pretrained(sft_base,
output_dir)` loads it), the tokenizer, optional `merged/`, `config.yaml`, `metrics.jsonl`,
`samples.jsonl`, `manifest.json` and resumable `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import NamedTuple

import torch

from alignment.cli import parse_stage_args
from alignment.config import UserError
from alignment.ppo import losses as L
from alignment.ppo.config import PPOAlgoConfig, PPOConfig
from alignment.ppo.model import build_ppo_model, disable_dropout, lora_config
from alignment.ppo.rewards import RewardSource, load_source
from alignment.ppo.rollout import Scores, encode_prompts, sample, score
from alignment.runtime import adapters, loop, manifest, models, optim
from alignment.runtime import logging as rlog
from alignment.runtime.data import load_prompts
from alignment.runtime.formatting import prompt_text
from alignment.runtime.generation import Responses, decode, left_pad
from alignment.runtime.logprobs import response_logprobs
from alignment.runtime.sampler import IndexStream


def main(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf ppo", PPOConfig, argv, __doc__)
    if cfg is not None:
        train(cfg)
    return 0


def train(cfg: PPOConfig) -> dict:
    # 1. Runtime: accelerator, logging, the same seed on every process (identical adapter init).
    r, p = cfg.rollout, cfg.ppo
    run = loop.start("ppo", cfg, p.gradient_accumulation_steps)
    accelerator, log = run.accelerator, run.log
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    # 2. Prompts and tokenizer (the base's own: an SFT folder's merged model carries it).
    base_path = base_model_path(cfg)
    tokenizer = load_tokenizer(cfg, base_path)
    prompts = load_prompts(cfg.data.path, cfg.data.split, cfg.data.limit)
    encoded = encode_prompts(tokenizer, prompts, cfg.data.max_prompt_length)

    # 3. Reward: adapter on this base, separate model, or function; and its normalisation.
    reward = load_source(cfg.reward, base_path, device)
    rlog.announce_builtins(log, "ppo", cfg)
    log.info(f"ppo: reward from {cfg.reward.function or cfg.reward.path} ({reward.kind}), "
             f"normalisation: {reward.normalize}")  # fmt: skip

    # 4. Model: one frozen base; policy and value LoRA adapters, value head; reward adapter; reference = base.
    model = build_model(cfg, base_path, reward, log)
    batch_global = r.per_device_batch_size * world
    updates = math.ceil(cfg.train.total_episodes / batch_global)
    optimizer_steps = updates * p.epochs * p.num_minibatches
    model, optimizer, scheduler = optim.setup(accelerator, model, cfg.train, optimizer_steps, micro_batch_size(cfg))

    # 5. Resume: weights, optimizer, schedule, RNG (Accelerate) + KL coefficient, running stats, run id.
    kl_ctl = L.kl_controller(cfg.kl.controller, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    state = loop.resume(run)
    if state:
        kl_ctl.load_state_dict(state["kl_controller"])
        reward.moments.load_state_dict(state["score_moments"])

    # 6. Train: `updates` rounds of rollout + PPO epochs.
    stream = IndexStream(len(encoded), cfg.seed)
    model.train()  # dropout is off; train mode is what gradient checkpointing needs
    for update in loop.progress(run, updates):
        step, t_start = update + 1, time.time()
        # 6a. Prompts: this process's slice of a seeded stream; the position alone decides it (exact resume).
        indices = stream.batch(update, r.per_device_batch_size, rank, world)
        queries, query_mask = left_pad([encoded[i] for i in indices], tokenizer.pad_token_id)
        # 6b. Generate with the policy (KV cache; ZeRO-3 gathers the weights once for the whole rollout).
        rollout = sample(accelerator, model, queries.to(device), query_mask.to(device), r.response_length,
                         r.temperature, tokenizer.pad_token_id, tokenizer.eos_token_id if r.stop_at_eos else None)  # fmt: skip
        t_generated = time.time()
        # 6c. Score: log-probs, reference, values and rewards in the first epoch's micro-batches; normalise, penalise.
        orders = minibatch_orders(cfg, update, device)
        exp = score_rollout(
            cfg, accelerator, model, rollout, orders[0], reward, [prompts[i] for i in indices], tokenizer
        )
        # 6d. Advantages: per-token KL penalty + score at the last token, GAE, whitened.
        advantages, returns = gae_advantages(exp, kl_ctl.value, p)
        # 6e. PPO epochs over shuffled minibatches; each minibatch is one optimizer step of accumulated micro-batches.
        stats = ppo_update(cfg, accelerator, model, optimizer, scheduler, exp, advantages, returns, orders)
        t_end = time.time()
        # 6f. Metrics over all processes, KL coefficient update, samples, checkpoint.
        metrics = collect_metrics(accelerator, exp, stats, kl_ctl.value)
        metrics.update({
            "train/learning_rate": scheduler.get_last_lr()[0], "train/episodes": step * batch_global,
            "time/generation_share": (t_generated - t_start) / max(t_end - t_start, 1e-9),
            "time/episodes_per_second": batch_global / max(t_end - t_start, 1e-9),
        })  # fmt: skip
        kl_ctl.update(metrics["objective/kl"], batch_global)
        if loop.due(step, cfg.train.log_steps, updates, final=True):
            run.tracker.log(metrics, step=step)
        if cfg.train.sample_steps and (step % cfg.train.sample_steps == 0 or step == 1):
            log_samples(run, tokenizer, exp, min(cfg.train.sample_rows, len(indices)), step)
        run.bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
        loop.save_checkpoint(
            run, step, updates, kl_controller=kl_ctl.state_dict(), score_moments=reward.moments.state_dict()
        )

    # 7. Save: the policy adapter (gathered from ZeRO-3 shards), tokenizer, optional merged model, manifest.
    extra = {"updates": updates, "episodes": updates * batch_global, "reward_kind": reward.kind}
    final = save(cfg, run, model, tokenizer, base_path, extra)
    loop.finish(run)
    return {"metrics": final, "model": accelerator.unwrap_model(model)}


# ----------------------------------------------------------------------------------------------
# Setup


def base_model_path(cfg: PPOConfig) -> str:
    """The frozen base: an SFT folder's merged model, or the model given (absolute, so adapters record it)."""
    path = models.stage_model_path(models.resolve_path(cfg.model.name_or_path))
    if models.is_adapter_folder(path):
        raise UserError(
            f"model.name_or_path: '{cfg.model.name_or_path}' is an adapter without a merged model; "
            "run SFT with save_merged=true or point at a full model"
        )
    return os.path.abspath(path) if os.path.exists(path) else path


def load_tokenizer(cfg: PPOConfig, base_path: str):
    """The base's tokenizer (or `model.tokenizer`), with an EOS to stop at and a pad token distinct from it."""
    tokenizer = models.load_tokenizer(
        cfg.model if cfg.model.tokenizer else dataclasses.replace(cfg.model, name_or_path=base_path)
    )
    if tokenizer.eos_token_id is None:
        raise UserError("model: the tokenizer has no EOS token; PPO stops responses at EOS")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        # a pad equal to EOS would make every EOS look like padding (and the reward read before it)
        raise UserError("model: the tokenizer's pad token is its EOS token; set a distinct pad token")
    return tokenizer


def build_model(cfg: PPOConfig, base_path: str, reward: RewardSource, log):
    """The PPO model on one frozen base: policy and value adapters (+ value head), the reward adapter if any."""
    if cfg.value.init_from_reward and reward.kind != "adapter":
        raise UserError("value.init_from_reward: the reward model is not an adapter on this base")
    model_cfg = dataclasses.replace(cfg.model, name_or_path=base_path, gradient_checkpointing=False)
    model = build_ppo_model(
        models.load_causal_lm(model_cfg),
        lora_config(cfg.policy),
        lora_config(cfg.value.adapter),
        reward_adapter=cfg.reward.path if reward.kind == "adapter" else None,
        share_policy_value=cfg.value.share_with_policy,
        init_value_from_reward=cfg.value.init_from_reward,
    )
    disable_dropout(model)  # LoRA dropout too: with it on, the first minibatch is not on-policy
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainable, total = adapters.count_parameters(model)
    log.info(f"ppo: training {trainable:,} of {total:,} parameters on one base")
    return model


# ----------------------------------------------------------------------------------------------
# The steps of an update


@dataclasses.dataclass
class Experience:
    """One update's rollout, scored: what the PPO epochs train on. [B, T] float32 unless noted."""

    rollout: Responses
    prompts: list
    """The prompt rows (strings or message lists) of the episodes."""
    scored: Scores
    """Log-probs, reference log-probs, values (None without a value head) and entropy before any update."""
    raw_scores: torch.Tensor
    """[B] the reward source's scores."""
    scores: torch.Tensor
    """[B] what is optimised: normalised, minus the missing-EOS penalty."""
    kl: torch.Tensor
    """Per-token KL estimate to the reference, zero on padding."""
    monitor: float | None = None
    """Mean `reward.monitor` score of the rollout (watched, never optimised)."""


def micro_batch_size(cfg: PPOConfig) -> int:
    """Episodes per forward pass: a minibatch is `ppo.gradient_accumulation_steps` micro-batches."""
    p = cfg.ppo
    return cfg.rollout.per_device_batch_size // (p.num_minibatches * p.gradient_accumulation_steps)


def minibatch_orders(cfg: PPOConfig, update: int, device) -> list[torch.Tensor]:
    """Each PPO epoch's shuffle of the rollout's rows, seeded by the update alone (exact resume)."""
    shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + update)
    B = cfg.rollout.per_device_batch_size
    return [torch.randperm(B, generator=shuffle).to(device) for _ in range(cfg.ppo.epochs)]


def score_rollout(cfg: PPOConfig, accelerator, model, rollout: Responses, order: torch.Tensor, reward: RewardSource,
                  prompts: list, tokenizer) -> Experience:  # fmt: skip
    """Log-probs, reference, values and (adapter) rewards in the micro-batches of `order`, the reward
    source's scores normalised and penalised for a missing EOS, the per-token KL to the reference, and the
    monitor's score."""
    r = cfg.rollout
    scored = score(model, rollout, order, micro_batch_size(cfg), r.temperature, with_reward=reward.kind == "adapter")
    prompt_texts = completions = None
    if reward.needs_text:
        prompt_texts = [prompt_text(tokenizer, p) for p in prompts]
        completions = decode(tokenizer, rollout.responses, rollout.response_mask)
    raw = reward.raw_scores(scored.reward_scores, prompts, prompt_texts, completions, accelerator.device)
    scores = reward.normalized(raw, accelerator)
    if r.stop_at_eos and r.missing_eos_penalty is not None:
        scores = L.penalize_no_eos(scores, rollout.contains_eos, r.missing_eos_penalty)
    kl = L.kl_per_token(scored.logprobs, scored.ref_logprobs, cfg.kl.estimator) * rollout.response_mask
    monitor = reward.monitored(prompt_texts, completions)
    return Experience(rollout, prompts, scored, raw, scores, kl, monitor)


def gae_advantages(exp: Experience, beta: float, p: PPOAlgoConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's (advantages, returns) [B, T]: rewards -beta * KL per token plus the score at the last token,
    GAE over the value estimates, advantages whitened over the batch. (RLOO and GRPO plug in here with
    estimators of the same shape that need no values.)"""
    mask = exp.rollout.response_mask
    rewards = L.compute_rewards(exp.scores, exp.kl, mask, beta)
    advantages, returns = L.gae(rewards, exp.scored.values, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        advantages = L.masked_whiten(advantages, mask)
    return advantages, returns


class UpdateStats(NamedTuple):
    """One PPO update's statistics, averaged over every micro-batch (the `_first` ones over the first
    minibatch only: exactly on-policy, so ratio 1 and approxkl/clipfrac 0 there check the whole scoring path)."""

    policy_loss: float
    value_loss: float
    approxkl: float
    clipfrac: float
    ratio: float
    value_clipfrac: float
    ratio_first: float
    approxkl_first: float
    clipfrac_first: float
    grad_norm: float | None
    """Mean over the update's optimizer steps, before clipping."""


def ppo_loss(model, exp: Experience, rows, advantages, returns, p: PPOAlgoConfig, temperature: float):
    """(loss, per-micro-batch statistics) of rows `rows`: the clipped policy surrogate plus `vf_coef` times the
    clipped value loss (no value loss when `returns` is None: estimators without a value head)."""
    rollout, old, mask = exp.rollout, exp.scored, exp.rollout.response_mask[rows]
    ids, attn = rollout.sequences(rows)
    if returns is None:
        logits, values = model(ids, attn, role="policy"), None
    else:
        logits, values = model(ids, attn, role="policy_and_value")
    logprobs = response_logprobs(logits, rollout.responses[rows], rollout.prompt_width, temperature)
    pg_loss, clipfrac, approxkl, ratio = L.policy_loss(
        logprobs, old.logprobs[rows], advantages[rows], mask, p.cliprange
    )
    vf_loss = vf_clipfrac = torch.zeros((), device=pg_loss.device)
    if values is not None:
        values = values[:, rollout.prompt_width - 1 : -1]
        vf_loss, vf_clipfrac = L.value_loss(values, old.values[rows], returns[rows], mask, p.cliprange_value)
    stats = {"policy_loss": pg_loss, "value_loss": vf_loss, "approxkl": approxkl, "clipfrac": clipfrac, "ratio": ratio,
             "value_clipfrac": vf_clipfrac}  # fmt: skip
    return pg_loss + p.vf_coef * vf_loss, {k: float(v.detach()) for k, v in stats.items()}


def ppo_update(cfg: PPOConfig, accelerator, model, optimizer, scheduler, exp: Experience, advantages, returns,
               orders: list[torch.Tensor]) -> UpdateStats:  # fmt: skip
    """`ppo.epochs` passes over the rollout, epoch e in `orders[e]`; each minibatch is one optimizer step of
    `ppo.gradient_accumulation_steps` micro-batches."""
    p, micro = cfg.ppo, micro_batch_size(cfg)
    mb = cfg.rollout.per_device_batch_size // p.num_minibatches
    sums, first, norms = {}, {}, []
    for epoch, order in enumerate(orders):
        for m in range(p.num_minibatches):
            for a in range(p.gradient_accumulation_steps):
                rows = order[m * mb + a * micro : m * mb + (a + 1) * micro]
                with accelerator.accumulate(model):
                    loss, got = ppo_loss(model, exp, rows, advantages, returns, p, cfg.rollout.temperature)
                    norm = loop.optimizer_step(accelerator, model, optimizer, scheduler, loss, cfg.train.max_grad_norm)
                norms += [norm] if norm is not None else []
                for k, v in got.items():
                    sums[k] = sums.get(k, 0.0) + v / p.gradient_accumulation_steps
                    if epoch == 0 and m == 0:
                        first[k] = first.get(k, 0.0) + v / p.gradient_accumulation_steps
    steps = p.epochs * p.num_minibatches
    return UpdateStats(
        **{k: v / steps for k, v in sums.items()},
        ratio_first=first["ratio"],
        approxkl_first=first["approxkl"],
        clipfrac_first=first["clipfrac"],
        grad_norm=sum(norms) / len(norms) if norms else None,
    )


def collect_metrics(accelerator, exp: Experience, stats: UpdateStats, beta: float) -> dict:
    """The update's metrics (TRL's PPO names), averaged over processes; val/num_eos summed."""
    mask = exp.rollout.response_mask
    kl_sum = exp.kl.sum(-1)
    local = {
        "loss/policy": stats.policy_loss, "loss/value": stats.value_loss, "policy/approxkl": stats.approxkl,
        "policy/clipfrac": stats.clipfrac, "val/ratio": stats.ratio, "val/clipfrac": stats.value_clipfrac,
        "val/ratio_first_minibatch": stats.ratio_first, "policy/approxkl_first_minibatch": stats.approxkl_first,
        "policy/clipfrac_first_minibatch": stats.clipfrac_first,
        "objective/kl": kl_sum.mean().item(), "objective/entropy": (exp.scored.entropy * mask).sum(-1).mean().item(),
        "objective/rlhf_reward": (exp.scores - beta * kl_sum).mean().item(),
        "objective/scores": exp.scores.mean().item(), "objective/raw_scores": exp.raw_scores.float().mean().item(),
        "val/response_length": mask.sum(-1).float().mean().item(),
        **({"train/grad_norm": stats.grad_norm} if stats.grad_norm is not None else {}),
        **({"objective/monitor": exp.monitor} if exp.monitor is not None else {}),
    }  # fmt: skip
    metrics = loop.reduce_metrics(accelerator, local, reduction="mean")
    num_eos = accelerator.reduce(exp.rollout.contains_eos.sum().to(accelerator.device), reduction="sum")
    return {**metrics, "val/num_eos": int(num_eos.item()), "objective/kl_coef": beta}


def log_samples(run: loop.Run, tokenizer, exp: Experience, n: int, step: int) -> None:
    """A table of the first `n` episodes: prompt, completion, score (W&B Table and samples.jsonl)."""
    texts = decode(tokenizer, exp.rollout.responses[:n], exp.rollout.response_mask[:n])
    rows = [[prompt_text(tokenizer, exp.prompts[i]), texts[i], exp.scores[i].item()] for i in range(n)]
    run.tracker.table("samples", ["prompt", "completion", "score"], rows, step=step)


# ----------------------------------------------------------------------------------------------
# Saving


def save(cfg: PPOConfig, run: loop.Run, model, tokenizer, base_path: str, extra: dict) -> dict:
    """The policy adapter (gathered from ZeRO-3 shards), tokenizer, optional merged model and the manifest;
    returns the last logged metrics."""
    accelerator = run.accelerator
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3: every process calls it
    final = loop.last_metrics(cfg.output_dir) if accelerator.is_main_process else {}
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_policy(cfg.output_dir, state_dict)
        tokenizer.save_pretrained(cfg.output_dir)
        outputs = {"adapter": ".", "model": "."}
        if cfg.save_merged:
            merged = os.path.join(cfg.output_dir, "merged")
            adapters.merge_to(cfg.output_dir, base_path, merged, models.resolve_dtype(cfg.model.dtype), tokenizer)
            outputs["model"] = "merged"
        c = cfg.reward
        manifest.write(
            cfg.output_dir,
            "ppo",
            inputs={
                "model": base_path,
                "reward": c.function or os.path.abspath(c.path),
                "data": manifest.where(cfg.data.path),
            },  # fmt: skip
            outputs=outputs,
            metrics=final,
            extra={**extra, "world_size": accelerator.num_processes},
        )
        run.log.info(f"ppo: wrote {cfg.output_dir}")
    del state_dict
    return final
