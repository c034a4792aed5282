"""Annotator reliability from the rankings themselves: a Plackett-Luce model with one inverse temperature per
annotator, fitted jointly with the completions' utilities (and anchored by gold answers where there are any).

Model. Completion i of task t has a utility u[t, i]; annotator a ranks task t by Plackett-Luce on the scores
beta[a] * u[t, i] (ties by Breslow's rule, as in ratings.py). beta is the annotator's reliability: large for
someone who orders completions as everyone else does, near 0 for someone ranking at random (their rankings are
independent of u), negative for someone ranking backwards. A gold answer is one more ranking of its task by the
annotator "(gold)". Only tasks with at least two rankings (gold included) are used: a task one person ranked
alone is fitted perfectly by its own u and says nothing about that person. MAP with u ~ N(0, prior_u^2) and
beta ~ N(1, prior_beta^2): the priors fix the scale that the likelihood leaves free (u * c, beta / c).

Weights. `weights` maps reliabilities to per-annotator weights for the reward and DPO losses: max(beta, 0)
divided by the median beta of the people (a typical annotator weighs 1, a random one about 0); an annotator
who shares no task with anyone cannot be judged and keeps weight 1.
"""

from __future__ import annotations

import statistics

import torch

GOLD = "(gold)"
"""The name gold answers are fitted under."""


def pl_loglik(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-ranking Plackett-Luce log-likelihood with Breslow ties: [R].

    scores [R, K] float; ranks [R, K] long (1 = best, ties share); valid [R, K] bool. Place i adds
    s_i - logsumexp of s over those ranked no better than i; the last group adds nothing.
    """
    risk = valid[:, None, :] & valid[:, :, None] & (ranks[:, None, :] >= ranks[:, :, None])
    last = torch.where(valid, ranks, torch.zeros_like(ranks)).max(dim=1, keepdim=True).values
    counted = valid & (ranks < last)
    masked = scores[:, None, :].masked_fill(~risk, float("-inf"))
    lse = torch.logsumexp(masked, dim=2).masked_fill(~counted, 0.0)
    return ((scores - lse) * counted).sum(dim=1)


def _layout(rankings: list[dict], gold: dict) -> tuple[list, list, dict]:
    """(tasks kept, people, rankings by kept task incl. gold): tasks with at least two rankings."""
    by_task: dict = {}
    for r in rankings:
        by_task.setdefault(r["task"], []).append((r["annotator"], list(r["ranks"])))
    for task, ranks in (gold or {}).items():
        if task in by_task:
            by_task[task].append((GOLD, list(ranks)))
    kept = {t: rs for t, rs in by_task.items() if len(rs) >= 2}
    people = sorted({a for rs in kept.values() for a, _ in rs})
    return list(kept), people, kept


def fit_reliability(
    rankings: list[dict], gold: dict | None = None, prior_u: float = 2.0, prior_beta: float = 1.0, steps: int = 200
) -> dict:
    """rankings: [{"task", "annotator", "ranks"}]; gold: {task: ranks}. Returns {"annotators": {name:
    {"reliability": beta or None, "rankings", "shared"}}, "gold": beta of the gold answers or None, "tasks": T}."""
    tasks, people, kept = _layout(rankings, gold or {})
    counts: dict[str, int] = {}
    for r in rankings:
        counts[r["annotator"]] = counts.get(r["annotator"], 0) + 1
    shared = {a: sum(1 for rs in kept.values() for b, _ in rs if b == a) for a in people}
    beta_of: dict[str, float] = {}
    if tasks:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # [R, K, K] tensors: more threads only add contention (30x slower on 2 busy cores)
        try:
            beta_of = _fit(tasks, people, kept, prior_u, prior_beta, steps)
        finally:
            torch.set_num_threads(threads)
    return {
        "annotators": {
            a: {"reliability": beta_of.get(a), "rankings": n, "shared": shared.get(a, 0)}
            for a, n in sorted(counts.items())
        },
        "gold": beta_of.get(GOLD),
        "tasks": len(tasks),
    }


def _fit(tasks: list, people: list[str], kept: dict, prior_u: float, prior_beta: float, steps: int) -> dict:
    """MAP (u, beta) by L-BFGS in float64; returns {person: beta}."""
    k_max = max(len(ranks) for rs in kept.values() for _, ranks in rs)
    rows = [(ti, people.index(a), ranks) for ti, t in enumerate(tasks) for a, ranks in kept[t]]
    task_of = torch.tensor([ti for ti, _, _ in rows])
    person_of = torch.tensor([ai for _, ai, _ in rows])
    ranks = torch.ones(len(rows), k_max, dtype=torch.long)
    valid = torch.zeros(len(rows), k_max, dtype=torch.bool)
    for i, (_, _, rk) in enumerate(rows):
        ranks[i, : len(rk)] = torch.tensor(rk)
        valid[i, : len(rk)] = True
    u = torch.zeros(len(tasks), k_max, dtype=torch.float64, requires_grad=True)
    beta = torch.ones(len(people), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([u, beta], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        scores = beta[person_of][:, None] * u[task_of]
        loss = -pl_loglik(scores, ranks, valid).sum()
        loss = loss + (u.square() * valid_u).sum() / (2 * prior_u**2) + (beta - 1).square().sum() / (2 * prior_beta**2)
        loss.backward()
        return loss

    # Utilities past a task's K never enter a score; leave them out of the prior too (they stay 0).
    valid_u = torch.zeros(len(tasks), k_max, dtype=torch.float64)
    for ti, _, rk in rows:
        valid_u[ti, : len(rk)] = 1.0
    optimizer.step(closure)
    return {a: float(b) for a, b in zip(people, beta.detach())}


def annotator_table(fit: dict, gold: dict, counts: dict[str, int] | None = None) -> dict[str, dict]:
    """Per annotator: gold answers, gold accuracy and pause (`gold`: Store.gold_report()), reliability and weight
    (`fit`), and `rankings` when `counts` is given; everyone found in any of them."""
    w = weights(fit)
    names = sorted(set(counts or {}) | set(gold) | set(fit["annotators"]))
    table = {}
    for a in names:
        row = {} if counts is None else {"rankings": counts.get(a, 0)}
        row.update(
            gold_answers=gold.get(a, {}).get("answers", 0),
            gold_accuracy=gold.get(a, {}).get("accuracy"),
            paused=gold.get(a, {}).get("paused", False),
            reliability=fit["annotators"].get(a, {}).get("reliability"),
            weight=w.get(a, 1.0),
        )
        table[a] = row
    return table


def weights(fit: dict) -> dict[str, float]:
    """{annotator: loss weight}: max(beta, 0) / median beta of the people (weight 1 where beta is unknown)."""
    known = [a["reliability"] for a in fit["annotators"].values() if a["reliability"] is not None]
    ref = statistics.median(known) if known else None
    out = {}
    for name, a in fit["annotators"].items():
        beta = a["reliability"]
        out[name] = 1.0 if beta is None or not ref or ref <= 0 else max(beta, 0.0) / ref
    return out
