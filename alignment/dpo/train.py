"""Offline preference optimisation from rankings: DPO (sigmoid), IPO, and listwise Plackett-Luce DPO.

    rlhf dpo configs/dpo.yaml model.name_or_path=runs/tiny/sft data.path=runs/tiny/export/kwise
    accelerate launch --config_file launch/ddp.yaml -m alignment dpo configs/dpo.yaml
    accelerate launch --config_file launch/zero3.yaml -m alignment dpo configs/dpo.yaml

The policy is a LoRA adapter on the base (the SFT model); the reference is the same base with the
adapter switched off, so one model is in memory. Each micro-batch holds `per_device_batch_size` ranked
prompts and all their completions go through the policy in ONE forward pass (and one reference pass
with the adapter off, unless `loss.precompute_ref` computed every reference log-prob once before
training); the [prompts, K] log-probs then give the Plackett-Luce loss over each whole ranking, or
DPO / IPO over all its strict pairs. Pairwise rows are K = 2 rankings, with an optional soft label.
Writes to output_dir: the policy adapter (`PeftModel.from_pretrained(base, output_dir)` loads it),
the tokenizer, `eval.json`, `config.yaml`, `metrics.jsonl`, `manifest.json` and resumable `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
from accelerate.utils import gather_object

from alignment.common import manifest
from alignment.common.errors import UserError
from alignment.dpo import data as ddata
from alignment.dpo import losses, samples
from alignment.dpo.config import DPOConfig, DPOLossConfig
from alignment.runtime import adapters, loop, models, optim, saving
from alignment.runtime import logging as rlog
from alignment.runtime.logprobs import TokenScorer
from alignment.runtime.sampler import IndexStream, eval_batches, total_steps
from reward import data as rdata

# ----------------------------------------------------------------------------------------------
# Log-probs of every completion in a batch: policy (adapter on) and reference (adapter off)


class Scored(NamedTuple):
    """One forward pass over a batch's completions."""

    logps: torch.Tensor
    """[B, K_max] sequence log-probs (summed, or the mean per token), 0 at padding slots."""
    off_support: torch.Tensor | None
    """[N, T - 1] log of the probability each completion position gives tokens that no training completion contains
    (0 elsewhere; None unless asked for): where likelihood displacement sends probability nobody ranked."""


def completion_logps(model, batch: dict, device, average: bool, unseen: torch.Tensor | None = None) -> Scored:
    """Sequence log-probs [B, K_max] of every completion from one forward pass (summed, or with `average` the mean per
    completion token), and with `unseen` (a bool mask over the vocabulary) each completion position's log-mass on
    those tokens, both from the LM head on completion positions only, in chunks (`runtime.logprobs.score_tokens`).

    model: the policy as a `TokenScorer` (prepared: the pass runs through the DDP/DeepSpeed wrapper) or unwrapped."""
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    scored = batch["completion_mask"][:, 1:].to(device).bool()  # [:, t] predicts token t + 1
    stats = model(ids, mask, scored, mass_on=unseen)
    flat = losses.sequence_logps(stats.logprobs, scored, average)
    return Scored(rdata.to_grid(flat, batch["slot"].to(device), *batch["ranks"].shape), stats.log_mass)


@torch.no_grad()
def reference_logps(peft_model, batch: dict, device, average: bool, unseen: torch.Tensor | None = None) -> Scored:
    """The same under the reference (the base with the policy adapter off), or the batch's precomputed log-probs
    (when no off-support mass is asked for: that needs the reference's whole distribution at every position).

    peft_model: the unwrapped PeftModel (`accelerator.unwrap_model`, once: it is slow); no gradient flows, so
    DDP's wrapper is not needed, and under ZeRO-3 its hooks still gather the partitioned weights."""
    if "ref_logps" in batch and unseen is None:
        return Scored(batch["ref_logps"].to(device), None)
    with peft_model.disable_adapter():
        scored = completion_logps(peft_model, batch, device, average, unseen)
    if "ref_logps" in batch:
        return scored._replace(logps=batch["ref_logps"].to(device))
    return scored


@torch.no_grad()
def precompute_reference(accelerator, model, examples: list[dict], batch_size: int, pad_id: int, average: bool):
    """Store each example's reference log-probs (`ref_logps`, one per completion), computed across processes."""
    mine = []
    for indices, weights in eval_batches(
        len(examples), batch_size, accelerator.process_index, accelerator.num_processes
    ):
        batch = ddata.collate([examples[i] for i in indices], pad_id, weights)
        grid = reference_logps(accelerator.unwrap_model(model), batch, accelerator.device, average).logps.cpu()
        mine += [(i, grid[b, : len(examples[i]["input_ids"])].tolist()) for b, i in enumerate(indices) if weights[b]]
    found = dict(gather_object(mine) if accelerator.num_processes > 1 else mine)
    for i, e in enumerate(examples):
        e["ref_logps"] = found[i]


# ----------------------------------------------------------------------------------------------
# The loss of a batch


def ranking_loss(c: DPOLossConfig, logps: torch.Tensor, ref: torch.Tensor, ranks, valid) -> losses.RankingLoss:
    """Per-prompt loss of rankings [B, K]: Plackett-Luce over the whole ranking, or DPO / IPO over all strict pairs."""
    if c.type == "plackett_luce":
        return losses.plackett_luce_loss(logps, ref, ranks, valid, c.beta, c.ties, c.tie_param)
    return losses.ranking_pair_loss(logps, ref, ranks, valid, c.beta, c.type)


def soft_ranking_loss(c: DPOLossConfig, logps: torch.Tensor, ref: torch.Tensor, scores, valid) -> losses.RankingLoss:
    """Per-prompt loss of rankings labelled by `scores` (a soft label): the expected Plackett-Luce loss, or DPO / IPO
    over every pair with its Bradley-Terry probability."""
    if c.type == "plackett_luce":
        return losses.plackett_luce_soft_loss(logps, ref, scores, valid, c.beta)
    return losses.ranking_pair_soft_loss(logps, ref, scores, valid, c.beta, c.type)


def batch_loss(c: DPOLossConfig, logps: torch.Tensor, ref: torch.Tensor, batch: dict) -> losses.RankingLoss:
    """The batch's per-prompt losses; a soft-labelled pair (probability p < 1 that the first completion is better)
    costs p * loss(ranks) + (1 - p) * loss(reversed ranks): exactly `dpo_loss` with chosen_probability p for
    sigmoid and IPO, and the same for Plackett-Luce, which is sigmoid DPO at K = 2. A ranking with `scores` costs
    `soft_ranking_loss` instead. With `sft_weight`, plus that
    times the NLL per token of the best-ranked completion (RPO)."""
    device = logps.device
    ranks, valid, p = batch["ranks"].to(device), batch["valid"].to(device), batch["probability"].to(device)
    if c.label_smoothing > 0:  # a hard label is one person's word: P(it is right) = 1 - eps (cDPO)
        p = torch.where(batch["hard"].to(device), torch.full_like(p, 1 - c.label_smoothing), p)
    scored = batch["scored"].to(device) if "scores" in batch else None
    soft = None if scored is None else soft_ranking_loss(c, logps, ref, batch["scores"].to(device), valid)
    if scored is not None and bool(scored.all()):
        result = soft  # every ranking scored: no hard label to compute
    else:
        result = ranking_loss(c, logps, ref, ranks, valid)
        if bool((p < 1).any()):
            reversed_ranks = torch.where(valid, ranks.max(-1, keepdim=True).values + 1 - ranks, ranks)
            flipped = ranking_loss(c, logps, ref, reversed_ranks, valid)
            p = p.to(result.losses.dtype)
            result = result._replace(losses=p * result.losses + (1 - p) * flipped.losses)
        if soft is not None:
            result = result._replace(
                losses=torch.where(scored, soft.losses.to(result.losses.dtype), result.losses),
                informative=torch.where(scored, soft.informative, result.informative),
            )
    if c.sft_weight > 0:
        tokens = torch.ones_like(logps) if c.length_normalize else completion_tokens(batch, device)
        nll = losses.best_completion_nll(logps, tokens, ranks, valid)
        result = result._replace(losses=result.losses + c.sft_weight * nll.to(result.losses.dtype))
    return result


def micro_batch_loss(c: DPOLossConfig, model, peft_model, batch: dict, device, unseen: torch.Tensor | None):
    """(per-prompt losses, policy log-probs [B, K], reference log-probs [B, K]) of one micro-batch: the reference pass
    with the adapter off (or the precomputed log-probs), the policy pass, the ranking loss, and with `unseen` the
    off-support term."""
    ref = reference_logps(peft_model, batch, device, c.length_normalize, unseen)
    scored = completion_logps(model, batch, device, c.length_normalize, unseen)
    result = batch_loss(c, scored.logps, ref.logps, batch)
    if unseen is not None:
        mask = batch["completion_mask"][:, 1:].to(device)
        rise = losses.off_support_rise(scored.off_support, ref.off_support, mask)
        per_prompt = losses.mean_over_completions(rise, batch["slot"].to(device), batch["valid"].to(device))
        result = result._replace(losses=result.losses + c.off_support_weight * per_prompt.to(result.losses.dtype))
    return result, scored.logps, ref.logps


def completion_tokens(batch: dict, device) -> torch.Tensor:
    """Completion tokens of every completion of the batch, [B, K_max] (0 at padding slots)."""
    flat = batch["completion_mask"][:, 1:].sum(-1).to(device=device, dtype=torch.float32)
    return rdata.to_grid(flat, batch["slot"].to(device), *batch["ranks"].shape)


def batch_sums(c: DPOLossConfig, result: losses.RankingLoss, logps, ref, batch: dict) -> dict[str, float]:
    """Sums for the logged metrics of one micro-batch: loss over informative prompts, those prompts, TRL's
    DPO metrics over strict comparisons, and the non-padding tokens."""
    device = logps.device
    weight = result.informative.to(result.losses.dtype)
    sums = losses.ranking_metric_sums(logps, ref, batch["ranks"].to(device), batch["valid"].to(device), c.beta)
    return {
        "loss": (result.losses.detach() * weight).sum().item(),
        "prompts": weight.sum().item(),
        **{name: value.sum().item() for name, value in sums.items()},
        "rankings": batch["valid"].any(-1).sum().item(),
        "tokens": int(batch["attention_mask"].sum()),
    }


def metrics_from_sums(s: dict[str, float], prefix: str) -> dict[str, float]:
    """`<prefix>/loss` (mean per informative prompt) and TRL's `<prefix>/rewards/...`, `<prefix>/logps/...`
    (means per strict comparison), from sums over prompts and processes."""
    comparisons = s["comparisons"]
    out = {f"{prefix}/loss": s["loss"] / s["prompts"] if s["prompts"] else float("nan")}
    out.update({f"{prefix}/{name}": s[name] / comparisons if comparisons else float("nan") for name in losses.METRICS})
    return out


@torch.no_grad()
def evaluate(cfg: DPOConfig, accelerator, model, examples: list[dict], batch_size: int, pad_id: int) -> dict:
    """Held-out loss and TRL's DPO metrics (`eval/loss`, `eval/rewards/accuracies`, ...), every example once
    across processes; {} without held-out data."""
    if not examples:
        return {}
    model.eval()
    totals: dict[str, float] = {}
    average, peft_model = cfg.loss.length_normalize, accelerator.unwrap_model(model)
    for indices, weights in eval_batches(
        len(examples), batch_size, accelerator.process_index, accelerator.num_processes
    ):
        batch = ddata.collate([examples[i] for i in indices], pad_id, weights)
        ref = reference_logps(peft_model, batch, accelerator.device, average).logps
        logps = completion_logps(model, batch, accelerator.device, average).logps
        sums = batch_sums(cfg.loss, batch_loss(cfg.loss, logps, ref, batch), logps, ref, batch)
        totals = {k: totals.get(k, 0.0) + v for k, v in sums.items()}
    model.train()
    totals = loop.reduce_metrics(accelerator, totals, reduction="sum")
    return {**metrics_from_sums(totals, "eval"), "eval/prompts": totals["prompts"]}


# ----------------------------------------------------------------------------------------------
# The stage


def train(cfg: DPOConfig) -> dict:
    # 1. Data first, so a bad row stops the stage before anything is written: rankings (pairwise rows are
    #    K = 2) -> prompt + completion ids with completion masks; held out by prompt.
    base_path = models.base_model_path(cfg.model)
    tokenizer = models.load_base_tokenizer(cfg.model, base_path)
    train_set, eval_set, informative = load_examples(cfg, tokenizer)

    # 2. Runtime: accelerator, logging, seed, resume point, resolved config beside the outputs.
    run = loop.start("dpo", cfg, cfg.train.gradient_accumulation_steps)
    data = describe_data(run.log, train_set, eval_set, informative, run.accelerator.num_processes)
    cfg = with_batch_for_pairs(cfg, run.log, train_set, informative, run.accelerator.num_processes)
    data["per_device_batch_size"] = cfg.train.per_device_batch_size

    # 3. Model: the base with the policy adapter (the reference is the base with it off), whose forward is the
    #    chunked log-prob pass (`TokenScorer`), wrapped for DDP/DeepSpeed with the optimizer and schedule.
    policy = build_policy(cfg, base_path, run.log)
    unseen = (
        unseen_tokens(train_set, policy.get_output_embeddings().weight.shape[0])
        if cfg.loss.off_support_weight
        else None
    )
    steps = optimizer_steps(cfg, len(train_set), run.accelerator.num_processes)
    train_cfg = dataclasses.replace(cfg.train, learning_rate=learning_rate(cfg))
    model, optimizer, scheduler = optim.setup(
        run.accelerator, TokenScorer(policy), train_cfg, steps, cfg.train.per_device_batch_size
    )
    sets = Sets(train_set, eval_set, informative, unseen, tokenizer.pad_token_id)

    # 4. Resume: weights, optimizer, schedule and RNG from the checkpoint; data position = step. Precomputed
    #    reference log-probs are recomputed (deterministic: the same batches of the same frozen base).
    state = loop.resume(run)
    if cfg.loss.precompute_ref:
        precompute_reference(
            run.accelerator, model, train_set, eval_batch_size(cfg), sets.pad_id, cfg.loss.length_normalize
        )

    # 4b. Guardrails: the reference's own samples once, the policy's at every evaluation (DPO never samples).
    watch = samples.Watch(cfg.health, run, model, tokenizer, eval_set or train_set, cfg.seed)
    reference = watch.start()  # logged with the first training row (once: not again after a resume)
    batch_size = eval_batch_size(cfg)
    held_out = loop.HeldOut(
        run, state, lambda: evaluate(cfg, run.accelerator, model, eval_set, batch_size, sets.pad_id)
    )

    # 5. Train: per micro-batch, one policy pass (+ one reference pass) over all completions, the ranking loss.
    optimize(cfg, run, model, optimizer, scheduler, sets, (watch, held_out), reference if run.step == 0 else {}, steps)

    # 6. Evaluate on the held-out prompts; the health of the policy's own samples.
    looked = watch.look(steps)
    report = {**held_out(steps, final=True, extra=looked), **looked}

    # 7. Save: the policy adapter (gathered from ZeRO-3 shards), tokenizer, eval.json, optional merged model, manifest.
    save(cfg, run, model, tokenizer, base_path, report, {"steps": steps, "data": data})
    loop.finish(run, dpo_summary(cfg, steps, report))
    return report


class Sets(NamedTuple):
    """What the steps read: the encoded examples and their flags, the off-support token mask, the pad id."""

    train: list[dict]
    eval: list[dict]
    informative: list[bool]
    unseen: torch.Tensor | None
    pad_id: int


def optimize(cfg: DPOConfig, run: loop.Run, model, optimizer, scheduler, sets: Sets, guards, first: dict, steps: int):
    """The optimizer steps from `run.step` on: each a step's micro-batches (`optimizer_step`), then logging (with
    `first`, the reference's health, on the first row), held-out evaluation and checkpoints when due. `guards`:
    the samples' watch and the held-out loss's."""
    t, accelerator = cfg.train, run.accelerator
    watch, held_out = guards
    stream = IndexStream(len(sets.train), cfg.seed)
    peft_model = accelerator.unwrap_model(model)
    model.train()
    window = loop.Window()
    for step in loop.progress(run, steps):
        grad_norm = optimizer_step(
            cfg, accelerator, model, peft_model, optimizer, scheduler, sets, stream, step, window
        )
        done = step + 1
        if loop.due(done, t.log_steps, steps, final=True):
            epoch = stream.epoch(
                done * t.gradient_accumulation_steps, t.per_device_batch_size, accelerator.num_processes
            )
            metrics = window_metrics(window, accelerator, scheduler, epoch, grad_norm)
            run.tracker.log({**first, **metrics}, step=done)
            first = {}
            run.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", acc=f"{metrics['rewards/accuracies']:.2f}")
            watch.check(metrics, done)
            window.reset()
        if loop.due(done, t.eval_steps, steps):
            held_out(done, extra=watch.look(done))
        loop.save_checkpoint(run, done, steps, held_out=held_out.state_dict())


def optimizer_step(
    cfg: DPOConfig,
    accelerator,
    model,
    peft_model,
    optimizer,
    scheduler,
    sets: Sets,
    stream: IndexStream,
    step: int,
    window: loop.Window,
) -> float | None:
    """One optimizer step over its micro-batches: reference and policy log-probs [B, K], per-prompt losses weighted
    by annotator, the step's mean over informative prompts on every process; returns the gradient norm."""
    t, rank, world = cfg.train, accelerator.process_index, accelerator.num_processes
    micro_steps = range(step * t.gradient_accumulation_steps, (step + 1) * t.gradient_accumulation_steps)
    # every process knows the whole step's batches: the loss is a mean over its informative prompts
    prompts = step_prompts(stream, sets.informative, micro_steps, t.per_device_batch_size, world)
    scale = world * t.gradient_accumulation_steps / max(prompts, 1)
    grad_norm = None
    for m in micro_steps:
        batch = ddata.collate(
            [sets.train[i] for i in stream.batch(m, t.per_device_batch_size, rank, world)], sets.pad_id
        )
        with accelerator.accumulate(model):
            result, logps, ref = micro_batch_loss(cfg.loss, model, peft_model, batch, accelerator.device, sets.unseen)
            weights = batch["loss_weights"].to(result.losses.device, result.losses.dtype)  # annotators' (1: equal)
            loss = (result.losses * result.informative * weights).sum() * scale
            grad_norm = loop.optimizer_step(accelerator, model, optimizer, scheduler, loss, t.max_grad_norm)
        window.add(**batch_sums(cfg.loss, result, logps.detach(), ref, batch))
    window.steps += 1
    return grad_norm


def optimizer_steps(cfg: DPOConfig, examples: int, world: int) -> int:
    t = cfg.train
    return total_steps(examples, t.epochs, t.max_steps, t.per_device_batch_size, world, t.gradient_accumulation_steps)


def rankings_per_device(t, pairs_per_ranking: float, world: int) -> int:
    """per_device_batch_size, raised until one optimizer step (every process and micro-batch) holds at least
    `t.min_pairs_per_step` comparisons at `pairs_per_ranking` per ranking on average (`ddata.comparisons`)."""
    if not t.min_pairs_per_step or pairs_per_ranking <= 0:
        return t.per_device_batch_size
    batches_per_step = world * t.gradient_accumulation_steps  # one per process and micro-batch
    return max(t.per_device_batch_size, math.ceil(t.min_pairs_per_step / (pairs_per_ranking * batches_per_step)))


def with_batch_for_pairs(cfg: DPOConfig, log, train_set: list[dict], informative: list[bool], world: int):
    """`cfg` with the per-device batch `rankings_per_device` gives for these rankings (logged when it differs)."""
    pairs = [ddata.comparisons(e) for e, keep in zip(train_set, informative) if keep]
    mean = sum(pairs) / max(len(pairs), 1)
    batch = rankings_per_device(cfg.train, mean, world)
    if batch == cfg.train.per_device_batch_size:
        return cfg
    log.info(
        f"dpo: {mean:.2g} comparisons per ranking: {batch} rankings per device and step instead of "
        f"{cfg.train.per_device_batch_size}, so a step holds at least {cfg.train.min_pairs_per_step} "
        "(train.min_pairs_per_step)"
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, per_device_batch_size=batch))


def eval_batch_size(cfg: DPOConfig) -> int:
    return cfg.eval.batch_size or cfg.train.per_device_batch_size


def dpo_summary(cfg: DPOConfig, steps: int, report: dict) -> str:
    """The figures of the closing line: loss and steps, held-out loss and accuracy, the samples' health."""
    summary = f"{cfg.loss.type}, {steps} steps"
    if "eval/loss" in report:
        summary += f", held-out loss {report['eval/loss']:.3f}, accuracy {report['eval/rewards/accuracies']:.3f}"
    if "completions/eos_rate" in report:
        summary += f"; samples end {report['completions/eos_rate']:.0%}, KL {report['objective/kl']:.2f}"
    return summary


def load_examples(cfg: DPOConfig, tokenizer) -> tuple[list[dict], list[dict], list[bool]]:
    """(train examples, held-out examples, whether each train example carries a preference)."""
    train_rankings, eval_rankings = ddata.load_data(cfg.data, cfg.loss.ties, cfg.seed, rlog.get())
    if cfg.loss.type == "plackett_luce":
        for r in train_rankings + eval_rankings:
            ddata.check_plackett_luce(r, cfg.loss.ties)
    train_set = [ddata.encode(tokenizer, r, cfg.data) for r in train_rankings]
    eval_set = [ddata.encode(tokenizer, r, cfg.data) for r in eval_rankings]
    informative = [ddata.is_informative(e["ranks"], cfg.loss.ties) for e in train_set]
    if not any(informative):
        raise UserError(f"{cfg.data.path}: no training row carries a preference (every ranking is one tie)")
    return train_set, eval_set, informative


def describe_data(log, train_set: list[dict], eval_set: list[dict], informative: list[bool], world: int) -> dict:
    """Log what the run trains on; returns it for the manifest."""
    ks = sorted({len(e["input_ids"]) for e in train_set})
    log.info(
        f"dpo: {len(train_set)} train rankings (K {ks[0]}-{ks[-1]}), {len(eval_set)} held out, {world} process(es)"
    )
    return {"train_rankings": len(train_set), "eval_rankings": len(eval_set), "k": ks, "informative": sum(informative)}


def learning_rate(cfg: DPOConfig) -> float:
    """`train.learning_rate`, times lr_from_beta / loss.beta when loss.beta is above lr_from_beta."""
    return optim.lr_for_beta(cfg.train.learning_rate, cfg.loss.beta, cfg.train.lr_from_beta)


def unseen_tokens(examples: list[dict], vocab_size: int) -> torch.Tensor | None:
    """Bool mask [V] of the tokens no training completion contains (the off-support term's set; EOS always counts as
    seen); None when every token is seen (the term is then exactly 0)."""
    unseen = torch.ones(vocab_size, dtype=torch.bool)
    for e in examples:
        for ids in e["input_ids"]:
            unseen[torch.tensor(ids[e["prompt_length"] :], dtype=torch.long)] = False
    return unseen if bool(unseen.any()) else None


def build_policy(cfg: DPOConfig, base_path: str, log=None):
    """The base (dropout off: policy and reference must see the same network) with the trainable policy adapter."""
    model = models.load_causal_lm(dataclasses.replace(cfg.model, name_or_path=base_path))
    models.disable_dropout(model)
    model = adapters.apply(model, cfg.adapter)
    if log is not None:
        trainable, total = adapters.count_parameters(model)
        what = f"{cfg.adapter.method}, {cfg.loss.type}, beta {cfg.loss.beta}, learning rate {learning_rate(cfg):g}"
        log.info(f"dpo: training {trainable:,} of {total:,} parameters ({what})")
    return model


def step_prompts(stream: IndexStream, informative: list[bool], micro_steps, batch_size: int, world: int) -> int:
    """Informative prompts in one optimizer step over every process and micro-batch: what the loss averages over."""
    return sum(informative[i] for m in micro_steps for r in range(world) for i in stream.batch(m, batch_size, r, world))


def window_metrics(window: loop.Window, accelerator, scheduler, epoch: float, grad_norm) -> dict:
    """Training metrics over the steps since the last log, summed over processes: train/loss per informative
    prompt, TRL's rewards/* and logps/* per strict comparison, throughput."""
    s = window.totals(accelerator)
    named = metrics_from_sums(s, "train")
    return {
        **loop.train_metrics(named.pop("train/loss"), scheduler, epoch, grad_norm),
        **{name.removeprefix("train/"): value for name, value in named.items()},
        "train/tokens_per_second": s["tokens"] / window.seconds,
        "train/rankings_per_second": s["rankings"] / window.seconds,
    }


def save(cfg: DPOConfig, run: loop.Run, model, tokenizer, base_path: str, report: dict, extra: dict) -> None:
    """The policy adapter + tokenizer, eval.json, the merged model if asked, and the manifest."""
    accelerator = run.accelerator
    adapters.save(accelerator, model, cfg.output_dir, tokenizer, run=cfg.run)
    if not accelerator.is_main_process:
        return
    outputs = {"adapter": ".", "model": saving.save_merged(cfg, base_path, tokenizer) if cfg.save_merged else "."}
    inputs = manifest.stage_inputs(base_path, cfg.data.path, cfg.data.eval_path, trained=True)
    metrics = {**loop.last_metrics(cfg.output_dir, ("train/", "rewards/", "logps/")), **report}
    saving.write_manifest(run, inputs, outputs, metrics, report, {**extra, "loss": dataclasses.asdict(cfg.loss)})
