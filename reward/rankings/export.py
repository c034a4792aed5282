"""`rlhf rank export`: committed rankings -> preference datasets (TRL pairwise and K-wise).

Writes, under output_dir: `pairwise/` and `kwise/` (`datasets.DatasetDict` folders for
`load_from_disk`, splits train/test), `{schema}_{split}.jsonl|parquet` when asked, the resolved
`config.yaml` and `manifest.json`. The split is by prompt, so no prompt is in both train and test.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict

from alignment.common import files, manifest
from alignment.common.errors import UserError
from alignment.config.loader import save_config
from reward.preference import no_preference
from reward.rankings.agreement import consensus_ranks
from reward.rankings.config import ExportConfig, redacted
from reward.rankings.store import open_store, safe_url


def ranking_pairs(ranks: list[int], pairs: str, ties: str, rng: random.Random) -> list[tuple[int, int, int]]:
    """(chosen, rejected, rank gap) index pairs from one ranking (1 = best).

    pairs: `all` (every better/worse pair), `adjacent` (neighbouring rank groups), `best_vs_rest`.
    ties: `drop` (no pair inside a tie), `random` (ties broken at random first; gap stays 0),
    `drop_ranking` (the caller drops rankings with ties; here it behaves like `drop`).
    """
    k = len(ranks)
    if ties == "random":
        # A random strict order consistent with the ranks; pairs follow it, gaps keep the real ranks.
        order = sorted(range(k), key=lambda i: (ranks[i], rng.random()))
        strict = [0] * k
        for pos, i in enumerate(order):
            strict[i] = pos + 1
    else:
        strict = ranks
    levels = sorted(set(strict))
    if pairs == "all":
        chosen_rejected = [(i, j) for i in range(k) for j in range(k) if strict[i] < strict[j]]
    elif pairs == "adjacent":
        chosen_rejected = [
            (i, j)
            for a, b in zip(levels, levels[1:])
            for i in range(k)
            if strict[i] == a
            for j in range(k)
            if strict[j] == b
        ]
    elif pairs == "best_vs_rest":
        best = levels[0]
        chosen_rejected = [(i, j) for i in range(k) if strict[i] == best for j in range(k) if strict[j] > best]
    else:
        raise UserError(f"pairs must be all, adjacent or best_vs_rest, got '{pairs}'")
    chosen_rejected.sort(key=lambda p: (strict[p[0]], strict[p[1]], p))
    return [(i, j, ranks[j] - ranks[i]) for i, j in chosen_rejected]


def split_prompts(prompt_ids: list[int], test_size: float, seed: int) -> set[int]:
    """The prompt ids held out for test: a seeded shuffle, at least one and never all when both are possible."""
    ids = sorted(set(prompt_ids))
    if test_size <= 0 or len(ids) < 2:
        return set()
    n_test = round(test_size * len(ids)) if test_size < 1 else int(test_size)
    n_test = min(max(n_test, 1), len(ids) - 1)
    random.Random(seed).shuffle(ids)
    return set(ids[:n_test])


def flagged_out(ranking: dict, quorum: int) -> bool:
    """Whether flags remove this ranking's task: an admin flagged or confirmed it, or `quorum` distinct people
    flagged it (dismissed flags do not count). One annotator alone can never empty the export."""
    return bool(ranking.get("flag_confirmed")) or len(ranking.get("flags") or []) >= quorum


def _as_messages(prompt) -> list[dict]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def training_rankings(rankings: list[dict], cfg: ExportConfig, counts: dict) -> dict[int, list[dict]]:
    """The rankings that may train, by task: gold answers test people and campaigns judge policies, so neither is
    training data (a campaign only when cfg.campaigns names it); what is left out is counted."""
    by_task: dict[int, list[dict]] = defaultdict(list)
    for r in rankings:
        if r.get("gold"):
            counts["gold_rankings_left_out"] += 1
        elif r.get("campaign") is not None and r["campaign"] not in cfg.campaigns:
            counts["campaign_rankings_left_out"] += 1
        else:
            by_task[r["task_id"]].append(r)
    return by_task


def _units(by_task: dict[int, list[dict]], cfg: ExportConfig, counts: dict) -> list[tuple]:
    """(ranking, ranks, annotator, ranking ids, order shown, seconds, n annotators, annotator names) per row."""
    units = []
    for _task_id, rs in sorted(by_task.items()):
        if len(rs) < cfg.min_annotators:
            counts["tasks_below_min_annotators"] += 1
            continue
        if cfg.drop_flagged and flagged_out(rs[0], cfg.flag_quorum):
            counts["tasks_flagged"] += 1
            continue
        if cfg.ties == "drop_ranking":
            kept = [r for r in rs if len(set(r["ranks"])) == len(r["ranks"])]
            counts["rankings_with_ties_dropped"] += len(rs) - len(kept)
            rs = kept
            if not rs:
                continue
        if cfg.aggregate == "consensus":
            ranks = consensus_ranks([r["ranks"] for r in rs])
            if cfg.ties == "drop_ranking" and len(set(ranks)) != len(ranks):
                counts["consensus_with_ties_dropped"] += 1
                continue
            seconds = sum(r["seconds"] for r in rs) / len(rs)
            names = [r["annotator"] for r in rs]
            units.append((rs[0], ranks, "consensus", [r["ranking_id"] for r in rs], [], seconds, len(rs), names))
        else:
            for r in rs:
                units.append(
                    (
                        r,
                        r["ranks"],
                        r["annotator"],
                        [r["ranking_id"]],
                        r["order_shown"],
                        r["seconds"],
                        len(rs),
                        [r["annotator"]],
                    )
                )
    return units


def annotator_weights(rankings: list[dict], gold: dict[int, list[int]]) -> dict:
    """The reliability fit over every ranking, campaigns and gold answers included (they judge people even where
    they do not train; reliability.py), and the per-annotator loss weights it gives: {"fit", "weights"}."""
    from reward.rankings import reliability

    rows = [{"task": r["task_id"], "annotator": r["annotator"], "ranks": r["ranks"]} for r in rankings]
    fit = reliability.fit_reliability(rows, gold)
    return {"fit": fit, "weights": reliability.weights(fit)}


def build_rows(rankings: list[dict], cfg: ExportConfig, weights: dict | None = None) -> tuple[list, list, dict]:
    """(kwise rows, pairwise rows, counts); each row carries `_prompt_id` for the split (dropped on write).

    weights: {annotator: loss weight}; with cfg.annotator_weights every row gets `annotator_weight` (default 1)."""
    rng = random.Random(cfg.seed)
    counts = defaultdict(int)
    units = _units(training_rankings(rankings, cfg, counts), cfg, counts)
    chat = any(r["is_chat"] for r in rankings)
    kwise, pairwise = [], []
    for r, ranks, annotator, ids, order_shown, seconds, n, names in units:
        prompt = _as_messages(r["prompt"]) if chat else r["prompt"]
        comps = [[{"role": "assistant", "content": t}] for t in r["completions"]] if chat else list(r["completions"])
        meta = {
            "ranking_ids": ids,
            "n_annotators": n,
            "order_shown": order_shown,
            "seconds": float(seconds),
            "models": r["models"],
            "seeds": [s if s is not None else -1 for s in r["seeds"]],
            "task_meta": json.dumps(r["task_meta"], sort_keys=True),
        }
        if no_preference(r["completions"], list(ranks)) is not None:
            # kept (a tie-aware loss learns from ties) but counted: the reward stage and DPO drop it under ties=drop
            counts["kwise_rows_without_preference"] += 1
        row = {
            "prompt": prompt,
            "completions": comps,
            "ranks": list(ranks),
            "annotator": annotator,
            "task_id": r["task_id"],
            "meta": meta,
            "_prompt_id": r["prompt_id"],
        }
        weight = {}
        if cfg.annotator_weights:  # a consensus row weighs what its annotators weigh on average
            weight["annotator_weight"] = sum((weights or {}).get(a, 1.0) for a in names) / len(names)
        kwise.append({**row, **weight})
        for i, j, gap in ranking_pairs(list(ranks), cfg.pairs, cfg.ties, rng):
            pair = {"prompt": prompt, "chosen": comps[i], "rejected": comps[j]}
            if cfg.margin:
                pair["margin"] = float(gap) * cfg.margin_scale
            pairwise.append({**pair, **weight, "_prompt_id": r["prompt_id"]})
    counts["kwise_rows"] = len(kwise)
    counts["pairwise_rows"] = len(pairwise)
    return kwise, pairwise, dict(counts)


def _write(rows: list[dict], test_ids: set[int], schema: str, cfg: ExportConfig, into: str) -> dict:
    """Write one schema's splits into the folder `into` (a staging folder); the paths reported are where the
    files will be once moved into cfg.output_dir."""
    from datasets import Dataset, DatasetDict

    splits = {
        "train": [{k: v for k, v in r.items() if k != "_prompt_id"} for r in rows if r["_prompt_id"] not in test_ids],
        "test": [{k: v for k, v in r.items() if k != "_prompt_id"} for r in rows if r["_prompt_id"] in test_ids],
    }
    # An empty split has no columns to infer; leave it out rather than write a schema-less dataset.
    dd = DatasetDict({name: Dataset.from_list(data) for name, data in splits.items() if data})
    written = {}
    if "datasets" in cfg.formats:
        dd.save_to_disk(os.path.join(into, schema))
        written["datasets"] = os.path.join(cfg.output_dir, schema)
    for name, ds in dd.items():
        if "jsonl" in cfg.formats:
            with open(os.path.join(into, f"{schema}_{name}.jsonl"), "w") as f:
                for row in splits[name]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written[f"jsonl_{name}"] = os.path.join(cfg.output_dir, f"{schema}_{name}.jsonl")
        if "parquet" in cfg.formats:
            ds.to_parquet(os.path.join(into, f"{schema}_{name}.parquet"))
            written[f"parquet_{name}"] = os.path.join(cfg.output_dir, f"{schema}_{name}.parquet")
    return {"rows": {name: len(data) for name, data in splits.items()}, "written": written}


def write_annotators(output_dir: str, people: dict) -> str:
    """annotators.json: each annotator's estimated reliability, the rankings it rests on, and the loss weight."""
    from alignment.common import files

    fit = people["fit"]
    data = {
        "model": "Plackett-Luce with one inverse temperature per annotator (reward/rankings/reliability.py)",
        "tasks_used": fit["tasks"],
        "gold_reliability": fit["gold"],
        "annotators": {a: {**v, "weight": people["weights"][a]} for a, v in fit["annotators"].items()},
    }
    files.write_json(os.path.join(output_dir, "annotators.json"), data)
    return "annotators.json"


def export(cfg: ExportConfig, store=None) -> dict:
    """Export every committed ranking in the store as cfg says; returns the manifest it writes."""

    own = store is None
    store = store or open_store(cfg.store, create=False)
    try:
        rankings = store.rankings()
        gold = store.gold_answers()
    finally:
        if own:
            store.close()
    if not rankings:
        raise UserError(f"{safe_url(cfg.store)}: no rankings to export yet")
    people = annotator_weights(rankings, gold) if cfg.annotator_weights else None
    kwise, pairwise, counts = build_rows(rankings, cfg, people["weights"] if people else None)
    if not kwise:
        raise UserError(
            f"{safe_url(cfg.store)}: every ranking was filtered out ({counts}); check min_annotators/drop_flagged"
            + ("; campaigns=[NAME] exports a campaign's rankings" if counts.get("campaign_rankings_left_out") else "")
        )
    test_ids = split_prompts([r["_prompt_id"] for r in kwise], cfg.test_size, cfg.seed)
    if "pairwise" in cfg.schemas and not pairwise:
        raise UserError(f"{safe_url(cfg.store)}: no preference pairs (all completions tied?); try ties=random")
    outputs = {}
    # Staged: a full disk leaves the export of before (or none), never a half-written dataset folder.
    with files.staged(cfg.output_dir) as tmp:
        for schema, rows in (("kwise", kwise), ("pairwise", pairwise)):
            if schema in cfg.schemas:
                outputs[schema] = _write(rows, test_ids, schema, cfg, tmp)
        annotators = {"annotators": write_annotators(tmp, people)} if people else {}
    save_config(redacted(cfg), os.path.join(cfg.output_dir, "config.yaml"))
    store_url = safe_url(cfg.store)
    return manifest.write(
        cfg.output_dir,
        "rank-export",
        inputs={"store": store_url},
        outputs=outputs,
        metrics={"rankings_read": len(rankings), **counts},
        extra={
            "store": store_url,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rankings_read": len(rankings),
            "prompts": {"train": len({r["_prompt_id"] for r in kwise} - test_ids), "test": len(test_ids)},
            "counts": counts,
            **annotators,
        },
    )
