"""`rlhf demo`: the whole pipeline on the embedded tiny default, on a CPU, with no download.

    rlhf demo                      # writes runs/demo/report.md and plots
    rlhf demo output_dir=/tmp/demo annotators.temperature=0.5

A tiny Llama pretrained offline on a shipped corpus of reviews is fine-tuned (SFT), samples K
reviews per prompt, scripted annotators with a hidden preference (positive words good, negative
words bad) rank them through the real ranking server with Plackett-Luce noise, a reward model
learns their rankings, and PPO on one frozen base optimises against it. The report compares the
SFT and PPO policies on held-out prompts by the hidden gold preference.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

from alignment.cli import parse_stage_args
from alignment.config import require
from alignment.evaluate import EvalConfig, EvalDataConfig, EvalGenerationConfig, evaluate
from alignment.pipeline import AnnotatorsConfig, PipelineConfig
from alignment.pipeline import run as run_pipeline
from alignment.report import summary, write_report
from alignment.runtime.functions import load_scorer
from reward.model import completion_text

GOLD = "alignment.assets.gold:gold_reward"
GOLD_BATCH = "alignment.assets.gold:gold"  # the same preference as a (prompts, completions) batch function


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    """Run folder; report.md and the plots are written here."""
    seed: int = 42
    """Seed of every stage."""
    annotators: AnnotatorsConfig = field(default_factory=lambda: AnnotatorsConfig(count=3, temperature=1.0))
    sample: list[str] = field(default_factory=lambda: ["repeats=24", "k=4", "max_new_tokens=40"])
    """Overrides for the sampling stage."""
    sft: list[str] = field(default_factory=list)
    """Overrides for SFT."""
    reward: list[str] = field(default_factory=lambda: ["train.epochs=3"])
    """Overrides for the reward stage."""
    ppo: list[str] = field(default_factory=lambda: [f"reward.monitor={GOLD_BATCH}"])
    """Overrides for PPO (gold is watched on every rollout, never trained on: the overoptimisation view)."""
    eval_samples: int = 64
    """Completions per held-out prompt for the final comparison (6 prompts: 384 pairs, win-rate stderr ~2%)."""

    def validate(self) -> None:
        require(self, "output_dir")


def main(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf demo", DemoConfig, argv, __doc__)
    if cfg is not None:
        demo(cfg)
    return 0


def noise_ceiling(export_dir: str, temperature: float) -> float | None:
    """Best held-out pairwise accuracy any reward model can reach under the annotators' noise.

    A pair whose gold scores differ by d is labelled the right way round with probability
    sigmoid(d / T) (Plackett-Luce on two items), so the best predictor (the gold order) agrees with
    the label that often; equal gold scores are coin flips.
    """
    import datasets

    path = os.path.join(export_dir, "pairwise")
    if not os.path.isdir(path) or temperature <= 0:
        return None

    gold = load_scorer(GOLD, "gold")
    test = datasets.load_from_disk(path)["test"]
    if len(test) == 0:
        return None
    total = 0.0
    for row in test:
        d = abs(gold(completion_text(row["chosen"])) - gold(completion_text(row["rejected"])))
        total += 1 / (1 + math.exp(-d / temperature))
    return total / len(test)


def demo(cfg: DemoConfig) -> dict:
    started = time.time()
    out = os.path.abspath(cfg.output_dir)

    def show(message: str) -> None:
        print(f"[{time.time() - started:5.0f}s] {message}", flush=True)

    show(f"demo: run folder {out}")
    pipe = PipelineConfig(
        output_dir=out,
        seed=cfg.seed,
        annotators=cfg.annotators,
        sample=cfg.sample,
        sft=cfg.sft,
        reward=cfg.reward,
        ppo=cfg.ppo,
    )
    result = run_pipeline(pipe, show)
    paths = result["rounds"][-1]

    # Compare SFT and PPO on held-out prompts by the hidden gold preference and the reward model.
    show("eval: SFT vs PPO on held-out prompts")

    evaluate(
        EvalConfig(
            output_dir=os.path.join(out, "eval"),
            seed=cfg.seed,
            policies={"sft": result["sft"], "ppo": paths["ppo"]},
            reference=result["sft"],  # PPO's reference: KL is measured to the model it started from
            reward_model=paths["reward"],
            judge=GOLD,
            data=EvalDataConfig(path="builtin:reviews-prompts", split="test"),
            generation=EvalGenerationConfig(num_samples=cfg.eval_samples),
        )
    )

    figures = {"accuracy_ceiling": noise_ceiling(paths["export"], cfg.annotators.temperature)}
    report = write_report(out, figures, gold=GOLD)
    headline = summary(out, figures)
    headline["minutes"] = (time.time() - started) / 60
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(headline, f, indent=1)
    show(f"demo: report {report}")
    summarize(headline, show)
    return headline


def summarize(s: dict, show=print) -> None:
    def fmt(key: str, spec: str) -> str:
        value = s.get(key)
        return format(value, spec) if isinstance(value, (int, float)) else "n/a"

    gain = (
        s["gold_ppo"] - s["gold_sft"]
        if isinstance(s.get("gold_ppo"), float) and isinstance(s.get("gold_sft"), float)
        else None
    )
    rows = [
        (
            "gold reward SFT -> PPO",
            f"{fmt('gold_sft', '.2f')} -> {fmt('gold_ppo', '.2f')} (gain {gain:+.2f})" if gain is not None else "n/a",
        ),
        ("gold win rate PPO over SFT", fmt("gold_win_rate", ".0%")),
        ("reward model held-out accuracy", fmt("reward_accuracy", ".1%")),
        ("best achievable under noise", fmt("accuracy_ceiling", ".1%")),
        ("KL(PPO || SFT), held-out", f"{fmt('final_kl', '.2f')} nats"),
        ("demo wall time", f"{fmt('minutes', '.1f')} min"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        show(f"  {k:<{width}}  {v}")
