"""A campaign report on disk and on screen: eval_human.json, campaign.png and the text `rlhf rank campaign report`
prints (reward/rankings/campaign.py computes the report)."""

from __future__ import annotations

import os

from alignment.common import files


def _ci(x: dict, key: str, spec: str) -> str:
    if x.get(key) is None:
        return "n/a"
    low, high = x.get("low"), x.get("high")
    if low is None or high is None:
        return format(x[key], spec)
    return f"{format(x[key], spec)} [{format(low, spec)}, {format(high, spec)}]"


def _value(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def policy_lines(report: dict) -> list[str]:
    """One line per policy, best first: rating, win rate against the reference, and the automatic figures."""
    ref, auto = report["reference"], report.get("automatic", {})
    width = max(6, *(len(p) for p in report["policies"]))
    head = f"{'policy':<{width}}  {'rating [95% CI]':<24}  {'win rate vs ' + ref + ' [95% CI]':<28}"
    head += "  reward model  judge  reward win rate"
    lines = [head]
    for p in report["order"]:
        win = report["win_rates"][p].get(ref, {}) if p != ref else {}
        a = auto.get(p, {})
        rating = _ci(report["ratings"][p], "rating", "+.2f")
        against = _ci(win, "rate", ".2f") if win else "(reference)"
        automatic = (
            f"{_value(a.get('reward')):>12}  {_value(a.get('judge')):>5}  {_value(a.get('win_rate_reward'), '.2f'):>15}"
        )
        lines.append(f"{p:<{width}}  {rating:<24}  {against:<28}  {automatic}")
    return lines


def format_report(report: dict) -> str:
    """The report as plain text: ratings beside the automatic figures, orders, position check, agreement, people."""
    b = report["bootstrap"]
    what = "prompts" if report["unit"] == "prompt" else "tasks"
    lines = [
        f"campaign {report['campaign']}: {report['tasks']} tasks, {report['rankings']} rankings "
        f"(N={report['annotators_per_task']}), {len(report['policies'])} policies; 95% intervals from "
        f"{b['samples']} bootstrap resamples of {b['clusters']} {what}",
        "",
        *policy_lines(report),
        "",
        f"people's order: {' > '.join(report['order'])}",
    ]
    for key, o in report.get("order_agreement", {}).items():
        lines.append(f"{key}'s order:  {' > '.join(o['order'])}  (Kendall tau with people {o['kendall_tau']:+.2f})")
    slots = "  ".join(f"{s['slot']}: {_ci(s, 'win_share', '.2f')}" for s in report["position"])
    lines += ["", f"position check (share won by the card shown in each slot; 0.50 = no bias): {slots}"]
    a = report["agreement"]
    lines.append(
        f"agreement over {a['annotator_pairs']} annotator pairs: pairwise {_value(a['pairwise_agreement'])}, "
        f"Kendall tau {_value(a['kendall_tau'])}, Krippendorff alpha {_value(a['krippendorff_alpha'])}; "
        f"tied pairs {report['tied_pairs']}, identical completions {report['identical_completions']}"
    )
    lines += ["", f"{'annotator':<16} {'rankings':>8} {'gold':>5} {'gold acc':>8} {'reliability':>11} {'weight':>6}"]
    for name, p in report["annotators"].items():
        acc = _value(p["gold_accuracy"], ".2f")
        lines.append(
            f"{name:<16} {p['rankings']:>8} {p['gold_answers']:>5} {acc:>8} {_value(p['reliability'], '.2f'):>11} "
            f"{p['weight']:>6.2f}{'  paused' if p['paused'] else ''}"
        )
    return "\n".join(lines)


def plot_campaign(report: dict, path: str) -> str:
    """Ratings with 95% intervals (best on top) and win rates against the reference, people beside the reward model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = report["order"][::-1]
    r = report["ratings"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.5 * len(order) + 2))
    y = range(len(order))
    spread = [[r[p]["rating"] - r[p]["low"] for p in order], [r[p]["high"] - r[p]["rating"] for p in order]]
    left.errorbar([r[p]["rating"] for p in order], y, xerr=spread, fmt="o", color="C0")
    left.set_yticks(list(y), order)
    left.set_xlabel("Plackett-Luce rating (logits), 95% bootstrap interval")
    left.set_title(f"campaign {report['campaign']}: people's ratings")
    ref = report["reference"]
    others = [p for p in order if p != ref]
    w = [report["win_rates"][p][ref] for p in others]
    yy = range(len(others))
    spread = [[x["rate"] - x["low"] for x in w], [x["high"] - x["rate"] for x in w]]
    right.errorbar([x["rate"] for x in w], yy, xerr=spread, fmt="o", color="C0", label="people")
    for key, marker, color, label in (("reward", "s", "C1", "reward model"), ("judge", "D", "C2", "judge")):
        auto = [report.get("automatic", {}).get(p, {}).get(f"win_rate_{key}") for p in others]
        if any(a is not None for a in auto):
            right.plot([a if a is not None else float("nan") for a in auto], yy, marker, color=color, label=label)
    right.axvline(0.5, color="grey", lw=0.8)
    right.set_yticks(list(yy), others)
    right.set_xlim(0, 1)
    right.set_xlabel(f"win rate against {ref} (ties half)")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, output_dir: str) -> dict:
    """eval_human.json and campaign.png in output_dir; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "eval_human.json")
    files.write_json(json_path, report)
    return {"json": json_path, "plot": plot_campaign(report, os.path.join(output_dir, "campaign.png"))}
