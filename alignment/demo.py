"""`rlhf demo`: the whole pipeline on the embedded tiny default, on a CPU, with no download.

    rlhf demo                      # writes runs/demo/report.md and plots
    rlhf demo output_dir=/tmp/demo annotators.temperature=0.5

A tiny Llama pretrained offline on a shipped corpus of reviews is fine-tuned (SFT), samples K
reviews per prompt, scripted annotators with a hidden preference (positive words good, negative
words bad) rank them through the real ranking server with Plackett-Luce noise, a reward model
learns their rankings, and PPO on one frozen base optimises against it. Then, from the same SFT model, the
same rankings and the same reward model, RLOO and GRPO (online, against the reward model) and DPO (offline,
from the rankings: pairwise and K-wise) train their own policies. One evaluation compares every policy with
SFT on held-out prompts by the hidden gold preference; the report puts the methods side by side.

    rlhf demo methods=[ppo]                 # the pipeline alone (PPO), as before the comparison
    rlhf demo methods=[dpo,dpo_kwise]       # pairwise vs K-wise DPO on the same rankings (no PPO)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import ClassVar

from alignment.assets import worlds
from alignment.common import files
from alignment.common.errors import ConfigError
from alignment.config.shared import require
from alignment.evaluate import EvalConfig, EvalDataConfig, EvalGenerationConfig, evaluate
from alignment.pipeline import AnnotatorsConfig, PipelineConfig, check_stages, train_policy
from alignment.pipeline import run as run_pipeline
from alignment.report import method_figures, methods_text, summary, write_report
from reward.model import completion_text

METHODS = {
    "ppo": ("PPO", "online samples scored by the reward model (policy + value adapters)"),
    "rloo": ("RLOO", "online samples scored by the reward model, 4 per prompt (leave-one-out baseline)"),
    "grpo": ("GRPO", "online samples scored by the reward model, 4 per prompt (group mean as baseline)"),
    "dpo": ("DPO (pairwise)", "the rankings, each expanded into its pairs (sigmoid DPO loss)"),
    "dpo_kwise": ("DPO (K-wise)", "the rankings whole (listwise Plackett-Luce DPO loss)"),
}
"""Method name -> (label, what it trains on); every one starts from the same SFT model and the same rankings."""


@dataclass
class DemoAnnotatorsConfig:
    """The scripted annotators; each setting left unset is the world's."""

    RANGES: ClassVar = {"count": ">= 1", "temperature": ">= 0", "careless": ">= 0", "per_task": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    count: int | None = None
    """Scripted annotators ranking in parallel (default: the world's)."""
    temperature: float | None = None
    """Their Plackett-Luce noise (0: always the gold order; default: the world's)."""
    careless: int | None = None
    """How many of them rank at random (default: the world's)."""
    per_task: int = 1
    """Distinct annotators per task."""

    def resolve(self, world: worlds.World) -> AnnotatorsConfig:
        pick = lambda mine, theirs: theirs if mine is None else mine  # noqa: E731
        return AnnotatorsConfig(
            count=pick(self.count, world.annotators),
            score=world.spec(),
            temperature=pick(self.temperature, world.temperature),
            careless=pick(self.careless, world.careless),
            per_task=self.per_task,
        )


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    """Run folder; report.md and the plots are written here."""
    seed: int = 42
    """Seed of every stage."""
    world: str = "reviews"
    """The world (alignment/assets/worlds.py): its base model, data, hidden gold, annotators, K and lengths."""
    annotators: DemoAnnotatorsConfig = field(default_factory=DemoAnnotatorsConfig)
    sample: list[str] = field(default_factory=list)
    """Overrides for the sampling stage (after the world's prompts, K, repeats and lengths)."""
    sft: list[str] = field(default_factory=list)
    """Overrides for SFT."""
    reward: list[str] = field(default_factory=lambda: ["train.epochs=3"])
    """Overrides for the reward stage."""
    ppo: list[str] = field(default_factory=list)
    """Overrides for PPO (the world's gold is watched on every rollout, never trained on: the overoptimisation view)."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Policy methods trained from the same rankings and compared: ppo, rloo, grpo, dpo (pairwise), dpo_kwise."""
    rloo: list[str] = field(default_factory=list)
    """Overrides for RLOO (configs/rloo.yaml), on the pipeline's reward model."""
    grpo: list[str] = field(default_factory=list)
    """Overrides for GRPO (configs/grpo.yaml), on the pipeline's reward model."""
    dpo: list[str] = field(default_factory=list)
    """Overrides for pairwise DPO (configs/dpo.yaml, loss.type=sigmoid: every pair of each K-wise ranking)."""
    dpo_kwise: list[str] = field(default_factory=list)
    """Overrides for K-wise DPO (configs/dpo.yaml, loss.type=plackett_luce: each ranking whole)."""
    eval_samples: int = 64
    """Completions per held-out prompt for the final comparison (6 prompts: 384 pairs, win-rate stderr ~2%)."""
    best_of: int = 4
    """Best-of-N baseline beside the methods: N SFT samples per draw, the reward model's pick (0: none)."""
    campaign: bool = True
    """A blind campaign after the evaluation: scripted people (3 careful, 1 careless, with gold tasks mixed in) rank
    every policy's completions through the ranking app; its ratings sit beside the automatic figures."""

    def validate(self) -> None:
        require(self, "output_dir")
        worlds.get(self.world)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) < len(self.methods):
            raise ConfigError(
                f"'methods' must name each of {', '.join(METHODS)} at most once (at least one), got {self.methods}",
                key="methods",
            )


def world_overrides(world: worlds.World) -> dict[str, list[str]]:
    """Each stage's overrides that put it in `world`: its base, data, gold and lengths; nothing a method tunes."""
    rollout = world.rollout_tokens or world.max_new_tokens
    prompts = f"data.path=builtin:{world.name}-prompts"
    lengths = [f"data.max_prompt_length={world.max_prompt_tokens}"]
    online = [prompts, *lengths, f"rollout.response_length={rollout}", f"reward.monitor={world.spec(batch=True)}"]
    completion = world.max_prompt_tokens + world.max_new_tokens
    sft = [f"model.name_or_path={world.model}", f"data.path=builtin:{world.name}-sft", f"data.max_length={completion}"]
    sample = [f"prompts=builtin:{world.name}-prompts", f"repeats={world.repeats()}", f"k={world.k}"]
    sample.append(f"max_new_tokens={world.max_new_tokens}")
    dpo = [*lengths, f"data.max_length={completion}"]
    return {"sft": sft, "sample": sample, "reward": [f"data.max_length={completion}"], "online": online, "dpo": dpo}


def noise_ceiling(export_dir: str, world: worlds.World, annotators: AnnotatorsConfig) -> float | None:
    """Best held-out pairwise accuracy any reward model can reach under the annotators' noise.

    A pair whose gold scores differ by d is labelled the right way round with probability
    sigmoid(d / T) (Plackett-Luce on two items), so the best predictor (the gold order) agrees with
    the label that often; equal gold scores are coin flips, and so is every pair of a careless annotator.
    """
    import datasets

    path = os.path.join(export_dir, "pairwise")
    if not os.path.isdir(path) or annotators.temperature <= 0:
        return None
    test = datasets.load_from_disk(path)["test"]
    if len(test) == 0:
        return None
    careless = {f"annotator-{i + 1}" for i in range(annotators.count - annotators.careless, annotators.count)}
    total = 0.0
    for row in test:
        if row.get("annotator") in careless:
            total += 0.5
            continue
        chosen, rejected = completion_text(row["chosen"]), completion_text(row["rejected"])
        d = abs(world.gold_reward(chosen, row["prompt"]) - world.gold_reward(rejected, row["prompt"]))
        total += 1 / (1 + math.exp(-d / annotators.temperature))
    return total / len(test)


def method_pipeline(pipe: PipelineConfig, cfg: DemoConfig, name: str) -> PipelineConfig:
    """The pipeline config whose policy stage is method `name` (not ppo) with the world's and the demo's overrides."""
    overrides = world_overrides(worlds.get(cfg.world))
    if name in ("rloo", "grpo"):
        return replace(pipe, method=name, ppo=[*overrides["online"], *getattr(cfg, name)])
    # Both DPO losses read the K-wise export (configs/dpo.yaml's data) in the same batches of rankings and optimizer
    # steps: the pairwise one expands each ranking into its strict pairs, so only the loss differs.
    loss = "loss.type=sigmoid" if name == "dpo" else "loss.type=plackett_luce"
    return replace(pipe, method="dpo", dpo=[loss, *overrides["dpo"], *getattr(cfg, name)])


def demo(cfg: DemoConfig) -> dict:
    started = time.time()
    out = os.path.abspath(cfg.output_dir)

    def show(message: str) -> None:
        print(f"[{time.time() - started:5.0f}s] {message}", flush=True)

    # 1. The pipeline (SFT -> sample -> rank -> export -> reward -> PPO); without ppo it stops at the reward model.
    #    Every other method's stage config is checked first, so a bad override fails before SFT trains.
    world = worlds.get(cfg.world)
    overrides = world_overrides(world)
    show(f"demo: world {world.name} ({world.gold_kind}; {world.about}), run folder {out}")
    pipe = PipelineConfig(
        output_dir=out,
        seed=cfg.seed,
        annotators=cfg.annotators.resolve(world),
        sample=[*overrides["sample"], *cfg.sample],
        sft=[*overrides["sft"], *cfg.sft],
        reward=[*overrides["reward"], *cfg.reward],
        ppo=[*overrides["online"], *cfg.ppo],
        to_stage="ppo" if "ppo" in cfg.methods else "reward",
    )
    others = {name: method_pipeline(pipe, cfg, name) for name in cfg.methods if name != "ppo"}
    for other in others.values():
        check_stages(other, out)
    result = run_pipeline(pipe, show)
    paths = result["rounds"][-1]
    seconds = {"ppo": result["seconds"].get("round-1/ppo")}

    # 2. Every other method from the same SFT model, rankings (export) and reward model, each in its own folder.
    for name, other in others.items():
        paths[name] = os.path.join(out, name)
        seconds[name] = train_policy(other, paths, paths[name], f"round-1/{name}", show)

    # 3-4. Every policy against SFT; the report, demo.json and the terminal summary.
    return compare(cfg, result["sft"], paths, seconds, started, show)


def compare(cfg: DemoConfig, sft: str, paths: dict, seconds: dict, started: float, show=print) -> dict:
    """Evaluate SFT and every method's policy (`paths[name]`, with the round's `reward` and `export`), write the
    report and demo.json, print the summary; `seconds`: each method's training time. Returns demo.json's content."""
    out = os.path.abspath(cfg.output_dir)
    # 3. One evaluation of every policy against SFT on held-out prompts, by the hidden gold preference and the
    #    reward model; common random draws, so adding policies leaves each one's samples (and PPO's figures) as is.
    world = worlds.get(cfg.world)
    baselines = {f"bon{cfg.best_of}": f"bon:{cfg.best_of}:{sft}"} if cfg.best_of else {}
    show(f"eval: SFT vs {', '.join([*baselines, *cfg.methods])} on held-out prompts")
    evaluation = evaluate(
        EvalConfig(
            output_dir=os.path.join(out, "eval"),
            seed=cfg.seed,
            policies={"sft": sft, **baselines, **{name: paths[name] for name in cfg.methods}},
            reference=sft,  # every method's reference: KL is measured to the model it started from
            reward_model=paths["reward"],
            judge=world.spec(),
            data=EvalDataConfig(
                path=f"builtin:{world.name}-prompts", split="test", max_prompt_length=world.max_prompt_tokens
            ),
            generation=EvalGenerationConfig(
                num_samples=cfg.eval_samples, max_new_tokens=world.eval_tokens or world.max_new_tokens
            ),
        )
    )

    # 4. People as the judge: a blind campaign over the same completions, ranked through the app.
    people = human_campaign(cfg, out, world, show) if cfg.campaign else None

    # 5. The report, demo.json (PPO's headline figures, then `methods`) and the terminal summary.
    methods = method_figures(evaluation, [*baselines, *cfg.methods], seconds)
    for name, m in methods.items():
        m["label"], m["trained_on"] = METHODS.get(name) or best_of_label(cfg.best_of)
    figures = {"accuracy_ceiling": noise_ceiling(paths["export"], world, cfg.annotators.resolve(world))}
    report = write_report(out, figures, gold=world.spec(), methods=methods, campaign=people)
    headline = summary(out, figures)
    headline["minutes"] = (time.time() - started) / 60
    headline["methods"] = methods
    headline["campaign"] = campaign_summary(people) if people else None
    files.write_json(os.path.join(out, "demo.json"), headline)
    show(f"demo: report {report}")
    summarize(headline, show)
    return headline


def best_of_label(n: int) -> tuple[str, str]:
    return f"Best-of-{n} (SFT)", f"no training: {n} SFT samples per draw, the reward model's pick"


def human_campaign(cfg: DemoConfig, out: str, world: worlds.World, show=print) -> dict:
    """The blind campaign of the demo's evaluation (alignment/human_eval.py): every policy's completions of 8 draws
    per held-out prompt, 3 scripted people per task, gold tasks at a rate of 0.2, in the run's own store (kept out of
    its training export)."""
    from alignment.human_eval import run_campaign

    show("campaign: scripted people rank every policy blind through the ranking app")
    store, eval_dir = os.path.join(out, "rankings.db"), os.path.join(out, "eval")
    return run_campaign(eval_dir, store, score=world.spec(), seed=cfg.seed, show=show)


def campaign_summary(report: dict) -> dict:
    """What demo.json keeps of the campaign: both orders, each policy's rating with its interval, the careless
    annotator as gold tasks and the reliability estimate saw them."""
    gold = report.get("order_agreement", {}).get("judge", {})
    people = report.get("annotators", {})
    return {
        "order": report["order"],
        "gold_order": gold.get("order"),
        "kendall_tau": gold.get("kendall_tau"),
        "ratings": report["ratings"],
        "annotators": {name: {k: a.get(k) for k in ANNOTATOR_KEYS} for name, a in people.items()},
    }


ANNOTATOR_KEYS = ("rankings", "gold_accuracy", "reliability", "weight")


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
    if s.get("methods"):
        show("methods trained from the same rankings (held-out prompts, gold preference):")
        for line in methods_text(s["methods"]):
            show(f"  {line}")
