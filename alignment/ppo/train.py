"""Stage 4: online RL against the reward model (PPO, RLOO or GRPO), every role on one frozen base.

    rlhf ppo configs/ppo.yaml output_dir=runs/tiny/ppo
    rlhf ppo configs/rloo.yaml            # or: rlhf ppo configs/ppo.yaml algorithm=rloo rollout.samples_per_prompt=4
    rlhf ppo configs/grpo.yaml
    accelerate launch --config_file launch/ddp.yaml -m alignment ppo configs/ppo.yaml
    accelerate launch --config_file launch/zero3.yaml -m alignment ppo configs/ppo_qwen0.5b.yaml

Each update: (a) prompts (each repeated `rollout.samples_per_prompt` = k times), (b) sample with the policy
adapter, (c) score: policy and reference log-probs, values (PPO), rewards, (d) normalise scores and
penalise missing EOS, (e) advantages: PPO's per-token KL penalty + GAE over the value adapter, or RLOO's /
GRPO's baseline over the k samples of a prompt on KL-penalised scores (no value adapter), (f) `ppo.epochs`
passes of shuffled minibatches with gradient accumulation and clipping, (g) log, adapt the KL coefficient,
checkpoint.
Writes to output_dir: the policy adapter at the top level (`PeftModel.from_pretrained(sft_base,
output_dir)` loads it), the tokenizer, optional `merged/`, `config.yaml`, `metrics.jsonl`,
`samples.jsonl`, `manifest.json` and resumable `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from alignment.common import files, manifest
from alignment.common.data import load_prompts
from alignment.common.errors import UserError
from alignment.ppo import losses as L
from alignment.ppo.config import PPOConfig
from alignment.ppo.model import build_ppo_model, lora_config
from alignment.ppo.rewards import RewardSource, load_source
from alignment.ppo.rollout import Scores, encode_prompts, sample, score
from alignment.runtime import adapters, health, loop, models, optim, saving
from alignment.runtime import logging as rlog
from alignment.runtime.formatting import prompt_text
from alignment.runtime.generation import Responses, decode, left_pad
from alignment.runtime.sampler import IndexStream


def train(cfg: PPOConfig) -> dict:
    # 1. Runtime: accelerator, logging, the same seed on every process (identical adapter init).
    run = loop.start("ppo", cfg, cfg.ppo.gradient_accumulation_steps)
    accelerator = run.accelerator

    # 2. Prompts and tokenizer (the base's own: an SFT folder's merged model carries it).
    base_path = models.base_model_path(cfg.model)
    tokenizer = load_tokenizer(cfg, base_path)
    prompts = load_prompts(cfg.data.path, cfg.data.split, cfg.data.limit)
    encoded = encode_prompts(tokenizer, prompts, cfg.data.max_prompt_length)

    # 3. Reward: adapter on this base, separate model, or function; and its normalisation.
    reward = load_source(cfg.reward, base_path, accelerator.device)
    source = cfg.reward.function or cfg.reward.path
    run.log.info(f"ppo: reward from {source} ({reward.kind}), normalisation: {reward.normalize}")
    if warning := reward.spread_warning():
        run.log.warning(f"ppo: warning: {warning}")

    # 4. Model: one frozen base; policy LoRA adapter; value adapter + head (PPO only); reward adapter; reference
    # = base. The learning rate follows beta above train.lr_from_beta.
    model = build_model(cfg, base_path, reward, run.log)
    updates = math.ceil(cfg.train.total_episodes / episodes_per_update(cfg, accelerator))
    optimizer_steps = updates * cfg.ppo.epochs * cfg.ppo.num_minibatches
    train_cfg = dataclasses.replace(cfg.train, learning_rate=learning_rate(cfg))
    model, optimizer, scheduler = optim.setup(accelerator, model, train_cfg, optimizer_steps, micro_batch_size(cfg))

    # 5. Resume: weights, optimizer, schedule, RNG (Accelerate) + KL coefficient, running stats, guardrails.
    control = resume(cfg, run, reward, updates)

    # 6. Train: `updates` rounds of rollout + PPO epochs.
    stream = IndexStream(len(encoded), cfg.seed)
    model.train()  # dropout is off; train mode is what gradient checkpointing needs
    for update in loop.progress(run, updates):
        started = time.time()
        # 6a. Prompts: this process's slice of a seeded stream; the position alone decides it (exact resume). Each
        # prompt k times in a row: the group layout the RLOO/GRPO advantages read.
        indices = update_prompts(cfg, stream, update, accelerator)
        # 6b. Generate with the policy (KV cache; ZeRO-3 gathers the weights once for the whole rollout).
        rollout = sample_rollout(cfg, accelerator, model, [encoded[i] for i in indices], tokenizer)
        generated = time.time()
        # 6c. Score: log-probs (none with old_logprobs_from_update), reference, values, rewards; normalise.
        orders = minibatch_orders(cfg, update, accelerator.device)
        batch_prompts = [prompts[i] for i in indices]
        exp = score_rollout(cfg, accelerator, model, rollout, orders[0], reward, batch_prompts, tokenizer)
        # 6d. Advantages: PPO's GAE over the values [B, T]; RLOO/GRPO's group baseline on KL-penalised scores [B].
        exp.advantages, exp.returns = estimate_advantages(cfg, accelerator, exp, control.kl.value)
        # 6e. Epochs over shuffled minibatches; each minibatch is one optimizer step of accumulated micro-batches.
        loss_fn = update_loss(cfg, accelerator, model, exp, control.kl.value)
        stats = policy_update(cfg, accelerator, model, optimizer, scheduler, orders, loss_fn)
        # 6f. Metrics over all processes (health, guardrails), KL coefficient update, samples, checkpoint.
        if after_update(cfg, run, update, exp, stats, control, scheduler, tokenizer, (started, generated, time.time())):
            break

    # 7. Save: the policy adapter (gathered from ZeRO-3 shards), tokenizer, optional merged model, manifest.
    episodes = updates * episodes_per_update(cfg, accelerator)
    extra = {"updates": updates, "episodes": episodes, "reward_kind": reward.kind}
    final = save(cfg, run, model, tokenizer, base_path, extra)
    loop.finish(run, ppo_summary(cfg, extra, final))
    return {"metrics": final, "model": accelerator.unwrap_model(model)}


class Control(NamedTuple):
    """What carries over from update to update (and through a checkpoint) beside the weights."""

    kl: Any
    """The KL coefficient's controller (`ppo.losses.kl_controller`)."""
    reward: RewardSource
    """Its running score moments (`reward.moments`) normalise the scores."""
    guard: health.Guardrails
    updates: int


def resume(cfg: PPOConfig, run: loop.Run, reward: RewardSource, updates: int) -> Control:
    """The KL controller, the reward's running moments and the guardrails, from the checkpoint `loop.resume` restores
    (with the weights, optimizer, schedule and RNG), or fresh."""
    kl_ctl = L.kl_controller(cfg.kl.controller, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    state = loop.resume(run)
    guard = health.Guardrails("ppo", cfg.health, run.log, run.accelerator.is_main_process)
    if state:
        kl_ctl.load_state_dict(state["kl_controller"])
        reward.moments.load_state_dict(state["score_moments"])
        guard.load_state_dict(state.get("health", {}))
    return Control(kl_ctl, reward, guard, updates)


def episodes_per_update(cfg: PPOConfig, accelerator) -> int:
    return cfg.rollout.per_device_batch_size * accelerator.num_processes


def update_prompts(cfg: PPOConfig, stream: IndexStream, update: int, accelerator) -> list[int]:
    """The prompt indices of this process's episodes in `update`, each prompt `rollout.samples_per_prompt` times in a
    row."""
    k, rank, world = cfg.rollout.samples_per_prompt, accelerator.process_index, accelerator.num_processes
    return [i for i in stream.batch(update, cfg.rollout.per_device_batch_size // k, rank, world) for _ in range(k)]


def sample_rollout(cfg: PPOConfig, accelerator, model, encoded: list[list[int]], tokenizer) -> Responses:
    """The rollout: responses sampled by the policy to the left-padded prompts `encoded`."""
    r, device = cfg.rollout, accelerator.device
    queries, query_mask = left_pad(encoded, tokenizer.pad_token_id)
    eos = tokenizer.eos_token_id if r.stop_at_eos else None
    return sample(
        accelerator,
        model,
        queries.to(device),
        query_mask.to(device),
        r.response_length,
        r.temperature,
        tokenizer.pad_token_id,
        eos,
    )


def after_update(
    cfg: PPOConfig,
    run: loop.Run,
    update: int,
    exp,
    stats,
    control: Control,
    scheduler,
    tokenizer,
    times: tuple[float, float, float],
) -> bool:
    """The update's metrics (logged when due), the KL coefficient's update, the guardrails, samples and the
    checkpoint; returns whether a guardrail stops the run. `times`: when the update started, its sampling ended and
    its optimisation ended."""
    step, batch = update + 1, episodes_per_update(cfg, run.accelerator)
    metrics = collect_metrics(cfg, run.accelerator, exp, stats, control.kl.value)
    metrics.update(progress_metrics(scheduler, step, batch, times))
    control.kl.update(metrics["objective/kl"], batch)
    if loop.due(step, cfg.train.log_steps, control.updates, final=True):
        run.tracker.log(metrics, step=step)
    stop = control.guard.check(metrics, step, batch)
    if cfg.train.sample_steps and (step % cfg.train.sample_steps == 0 or step == 1):
        log_samples(run, tokenizer, exp, min(cfg.train.sample_rows, len(exp.prompts)), step)
    run.bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
    extras = {"kl_controller": control.kl.state_dict(), "score_moments": control.reward.moments.state_dict()}
    loop.save_checkpoint(run, step, control.updates, **extras, health=control.guard.state_dict())
    return stop


# ----------------------------------------------------------------------------------------------
# Setup


def load_tokenizer(cfg: PPOConfig, base_path: str):
    """The base's tokenizer (or `model.tokenizer`), with an EOS to stop at and a pad token distinct from it."""
    tokenizer = models.load_base_tokenizer(cfg.model, base_path)
    if tokenizer.eos_token_id is None:
        raise UserError("model: the tokenizer has no EOS token; PPO stops responses at EOS")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        # a pad equal to EOS would make every EOS look like padding (and the reward read before it)
        raise UserError("model: the tokenizer's pad token is its EOS token; set a distinct pad token")
    return tokenizer


def learning_rate(cfg: PPOConfig) -> float:
    """`train.learning_rate`, times lr_from_beta / kl.coef when the (initial) KL coefficient is above lr_from_beta."""
    return optim.lr_for_beta(cfg.train.learning_rate, cfg.kl.coef, cfg.train.lr_from_beta)


def build_model(cfg: PPOConfig, base_path: str, reward: RewardSource, log):
    """The model on one frozen base: the policy adapter, the value adapter + head (PPO only), the reward adapter
    if any."""
    rlog.announce_builtins(log, "ppo", cfg)
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
        with_value=ALGORITHMS[cfg.algorithm].value,
    )
    models.disable_dropout(model)  # LoRA dropout too: with it on, the first minibatch is not on-policy
    model.logits_chunk_size = cfg.ppo.logits_chunk_size
    model.checkpoint_roles = set(cfg.ppo.checkpoint_roles)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainable, total = adapters.count_parameters(model)
    r, k = cfg.rollout, cfg.rollout.samples_per_prompt
    log.info(
        f"ppo: {cfg.algorithm}, training {trainable:,} of {total:,} parameters on one base; {r.per_device_batch_size // k} "
        f"prompts x {k} samples per process and update, learning rate {learning_rate(cfg):g}"
    )
    return model


# ----------------------------------------------------------------------------------------------
# The steps of an update


@dataclasses.dataclass
class Experience:
    """One update's rollout, scored: what the update's epochs train on. [B, T] float32 unless noted."""

    rollout: Responses
    prompts: list
    """The prompt rows (strings or message lists) of the episodes."""
    scored: Scores
    """Log-probs, reference log-probs, values (None without a value head) and entropy before any update."""
    raw_scores: torch.Tensor
    """[B] the reward source's scores."""
    scores: torch.Tensor
    """[B] what is optimised: normalised, minus the missing-EOS and broken-text penalties."""
    kl: torch.Tensor
    """Per-token KL estimate to the reference, zero on padding."""
    texts: list[str]
    """The decoded completions."""
    monitor: float | None = None
    """Mean `reward.monitor` score of the rollout (watched, never optimised)."""
    old_logprobs_from_update: bool = False
    """Log-probs, entropy, KL (and PPO's values) are taken from the update's first forward pass (`policy_pass`)."""
    advantages: torch.Tensor | None = None
    """PPO's [B, T] or RLOO's / GRPO's [B]; None until the log-probs they need are in (`policy_pass`)."""
    returns: torch.Tensor | None = None
    """PPO's value targets [B, T]."""


def micro_batch_size(cfg: PPOConfig) -> int:
    """Episodes per forward pass: a minibatch is `ppo.gradient_accumulation_steps` micro-batches."""
    p = cfg.ppo
    return cfg.rollout.per_device_batch_size // (p.num_minibatches * p.gradient_accumulation_steps)


def minibatch_orders(cfg: PPOConfig, update: int, device) -> list[torch.Tensor]:
    """Each PPO epoch's shuffle of the rollout's rows, seeded by the update alone (exact resume)."""
    shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + update)
    B = cfg.rollout.per_device_batch_size
    return [torch.randperm(B, generator=shuffle).to(device) for _ in range(cfg.ppo.epochs)]


def score_rollout(
    cfg: PPOConfig,
    accelerator,
    model,
    rollout: Responses,
    order: torch.Tensor,
    reward: RewardSource,
    prompts: list,
    tokenizer,
) -> Experience:
    """Log-probs, reference, values and (adapter) rewards in the micro-batches of `order`, the reward
    source's scores normalised and penalised for a missing EOS, the per-token KL to the reference, and the
    monitor's score. With `old_logprobs_from_update` there is no policy pass: the update's first forward pass
    gives log-probs, entropy, KL and PPO's values (`policy_pass`)."""
    r, fused = cfg.rollout, old_logprobs_from_update(cfg)
    scored = score(
        model,
        rollout,
        order,
        micro_batch_size(cfg),
        r.temperature,
        with_reward=reward.kind == "adapter",
        with_values=ALGORITHMS[cfg.algorithm].value,
        with_policy=not fused,
        # a value adapter back-propagated on its own is scored here: the update's first minibatch needs its values
        # before the policy's backward (with one backward, as under DDP, the update's pass gives them)
        value_pass=ALGORITHMS[cfg.algorithm].value and split_value_pass(accelerator, model),
    )
    # the texts: what a text reward scores and what the health measures read
    completions = decode(tokenizer, rollout.responses, rollout.response_mask)
    prompt_texts = [prompt_text(tokenizer, p) for p in prompts] if reward.needs_text else None
    raw = reward.raw_scores(scored.reward_scores, prompts, prompt_texts, completions, accelerator.device)
    scores = reward.normalized(raw, accelerator)
    if r.stop_at_eos and r.missing_eos_penalty is not None:
        scores = L.penalize_no_eos(scores, rollout.contains_eos, r.missing_eos_penalty)
    if r.broken_text_penalty is not None:
        broken = torch.tensor([health.BROKEN in text for text in completions], device=scores.device)
        scores = L.penalize(scores, broken, r.broken_text_penalty)
    kl = L.kl_per_token(scored.logprobs, scored.ref_logprobs, cfg.kl.estimator) * rollout.response_mask
    monitor = reward.monitored(prompt_texts, completions)
    return Experience(rollout, prompts, scored, raw, scores, kl, completions, monitor, fused)


def gae_advantages(cfg: PPOConfig, accelerator, exp: Experience, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's (advantages, returns) [B, T]: rewards -beta * KL per token plus the score at the last token,
    GAE over the value estimates, advantages whitened over the batch."""
    p, mask = cfg.ppo, exp.rollout.response_mask
    rewards = L.compute_rewards(exp.scores, exp.kl, mask, beta)
    advantages, returns = L.gae(rewards, exp.scored.values, mask, p.gamma, p.lam)
    if p.whiten_advantages:
        advantages = L.masked_whiten(advantages, mask)
    return advantages, returns


def estimate_advantages(cfg: PPOConfig, accelerator, exp: Experience, beta: float):
    """(advantages, returns): PPO's per-token GAE and returns [B, T], or RLOO's / GRPO's [B] and None; (None, None)
    while they wait for what the update's first forward pass gives (`policy_pass`: PPO's log-probs and values, the
    group methods' log-probs with kl.mode = reward)."""
    algorithm = ALGORITHMS[cfg.algorithm]
    if exp.old_logprobs_from_update and (algorithm.value or cfg.kl.mode == "reward"):
        return None, None
    return algorithm.advantages(cfg, accelerator, exp, beta)


def group_advantages(cfg: PPOConfig, accelerator, exp: Experience, beta: float) -> tuple[torch.Tensor, None]:
    """RLOO's or GRPO's advantage [B], one per episode, from the scores of the k samples of each prompt (contiguous
    rows), and no returns. With kl.mode = reward the scores carry -beta * (summed per-token KL), so the update
    ascends J = E[r] - beta * KL. Computed on the batch gathered from every process (GRPO's `batch` std is global,
    as TRL's), then this process's rows are kept."""
    old, mask = exp.scored, exp.rollout.response_mask
    scores = exp.scores
    if cfg.kl.mode == "reward":
        scores = L.kl_penalized_scores(scores, old.logprobs, old.ref_logprobs, mask, beta, cfg.kl.estimator)
    k, B = cfg.rollout.samples_per_prompt, scores.shape[0]
    everyone = accelerator.gather(scores.contiguous())
    if cfg.algorithm == "rloo":
        advantages = L.rloo_advantages(everyone, k)
    else:
        advantages = L.grpo_advantages(everyone, k, cfg.grpo.scale)
    rank = accelerator.process_index
    return advantages[rank * B : (rank + 1) * B], None


def update_loss(cfg: PPOConfig, accelerator, model, exp: Experience, beta: float):
    """The algorithm's loss of one micro-batch: a function (rows, minibatch rows, on_policy) -> (loss, {statistic:
    float}); `on_policy` is true in the first minibatch, whose passes run the weights the rollout was sampled with."""
    loss = ALGORITHMS[cfg.algorithm].loss
    return lambda rows, minibatch, on_policy: loss(cfg, accelerator, model, exp, rows, minibatch, on_policy, beta)


def old_logprobs_from_update(cfg: PPOConfig) -> bool:
    """Whether the rollout's log-probs come from the update's forward pass (`ppo.old_logprobs_from_update`), which
    needs every pass that fills them to run the weights the rollout was sampled with, and the advantages to wait
    for them where they need them:
    - RLOO/GRPO with one optimizer step per rollout (every pass of the update is on-policy); with kl.mode = reward
      the advantages need the log-probs, so one micro-batch holds every row;
    - PPO with one micro-batch holding every row: the first minibatch's pass gives the log-probs (with one adapter
      for policy and value, the values too) that GAE and the whitening over the batch read."""
    p = cfg.ppo
    if not p.old_logprobs_from_update:
        return False
    one_micro_batch = p.num_minibatches == 1 and p.gradient_accumulation_steps == 1
    if ALGORITHMS[cfg.algorithm].value:
        return one_micro_batch
    if p.epochs != 1 or p.num_minibatches != 1:
        return False
    return cfg.kl.mode == "loss" or one_micro_batch


def policy_pass(
    cfg: PPOConfig, accelerator, model, exp: Experience, rows, on_policy: bool, beta: float, with_values: bool = False
):
    """The policy's forward pass over `rows`: (log-probs [b, T], values [b, T] or None).

    With `old_logprobs_from_update`, the first minibatch's pass (on-policy: the weights the rollout was sampled
    with) is also the rollout's scoring pass: its numbers, detached, become the rollout's log-probs, entropy, KL
    (and PPO's values), so the ratio there is exactly 1, and the advantages that waited for them are computed (one
    micro-batch holds every row)."""
    fill = exp.old_logprobs_from_update and on_policy
    ids, attn = exp.rollout.sequences(rows)
    logprobs, entropy, values = model(
        ids,
        attn,
        role="policy_logprobs",
        prompt_width=exp.rollout.prompt_width,
        temperature=cfg.rollout.temperature,
        with_values=with_values,
        with_entropy=fill,
    )
    if fill:
        old, mask = exp.scored, exp.rollout.response_mask[rows]
        old.logprobs[rows], old.entropy[rows] = logprobs.detach(), entropy.detach()
        if values is not None:
            old.values[rows] = values.detach().float()
        exp.kl[rows] = L.kl_per_token(old.logprobs[rows], old.ref_logprobs[rows], cfg.kl.estimator) * mask
        if exp.advantages is None:
            exp.advantages, exp.returns = ALGORITHMS[cfg.algorithm].advantages(cfg, accelerator, exp, beta)
    return logprobs, values


def ppo_loss(cfg: PPOConfig, accelerator, model, exp: Experience, rows, minibatch, on_policy: bool, beta: float):
    """(loss, per-micro-batch statistics) of rows `rows`: the clipped policy surrogate plus `vf_coef` times the
    clipped value loss.

    With a value adapter of its own on one process, one pass is back-propagated here and the other's loss is
    returned, so only one pass's activations are alive at a time; the gradients are those of the summed loss (the
    two passes train disjoint parameters). The value pass goes first, except in the first minibatch of an update
    whose rollout log-probs come from it (`old_logprobs_from_update`): the returns need the policy pass's KL there.
    With one adapter for both, one pass gives log-probs and values."""
    p = cfg.ppo
    old, mask = exp.scored, exp.rollout.response_mask[rows]
    vf_loss = vf_clipfrac = torch.zeros((), device=mask.device)
    split = split_value_pass(accelerator, model)
    value_last = split and exp.old_logprobs_from_update and on_policy
    if split and not value_last:
        vf_loss, vf_clipfrac = own_value_loss(cfg, accelerator, model, exp, rows)
    logprobs, values = policy_pass(cfg, accelerator, model, exp, rows, on_policy, beta, with_values=not split)
    pg_loss, clipfrac, approxkl, ratio = L.policy_loss(
        logprobs, old.logprobs[rows], exp.advantages[rows], mask, p.cliprange
    )
    if values is not None:
        vf_loss, vf_clipfrac = L.value_loss(values, old.values[rows], exp.returns[rows], mask, p.cliprange_value)
    loss = pg_loss if split else pg_loss + p.vf_coef * vf_loss
    if value_last:
        accelerator.backward(pg_loss)
        del logprobs  # its graph is gone with the backward; the value pass starts from here
        vf_loss, vf_clipfrac = own_value_loss(cfg, accelerator, model, exp, rows, backward=False)
        loss = p.vf_coef * vf_loss
    stats = {
        "policy_loss": pg_loss,
        "value_loss": vf_loss,
        "approxkl": approxkl,
        "clipfrac": clipfrac,
        "ratio": ratio,
        "value_clipfrac": vf_clipfrac,
    }
    return loss, {k: float(v.detach()) for k, v in stats.items()}


def own_value_loss(cfg: PPOConfig, accelerator, model, exp: Experience, rows, backward: bool = True):
    """(value loss, clip fraction) of rows `rows` from the value adapter's own pass, back-propagated (times
    `vf_coef`) unless `backward` is false."""
    P = exp.rollout.prompt_width
    ids, attn = exp.rollout.sequences(rows)
    values = model(ids, attn, role="value")[:, P - 1 : -1]
    old, mask = exp.scored, exp.rollout.response_mask[rows]
    vf_loss, vf_clipfrac = L.value_loss(values, old.values[rows], exp.returns[rows], mask, cfg.ppo.cliprange_value)
    if backward:
        accelerator.backward(cfg.ppo.vf_coef * vf_loss)
    return vf_loss, vf_clipfrac


def split_value_pass(accelerator, model) -> bool:
    """Whether the value pass is back-propagated on its own: a value adapter of its own, one process.

    (Under DDP or DeepSpeed a backward that reaches only half of the trainable parameters breaks their
    gradient reduction, so there the summed loss keeps one backward.)"""
    from accelerate.utils import DistributedType

    shared = accelerator.unwrap_model(model).share_policy_value
    return not shared and accelerator.distributed_type == DistributedType.NO


def group_loss(cfg: PPOConfig, accelerator, model, exp: Experience, rows, minibatch, on_policy: bool, beta: float):
    """RLOO/GRPO (loss, statistics) of rows `rows` of minibatch `minibatch`: the clipped surrogate with one
    advantage per sequence, tokens weighed by `loss.aggregation`, plus beta * k3 KL per token with kl.mode = loss.
    With `old_logprobs_from_update` (one optimizer step per rollout: every pass is on-policy) this forward pass also
    gives the rollout's log-probs (`policy_pass`)."""
    rollout, old, mask = exp.rollout, exp.scored, exp.rollout.response_mask[rows]
    logprobs, _ = policy_pass(cfg, accelerator, model, exp, rows, on_policy, beta)
    advantages = exp.advantages
    total_tokens, scale = None, 1.0
    if cfg.loss.aggregation == "token_mean":
        # the optimizer step's token mean: its real tokens over micro-batches and processes; the backward pass
        # averages over both, so the sum of micro-batch losses is scaled back up
        total_tokens = accelerator.reduce(rollout.response_mask[minibatch].sum().float(), reduction="sum")
        scale = cfg.ppo.gradient_accumulation_steps * accelerator.num_processes
    in_loss = cfg.kl.mode == "loss"
    out = L.group_policy_loss(
        logprobs,
        old.logprobs[rows],
        advantages[rows],
        mask,
        cfg.ppo.cliprange,
        cfg.loss.aggregation,
        cfg.rollout.response_length,
        old.ref_logprobs[rows] if in_loss else None,
        beta if in_loss else 0.0,
        total_tokens,
    )
    stats = {"policy_loss": out.policy * scale, "approxkl": out.approxkl, "clipfrac": out.clipfrac, "ratio": out.ratio}
    if in_loss:
        stats["kl_loss"] = out.kl * scale
    return out.loss * scale, {k: float(v.detach()) for k, v in stats.items()}


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """What differs between PPO, RLOO and GRPO, chosen once by `algorithm` (ALGORITHMS); the loop is the same."""

    value: bool
    """A value adapter and head: values scored with the rollout and trained beside the policy."""
    advantages: Callable
    """(cfg, accelerator, exp, beta) -> (advantages, returns or None)."""
    loss: Callable
    """(cfg, accelerator, model, exp, rows, minibatch, on_policy, beta) -> (loss, {statistic: float})."""
    group_metrics: bool
    """TRL GRPO's `reward_std` and `frac_reward_zero_std` over each prompt's k samples."""


ALGORITHMS = {
    "ppo": Algorithm(value=True, advantages=gae_advantages, loss=ppo_loss, group_metrics=False),
    "rloo": Algorithm(value=False, advantages=group_advantages, loss=group_loss, group_metrics=True),
    "grpo": Algorithm(value=False, advantages=group_advantages, loss=group_loss, group_metrics=True),
}


class UpdateStats(NamedTuple):
    """One update's statistics (names as the loss function returns them), averaged over every micro-batch; `first`
    over the first minibatch only: exactly on-policy, so ratio 1 and approxkl/clipfrac 0 there check the whole
    scoring path."""

    means: dict[str, float]
    first: dict[str, float]
    grad_norm: float | None
    """Mean over the update's optimizer steps, before clipping."""


def policy_update(
    cfg: PPOConfig, accelerator, model, optimizer, scheduler, orders: list[torch.Tensor], loss_fn
) -> UpdateStats:
    """`ppo.epochs` passes over the rollout, epoch e in `orders[e]`; each minibatch is one optimizer step of
    `ppo.gradient_accumulation_steps` micro-batches, each micro-batch's loss from `loss_fn(rows, minibatch, on_policy)`."""
    p, micro = cfg.ppo, micro_batch_size(cfg)
    mb = cfg.rollout.per_device_batch_size // p.num_minibatches
    sums, first, norms = {}, {}, []
    schedule = [(epoch, m) for epoch in range(len(orders)) for m in range(p.num_minibatches)]
    for steps, (epoch, m) in enumerate(schedule, 1):
        minibatch, approxkl = orders[epoch][m * mb : (m + 1) * mb], 0.0
        for a in range(p.gradient_accumulation_steps):
            rows = minibatch[a * micro : (a + 1) * micro]
            with accelerator.accumulate(model):
                loss, got = loss_fn(rows, minibatch, epoch == 0 and m == 0)
                norm = loop.optimizer_step(accelerator, model, optimizer, scheduler, loss, cfg.train.max_grad_norm)
            norms += [norm] if norm is not None else []
            approxkl += got["approxkl"] / p.gradient_accumulation_steps
            for k, v in got.items():
                sums[k] = sums.get(k, 0.0) + v / p.gradient_accumulation_steps
                if epoch == 0 and m == 0:
                    first[k] = first.get(k, 0.0) + v / p.gradient_accumulation_steps
        if steps < len(schedule) and over_target_kl(cfg, accelerator, approxkl):
            for _ in range(len(schedule) - steps):  # the schedule follows updates, not the steps an update took
                scheduler.step()
            break
    return update_stats(cfg, sums, first, norms, steps)


def over_target_kl(cfg: PPOConfig, accelerator, approxkl: float) -> bool:
    """Whether a minibatch's approxkl (measured before its step), averaged over processes so every process
    decides alike, is over `ppo.target_kl`."""
    if cfg.ppo.target_kl is None:
        return False
    return loop.reduce_metrics(accelerator, {"approxkl": approxkl})["approxkl"] > cfg.ppo.target_kl


def update_stats(cfg: PPOConfig, sums: dict, first: dict, norms: list, steps: int) -> UpdateStats:
    """`UpdateStats` of an update that took `steps` optimizer steps: the statistics averaged over them, and with
    `ppo.target_kl` the steps it skipped."""
    means = {k: v / steps for k, v in sums.items()}
    if cfg.ppo.target_kl is not None:
        means["steps_skipped"] = float(cfg.ppo.epochs * cfg.ppo.num_minibatches - steps)
    return UpdateStats(means, first, sum(norms) / len(norms) if norms else None)


# What the loss functions' statistics are called in metrics.jsonl and W&B (TRL's names).
STAT_NAMES = {
    "policy_loss": "loss/policy",
    "value_loss": "loss/value",
    "kl_loss": "loss/kl",
    "approxkl": "policy/approxkl",
    "clipfrac": "policy/clipfrac",
    "ratio": "val/ratio",
    "value_clipfrac": "val/clipfrac",
    "steps_skipped": "policy/steps_skipped",
}
FIRST_NAMES = {
    "ratio": "val/ratio_first_minibatch",
    "approxkl": "policy/approxkl_first_minibatch",
    "clipfrac": "policy/clipfrac_first_minibatch",
}


def collect_metrics(cfg: PPOConfig, accelerator, exp: Experience, stats: UpdateStats, beta: float) -> dict:
    """The update's metrics (TRL's names), averaged over processes; val/num_eos summed. RLOO/GRPO add TRL GRPO's
    `reward_std` (mean std of a prompt's k scores) and `frac_reward_zero_std` (prompts whose k scores tie)."""
    mask = exp.rollout.response_mask
    kl_sum = exp.kl.sum(-1)
    local = {
        **{STAT_NAMES[k]: v for k, v in stats.means.items()},
        **{FIRST_NAMES[k]: stats.first[k] for k in FIRST_NAMES},
        "objective/kl": kl_sum.mean().item(),
        "objective/entropy": (exp.scored.entropy * mask).sum(-1).mean().item(),
        "objective/rlhf_reward": (exp.scores - beta * kl_sum).mean().item(),
        "objective/scores": exp.scores.mean().item(),
        "objective/raw_scores": exp.raw_scores.float().mean().item(),
        "val/response_length": mask.sum(-1).float().mean().item(),
        **({"train/grad_norm": stats.grad_norm} if stats.grad_norm is not None else {}),
        **({"objective/monitor": exp.monitor} if exp.monitor is not None else {}),
    }
    if ALGORITHMS[cfg.algorithm].group_metrics:
        group_std = exp.scores.view(-1, cfg.rollout.samples_per_prompt).std(-1)
        local.update(
            {"reward_std": group_std.mean().item(), "frac_reward_zero_std": (group_std == 0).float().mean().item()}
        )
    local = {**local, **rollout_health(cfg, exp)}
    metrics = loop.reduce_metrics(accelerator, local, reduction="mean")
    num_eos = accelerator.reduce(exp.rollout.contains_eos.sum().to(accelerator.device), reduction="sum")
    return {
        **metrics,
        "val/num_eos": int(num_eos.item()),
        "objective/kl_coef": beta,
        **loop.memory_metrics(accelerator),
    }


def progress_metrics(scheduler, step: int, batch: int, times: tuple[float, float, float]) -> dict:
    """The learning rate, episodes so far, the share of the update spent sampling and its throughput; `times`: when
    the update started, its sampling ended and its optimisation ended."""
    started, generated, ended = times
    seconds = max(ended - started, 1e-9)
    return {
        "train/learning_rate": scheduler.get_last_lr()[0],
        "train/episodes": step * batch,
        "time/generation_share": (generated - started) / seconds,
        "time/episodes_per_second": batch / seconds,
    }


def rollout_health(cfg: PPOConfig, exp: Experience) -> dict:
    """The rollout's completion health (`completions/*`: EOS rate, share at the length limit, mean length, broken
    characters, repetition, distinct bigrams) from its decoded texts."""
    rollout = exp.rollout
    lengths = rollout.response_mask.sum(-1).tolist()
    measures = health.completion_health(exp.texts, rollout.contains_eos.tolist(), lengths, cfg.rollout.response_length)
    return health.metric_names(measures)


def log_samples(run: loop.Run, tokenizer, exp: Experience, n: int, step: int) -> None:
    """A table of the first `n` episodes: prompt, completion, score (W&B Table and samples.jsonl)."""
    texts = decode(tokenizer, exp.rollout.responses[:n], exp.rollout.response_mask[:n])
    rows = [[prompt_text(tokenizer, exp.prompts[i]), texts[i], exp.scores[i].item()] for i in range(n)]
    run.tracker.table("samples", ["prompt", "completion", "score"], rows, step=step)


# ----------------------------------------------------------------------------------------------
# Saving


def ppo_summary(cfg: PPOConfig, extra: dict, final: dict) -> str:
    """The figures of the closing line: the method, how much it trained, and the last update's score and KL."""
    figures = f"{cfg.algorithm}, {extra['updates']} updates ({extra['episodes']} episodes)"
    if "objective/scores" in final:
        figures += f"; last update: score {final['objective/scores']:.3f}, KL {final['objective/kl']:.3f} nats"
    return figures


def save(cfg: PPOConfig, run: loop.Run, model, tokenizer, base_path: str, extra: dict) -> dict:
    """The policy adapter (gathered from ZeRO-3 shards), tokenizer, optional merged model and the manifest;
    returns the last logged metrics."""
    accelerator = run.accelerator
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3: every process calls it
    final = loop.last_metrics(cfg.output_dir) if accelerator.is_main_process else {}
    if accelerator.is_main_process:
        with files.staged(cfg.output_dir) as tmp:  # a full disk leaves no half-written adapter
            accelerator.unwrap_model(model).save_policy(tmp, state_dict, run_folder=cfg.output_dir, run=cfg.run)
            tokenizer.save_pretrained(tmp)
        outputs = {"adapter": ".", "model": saving.save_merged(cfg, base_path, tokenizer) if cfg.save_merged else "."}
        reward = cfg.reward.function or os.path.abspath(cfg.reward.path)
        inputs = manifest.stage_inputs(base_path, cfg.data.path, trained=True, reward=reward)
        saving.write_manifest(run, inputs, outputs, final, extra={"algorithm": cfg.algorithm, **extra})
    del state_dict
    return final
