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

import numpy as np

GOLD = "(gold)"
"""The name gold answers are fitted under."""


def pl_loglik(scores, ranks, valid) -> np.ndarray:
    """Per-ranking Plackett-Luce log-likelihood with Breslow ties: [R].

    scores [R, K] float; ranks [R, K] int (1 = best, ties share); valid [R, K] bool (array-likes). Place i adds
    s_i - logsumexp of s over those ranked no better than i; the last group adds nothing.
    """
    return _pl_terms(np.asarray(scores, dtype=float), np.asarray(ranks), np.asarray(valid, dtype=bool))[0]


def _pl_terms(scores: np.ndarray, ranks: np.ndarray, valid: np.ndarray):
    """(log-likelihood [R], its gradient [R, K] and Hessian [R, K, K] in the scores) of `pl_loglik`."""
    risk = valid[:, None, :] & valid[:, :, None] & (ranks[:, None, :] >= ranks[:, :, None])
    last = np.where(valid, ranks, 0).max(axis=1, keepdims=True)
    counted = valid & (ranks < last)
    masked = np.where(risk, scores[:, None, :], -np.inf)
    top = np.where(counted, masked.max(axis=2), 0.0)
    with np.errstate(invalid="ignore"):  # an empty risk set (padding) gives nan here, masked right after
        e = np.where(risk, np.exp(masked - top[:, :, None]), 0.0)
    z = np.where(counted, e.sum(axis=2), 1.0)
    lse = np.where(counted, np.log(z) + top, 0.0)
    loglik = ((scores - lse) * counted).sum(axis=1)
    pi = np.where(counted[:, :, None], e / z[:, :, None], 0.0)  # [R, place i, item j]: softmax over i's risk set
    grad = counted - pi.sum(axis=1)
    hess = np.einsum("rij,rik->rjk", pi, pi) - pi.sum(axis=1)[:, :, None] * np.eye(scores.shape[1])
    return loglik, grad, hess


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


MAX_STEP = 1.0
"""The largest move of one utility in one Newton step (half of it for a beta)."""


def fit_reliability(
    rankings: list[dict], gold: dict | None = None, prior_u: float = 2.0, prior_beta: float = 1.0, steps: int = 1000
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
        beta_of = _fit(tasks, people, kept, prior_u, prior_beta, steps)
    return {
        "annotators": {
            a: {"reliability": beta_of.get(a), "rankings": n, "shared": shared.get(a, 0)}
            for a, n in sorted(counts.items())
        },
        "gold": beta_of.get(GOLD),
        "tasks": len(tasks),
    }


def _fit(tasks: list, people: list[str], kept: dict, prior_u: float, prior_beta: float, steps: int) -> dict:
    """MAP (u, beta) by alternating Newton steps in float64: each task's utilities given beta (a concave problem per
    task), then each person's beta given u (concave, one number each), until no step moves anything by 1e-10 or
    after `steps` rounds; returns {person: beta}. Pure numpy, so the ranking app that shows it needs no torch."""
    k_max = max(len(ranks) for rs in kept.values() for _, ranks in rs)
    rows = [(ti, people.index(a), ranks) for ti, t in enumerate(tasks) for a, ranks in kept[t]]
    task_of = np.array([ti for ti, _, _ in rows])
    person_of = np.array([ai for _, ai, _ in rows])
    ranks = np.ones((len(rows), k_max), dtype=np.int64)
    valid = np.zeros((len(rows), k_max), dtype=bool)
    for i, (_, _, rk) in enumerate(rows):
        ranks[i, : len(rk)] = rk
        valid[i, : len(rk)] = True
    # Utilities past a task's K never enter a score; they stay out of the prior and never move.
    valid_u = np.zeros((len(tasks), k_max))
    np.maximum.at(valid_u, task_of, valid.astype(float))
    u, beta = np.zeros((len(tasks), k_max)), np.ones(len(people))
    for _ in range(steps):
        # Newton steps capped at MAX_STEP: alternating full steps can overshoot into a cycle that diverges (a
        # perfectly consistent annotator, such as the gold answers, pulls its beta up and the utilities with it);
        # capped, each block still moves uphill and the fixed point, the MAP, is the same.
        step_u = _utility_step(u, beta, task_of, person_of, ranks, valid, valid_u, prior_u).clip(-MAX_STEP, MAX_STEP)
        u -= step_u
        step_beta = _reliability_step(u, beta, task_of, person_of, ranks, valid, prior_beta)
        beta -= step_beta.clip(-MAX_STEP / 2, MAX_STEP / 2)
        if max(np.abs(step_u).max(), np.abs(step_beta).max()) < 1e-10:
            break
    return {a: float(b) for a, b in zip(people, beta)}


def _utility_step(u, beta, task_of, person_of, ranks, valid, valid_u, prior_u: float) -> np.ndarray:
    """The Newton step [T, K] of every task's utilities with beta fixed (scores beta[a] * u[t])."""
    b = beta[person_of]
    _, g, h = _pl_terms(b[:, None] * u[task_of], ranks, valid)
    grad = -u * valid_u / prior_u**2
    np.add.at(grad, task_of, b[:, None] * g)
    eye = np.eye(u.shape[1])
    hess = -(valid_u / prior_u**2)[:, :, None] * eye
    np.add.at(hess, task_of, (b**2)[:, None, None] * h)
    hess = np.where(valid_u[:, :, None] * valid_u[:, None, :] > 0, hess, -eye)  # padding: a zero step
    return np.linalg.solve(hess, grad[:, :, None])[:, :, 0]


def _reliability_step(u, beta, task_of, person_of, ranks, valid, prior_beta: float) -> np.ndarray:
    """The Newton step [A] of every person's beta with the utilities fixed."""
    s = u[task_of]
    _, g, h = _pl_terms(beta[person_of][:, None] * s, ranks, valid)
    grad = -(beta - 1) / prior_beta**2
    np.add.at(grad, person_of, (g * s).sum(axis=1))
    hess = np.full(len(beta), -1 / prior_beta**2)
    np.add.at(hess, person_of, np.einsum("rj,rjk,rk->r", s, h, s))
    return grad / hess


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
