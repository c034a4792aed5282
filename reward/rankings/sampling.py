"""Stage 2a: sample K completions per prompt from a model into the ranking store.

    rlhf sample configs/sample.yaml model.name_or_path=runs/tiny/sft
    accelerate launch --config_file launch/ddp.yaml -m alignment sample configs/sample.yaml

The model may be an SFT run folder (its merged model, or base + adapter), a model folder or a hub
id. Prompts come from the same formats as SFT: `{"prompt": str}` or `{"prompt": [messages]}` /
`{"messages": [...]}` (the conversation up to the last assistant turn). Under `accelerate launch`
each process samples its own share of the prompts and the main process writes them. Sampling is
seeded per batch of prompts, so re-running with the same config adds no duplicate tasks.

Active ranking (`acquisition.method=...`, reward/rankings/active.py): M candidates per prompt, a reward
model's uncertainty chooses which prompts and which K of the M go to people, and each task stores its
acquisition score as its priority (the ranking app serves the highest first).
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from alignment.common import manifest
from alignment.common.data import load_prompts
from alignment.config.loader import check_output_dir, save_config
from alignment.config.shared import ModelConfig, require
from alignment.runtime import logging as rlog
from alignment.runtime import models
from alignment.runtime.accelerator import finish, make_accelerator
from alignment.runtime.formatting import encode_prompt
from alignment.runtime.generation import decode, drop_cut_character, generate, generation_config, left_pad
from reward.preference import distinct_and_nonempty
from reward.rankings import active
from reward.rankings.store import open_store


@dataclass
class SampleConfig:
    RANGES: ClassVar = {
        "limit": ">= 1",
        "repeats": ">= 1",
        "k": ">= 2",
        "max_new_tokens": ">= 1",
        "temperature": "> 0",
        "top_p": "(0, 1]",
        "top_k": ">= 0",
        "batch_size": ">= 1",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""
    RUN_PATHS: ClassVar = {"output_dir": "sample", "store": "rankings.db", "model.name_or_path": "sft"}
    """With `run=runs/x`: samples from runs/x/sft into runs/x/rankings.db."""

    run: str = ""
    """Run folder of the pipeline (runs/x): model defaults to runs/x/sft, store to runs/x/rankings.db, output_dir
    to runs/x/sample."""
    output_dir: str = ""
    """Run folder: config.yaml, manifest.json and, by default, the store `rankings.db`."""
    store: str = ""
    """Ranking store: SQLite file or postgresql:// URL; default output_dir/rankings.db."""
    seed: int = 42
    """Base seed; each batch's samples are seeded from it and the batch's prompts."""
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: str = ""
    """Prompt rows: jsonl/json/parquet/csv, a datasets folder, a hub id or `builtin:reviews-prompts`."""
    split: str = "train"
    """Split of `prompts` for dataset folders and hub ids."""
    limit: int | None = None
    """Use only the first N prompts."""
    repeats: int = 1
    """Tasks per prompt (each with fresh samples), for small prompt sets."""
    k: int = 4
    """Completions per prompt (the K people rank)."""
    max_new_tokens: int = 48
    """Longest completion, in tokens."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    batch_size: int = 16
    """Prompts per generate() call on each process."""
    tag: str = ""
    """Stored in each task's meta (e.g. the RLHF round)."""
    acquisition: active.AcquisitionConfig = field(default_factory=active.AcquisitionConfig)

    def validate(self) -> None:
        require(self, "output_dir", "model.name_or_path", "prompts")
        self.acquisition.check(self.k)

    def store_url(self) -> str:
        return self.store or os.path.join(self.output_dir, "rankings.db")


def prompt_seed(seed: int, prompt, repeat: int) -> int:
    digest = hashlib.sha256(f"{seed}|{repeat}|{prompt!r}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@torch.no_grad()
def complete(model, tokenizer, prompts: list, cfg: SampleConfig, seed: int, device) -> list[list[str]]:
    """K (with acquisition: M candidates) decoded completions per prompt, sampled in one left-padded batch under `seed`."""
    n = cfg.acquisition.candidates if cfg.acquisition.active else cfg.k
    queries, query_mask = left_pad([encode_prompt(tokenizer, p) for p in prompts], tokenizer.pad_token_id)
    config = generation_config(
        cfg.max_new_tokens,
        cfg.temperature,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        num_return_sequences=n,
    )
    torch.manual_seed(seed)
    out = generate(model, queries.to(device), query_mask.to(device), config)
    texts = decode(tokenizer, out.responses, out.response_mask)
    # people see what is stored: no half character where the length limit cut one (the eval's broken-character rate
    # is measured on the raw decode, elsewhere)
    texts = [drop_cut_character(t, not ended) for t, ended in zip(texts, out.contains_eos.tolist())]
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def check_store(url: str) -> None:
    """One line now rather than after the sampling: a malformed URL, a file that is not a database, a server that
    cannot be reached. A new SQLite file is only created when the tasks are written."""
    if "://" in url or os.path.exists(url):
        open_store(url, create=False).close()


def sample(cfg: SampleConfig) -> dict:
    # 1. Runtime and inputs (with acquisition, the reward model's posterior first: a missing one is one line).
    posterior = active.load_posterior(cfg.acquisition)
    accelerator = make_accelerator()
    log = rlog.setup(accelerator.is_main_process)
    prompts = load_prompts(cfg.prompts, cfg.split, cfg.limit, key="prompts")
    jobs = [(p, r) for r in range(cfg.repeats) for p in prompts]
    mine = jobs[accelerator.process_index :: accelerator.num_processes]
    check_output_dir(cfg.output_dir)
    if accelerator.is_main_process:
        check_store(cfg.store_url())

    # 2. Model: an SFT run folder resolves to its merged model (or base + adapter).
    model_path = models.stage_model_path(models.resolve_path(cfg.model.name_or_path))
    model = models.load_causal_lm(cfg.model, name_or_path=model_path).to(accelerator.device).eval()
    tokenizer = models.load_tokenizer(ModelConfig(**{**vars(cfg.model), "name_or_path": model_path}))
    n = cfg.acquisition.candidates if cfg.acquisition.active else cfg.k
    rlog.announce_builtins(log, "sample", cfg)
    log.info(
        f"sample: {len(jobs)} prompts x {n} completions from {model_path} on {accelerator.num_processes} process(es)"
    )
    if accelerator.is_main_process:  # the first write: prompts and model have loaded
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))

    # 3. Sample this process's share.
    results = []
    bar = tqdm(total=len(mine), desc="sample", disable=not accelerator.is_main_process, dynamic_ncols=True)
    for start in range(0, len(mine), cfg.batch_size):
        chunk = mine[start : start + cfg.batch_size]
        # Seeded by the batch's contents: the same config re-samples the same texts (no duplicates).
        seed = prompt_seed(cfg.seed, [p for p, _ in chunk], chunk[0][1])
        texts = complete(model, tokenizer, [p for p, _ in chunk], cfg, seed, accelerator.device)
        results += [(p, t, seed, r) for (p, r), t in zip(chunk, texts)]
        bar.update(len(chunk))
    bar.close()

    # 3b. Acquisition: the reward model reads this process's candidates (the policy is freed first).
    if posterior is not None:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        phi = active.features(cfg.acquisition, results, accelerator.device, cfg.batch_size * n)
        results = [(*row, f) for row, f in zip(results, phi)]

    # 4. The main process writes every process's samples (one writer keeps SQLite simple).
    from accelerate.utils import gather_object

    gathered = gather_object(results) if accelerator.num_processes > 1 else results
    added: set = set()
    if accelerator.is_main_process:
        write = write_chosen if cfg.acquisition.active else write_all
        added = write(cfg, gathered, model_path, posterior, log)
    finish(accelerator)
    return {"tasks": len(added)}


def completion_rows(texts: list[str], model_path: str, gen_settings: dict, seed: int) -> list[dict]:
    return [{"text": t, "model": model_path, "gen": gen_settings, "seed": seed} for t in texts]


def gen_settings(cfg: SampleConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("max_new_tokens", "temperature", "top_p", "top_k")}


def write_all(cfg: SampleConfig, gathered: list, model_path: str, posterior, log) -> set:
    """Every prompt's K completions as a task (skipping prompts with an empty completion or the same one twice)."""
    store = open_store(cfg.store_url())
    before = store.count_tasks()
    skipped, added = 0, set()
    for prompt, texts, seed, repeat in gathered:
        # Two identical cards cannot be ranked honestly (ranked apart, the reward stage and DPO drop the ranking
        # as contradicting itself), and an empty one is not a valid row for them: skip the prompt and count it.
        if not distinct_and_nonempty(texts):
            skipped += 1
            continue
        completions = completion_rows(texts, model_path, gen_settings(cfg), seed)
        added.add(store.add_task(prompt, completions, meta={"tag": cfg.tag, "repeat": repeat, "seed": seed}))
    new = store.count_tasks() - before
    store.close()
    metrics = {"tasks": len(added), "new_tasks": new, "completions": len(added) * cfg.k, "skipped": skipped}
    inputs = manifest.stage_inputs(model_path, cfg.prompts)
    manifest.write(cfg.output_dir, "sample", inputs, {"store": manifest.where(cfg.store_url())}, metrics)
    if skipped:
        log.warning(f"sample: skipped {skipped} prompt(s) with an empty completion or the same completion twice")
    log.info(f"sample: {new} new tasks ({len(added)} total for these prompts) in {cfg.store_url()}")
    return added


def write_chosen(cfg: SampleConfig, gathered: list, model_path: str, posterior, log) -> set:
    """Acquisition: the budget's best prompts, K of their M candidates each, with their scores as priorities."""
    acq = cfg.acquisition
    seed = cfg.seed if acq.seed is None else acq.seed
    valid = [active.valid_candidates(row[1]) for row in gathered]
    usable = [i for i, v in enumerate(valid) if sum(v) >= cfg.k]
    rows = [gathered[i] for i in usable]
    choices = []
    if rows:
        phi = torch.stack([row[4] for row in rows]) if posterior is not None else None
        choices = active.choose(acq, cfg.k, torch.tensor([valid[i] for i in usable]), phi, posterior, seed)
    tasks = []
    for c in choices:
        prompt, texts, sample_seed, repeat = rows[c.row][:4]
        picked = [texts[j] for j in c.chosen]
        meta = {
            "tag": cfg.tag,
            "repeat": repeat,
            "seed": sample_seed,
            "acquisition": {
                "method": acq.method,
                "score": c.score,
                "pick": c.pick,
                "candidates": len(texts),
                "chosen": c.chosen,
            },
        }
        completions = completion_rows(picked, model_path, gen_settings(cfg), sample_seed)
        tasks.append({"prompt": prompt, "completions": completions, "meta": meta, "priority": c.score})
    store = open_store(cfg.store_url())
    before = store.count_tasks()
    added = set(store.add_tasks(tasks)) if tasks else set()
    new = store.count_tasks() - before
    store.close()
    skipped = len(gathered) - len(rows)
    summary = {
        "method": acq.method,
        "reward": acq.reward or None,
        "candidates": acq.candidates,
        "features": acq.features if acq.needs_reward else None,
        "prompts": len(gathered),
        "budget": acq.budget,
        "chosen_by_rule": sum(c.pick == "rule" for c in choices),
        "chosen_at_random": sum(c.pick == "random" for c in choices),
        "priority_max": max((c.score for c in choices), default=None),
        "priority_min": min((c.score for c in choices), default=None),
    }
    metrics = {"tasks": len(added), "new_tasks": new, "completions": len(added) * cfg.k, "skipped": skipped}
    inputs = manifest.stage_inputs(model_path, cfg.prompts, reward=acq.reward or None)
    outputs = {"store": manifest.where(cfg.store_url())}
    manifest.write(cfg.output_dir, "sample", inputs, outputs, metrics, extra={"acquisition": summary})
    if skipped:
        log.warning(f"sample: skipped {skipped} prompt(s) with fewer than {cfg.k} distinct non-empty candidates")
    log.info(f"sample: {acq.method} chose {len(choices)} of {len(rows)} prompts; {new} new tasks in {cfg.store_url()}")
    return added
