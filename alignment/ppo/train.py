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

import torch
from tqdm.auto import tqdm

from alignment.cli import parse_stage_args
from alignment.config import UserError, to_dict
from alignment.ppo import losses as L
from alignment.ppo import rewards as R
from alignment.ppo.config import PPOConfig
from alignment.ppo.model import build_ppo_model, disable_dropout, lora_config
from alignment.ppo.rollout import encode_prompts, left_pad, response_logprobs, sample, score
from alignment.runtime import adapters, checkpoint, manifest, models, optim
from alignment.runtime.accelerator import finish, local_loading, start_stage
from alignment.runtime.data import load_prompts
from alignment.runtime.formatting import prompt_text
from alignment.runtime.functions import load_function
from alignment.runtime.sampler import IndexStream
from alignment.runtime.tracking import Tracker, new_run_id, read_metrics
from reward.model import load_reward_model, read_stats, score_texts

# Averaged over every minibatch of an update (the `_first` ones over the first minibatch only: exactly
# on-policy, so ratio 1 and approxkl/clipfrac 0 there is a check on the whole scoring path).
UPDATE_STATS = ["loss/policy", "loss/value", "policy/approxkl", "policy/clipfrac", "val/ratio", "val/clipfrac"]
FIRST_STATS = ["val/ratio_first_minibatch", "policy/approxkl_first_minibatch", "policy/clipfrac_first_minibatch"]


def main(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf ppo", PPOConfig, argv, __doc__)
    if cfg is not None:
        train(cfg)
    return 0


def base_model_path(cfg: PPOConfig) -> str:
    """The frozen base: an SFT folder's merged model, or the model given (absolute, so adapters record it)."""
    path = models.stage_model_path(models.resolve_path(cfg.model.name_or_path))
    if models.is_adapter_folder(path):
        raise UserError(
            f"model.name_or_path: '{cfg.model.name_or_path}' is an adapter without a merged model; "
            "run SFT with save_merged=true or point at a full model"
        )
    return os.path.abspath(path) if os.path.exists(path) else path


def completion_texts(tokenizer, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Decoded responses without padding, EOS or other special tokens (what text rewards see)."""
    return tokenizer.batch_decode(
        [row[: int(n)].tolist() for row, n in zip(responses, mask.sum(-1))], skip_special_tokens=True
    )


def train(cfg: PPOConfig) -> dict:
    # 1. Runtime: accelerator, logging, the same seed on every process (identical adapter init).
    r, p = cfg.rollout, cfg.ppo
    accelerator, log, resume_from = start_stage(cfg, p.gradient_accumulation_steps)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    # 2. Prompts and tokenizer (the base's own: an SFT folder's merged model carries it).
    base_path = base_model_path(cfg)
    tokenizer = models.load_tokenizer(
        cfg.model if cfg.model.tokenizer else dataclasses.replace(cfg.model, name_or_path=base_path)
    )
    if tokenizer.eos_token_id is None:
        raise UserError("model: the tokenizer has no EOS token; PPO stops responses at EOS")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        # a pad equal to EOS would make every EOS look like padding (and the reward read before it)
        raise UserError("model: the tokenizer's pad token is its EOS token; set a distinct pad token")
    prompts = load_prompts(cfg.data.path, cfg.data.split, cfg.data.limit)
    encoded = encode_prompts(tokenizer, prompts, cfg.data.max_prompt_length)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id

    # 3. Reward: adapter on this base, separate model, or function; and its normalisation.
    c = cfg.reward
    kind = R.reward_kind(c.path, c.function, base_path, c.separate)
    normalize = c.normalize if c.normalize != "auto" else ("none" if kind == "function" else "stats")
    stats = None
    if normalize == "stats":
        stats = read_stats(c.path)
    reward_fn = load_function(c.function, "reward.function") if kind == "function" else None
    monitor_fn = load_function(c.monitor, "reward.monitor") if c.monitor else None
    reward_model = reward_tok = None
    if kind == "model":
        with local_loading():  # one full copy per process, outside DeepSpeed
            reward_model, reward_tok = load_reward_model(c.path, device=device)
    if cfg.value.init_from_reward and kind != "adapter":
        raise UserError("value.init_from_reward: the reward model is not an adapter on this base")
    log.info(f"ppo: reward from {c.function or c.path} ({kind}), normalisation: {normalize}")

    # 4. Model: one frozen base; policy and value LoRA adapters, value head; reward adapter; reference = base.
    model_cfg = dataclasses.replace(cfg.model, name_or_path=base_path, gradient_checkpointing=False)
    base = models.load_causal_lm(model_cfg)
    ppo_model = build_ppo_model(
        base,
        lora_config(cfg.policy),
        lora_config(cfg.value.adapter),
        reward_adapter=c.path if kind == "adapter" else None,
        share_policy_value=cfg.value.share_with_policy,
        init_value_from_reward=cfg.value.init_from_reward,
    )
    disable_dropout(ppo_model)  # LoRA dropout too: with it on, the first minibatch is not on-policy
    if cfg.model.gradient_checkpointing:
        ppo_model.gradient_checkpointing_enable()
    trainable, total = adapters.count_parameters(ppo_model)
    log.info(f"ppo: training {trainable:,} of {total:,} parameters on one base")
    batch_global = r.per_device_batch_size * world
    updates = math.ceil(cfg.train.total_episodes / batch_global)
    micro = r.per_device_batch_size // (p.num_minibatches * p.gradient_accumulation_steps)
    optimizer, scheduler = optim.build(ppo_model, cfg.train, updates * p.epochs * p.num_minibatches)
    _deepspeed_clipping(accelerator, cfg.train.max_grad_norm)
    model, optimizer = optim.prepare(accelerator, ppo_model, optimizer, scheduler, micro)
    unwrapped = accelerator.unwrap_model(model)

    # 5. Resume: weights, optimizer, schedule, RNG (Accelerate) + KL coefficient, running stats, run id.
    kl_ctl = L.kl_controller(cfg.kl.controller, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    moments = R.RunningMoments()
    start, run_id = 0, new_run_id()
    if resume_from:
        state = checkpoint.load(accelerator, resume_from)
        start, run_id = state["step"], state["run_id"]
        kl_ctl.load_state_dict(state["kl_controller"])
        moments.load_state_dict(state["score_moments"])
        log.info(f"ppo: resumed from {resume_from} at update {start}")
    tracker = Tracker(accelerator, cfg.tracking, cfg.output_dir, to_dict(cfg), run_id, step=start)

    # 6. Train: `updates` rounds of rollout + PPO epochs.
    stream = IndexStream(len(encoded), cfg.seed)
    model.train()  # dropout is off; train mode is what gradient checkpointing needs
    bar = tqdm(total=updates, initial=start, desc="ppo", disable=not accelerator.is_main_process, dynamic_ncols=True)
    B, mb = r.per_device_batch_size, r.per_device_batch_size // p.num_minibatches
    for update in range(start, updates):
        step = update + 1
        t_start = time.time()
        # 6a. Prompts: this process's slice of a seeded stream; the position alone decides it (exact resume).
        indices = stream.batch(update, B, rank, world)
        queries, query_mask = left_pad([encoded[i] for i in indices], pad_id)
        queries, query_mask = queries.to(device), query_mask.to(device)

        # 6b. Generate with the policy (KV cache; ZeRO-3 gathers the weights once for the whole rollout).
        rollout = sample(
            accelerator, model, queries, query_mask, r.response_length, r.temperature, pad_id,
            eos_id if r.stop_at_eos else None,
        )  # fmt: skip
        t_generated = time.time()

        # 6c. Score in the first epoch's micro-batches (see rollout.score): log-probs, reference, values, rewards.
        shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + update)
        orders = [torch.randperm(B, generator=shuffle).to(device) for _ in range(p.epochs)]
        old = score(model, rollout, orders[0], micro, r.temperature, with_reward=kind == "adapter")
        mask = rollout.response_mask
        if kind != "adapter" or monitor_fn is not None:
            prompt_texts = [prompt_text(tokenizer, prompts[i]) for i in indices]
            completions = completion_texts(tokenizer, rollout.responses, mask)
        if kind == "adapter":
            raw = old.reward_scores
        else:
            if kind == "function":
                raw = R.call_function(reward_fn, c.function, prompt_texts, completions).to(device)
            else:
                raw = torch.tensor(
                    score_texts(
                        reward_model, reward_tok, [prompts[i] for i in indices], completions, c.batch_size, c.max_length
                    ),
                    device=device,
                )

        # 6d. Scores PPO optimises: normalised (reward-stage statistics or running), minus the no-EOS penalty.
        if normalize == "stats":
            scores = L.normalize_scores(raw, stats["mean"], stats["std"])
        elif normalize == "running":
            moments.update(accelerator.gather(raw.float()).cpu())  # every process holds the same moments
            scores = L.normalize_scores(raw, moments.mean, moments.std)
        else:
            scores = raw.float()
        if r.stop_at_eos and r.missing_eos_penalty is not None:
            scores = L.penalize_no_eos(scores, rollout.contains_eos, r.missing_eos_penalty)

        # 6e. Per-token KL penalty + score at the last token, GAE, whitened advantages.
        beta = kl_ctl.value
        kl = L.kl_per_token(old.logprobs, old.ref_logprobs, cfg.kl.estimator) * mask
        rewards = L.compute_rewards(scores, kl, mask, beta)
        advantages, returns = L.gae(rewards, old.values, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            advantages = L.masked_whiten(advantages, mask)

        # 6f. PPO epochs over shuffled minibatches; each minibatch is one optimizer step of accumulated micro-batches.
        sums = torch.zeros(len(UPDATE_STATS), dtype=torch.float64)
        first = torch.zeros(len(FIRST_STATS), dtype=torch.float64)
        for epoch in range(p.epochs):
            for m in range(p.num_minibatches):
                for a in range(p.gradient_accumulation_steps):
                    start_row = m * mb + a * micro
                    rows = orders[epoch][start_row : start_row + micro]
                    ids, attn = rollout.sequences(rows)
                    with accelerator.accumulate(model):
                        logits, values = model(ids, attn, role="policy_and_value")
                        logprobs = response_logprobs(
                            logits, rollout.responses[rows], rollout.prompt_width, r.temperature
                        )
                        values = values[:, rollout.prompt_width - 1 : -1]
                        pg_loss, clipfrac, approxkl, ratio = L.policy_loss(
                            logprobs, old.logprobs[rows], advantages[rows], mask[rows], p.cliprange
                        )
                        vf_loss, vf_clipfrac = L.value_loss(
                            values, old.values[rows], returns[rows], mask[rows], p.cliprange_value
                        )
                        accelerator.backward(pg_loss + p.vf_coef * vf_loss)
                        if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                        optimizer.step()
                        if accelerator.sync_gradients:
                            scheduler.step()
                        optimizer.zero_grad()
                    got = (
                        torch.stack([pg_loss, vf_loss, approxkl, clipfrac, ratio, vf_clipfrac]).detach().double().cpu()
                    )
                    sums += got / p.gradient_accumulation_steps
                    if epoch == 0 and m == 0:
                        first += got[[4, 2, 3]] / p.gradient_accumulation_steps
        updates_done_here = p.epochs * p.num_minibatches
        t_end = time.time()

        # 6g. Metrics over all processes, KL coefficient update, samples, checkpoint.
        kl_sum = kl.sum(-1)
        entropy = (old.entropy * mask).sum(-1)
        local = torch.cat([
            sums / updates_done_here, first,
            torch.tensor([kl_sum.mean().item(), entropy.mean().item(), (scores - beta * kl_sum).mean().item(),
                          scores.mean().item(), raw.float().mean().item(), mask.sum(-1).float().mean().item()],
                         dtype=torch.float64),
        ]).to(device)  # fmt: skip
        if monitor_fn is not None:  # watched, never optimised
            watched = R.call_function(monitor_fn, c.monitor, prompt_texts, completions).mean().item()
            local = torch.cat([local, torch.tensor([watched], dtype=torch.float64, device=device)])
        mean = accelerator.reduce(local, reduction="mean").cpu().tolist()
        num_eos = int(accelerator.reduce(rollout.contains_eos.sum().to(device), reduction="sum").item())
        names = UPDATE_STATS + FIRST_STATS + [
            "objective/kl", "objective/entropy", "objective/rlhf_reward", "objective/scores", "objective/raw_scores",
            "val/response_length", *(["objective/monitor"] if monitor_fn is not None else []),
        ]  # fmt: skip
        metrics = dict(zip(names, mean))
        metrics.update({
            "val/num_eos": num_eos, "objective/kl_coef": beta, "lr": scheduler.get_last_lr()[0],
            "episodes": step * batch_global,
            "time/generation_share": (t_generated - t_start) / max(t_end - t_start, 1e-9),
            "time/episodes_per_second": batch_global / max(t_end - t_start, 1e-9),
        })  # fmt: skip
        kl_ctl.update(metrics["objective/kl"], batch_global)
        if step % cfg.train.log_steps == 0 or step == updates:
            tracker.log(metrics, step=step)
        if cfg.train.sample_steps and (step % cfg.train.sample_steps == 0 or step == 1):
            n = min(cfg.train.sample_rows, B)
            texts = completion_texts(tokenizer, rollout.responses[:n], mask[:n])
            rows = [[prompt_text(tokenizer, prompts[indices[i]]), texts[i], scores[i].item()] for i in range(n)]
            tracker.table("samples", ["prompt", "completion", "score"], rows, step=step)
        bar.update(1)
        bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
        if cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0 and step < updates:
            state = {"run_id": run_id, "kl_controller": kl_ctl.state_dict(), "score_moments": moments.state_dict()}
            checkpoint.save(accelerator, cfg.output_dir, step, state, cfg.checkpoint.keep_last)
    bar.close()

    # 7. Save: the policy adapter (gathered from ZeRO-3 shards), tokenizer, optional merged model, manifest.
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3: every process calls it
    final = (
        {k: v for row in read_metrics(cfg.output_dir) for k, v in row.items()} if accelerator.is_main_process else {}
    )
    if accelerator.is_main_process:
        unwrapped.save_policy(cfg.output_dir, state_dict)
        tokenizer.save_pretrained(cfg.output_dir)
        outputs = {"adapter": ".", "model": "."}
        if cfg.save_merged:
            merged = os.path.join(cfg.output_dir, "merged")
            adapters.merge_to(cfg.output_dir, base_path, merged, models.resolve_dtype(cfg.model.dtype), tokenizer)
            outputs["model"] = "merged"
        manifest.write(
            cfg.output_dir,
            "ppo",
            inputs={"model": base_path, "reward": c.function or os.path.abspath(c.path), "data": cfg.data.path},
            outputs=outputs,
            metrics={k: v for k, v in final.items() if k != "step"},
            extra={"updates": updates, "episodes": updates * batch_global, "world_size": world, "reward_kind": kind},
        )
        log.info(f"ppo: wrote {cfg.output_dir}")
    del state_dict
    finish(accelerator)
    return {"metrics": final, "model": unwrapped}


def _deepspeed_clipping(accelerator, max_grad_norm: float) -> None:
    """DeepSpeed clips inside its own step (Accelerate's clip_grad_norm_ does nothing there): give it our norm."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config["gradient_clipping"] = max_grad_norm
