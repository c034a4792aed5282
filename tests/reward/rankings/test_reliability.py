"""reward/rankings/reliability.py: the Plackett-Luce likelihood against ratings.py's (itself checked against a
loop), and the fit on simulated annotators of known noise: a careless one comes last and weighs about 0."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from reward.rankings import ratings, reliability
from reward.rankings.simulate import SimAnnotator

PEOPLE = [SimAnnotator("c1", 0.5), SimAnnotator("c2", 1.0), SimAnnotator("c3", 1.0), SimAnnotator("x", careless=True)]


def test_loglik_matches_the_numpy_one_per_ranking():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 4))
    ranks = np.array([rng.permutation(4) + 1 for _ in range(30)])
    ranks[::3, 2] = ranks[::3, 3] = np.minimum(ranks[::3, 2], ranks[::3, 3])  # some ties
    valid = np.ones((30, 4), dtype=bool)
    valid[::4, 3] = False  # some rankings of 3
    got = reliability.pl_loglik(torch.tensor(scores), torch.tensor(ranks), torch.tensor(valid))
    for r in range(30):
        k = int(valid[r].sum())
        theta = scores[r, :k]
        want = ratings.pl_loglik(theta, np.arange(k)[None], ranks[r : r + 1, :k])
        assert float(got[r]) == pytest.approx(want, rel=1e-10, abs=1e-12)


def simulate(seed: int, tasks: int, overlap: int, gold_tasks: int = 0) -> tuple[list[dict], dict]:
    rng = random.Random(seed)
    rankings, gold = [], {}
    for t in range(tasks):
        scores = [rng.gauss(0, 1.5) for _ in range(4)]
        for a in rng.sample(PEOPLE, overlap):
            rankings.append({"task": t, "annotator": a.name, "ranks": a.ranks(scores, [0, 1, 2, 3], f"{seed}:{t}")})
    for g in range(gold_tasks):
        scores = [rng.gauss(0, 1.5) for _ in range(4)]
        gold[f"g{g}"] = [1 + sum(s > x for s in scores) for x in scores]
        for a in PEOPLE:
            rankings.append({"task": f"g{g}", "annotator": a.name, "ranks": a.ranks(scores, [0, 1, 2, 3], f"g{g}")})
    return rankings, gold


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_with_overlap_the_careless_annotator_comes_last_and_weighs_about_nothing(seed):
    fit = reliability.fit_reliability(*simulate(seed, tasks=120, overlap=2))
    beta = {a: v["reliability"] for a, v in fit["annotators"].items()}
    assert min(beta, key=beta.get) == "x" and fit["gold"] is None
    w = reliability.weights(fit)
    assert w["x"] < 0.3 and all(0.5 < w[a] < 2 for a in ("c1", "c2", "c3"))


def test_one_ranking_per_task_is_judged_through_gold_answers_alone():
    rankings, gold = simulate(3, tasks=200, overlap=1, gold_tasks=8)
    fit = reliability.fit_reliability(rankings, gold)
    beta = {a: v["reliability"] for a, v in fit["annotators"].items()}
    assert fit["tasks"] == 8 and min(beta, key=beta.get) == "x" and fit["gold"] > max(beta.values()) / 2
    assert sum(v["rankings"] for v in fit["annotators"].values()) == 200 + 8 * 4
    # without gold, nobody shares a task: nobody can be judged, and everyone keeps weight 1
    blind = reliability.fit_reliability([r for r in rankings if not str(r["task"]).startswith("g")])
    assert blind["tasks"] == 0 and set(reliability.weights(blind).values()) == {1.0}
    assert all(v["reliability"] is None for v in blind["annotators"].values())


def test_a_campaign_whose_full_newton_steps_diverge_is_fitted(monkeypatch):
    # The demo's campaign on one run (48 tasks of 7 completions, 3 careful people, 1 careless, 12 gold answers): the
    # perfectly consistent gold answers pulled their beta up, and full alternating Newton steps cycled out to a
    # singular Hessian. Capped steps reach the MAP.
    import json
    import os

    from reward.rankings import reliability

    with open(os.path.join(os.path.dirname(__file__), "data", "campaign_with_gold.json")) as f:
        data = json.load(f)
    gold = {int(task): ranks for task, ranks in data["gold"].items()}
    fit = reliability.fit_reliability(data["data"], gold)
    betas = {name: a["reliability"] for name, a in fit["annotators"].items()}
    assert all(np.isfinite(b) for b in betas.values()) and np.isfinite(fit["gold"])
    assert min(betas, key=betas.get) == "careless" and betas["careless"] < 0.5 < min(
        b for name, b in betas.items() if name != "careless"
    )
    monkeypatch.setattr(reliability, "MAX_STEP", float("inf"))  # the uncapped steps this data broke
    with pytest.raises(np.linalg.LinAlgError), np.errstate(all="ignore"):
        reliability.fit_reliability(data["data"], gold)
