"""Health of sampled completions: the measures every policy stage and `rlhf eval` report, and the guardrails.

A policy is not judged by its reward alone: DPO can win on gold while a third of its completions never
end, carry broken bytes or loop. These measures look at the samples themselves, beside the reference's:

| measure | name in metrics | what it catches |
| --- | --- | --- |
| EOS rate | `completions/eos_rate` | share of completions that end with EOS: a policy that forgot how to stop |
| length limit | `completions/clipped_ratio` | share cut at the length limit without EOS (TRL GRPO's name) |
| length | `completions/mean_length` | mean tokens per completion (EOS included) |
| empty answers | `completions/empty_rate` | share with no word: a reward that scores silence above the answers it sees |
| broken characters | `completions/broken_rate` | share with U+FFFD: byte-level tokens that form no UTF-8 character |
| repetition | `completions/repeated_ngram_rate` | share with a word 3-gram seen 3 or more times in the completion |
| diversity | `completions/distinct_2` | distinct word bigrams over all bigrams of the batch (Li et al. 2016) |
| KL | `objective/kl` | KL to the reference, nats per completion |

Guardrails (`Thresholds`, one documented set for every stage) turn a measure that crosses its threshold
against the reference into a one-line warning; `HealthConfig.stop_on_kl` stops a run over its KL budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

BROKEN = "\ufffd"
"""What a byte-level tokenizer's decoder writes for bytes that form no UTF-8 character."""
NGRAM, REPEATS = 3, 3
"""A completion repeats itself when one word NGRAM-gram occurs REPEATS times or more in it."""

MEASURES = {
    "eos_rate": "share of completions that end with EOS",
    "clipped_ratio": "share cut at the length limit without EOS",
    "mean_length": "mean tokens per completion",
    "empty_rate": "share with no word (an empty answer)",
    "broken_rate": "share with a broken character (U+FFFD)",
    "repeated_ngram_rate": f"share with a word {NGRAM}-gram repeated {REPEATS}+ times",
    "distinct_2": "distinct word bigrams / all word bigrams",
}
"""Every completion measure by its short name; metrics files carry them as `completions/<name>`."""


@dataclass
class HealthConfig:
    """Guardrails of a policy stage: warnings against the reference's samples, and an opt-in stop on KL."""

    RANGES: ClassVar = {
        "kl_budget": "> 0",
        "eos_drop": "[0, 1]",
        "broken_rise": "[0, 1]",
        "empty_rise": "[0, 1]",
        "logp_drop": "> 0",
        "samples": ">= 0",
        "temperature": "> 0",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    kl_budget: float = 10.0
    """KL to the reference (nats per completion) above which a run warns: far from where the reward or the
    preferences describe anything."""
    stop_on_kl: bool = False
    """Stop training (saving the policy as it is) once the KL exceeds `kl_budget`."""
    eos_drop: float = 0.10
    """Warn when the EOS rate falls this far (a share) below the reference's."""
    broken_rise: float = 0.01
    """Warn when the broken-character rate rises this far (a share) above the reference's."""
    empty_rise: float = 0.05
    """Warn when the share of empty answers (no word) rises this far above the reference's: the policy found that
    saying nothing scores better than what it used to say (a reward with a penalty per word, or one that is
    unsure of every content word)."""
    logp_drop: float = 5.0
    """DPO: warn when the chosen completions' mean log-prob falls this many nats below its start (likelihood
    displacement: probability leaves the preferred answers too, for text nobody ranked)."""
    samples: int = 64
    """DPO: completions the policy (and once the reference) samples at each evaluation and at the end, one per
    held-out prompt in turn (0: none)."""
    temperature: float = 0.7
    """DPO: their sampling temperature (as `rlhf eval` and the online stages' rollouts)."""


def repeats_itself(text: str, n: int = NGRAM, times: int = REPEATS) -> bool:
    """Whether one word n-gram occurs `times` or more in `text`."""
    words = text.split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams over all word n-grams of `texts` (1.0 when there are none)."""
    grams = [tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def completion_health(texts: Sequence[str], ended: Sequence[bool], lengths: Sequence[int], limit: int) -> dict:
    """The measures of MEASURES over a batch: decoded `texts`, whether each `ended` with EOS, its `lengths` in tokens
    (EOS included) and the length `limit` the sampler stopped at."""
    n = max(len(texts), 1)
    return {
        "eos_rate": sum(bool(e) for e in ended) / n,
        "clipped_ratio": sum(not e and int(k) >= limit for e, k in zip(ended, lengths)) / n,
        "mean_length": sum(int(k) for k in lengths) / n,
        "empty_rate": sum(not t.split() for t in texts) / n,
        "broken_rate": sum(BROKEN in t for t in texts) / n,
        "repeated_ngram_rate": sum(repeats_itself(t) for t in texts) / n,
        "distinct_2": distinct_n(texts),
    }


def metric_names(health: dict, prefix: str = "completions/") -> dict:
    """`{prefix}<measure>` for every measure of `health` (the names in metrics.jsonl and W&B)."""
    return {f"{prefix}{name}": value for name, value in health.items()}


Z = 2.0
"""A rate guardrail trips only when the change also exceeds Z standard errors of the difference of two sampled
rates: one broken completion more in 64 is a 0.016 rise, over `broken_rise`, and is noise."""
POOL = 256
"""Completions a training stage pools over its latest checks before it compares a rate with the reference's."""
POOLED = ("eos_rate", "broken_rate", "empty_rate")
"""The rates the guardrails pool."""


def beyond_noise(change: float, rate: float, reference: float, n: int | None, n_ref: int | None) -> bool:
    """Whether a `change` between a rate sampled over `n` completions and the `reference`'s (over `n_ref`, or taken as
    known when None) exceeds Z standard errors of their difference (the pooled rate's binomial variance); True when
    `n` is unknown."""
    if not n:
        return True
    pooled = (rate * n + reference * n_ref) / (n + n_ref) if n_ref else rate
    total = n + (n_ref or 0)
    pooled = min(max(pooled, 1 / total), 1 - 1 / total)  # no zero variance from a rate of 0 or 1
    return change > Z * (pooled * (1 - pooled) * (1 / n + (1 / n_ref if n_ref else 0))) ** 0.5


def crossed(change: float, threshold: float, rate: float, reference: float, n: int | None, n_ref: int | None) -> bool:
    """Whether a rate's `change` against the reference's passes its guardrail: over `threshold` and beyond noise."""
    return change > threshold and beyond_noise(change, rate, reference, n, n_ref)


def warnings_for(
    health: dict,
    reference: dict | None,
    cfg: HealthConfig,
    kl: float | None = None,
    n: int | None = None,
    n_ref: int | None = None,
) -> dict[str, str]:
    """Guardrail -> its one line, for every guardrail `health` crosses against the `reference`'s measures (and the KL
    budget); {} when all hold. With the sample counts `n` and `n_ref`, a rate guardrail also needs its change to be
    beyond sampling noise (`beyond_noise`)."""
    out = {}
    if reference:
        eos, eos_ref = health["eos_rate"], reference["eos_rate"]
        drop = eos_ref - eos
        if crossed(drop, cfg.eos_drop, eos, eos_ref, n, n_ref):
            out["eos_rate"] = (
                f"EOS rate {eos:.2f} is {drop:.2f} below the reference's {eos_ref:.2f}"
                f" (threshold {cfg.eos_drop:.2f}): completions run to the length limit"
            )
        broken, broken_ref = health["broken_rate"], reference["broken_rate"]
        rise = broken - broken_ref
        if crossed(rise, cfg.broken_rise, broken, broken_ref, n, n_ref):
            out["broken_rate"] = (
                f"broken-character rate {broken:.3f} is {rise:.3f} above the reference's"
                f" {broken_ref:.3f} (threshold {cfg.broken_rise:.3f}): byte tokens that form no text"
            )
        empty, empty_ref = health.get("empty_rate", 0.0), reference.get("empty_rate", 0.0)
        rise = empty - empty_ref
        if crossed(rise, cfg.empty_rise, empty, empty_ref, n, n_ref):
            out["empty_rate"] = (
                f"empty answers {empty:.2f} of completions, {rise:.2f} above the reference's {empty_ref:.2f}"
                f" (threshold {cfg.empty_rise:.2f}): the reward scores saying nothing above the answers"
            )
    if kl is not None and kl > cfg.kl_budget:
        out["kl"] = f"KL to the reference {kl:.2f} nats is over the budget of {cfg.kl_budget:g} (health.kl_budget)"
    return out


def logp_warning(chosen_logps: float, start: float | None, cfg: HealthConfig) -> str | None:
    """DPO's likelihood-displacement guardrail: a line when the chosen log-prob fell more than `logp_drop`."""
    if start is None or start - chosen_logps <= cfg.logp_drop:
        return None
    return (
        f"chosen log-prob {chosen_logps:.2f} fell {start - chosen_logps:.2f} nats below its start {start:.2f}"
        f" (threshold {cfg.logp_drop:g}): probability leaves the preferred completions too"
    )


def overfit_warning(loss: float, lowest: float, lowest_step: int, rise: float) -> str | None:
    """The held-out-loss guardrail: a line when `loss` sits more than `rise` nats above the run's `lowest`."""
    if rise <= 0 or loss - lowest <= rise:
        return None
    where = "at the start" if lowest_step == 0 else f"at step {lowest_step}"
    return (
        f"held-out loss {loss:.3f} is {loss - lowest:.3f} above its lowest, {lowest:.3f} {where}"
        f" (threshold {rise:g}, train.eval_loss_rise): the model fits its training rows at the held-out rows' cost;"
        " fewer epochs or more data"
    )


class HeldOutWatch:
    """A training stage's held-out loss over its run (SFT, reward model, DPO): the lowest evaluation, the start
    included, and at the end a one-line warning when the model the stage saves sits more than `rise` above it
    (overfitting). Only the end warns: during training the held-out loss moves with the learning rate (DPO on the
    demo's world at seed 11 rose 0.03-0.09 above its lowest three times in its first 110 of 190 steps, and ended at
    its lowest). The lowest goes into the checkpoint, so a resumed run warns as the uninterrupted one."""

    def __init__(self, stage: str, rise: float, log, speaks: bool = True):
        self.stage, self.rise, self.log, self.speaks = stage, rise, log, speaks
        self.lowest: tuple[float, int] | None = None

    def check(self, metrics: dict, step: int, final: bool = False) -> str | None:
        """Track `metrics["eval/loss"]` (nothing without it); at the `final` evaluation, the warning line if any."""
        loss = metrics.get("eval/loss")
        if loss is None:
            return None
        line = overfit_warning(loss, *self.lowest, self.rise) if final and self.lowest else None
        if line and self.speaks:
            self.log.warning(f"{self.stage}: warning at step {step}: {line}")
        if self.lowest is None or loss < self.lowest[0]:
            self.lowest = (float(loss), step)
        return line

    def state_dict(self) -> dict:
        return {"lowest": list(self.lowest) if self.lowest else None}

    def load_state_dict(self, state: dict) -> None:
        self.lowest = tuple(state["lowest"]) if state.get("lowest") else None


class Guardrails:
    """A training stage's guardrails over its run: the first health it measures is the reference's (PPO's first
    rollout comes from the initial policy, which is the reference; DPO samples the reference itself), each guardrail
    warns in one line when it trips and again only after it cleared, and `check` says when to stop (`stop_on_kl`).
    Rates are pooled over the latest checks up to POOL completions and compared beyond their sampling noise (the
    reference's rates, held fixed for the run, taken as known), so a run of 64 rollouts per update does not warn on one
    unlucky batch. Every process checks (the measures are gathered, so
    all agree on stopping); only the main one (`speaks`) warns."""

    def __init__(self, stage: str, cfg: HealthConfig, log, speaks: bool = True):
        self.stage, self.cfg, self.log, self.speaks = stage, cfg, log, speaks
        self.reference: dict | None = None
        self.reference_count: int | None = None
        self.recent: list[tuple[int, float, float, float]] = []
        """(completions, EOS rate, broken rate, empty rate) of the latest checks, newest last, pooled up to POOL
        completions."""
        self.logp_start: float | None = None
        self.tripped: set[str] = set()

    def pooled(self, measures: dict, count: int | None) -> tuple[dict, int | None]:
        """`measures` with their EOS, broken and empty rates pooled over the latest checks (this one included)."""
        if not count:
            return measures, None
        rates = [measures.get(name, 0.0) for name in POOLED]
        self.recent.append((count, *rates))
        while len(self.recent) > 1 and sum(n for n, *_ in self.recent[1:]) >= POOL:
            self.recent.pop(0)
        total = sum(n for n, *_ in self.recent)
        pooled = {name: sum(r[0] * r[1 + i] for r in self.recent) / total for i, name in enumerate(POOLED)}
        return {**measures, **pooled}, total

    def check(self, metrics: dict, step: int, count: int | None = None) -> bool:
        """Warn for what `metrics` (one log's `completions/*`, `objective/kl`, DPO's `logps/chosen`) trips; `count`:
        the completions the measures come from. Returns whether the run should stop (KL over the budget with
        `stop_on_kl`)."""
        measures = {k.removeprefix("completions/"): v for k, v in metrics.items() if k.startswith("completions/")}
        checked = set()
        if measures and self.reference is None:
            self.reference, self.reference_count = measures, count
        elif measures:
            checked |= set(POOLED)
            measures, count = self.pooled(measures, count)
        kl = metrics.get("objective/kl")
        checked |= {"kl"} if kl is not None else set()
        reference = self.reference if "eos_rate" in checked else None
        lines = warnings_for(measures, reference, self.cfg, kl, count)
        if metrics.get("logps/chosen") is not None:
            checked.add("logps")
            self.logp_start = metrics["logps/chosen"] if self.logp_start is None else self.logp_start
            line = logp_warning(metrics["logps/chosen"], self.logp_start, self.cfg)
            lines.update({"logps": line} if line else {})
        for key in sorted(set(lines) - self.tripped) if self.speaks else ():
            self.log.warning(f"{self.stage}: warning at step {step}: {lines[key]}")
        self.tripped = (self.tripped - checked) | set(lines)
        stop = self.cfg.stop_on_kl and "kl" in lines
        if stop and self.speaks:
            self.log.warning(f"{self.stage}: stopping at step {step}: the KL is over its budget (health.stop_on_kl)")
        return stop

    def state_dict(self) -> dict:
        return {
            "reference": self.reference,
            "reference_count": self.reference_count,
            "recent": [list(r) for r in self.recent],
            "logp_start": self.logp_start,
            "tripped": sorted(self.tripped),
        }

    def load_state_dict(self, state: dict) -> None:
        self.reference, self.logp_start = state.get("reference"), state.get("logp_start")
        self.reference_count = state.get("reference_count")
        # a checkpoint written before empty answers were watched holds 3 numbers a check: none were empty then
        self.recent = [(*r, 0.0)[: 1 + len(POOLED)] for r in state.get("recent", [])]
        self.tripped = set(state.get("tripped", []))


def is_healthy(
    health: dict,
    reference: dict,
    kl: float | None,
    kl_budget: float,
    eos_points: float = 0.05,
    broken_points: float = 0.01,
    empty_points: float = 0.05,
) -> bool:
    """The acceptance bar of the worlds benchmark: EOS rate within `eos_points` of the reference's, broken-character
    rate at most the reference's + `broken_points`, empty answers at most the reference's + `empty_points` (a run
    measured before they were counted has none), KL under the budget."""
    return (
        reference["eos_rate"] - health["eos_rate"] <= eos_points
        and health["broken_rate"] - reference["broken_rate"] <= broken_points
        and health.get("empty_rate", 0.0) - reference.get("empty_rate", 0.0) <= empty_points
        and (kl is None or kl < kl_budget)
    )


COLUMNS = [
    ("eos_rate", "EOS", ".0%"),
    ("clipped_ratio", "at limit", ".0%"),
    ("mean_length", "length", ".1f"),
    ("empty_rate", "empty", ".0%"),
    ("broken_rate", "broken", ".1%"),
    ("repeated_ngram_rate", "repeats", ".1%"),
    ("distinct_2", "distinct-2", ".2f"),
    ("kl", "KL", ".2f"),
    ("entropy", "entropy", ".1f"),
]
"""The health table's columns: (key in a policy's measures, header, format)."""


def table(policies: dict[str, dict]) -> list[list[str]]:
    """The health table, a header row then a row per policy (`name -> measures`); n/a where a measure is missing."""
    rows = [["policy", *(header for _, header, _ in COLUMNS)]]
    for name, m in policies.items():
        cells = [format(m[key], spec) if isinstance(m.get(key), (int, float)) else "n/a" for key, _, spec in COLUMNS]
        rows.append([m.get("label", name), *cells])
    return rows


def text_table(rows: list[list[str]]) -> list[str]:
    """`table` rows as aligned plain-text lines."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def markdown_table(rows: list[list[str]]) -> str:
    """`table` rows as a markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
