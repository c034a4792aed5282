"""A whole evaluation campaign with scripted annotators, for the demo and end-to-end tests: the campaign from an
`rlhf eval` folder, gold tasks with the hidden preference's answer, scripted annotators (careful and careless)
ranking through the real ranking server, and the report (eval_human.json and campaign.png beside eval.json).

    from alignment.human_eval import run_campaign
    report = run_campaign("runs/demo/eval", "runs/demo/rankings.db")
    report["order"], report["order_agreement"]["judge"]["order"]   # people's order, the gold order

With people instead of scripts, the same steps are `rlhf rank campaign create`, `rlhf rank serve` and
`rlhf rank campaign report` (reward/rankings/campaign.py).
"""

from __future__ import annotations

import os
import threading

from alignment.common.functions import load_item_function
from reward.rankings import campaign
from reward.rankings.app.process import RankServer
from reward.rankings.config import CampaignConfig
from reward.rankings.simulate import HttpAnnotator, SimAnnotator
from reward.rankings.store import open_store

GOLD = "alignment.assets.gold:gold_reward"
ANNOTATORS = (
    SimAnnotator("careful-1", 0.5),
    SimAnnotator("careful-2", 0.5),
    SimAnnotator("careful-3", 0.5),
    SimAnnotator("careless", careless=True),
)
"""Three careful annotators (Plackett-Luce noise at temperature 0.5) and one who ranks at random."""


def gold_tasks(eval_dir: str, policies: list[str], score, first_draw: int, count: int) -> list[dict]:
    """Up to `count` gold tasks from the eval's draws >= first_draw (never a campaign task's completions): every
    policy's completion, the known answer their order by `score`, ties shared; tasks all tied are left out."""
    result, samples = campaign.read_eval(eval_dir)
    prompts = campaign.eval_prompts(result, samples)
    out = []
    for i, row in enumerate(samples):
        if row.get("sample", 0) < first_draw or len(out) >= count:
            continue
        texts = [row[p]["completion"] for p in policies]
        values = [score(samples[i]["prompt"], t) for t in texts]
        ranks = [1 + sum(v > x for v in values) for x in values]
        if len(set(ranks)) > 1 and len(set(texts)) == len(texts):
            out.append({"prompt": prompts[i], "completions": [{"text": t} for t in texts], "ranks": ranks})
    return out


def rank_with(store_url: str, annotators: list[SimAnnotator], score, password: str, seed: int, log_path) -> dict:
    """The annotators rank through a real server on a free loopback port until nothing is left for them."""
    store = open_store(store_url)
    have = {u["name"] for u in store.list_users()}
    for a in annotators:
        if a.name not in have:
            store.add_user(a.name, "annotator", password)
    store.close()
    done: dict[str, int] = {}
    with RankServer(store=store_url, log_path=log_path) as server:
        bots = [HttpAnnotator(server.url, a, password, score, seed=seed) for a in annotators]

        def work(bot: HttpAnnotator) -> None:
            done[bot.username] = bot.run()
            bot.close()

        threads = [threading.Thread(target=work, args=(bot,)) for bot in bots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return done


def run_campaign(
    eval_dir: str,
    store: str,
    annotators: list[SimAnnotator] | tuple = ANNOTATORS,
    score: str = GOLD,
    name: str = "final",
    policies: list[str] | None = None,
    annotators_per_task: int = 3,
    draws: int = 8,
    gold: int = 12,
    gold_rate: float = 0.2,
    pause_below: float = 0.0,
    bootstrap: int = 1000,
    unit: str = "task",
    seed: int = 0,
    password: str = "demo-password",
    show=print,
) -> dict:
    """Run a blind campaign over `eval_dir`'s policies (all, or `policies`) with scripted annotators and return the
    report (what eval_human.json holds) plus "files" (eval_human.json, campaign.png) and "rankings_by" (per
    annotator). `score` (module:function of (prompt, completion)) is the hidden preference the
    annotators rank by and the gold tasks' answer. unit="task": the eval's few held-out prompts make a prompt
    bootstrap meaningless, so the intervals are given these prompts."""
    scorer = load_item_function(score, "score")
    settings = {"draws": draws, "annotators_per_task": annotators_per_task, "bootstrap": bootstrap, "unit": unit}
    cfg = CampaignConfig(
        store=store, name=name, eval_dir=eval_dir, policies=list(policies or []), seed=seed, **settings
    )
    made = campaign.create(cfg)
    show(f"campaign {name}: {made['tasks']} tasks comparing {', '.join(made['policies'])}")
    db = open_store(store)
    try:
        tasks = gold_tasks(eval_dir, made["policies"], scorer, draws, gold)
        if tasks:
            db.add_gold_tasks(tasks)
        db.set_gold_policy(rate=gold_rate if tasks else 0.0, pause_below=pause_below)
    finally:
        db.close()
    log = os.path.join(os.path.dirname(os.path.abspath(eval_dir)), "logs", "campaign-server.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    by = rank_with(store, list(annotators), scorer, password, seed, log)
    show(f"campaign {name}: {sum(by.values())} rankings by {len(by)} scripted annotators ({len(tasks)} gold tasks)")
    report, files = campaign.report(cfg)
    return {**report, "files": files, "rankings_by": by}
