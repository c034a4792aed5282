"""The demo's report: `report.md` and PNG plots from a run folder's stage outputs.

    from alignment.report import write_report
    write_report("runs/demo", {"accuracy_ceiling": 0.83})

Reads what the stages wrote under `run_dir` (each part is optional; what is missing shows as n/a or
an empty panel, never an error):
  sft/metrics.jsonl        `train/loss`, `eval/loss`
  reward/metrics.jsonl     `train/loss`, `reward/accuracy`;  reward/eval.json: held-out `accuracy`, `pairs`
  ppo/metrics.jsonl        `objective/kl`, `objective/scores` (the proxy), `objective/rlhf_reward`, and a gold
                           score per update if logged (`objective/monitor` from PPO's `reward.monitor`,
                           `objective/gold`)
  eval/eval.json           `rlhf eval` of the `sft` and `ppo` policies with the gold judge (`judge`), win rates, KL
                           (to eval.json's `reference`: pass the SFT folder as `reference` for PPO's own KL)
Other layouts (a later round's folders) are named with `folders=`, e.g. {"ppo": "round-2/ppo"}.
Writes to run_dir: `report.md`, `overoptimization.png`, `training.png`, `gold_reward.png`.
"""

from __future__ import annotations

import json
import math
import os

from alignment.common.data import is_finite_number
from alignment.evaluate import load_judge
from alignment.runtime import health

# Keys of `figures` (all optional): numbers the caller measured that are not in the folders, and overrides.
FIGURE_KEYS = {
    "accuracy_ceiling": "best held-out accuracy achievable under the annotators' noise",
    "gold_sft": "mean gold reward of the SFT policy (default: eval/eval.json)",
    "gold_ppo": "mean gold reward of the PPO policy (default: eval/eval.json)",
    "gold_win_rate": "gold win rate of PPO over SFT (default: eval/eval.json)",
    "reward_accuracy": "reward model's held-out accuracy (default: reward/eval.json)",
    "final_kl": "KL of the PPO policy to its reference (default: eval/eval.json, else the last PPO update)",
}
FOLDERS = {"sft": "sft", "reward": "reward", "ppo": "ppo", "eval": "eval"}
"""Where each stage's outputs sit under run_dir; `folders=` overrides some (e.g. {"ppo": "round-2/ppo"})."""
GOLD_KEYS = ("objective/monitor", "objective/gold")


def read_jsonl(path: str) -> list[dict]:
    """Rows of a metrics file; [] when it does not exist; a line cut off by a crash is skipped."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in rows if isinstance(r, dict)]


def read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that have a finite `key`."""
    points = [(r.get("step", i), r[key]) for i, r in enumerate(rows) if is_finite_number(r.get(key))]
    return [p[0] for p in points], [float(p[1]) for p in points]


def gold_key(rows: list[dict]) -> str | None:
    """The first of GOLD_KEYS the PPO metrics carry (the demo logs gold per update; plain PPO runs do not)."""
    return next((k for k in GOLD_KEYS if any(is_finite_number(r.get(k)) for r in rows)), None)


def binned(xs: list[float], ys: list[float], bins: int) -> tuple[list[float], list[float]]:
    """Mean x and mean y of `bins` groups of points with equal counts, in order of x: a trend line through
    points whose x does not grow monotonically (KL over PPO training goes up and down)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    groups = [order[len(order) * b // bins : len(order) * (b + 1) // bins] for b in range(bins)]
    groups = [g for g in groups if g]
    return [sum(xs[i] for i in g) / len(g) for g in groups], [sum(ys[i] for i in g) / len(g) for g in groups]


# ----------------------------------------------------------------------------------------------
# What the report says


def stage_file(run_dir: str, folders: dict | None, stage: str, name: str) -> str:
    return os.path.join(run_dir, {**FOLDERS, **(folders or {})}[stage], name)


def summary(run_dir: str, figures: dict, folders: dict | None = None) -> dict:
    """The headline numbers: figures given by the caller win over what the folders say."""
    evaluation = read_json(stage_file(run_dir, folders, "eval", "eval.json"))
    policies = evaluation.get("policies", {})
    sft, ppo = policies.get("sft", {}), policies.get("ppo", {})
    win = next(
        (w for w in evaluation.get("win_rates", []) if (w["policy"], w["against"], w["by"]) == ("ppo", "sft", "judge")),
        {},
    )
    ppo_rows = read_jsonl(stage_file(run_dir, folders, "ppo", "metrics.jsonl"))
    kl_steps, kls = series(ppo_rows, "objective/kl")
    reward_eval = read_json(stage_file(run_dir, folders, "reward", "eval.json"))
    found = {
        "gold_sft": sft.get("judge"),
        "gold_sft_std": sft.get("judge_std"),
        "gold_ppo": ppo.get("judge"),
        "gold_ppo_std": ppo.get("judge_std"),
        "samples": ppo.get("samples") or sft.get("samples"),
        "gold_win_rate": win.get("win_rate"),
        "gold_win_rate_stderr": win.get("stderr"),
        "reward_accuracy": reward_eval.get("accuracy"),
        "reward_pairs": reward_eval.get("pairs"),
        "accuracy_ceiling": None,
        "final_kl": ppo.get("kl", kls[-1] if kls else None),
        "final_kl_source": f"held-out prompts, reference {_short(evaluation.get('reference'), run_dir)}"
        if "kl" in ppo
        else "last PPO update",
        "train_kl": kls[-1] if kls else None,
    }
    return {**found, **{k: v for k, v in figures.items() if v is not None}}


def _short(path: str | None, run_dir: str) -> str:
    """A model path as the reader knows it: relative to the run folder when inside it."""
    if not path:
        return "n/a"
    if os.path.isabs(path) and os.path.abspath(path).startswith(os.path.abspath(run_dir) + os.sep):
        return os.path.relpath(path, run_dir)
    return path


def _fmt(x, spec: str = ".3f", unit: str = "") -> str:
    return f"{x:{spec}}{unit}" if is_finite_number(x) else "n/a"


def results_table(s: dict) -> str:
    gain = (
        s["gold_ppo"] - s["gold_sft"]
        if is_finite_number(s.get("gold_ppo")) and is_finite_number(s.get("gold_sft"))
        else None
    )
    pm = lambda key: f" ± {s[key]:.2f} (std)" if is_finite_number(s.get(key)) else ""  # noqa: E731
    win_err = f" ± {s['gold_win_rate_stderr']:.1%}" if is_finite_number(s.get("gold_win_rate_stderr")) else ""
    rows = [
        ("Gold reward, SFT policy", _fmt(s.get("gold_sft")) + pm("gold_sft_std")),
        ("Gold reward, PPO policy", _fmt(s.get("gold_ppo")) + pm("gold_ppo_std")),
        ("Gold reward gain (PPO - SFT)", _fmt(gain, "+.3f")),
        ("Gold win rate, PPO over SFT (ties half)", _fmt(s.get("gold_win_rate"), ".1%") + win_err),
        ("Reward model held-out accuracy", _fmt(s.get("reward_accuracy"), ".1%")),
        ("Best accuracy achievable under the annotators' noise", _fmt(s.get("accuracy_ceiling"), ".1%")),
        (f"KL(PPO ‖ reference), {s.get('final_kl_source', '')}".rstrip(", "), _fmt(s.get("final_kl"), ".3f", " nats")),
    ]
    if s.get("final_kl_source") != "last PPO update" and is_finite_number(s.get("train_kl")):
        rows.append(("KL at the last PPO update (training prompts)", _fmt(s["train_kl"], ".3f", " nats")))
    lines = ["| measure | value |", "| --- | --- |"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Methods side by side (`rlhf demo`: every method trained from the same rankings, evaluated in one eval run)


def method_figures(evaluation: dict, names: list[str], seconds: dict, against: str = "sft", by: str = "judge") -> dict:
    """name -> {gold, gold_std, gold_gain, win_rate, win_rate_stderr, kl, seconds, samples} from an eval.json dict.

    `names`: the policies to report (in eval.json's `policies`); `against`: the policy they are compared with
    (its gold is the gain's zero); `by`: the score (`judge`: the hidden gold); `seconds`: training wall time per
    name. A figure the evaluation lacks is None.
    """
    policies = evaluation.get("policies", {})
    base = policies.get(against, {}).get(by)
    wins = {w["policy"]: w for w in evaluation.get("win_rates", []) if (w["against"], w["by"]) == (against, by)}
    out = {}
    for name in names:
        m, w = policies.get(name, {}), wins.get(name, {})
        gold = m.get(by)
        out[name] = {
            "gold": gold,
            "gold_std": m.get(f"{by}_std"),
            "gold_gain": gold - base if is_finite_number(gold) and is_finite_number(base) else None,
            "win_rate": w.get("win_rate"),
            "win_rate_stderr": w.get("stderr"),
            "kl": m.get("kl"),
            "seconds": seconds.get(name),
            "samples": m.get("samples"),
            **{key: m[key] for key in HEALTH_KEYS if key in m},
        }
    return out


HEALTH_KEYS = (*health.MEASURES, "entropy")
"""The health measures `rlhf eval` gives each policy (alignment/runtime/health.py), carried into the methods' rows."""


def health_section(evaluation: dict, methods: dict, against: str = "sft") -> str:
    """The report's health table: SFT's samples and every method's, side by side, with the thresholds that warn."""
    reference = evaluation.get("policies", {}).get(against, {})
    rows = health.table({"SFT": {k: reference.get(k) for k in (*HEALTH_KEYS, "kl")}, **methods})
    return f"""
## Health of the samples

A win rate does not say whether a policy still writes text: the same held-out completions, measured beside SFT's
(alignment/runtime/health.py). EOS: share that end; at limit: share cut at the length limit; empty: share with no
word; broken: share with a U+FFFD (bytes that form no character); repeats: share with a word 3-gram seen 3 times;
distinct-2: distinct word bigrams over all; KL to SFT and entropy in nats per completion. `rlhf eval` warns in one
line when a policy's EOS rate falls more than 10 points below SFT's, its empty answers rise more than 5 points, its
broken rate rises more than 1 point, or its KL passes the budget (10).

{health.markdown_table(rows)}
"""


def _method_cells(name: str, m: dict) -> list[str]:
    win = _fmt(m.get("win_rate"), ".1%") + (
        f" ± {m['win_rate_stderr']:.1%}" if is_finite_number(m.get("win_rate_stderr")) else ""
    )
    return [
        m.get("label", name),
        win,
        _fmt(m.get("gold"), ".2f") + (f" ({m['gold_gain']:+.2f})" if is_finite_number(m.get("gold_gain")) else ""),
        _fmt(m.get("kl"), ".2f"),
        _fmt(m.get("seconds"), ".0f", " s"),
    ]


METHOD_COLUMNS = ["method", "gold win rate over SFT", "gold reward (gain)", "KL to SFT (nats)", "training time"]


def methods_table(methods: dict) -> str:
    """A markdown table of `method_figures` rows (with optional `label` and `trained_on` per method)."""
    with_data = any(m.get("trained_on") for m in methods.values())
    header = METHOD_COLUMNS[:1] + (["trains on"] if with_data else []) + METHOD_COLUMNS[1:]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, m in methods.items():
        cells = _method_cells(name, m)
        if with_data:
            cells.insert(1, m.get("trained_on") or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def methods_text(methods: dict) -> list[str]:
    """The same rows as plain aligned text for the terminal (no `trains on` column)."""
    rows = [METHOD_COLUMNS] + [_method_cells(name, m) for name, m in methods.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(METHOD_COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def methods_section(methods: dict) -> str:
    """The report's `Methods compared` section around `methods_table`."""
    return f"""
## Methods compared

Every method starts from the same SFT model and learns from the same rankings: PPO, RLOO and GRPO online
against the reward model trained on them, DPO offline straight from them (pairwise: each ranking as its
better-worse pairs; K-wise: the whole ranking at once, Plackett-Luce). One `rlhf eval` run scores them all on the same
held-out prompts with the same random draws; the win rate is over SFT's completion of the same draw (ties
half, ± standard error), the gain is over SFT's mean gold reward, the KL is to the SFT model (the reference of
every method). Training time is the wall time of the method's own stage (the reward model, which the online
methods also need, is trained once before them).

{methods_table(methods)}
"""


# ----------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: the report is written on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def _empty(ax, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_overoptimization(ppo_rows: list[dict], path: str) -> str:
    """Gold and proxy reward against KL over PPO training: where proxy keeps rising and gold stops, the policy
    is exploiting the reward model (Gao et al. 2022)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    title = "Overoptimisation: proxy vs gold reward against KL"
    gold = gold_key(ppo_rows)
    rows = [r for r in ppo_rows if is_finite_number(r.get("objective/kl"))]
    if not rows:
        _empty(ax, title, "no PPO metrics with objective/kl")
    else:
        handles, axes = [], {}
        for key, label, color in [
            ("objective/scores", "proxy reward (reward model, normalised)", "tab:blue"),
            (gold, "gold reward (hidden preference)", "tab:orange"),
        ]:
            points = [(r["objective/kl"], r[key]) for r in rows if key and is_finite_number(r.get(key))]
            if not points:
                continue
            # different units: the second series gets its own y axis on the right
            target = ax if not axes else ax.twinx()
            axes[key] = target
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            bins = len(points) if len(points) <= 10 else 10  # few points: each is its own bin
            target.scatter(xs, ys, s=10, alpha=0.3, color=color)
            handles += target.plot(*binned(xs, ys, bins), color=color, marker="o", label=label.split(" (")[0])
            target.set_ylabel(label, color=color)
        ax.set_xlabel("KL(policy ‖ reference), nats per response")
        ax.set_title(title + "\n(dots: PPO updates; line: mean per KL bin)", fontsize=11)
        if not gold:
            handles += ax.plot([], [], " ", label="(no gold score logged)")
        if handles:
            ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training(
    sft_rows: list[dict], reward_rows: list[dict], reward_eval: dict, ceiling, ppo_rows: list[dict], path: str
) -> str:
    """Four panels: SFT loss, reward-model accuracy (with the noise ceiling), PPO rewards, PPO KL."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    gold = gold_key(ppo_rows)
    held_out = reward_eval.get("accuracy") if is_finite_number(reward_eval.get("accuracy")) else None
    panels = [
        (axes[0, 0], "SFT loss", sft_rows, [("train/loss", "train"), ("eval/loss", "held-out")], "loss", "step"),
        # the held-out accuracy is one number at the end: a line from eval.json, else the logged points
        (
            axes[0, 1],
            "Reward model accuracy",
            reward_rows,
            [("reward/accuracy", "train (batch)")] + ([] if held_out else [("eval/accuracy", "held-out")]),
            "pairwise accuracy",
            "step",
        ),
        (
            axes[1, 0],
            "PPO reward",
            ppo_rows,
            [
                ("objective/scores", "proxy score"),
                ("objective/rlhf_reward", "score - β·KL"),
                *([(gold, "gold")] if gold else []),
            ],
            "reward",
            "PPO update",
        ),
        (axes[1, 1], "PPO KL to reference", ppo_rows, [("objective/kl", "KL")], "nats per response", "PPO update"),
    ]
    for ax, title, rows, keys, ylabel, xlabel in panels:
        drawn = False
        for key, label in keys:
            steps, values = series(rows, key)
            if values:
                ax.plot(steps, values, marker="." if len(values) < 30 else None, label=label)
                drawn = True
        if title.startswith("Reward"):
            if held_out is not None:
                ax.axhline(held_out, color="tab:green", ls="--", label=f"held-out, final ({held_out:.1%})")
                drawn = True
            if is_finite_number(ceiling) and drawn:
                ax.axhline(ceiling, color="black", ls=":", label=f"achievable under label noise ({ceiling:.1%})")
        if not drawn:
            _empty(ax, title, "not found in this run")
            continue
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gold(s: dict, path: str, methods: dict | None = None) -> str:
    """Bars of mean gold reward with standard errors: SFT vs PPO (the win rate in the title), or, given `methods`
    (`method_figures` rows), SFT and every method with its win rate over SFT above its bar."""
    plt = _pyplot()
    n = s.get("samples") or 0
    bars = [("SFT", s.get("gold_sft"), s.get("gold_sft_std"), None)]
    if methods:
        bars += [
            (m.get("label", name), m.get("gold"), m.get("gold_std"), m.get("win_rate")) for name, m in methods.items()
        ]
    else:
        bars.append(("PPO", s.get("gold_ppo"), s.get("gold_ppo_std"), None))
    fig, ax = plt.subplots(figsize=(5.5 + 0.8 * max(len(bars) - 2, 0), 4.5))
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    if not all(is_finite_number(v) for v in values):
        _empty(ax, "Gold reward on held-out prompts", "no gold reward for " + ", ".join(labels))
    else:
        errors = [b[2] / math.sqrt(n) if is_finite_number(b[2]) and n else 0.0 for b in bars]
        colors = ["tab:gray"] + [f"C{i + 1}" for i in range(len(bars) - 1)] if methods else ["tab:gray", "tab:orange"]
        drawn = ax.bar(labels, values, yerr=errors, capsize=6, color=colors)
        for bar, (_, value, _, win), error in zip(drawn, bars, errors):  # above the error bar, not on it
            y = value + error if value >= 0 else value - error
            text = f"{value:.2f}" + (f"\nwin {win:.0%}" if is_finite_number(win) else "")
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, y),
                xytext=(0, 4 if value >= 0 else -12),
                textcoords="offset points",
                ha="center",
                fontsize=9,
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel("mean gold reward" + (" (± standard error)" if n else ""))
        win = s.get("gold_win_rate")
        title = "Gold reward on held-out prompts"
        if methods:
            title += "\n(win: gold win rate over SFT, same random draws)"
        elif is_finite_number(win):
            title += f"\ngold win rate of PPO over SFT: {win:.0%}"
        ax.set_title(title)
        low, high = min(0, *values), max(0, *values)
        pad = (0.35 if methods else 0.25) * (high - low or 1)
        ax.set_ylim(low - (pad if low < 0 else 0), high + pad)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# The report


def gold_from_samples(samples: list[dict], gold: str) -> dict:
    """step -> mean gold score of the completions PPO logged at that update (its samples.jsonl tables)."""

    judge = load_judge(gold)
    by_step: dict = {}
    for row in samples:
        if isinstance(row.get("completion"), str) and "step" in row:
            by_step.setdefault(row["step"], []).append(judge(str(row.get("prompt", "")), row["completion"]))
    return {step: sum(v) / len(v) for step, v in by_step.items()}


def campaign_section(report: dict) -> str:
    """The report's section on the blind campaign: ratings with intervals beside the gold order, the careless one."""
    from reward.rankings.campaign_report import policy_lines

    gold = report.get("order_agreement", {}).get("judge", {})
    people = report.get("annotators", {})
    rows = ["| annotator | rankings | gold accuracy | reliability | weight |", "| --- | --- | --- | --- | --- |"]
    for name, a in people.items():
        keys = (("rankings", "d"), ("gold_accuracy", ".0%"), ("reliability", ".2f"), ("weight", ".2f"))
        cells = [_fmt(a.get(key), spec) for key, spec in keys]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(f"    {line}" for line in policy_lines(report))
    tau = f" (Kendall tau {gold['kendall_tau']:+.2f})" if is_finite_number(gold.get("kendall_tau")) else ""
    return f"""
## People as the judge

A blind campaign over the same held-out completions (`rlhf rank campaign`): {report["tasks"]} tasks, each showing
every policy's completion of one draw in a random order, ranked by {report["annotators_per_task"]} scripted people
through the ranking app, gold tasks mixed in. Plackett-Luce ratings with 95% bootstrap intervals (over tasks), the
win rate over {report["reference"]}, and the automatic figures beside them:

{table}

People's order: {" > ".join(report["order"])}
Gold order: {" > ".join(gold.get("order") or [])}{tau}

The annotators as the gold tasks and the reliability estimate see them (one of them ranks at random):

{chr(10).join(rows)}
"""


def ppo_rows_with_gold(run_dir: str, folders: dict | None, gold: str | None) -> tuple[list[dict], str]:
    """PPO's metric rows with a gold score per update where one can be had, and the report's note on where it came
    from: PPO's own monitor, or `gold` scoring the completions PPO logged (ppo/samples.jsonl)."""
    rows = read_jsonl(stage_file(run_dir, folders, "ppo", "metrics.jsonl"))
    if gold_key(rows) == "objective/monitor":
        return rows, " Gold per update is the mean gold score of all that update's rollouts (PPO's `reward.monitor`)."
    if not gold or gold_key(rows):
        return rows, ""
    per_step = gold_from_samples(read_jsonl(stage_file(run_dir, folders, "ppo", "samples.jsonl")), gold)
    rows = [{**r, "objective/gold": per_step[r["step"]]} if r.get("step") in per_step else r for r in rows]
    if not per_step:
        return rows, ""
    note = (
        f" Gold per update is the mean gold score of the completions PPO logged at that update"
        f" ({len(per_step)} updates, ppo/samples.jsonl)."
    )
    return rows, note


def write_report(
    run_dir: str,
    figures: dict,
    folders: dict | None = None,
    gold: str | None = None,
    methods: dict | None = None,
    campaign: dict | None = None,
) -> str:
    """Write run_dir/report.md and its three PNG plots; returns the report's path.

    `figures`: numbers the caller measured (see FIGURE_KEYS); `accuracy_ceiling` is the one the folders
    cannot supply. Given values win over what the folders say. `folders`: see FOLDERS. `gold`: a judge
    `module:function` (as in `rlhf eval`); when PPO logged no gold score, the overoptimisation view scores
    the sample completions PPO logged (ppo/samples.jsonl) with it, at the updates that logged some. `methods`:
    `method_figures` rows (with `label`, `trained_on`) of methods trained from the same rankings: a comparison
    table, and their bars in gold_reward.png.
    """
    unknown = sorted(set(figures) - set(FIGURE_KEYS))
    if unknown:
        raise ValueError(f"write_report: unknown figures {unknown}; known: {sorted(FIGURE_KEYS)}")
    sft_rows = read_jsonl(stage_file(run_dir, folders, "sft", "metrics.jsonl"))
    reward_rows = read_jsonl(stage_file(run_dir, folders, "reward", "metrics.jsonl"))
    reward_eval = read_json(stage_file(run_dir, folders, "reward", "eval.json"))
    ppo_rows, gold_note = ppo_rows_with_gold(run_dir, folders, gold)
    s = summary(run_dir, figures, folders)
    evaluation = read_json(stage_file(run_dir, folders, "eval", "eval.json"))

    plots = {
        "overoptimization.png": plot_overoptimization(ppo_rows, os.path.join(run_dir, "overoptimization.png")),
        "gold_reward.png": plot_gold(s, os.path.join(run_dir, "gold_reward.png"), methods),
        "training.png": plot_training(
            sft_rows,
            reward_rows,
            reward_eval,
            s.get("accuracy_ceiling"),
            ppo_rows,
            os.path.join(run_dir, "training.png"),
        ),
    }
    text = f"""# RLHF run report: {os.path.basename(os.path.abspath(run_dir))}

## Results

{results_table(s)}

Gold reward is the hidden preference the scripted annotators ranked by, measured on held-out prompts
(topics no stage trained on). The win rate compares PPO's and SFT's completions drawn with the same
random numbers, prompt by prompt; ties count half. The accuracy ceiling is what a perfect model of the
gold preference would score against the noisy annotators' labels.
{methods_section(methods) if methods else ""}{health_section(evaluation, methods) if methods else ""}{campaign_section(campaign) if campaign else ""}
## Gold reward, {"SFT vs every method" if methods else "SFT vs PPO"}

![gold reward]({os.path.basename(plots["gold_reward.png"])})

## Overoptimisation

Gold and proxy (reward model) reward against KL to the reference over PPO training. While both rise
the reward model is a faithful proxy; where the proxy keeps rising and gold flattens or falls, PPO is
exploiting the reward model's errors.{gold_note}

![overoptimisation]({os.path.basename(plots["overoptimization.png"])})

## Training curves

![training curves]({os.path.basename(plots["training.png"])})
"""
    path = os.path.join(run_dir, "report.md")
    with open(path, "w") as f:
        f.write(text)
    return path
