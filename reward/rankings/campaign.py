"""Evaluation campaigns: people rank policies blind, side by side, through the ranking app.

    rlhf eval configs/eval.yaml "policies={sft: runs/x/sft, bon4: 'bon:4:runs/x/sft', ppo: runs/x/ppo}"
    rlhf rank campaign create configs/rank.yaml name=final eval_dir=runs/x/eval annotators_per_task=3
    rlhf rank serve configs/rank.yaml                  # people rank; campaign tasks come with the others
    rlhf rank campaign report configs/rank.yaml name=final   # -> runs/x/eval/eval_human.json, campaign.png

A campaign is made from an `rlhf eval` folder, so people judge exactly the completions the automatic figures
were computed on (one sampling path: every policy drew with the same random numbers). Task (prompt i, draw d)
holds the d-th completion of every policy, stored in a seeded random order (the page shows positions) and shown
in a fresh random order to each annotator; the policy names live only in the task's meta. The report fits
Plackett-Luce ratings, win rates and the position check with bootstrap intervals (ratings.py), and puts them
beside eval.json's reward-model and judge figures, with agreement, per-annotator counts, gold accuracy and
the reliability estimate.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import numpy as np

from alignment.common.data import load_prompts
from alignment.common.errors import UserError
from reward.rankings import ratings, reliability
from reward.rankings.agreement import agreement_summary, kendall_tau
from reward.rankings.config import CampaignConfig
from reward.rankings.store import open_store
from reward.rankings.store.quality import check_campaign_name


def read_eval(eval_dir: str) -> tuple[dict, list[dict]]:
    """(eval.json, samples.jsonl rows) of an `rlhf eval` folder, or a one-line UserError naming what is missing."""
    paths = [os.path.join(eval_dir, name) for name in ("eval.json", "samples.jsonl")]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"eval_dir: {path} not found (run `rlhf eval ... output_dir={eval_dir}` first)")
    with open(paths[0]) as f:
        result = json.load(f)
    with open(paths[1]) as f:
        samples = [json.loads(line) for line in f if line.strip()]
    return result, samples


def eval_prompts(result: dict, samples: list[dict]) -> list:
    """The prompt of each sample row as the eval read it (message lists stay lists); samples.jsonl holds the
    rendered text, which for chat data includes the template."""
    cfg = result.get("config", {})
    data, n = cfg.get("data", {}), cfg.get("generation", {}).get("num_samples", 1)
    try:
        prompts = load_prompts(data["path"], data.get("split", "test"), data.get("limit"))
    except (UserError, KeyError):
        return [s["prompt"] for s in samples]
    if len(prompts) * n != len(samples):
        return [s["prompt"] for s in samples]
    return [prompts[i // n] for i in range(len(samples))]


def campaign_tasks(result: dict, samples: list[dict], policies: list[str], draws: int, seed: int) -> list[dict]:
    """One task per (prompt, draw < draws): every policy's completion of that draw, in a seeded random order."""
    known = list(result.get("policies", {}))
    missing = [p for p in policies if p not in known]
    if missing:
        raise UserError(f"policies: {', '.join(missing)} not in the eval (it has {', '.join(known)})")
    if len(policies) < 2:
        raise UserError(f"policies: a campaign compares at least 2 policies, got {policies}")
    prompts = eval_prompts(result, samples)
    tasks = []
    for i, row in enumerate(samples):
        if row.get("sample", 0) >= draws:
            continue
        missing = [p for p in policies if not isinstance(row.get(p), dict) or "completion" not in row[p]]
        if missing:
            raise UserError(f"eval_dir: samples.jsonl:{i + 1}: no completion of policy '{missing[0]}'")
        order = list(policies)
        random.Random(f"{seed}:{i}").shuffle(order)  # stored positions are visible in the page: no fixed slot
        tasks.append(
            {
                "prompt": prompts[i],
                "completions": [{"text": row[p]["completion"]} for p in order],
                "meta": {"policies": order, "sample_row": i, "draw": row.get("sample", 0)},
            }
        )
    if not tasks:
        raise UserError("eval_dir: samples.jsonl has no rows to make tasks of")
    return tasks


def create(cfg: CampaignConfig) -> dict:
    """`rlhf rank campaign create`: the eval's completions -> the campaign's tasks in the store."""
    if not cfg.name or not cfg.eval_dir:
        raise UserError("campaign create needs name=... and eval_dir=... (an `rlhf eval` output folder)")
    check_campaign_name(cfg.name)
    result, samples = read_eval(cfg.eval_dir)
    policies = cfg.policies or list(result.get("policies", {}))
    tasks = campaign_tasks(result, samples, policies, cfg.draws, cfg.seed)
    meta = {"eval_dir": os.path.abspath(cfg.eval_dir), "policies": policies, "draws": cfg.draws, "seed": cfg.seed}
    store = open_store(cfg.store, create=True)
    try:
        made = store.create_campaign(cfg.name, tasks, cfg.annotators_per_task, meta)
    finally:
        store.close()
    return {**made, "policies": policies}


# ----------------------------------------------------------------------------------------------
# The report


def arrays(rows: list[dict], policies: list[str], unit: str) -> tuple:
    """ratings.py's layout from campaign rankings: (items, ranks, shown, cluster), each [R, K] or [R]."""
    k = max(len(r["texts"]) for r in rows)
    items = -np.ones((len(rows), k), dtype=int)
    ranks = np.zeros((len(rows), k), dtype=int)
    shown = -np.ones((len(rows), k), dtype=int)
    for i, r in enumerate(rows):
        n = len(r["texts"])
        items[i, :n] = [policies.index(p) if p in policies else -1 for p in r["policies"]]
        ranks[i, :n] = r["ranks"]
        shown[i, :n] = [r["order_shown"].index(pos) for pos in range(n)]
    cluster = np.array([r["prompt_id"] if unit == "prompt" else r["task_id"] for r in rows])
    return items, ranks, shown, cluster


def automatic_figures(result: dict | None, policies: list[str], reference: str) -> dict:
    """The eval's figures per policy (reward model, judge, KL, length) and its win rates against `reference`."""
    if not result:
        return {}
    out = {}
    for p in policies:
        m = result.get("policies", {}).get(p, {})
        out[p] = {k: m.get(k) for k in ("reward", "judge", "kl", "length") if m.get(k) is not None}
    for w in result.get("win_rates", []):
        if w["against"] == reference and w["policy"] in out:
            out[w["policy"]][f"win_rate_{w['by']}"] = w["win_rate"]
    return out


def order_agreement(people: list[str], automatic: dict) -> dict:
    """Kendall's tau between the people's order and each automatic score's order (1: the same order)."""
    out = {}
    for key in ("reward", "judge"):
        if all(key in automatic.get(p, {}) for p in people):
            by_score = sorted(people, key=lambda p: -automatic[p][key])
            tau = kendall_tau(list(range(len(people))), [by_score.index(p) for p in people])
            out[key] = {"order": by_score, "kendall_tau": tau}
    return out


def campaign_report(
    store, name: str, samples: int = 1000, unit: str = "prompt", reference=None, eval_result=None, seed: int = 0
) -> dict:
    """Everything eval_human.json holds for campaign `name` (UserError before any ranking exists)."""
    info, rows = store.campaign_rankings(name)
    policies = list(info["meta"].get("policies") or sorted({p for r in rows for p in r["policies"]}))
    if not rows:
        raise UserError(f"campaign '{name}': no rankings yet ({info['tasks']} tasks wait for annotators)")
    reference = reference or policies[0]
    if reference not in policies:
        raise UserError(f"reference: '{reference}' is not a policy of campaign '{name}' ({', '.join(policies)})")
    stats = ratings.campaign_statistics(*arrays(rows, policies, unit), policies, samples=samples, seed=seed)
    by_task: dict[int, list] = {}
    for r in rows:
        by_task.setdefault(r["task_id"], []).append((r["annotator"], r["ranks"]))
    agreement = agreement_summary(by_task)
    # Reliability from the campaign's overlap and from every answer to a gold task.
    judged = rows + [r for r in store.rankings() if r["gold"]]
    fit = reliability.fit_reliability(
        [{"task": r["task_id"], "annotator": r["annotator"], "ranks": r["ranks"]} for r in judged], store.gold_answers()
    )
    automatic = automatic_figures(eval_result, policies, reference)
    identical = sum(len(r["texts"]) - len(set(r["texts"])) for r in rows)
    tied = sum(w["ties"] for p, row in stats["win_rates"].items() for q, w in row.items() if p < q)
    return {
        "campaign": name,
        "policies": policies,
        "reference": reference,
        "tasks": info["tasks"],
        "rankings": len(rows),
        "annotators_per_task": info["meta"].get("annotators_per_task"),
        "unit": unit,
        **stats,
        "tied_pairs": tied,
        "identical_completions": identical,
        "agreement": {k: (None if isinstance(v, float) and v != v else v) for k, v in agreement.items()},
        "annotators": reliability.annotator_table(fit, store.gold_report(), Counter(r["annotator"] for r in rows)),
        "automatic": automatic,
        "order_agreement": order_agreement(stats["order"], automatic),
        "source": info["meta"].get("eval_dir"),
    }


def report(cfg: CampaignConfig) -> tuple[dict, dict]:
    """`rlhf rank campaign report`: (the report, the files written: eval_human.json and campaign.png)."""
    from reward.rankings.campaign_report import write_report

    if not cfg.name:
        raise UserError("campaign report needs name=... (`rlhf rank campaign list` shows them)")
    store = open_store(cfg.store, create=False)
    try:
        info, _ = store.campaign_rankings(cfg.name)
        eval_dir = cfg.eval_dir or info["meta"].get("eval_dir") or ""
        result = read_eval(eval_dir)[0] if eval_dir and os.path.isfile(os.path.join(eval_dir, "eval.json")) else None
        out = campaign_report(store, cfg.name, cfg.bootstrap, cfg.unit, cfg.reference, result, cfg.seed)
    finally:
        store.close()
    output_dir = cfg.output_dir or eval_dir
    if not output_dir:
        raise UserError("output_dir: where to write eval_human.json (the campaign has no eval folder on record)")
    return out, write_report(out, output_dir)


def run(action: str, cfg: CampaignConfig) -> str:
    """What `rlhf rank campaign ACTION` prints."""
    from reward.rankings.campaign_report import format_report

    if action == "create":
        made = create(cfg)
        return (
            f"campaign {made['name']}: {made['new']} new tasks ({made['tasks']} in all) comparing "
            f"{', '.join(made['policies'])}, {cfg.annotators_per_task} annotators each, blind, kept out of training exports"
        )
    if action == "report":
        out, written = report(cfg)
        text = json.dumps(out) if cfg.json else format_report(out)
        return f"{text}\n\nwrote {written['json']} and {written['plot']}"
    store = open_store(cfg.store, create=False)
    try:
        rows = store.campaigns()
    finally:
        store.close()
    if cfg.json:
        return json.dumps(rows)
    return (
        "\n".join(
            f"{c['name']:<20} tasks {c['tasks']:<5} complete {c['complete']:<5} rankings {c['rankings']:<6} "
            f"policies {', '.join(c['meta'].get('policies', []))}"
            for c in rows
        )
        or "no campaigns yet"
    )
