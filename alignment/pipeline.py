"""`rlhf pipeline CONFIG`: SFT, sampling, ranking, export, reward training and the policy stage, in order.

    rlhf pipeline configs/pipeline.yaml                       # the tiny default, scripted annotators
    rlhf pipeline configs/pipeline.yaml annotators.kind=people  # serve the ranking app and wait for people
    rlhf pipeline configs/pipeline.yaml from_stage=reward      # resume after the ranking
    rlhf pipeline configs/pipeline.yaml rounds=2               # iterated RLHF: sample again from the new policy
    rlhf pipeline configs/pipeline.yaml rounds=3 acquisition.method=dopt   # active ranking: see below
    rlhf pipeline configs/pipeline.yaml method=dpo             # or rloo, grpo (default ppo): the policy stage

Each stage runs as its own process (under `accelerate launch` when `launch` names a config) and
reads and writes the run folder:

    output_dir/{sft,sample,export,reward,<method>}/  rankings.db  logs/<stage>.log    (round 1)
    output_dir/round-N/{sample,export,reward,<method>}/                              (rounds 2, 3, ...)

With scripted annotators the ranking server is started and annotators rank through its HTTP API
by a hidden score with Plackett-Luce noise; with people the server runs until the configured
number of rankings exists. Rankings from every round stay in one store and are all exported, so each
round's reward model is trained on every ranking so far.

Active ranking (`acquisition.*`, passed to `rlhf sample`, reward/rankings/active.py): round r + 1 samples
M candidates per prompt and lets round r's reward model (its uncertainty) choose which prompts and which
K completions go to people; round 1, with no reward model yet, chooses at random with the same M and
budget. `to_stage=reward` stops each round after the reward model (rankings in rounds, no PPO).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.common.errors import ConfigError, UserError
from alignment.common.functions import check_function, load_item_function
from alignment.config.loader import check_output_dir, load_config
from alignment.config.shared import require
from reward.rankings.active import AcquisitionConfig
from reward.rankings.annotator import ScriptedAnnotator, rank_in_parallel
from reward.rankings.app.process import RankServer
from reward.rankings.store import open_store

STAGES = ["sft", "sample", "rank", "export", "reward", "ppo"]
# The checkout this package runs from (an editable install or a clone): its configs/ are the defaults.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class AnnotatorsConfig:
    RANGES: ClassVar = {
        "count": ">= 1",
        "temperature": ">= 0",
        "per_task": ">= 1",
        "rankings": ">= 0",
        "careless": ">= 0",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    kind: Literal["scripted", "people"] = "scripted"
    """`scripted`: simulated annotators rank through the server's API; `people`: wait for humans."""
    count: int = 3
    """Scripted annotators ranking in parallel."""
    score: str = "alignment.assets.gold:gold_reward"
    """Scripted annotators' hidden preference: `module:function`, f(prompt, completion) -> float (higher = better),
    arguments by name (the prompt may be left out)."""
    temperature: float = 1.0
    """Plackett-Luce noise of scripted annotators (0 = always the true order)."""
    careless: int = 0
    """Scripted annotators (the last ones of `count`) who rank at random: what gold tasks and reliability catch."""
    per_task: int = 1
    """Distinct annotators per task (overlap makes agreement measurable)."""
    rankings: int = 0
    """People: continue once this many rankings exist (0: every task ranked per_task times)."""
    password: str = "demo-password"
    """Password of the scripted annotator accounts (local store only)."""


@dataclass
class PipelineConfig:
    RANGES: ClassVar = {"rounds": ">= 1", "num_processes": ">= 1", "port": "[1, 65535]"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""
    RUN_PATHS: ClassVar = {"output_dir": ""}
    """With `run=runs/x`: every stage reads and writes runs/x."""

    run: str = ""
    """Run folder for every stage (the key every stage takes); output_dir defaults to it."""
    output_dir: str = ""
    """Run folder for every stage (an explicit output_dir wins over run)."""
    seed: int = 42
    """Seed passed to every stage."""
    rounds: int = 1
    """Rounds of sample -> rank -> reward -> PPO; later rounds sample from the latest policy."""
    from_stage: Literal["sft", "sample", "rank", "export", "reward", "ppo"] = "sft"
    """Skip the stages before this one (their outputs must exist)."""
    to_stage: Literal["reward", "ppo"] = "ppo"
    """Last stage of each round: `reward` collects rankings in rounds without PPO (later rounds sample from SFT)."""
    launch: str | None = None
    """Accelerate config for the training stages (e.g. launch/zero3.yaml); None runs them in one process."""
    num_processes: int | None = None
    """Overrides the launch config's process count."""
    sft_config: str = "configs/sft.yaml"
    """SFT stage YAML."""
    sft: list[str] = field(default_factory=list)
    """Extra key=value overrides for SFT."""
    sample_config: str = "configs/sample.yaml"
    """Sampling stage YAML (the prompts, K, generation settings)."""
    sample: list[str] = field(default_factory=lambda: ["repeats=8"])
    """key=value overrides for `rlhf sample` (k, prompts, repeats, max_new_tokens, ...)."""
    export: list[str] = field(default_factory=list)
    """key=value overrides for `rlhf rank export`."""
    reward_config: str = "configs/reward.yaml"
    """Reward stage YAML."""
    reward: list[str] = field(default_factory=list)
    """Extra key=value overrides for the reward stage."""
    method: Literal["ppo", "rloo", "grpo", "dpo"] = "ppo"
    """Policy optimisation of each round: `ppo`, `rloo` or `grpo` (`rlhf ppo` with that algorithm, against the
    round's reward model), or `dpo` (`rlhf dpo`, straight from the exported rankings). Output: <round>/<method>/."""
    ppo_config: str = "configs/ppo.yaml"
    """PPO stage YAML (method=ppo)."""
    rloo_config: str = "configs/rloo.yaml"
    """Online stage YAML for method=rloo."""
    grpo_config: str = "configs/grpo.yaml"
    """Online stage YAML for method=grpo."""
    ppo: list[str] = field(default_factory=list)
    """Extra key=value overrides for the online stage (ppo, rloo, grpo)."""
    dpo_config: str = "configs/dpo.yaml"
    """DPO stage YAML (method=dpo)."""
    dpo: list[str] = field(default_factory=list)
    """Extra key=value overrides for DPO."""
    annotators: AnnotatorsConfig = field(default_factory=AnnotatorsConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    host: str = "127.0.0.1"
    """Ranking server address when people rank."""
    port: int = 8000
    """Ranking server port when people rank."""

    def validate(self) -> None:
        require(self, "output_dir")
        if self.annotators.careless > self.annotators.count:
            raise ConfigError(
                f"'annotators.careless' ({self.annotators.careless}) exceeds 'annotators.count' "
                f"({self.annotators.count})",
                key="annotators.careless",
            )
        if self.acquisition.reward:
            raise UserError("'acquisition.reward' is set by the pipeline (the previous round's reward model)")
        if self.annotators.kind == "scripted":  # last: it imports and calls the user's code
            check_function(self.annotators.score, "annotators.score")


class Runner:
    """Runs stage commands as processes, logging each to output_dir/logs/<name>.log."""

    def __init__(self, cfg: PipelineConfig, show=print):
        self.cfg = cfg
        self.show = show
        self.logs = os.path.join(cfg.output_dir, "logs")
        self.seconds: dict[str, float] = {}
        """Wall time of every stage run so far, by name (e.g. `round-1/ppo`)."""
        os.makedirs(self.logs, exist_ok=True)

    def command(self, stage: str, args: list[str], train: bool) -> list[str]:
        if train and self.cfg.launch:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", self.cfg.launch]
            if self.cfg.num_processes:
                cmd += ["--num_processes", str(self.cfg.num_processes)]
            return cmd + ["-m", "alignment", stage, *args]
        return [sys.executable, "-m", "alignment", stage, *args]

    def run(self, name: str, stage: str, args: list[str], train: bool = False) -> float:
        log_path = os.path.join(self.logs, name.replace("/", "-") + ".log")
        start = time.time()
        self.show(f"{name}: running (log: {log_path})")
        with open(log_path, "w") as log:
            proc = subprocess.run(
                self.command(stage, args, train), stdout=log, stderr=subprocess.STDOUT, env={**os.environ}
            )
        if proc.returncode != 0:
            with open(log_path) as f:
                tail = [line.strip() for line in f.read().splitlines() if line.strip()][-1:]
            raise UserError(
                f"stage '{name}' failed (exit {proc.returncode}): {tail[0] if tail else ''} (log: {log_path})"
            )
        took = time.time() - start
        self.seconds[name] = took
        self.show(f"{name}: done in {took:.0f}s")
        return took


def rank_with_scripted_annotators(cfg: PipelineConfig, store_url: str, show=print) -> int:
    """Start the real ranking server and let scripted annotators rank every open task through its API."""

    judge = load_item_function(cfg.annotators.score, "annotators.score")
    store = open_store(store_url)
    names = [f"annotator-{i + 1}" for i in range(cfg.annotators.count)]
    existing = {u["name"] for u in store.list_users()}
    for name in names:
        if name not in existing:
            store.add_user(name, "annotator", cfg.annotators.password)
    store.close()
    log = os.path.join(cfg.output_dir, "logs", "rank-server.log")
    with RankServer(store=store_url, annotators_per_task=cfg.annotators.per_task, log_path=log) as server:
        show(f"rank: server {server.url}, {len(names)} scripted annotators")
        # One task, one ranking (per_task 1): every annotator shares the seed, so a task's ranks are
        # the same whichever thread leases it and the run is reproducible. With overlap they differ. Annotators
        # who differ (careless ones) rank only the tasks a hash of (seed, task) gives them, for the same reason.
        a = cfg.annotators
        careless = set(range(a.count - a.careless, a.count))

        def owns(i: int):
            if not careless or a.per_task > 1:
                return None
            return lambda task_id: random.Random(f"{cfg.seed}:owner:{task_id}").randrange(a.count) == i

        bots = [
            ScriptedAnnotator(
                server.url,
                name,
                a.password,
                judge,
                a.temperature,
                seed=cfg.seed + (i if a.per_task > 1 else 0),
                careless=i in careless,
                owns=owns(i),
            )
            for i, name in enumerate(names)
        ]
        try:
            saved = rank_in_parallel(bots)
        finally:
            for bot in bots:
                bot.close()
    return sum(saved)


def wait_for_people(cfg: PipelineConfig, store_url: str, show=print) -> int:
    """Serve the ranking app until enough rankings exist; people log in with accounts made by `rlhf rank users`."""

    store = open_store(store_url)
    needed = cfg.annotators.rankings or store.count_tasks() * cfg.annotators.per_task
    log = os.path.join(cfg.output_dir, "logs", "rank-server.log")
    with RankServer(
        store=store_url, annotators_per_task=cfg.annotators.per_task, host=cfg.host, port=cfg.port, log_path=log
    ) as server:
        show(
            f"rank: ranking app at {server.url} — waiting for {needed} rankings (Ctrl-C stops; resume with from_stage=export)"
        )
        while (done := len(store.rankings())) < needed:
            show(f"rank: {done}/{needed} rankings")
            time.sleep(10)
    store.close()
    return done


def stage_config(path: str) -> str:
    """A stage YAML as given, or, when a relative path is not found from here, the checkout's own copy.

    So `rlhf demo` and `rlhf pipeline` with their default `configs/*.yaml` work from any folder.
    """
    if os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(PROJECT_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def acquisition_args(acq: AcquisitionConfig, reward: str | None) -> list[str]:
    """`rlhf sample` overrides for active ranking with `reward` (the previous round's); random without one."""
    if not acq.active:
        return []
    method = acq.method if reward or not acq.needs_reward else "random"
    values = {**vars(acq), "method": method, "reward": reward if method != "random" else ""}
    return [f"acquisition.{key}={value}" for key, value in values.items() if value not in (None, "")]


def _run(cfg: PipelineConfig) -> str:
    # Every stage gets run=<this run folder>: what a stage reads by run (and the pipeline does not set) stays here.
    return f"run={os.path.abspath(cfg.output_dir)}"


def sft_args(cfg: PipelineConfig, sft_dir: str) -> list[str]:
    return [stage_config(cfg.sft_config), _run(cfg), f"output_dir={sft_dir}", f"seed={cfg.seed}", *cfg.sft]


def sample_args(cfg: PipelineConfig, out: str, store_url: str, policy: str, rnd: int, reward: str | None) -> list[str]:
    return [
        stage_config(cfg.sample_config),
        _run(cfg),
        f"output_dir={out}",
        f"store={store_url}",
        f"model.name_or_path={policy}",
        f"seed={cfg.seed + rnd}",
        f"tag=round-{rnd}",
        *acquisition_args(cfg.acquisition, reward),
        *cfg.sample,
    ]


def export_args(cfg: PipelineConfig, out: str, store_url: str) -> list[str]:
    return [_run(cfg), f"store={store_url}", f"output_dir={out}", f"seed={cfg.seed}", *cfg.export]


def ranking_stage_args(cfg: PipelineConfig, config: str, extra: list[str], out: str, sft_dir: str, kwise: str):
    """A stage that trains on the exported rankings (reward, DPO): its config, the SFT base, the export (train and
    held out), the seed, then the user's overrides."""
    return [
        stage_config(config),
        _run(cfg),
        f"output_dir={out}",
        f"model.name_or_path={sft_dir}",
        f"data.path={kwise}",
        f"data.eval_path={kwise}",
        f"seed={cfg.seed}",
        *extra,
    ]


def reward_args(cfg: PipelineConfig, out: str, sft_dir: str, kwise: str) -> list[str]:
    return ranking_stage_args(cfg, cfg.reward_config, cfg.reward, out, sft_dir, kwise)


def ppo_args(cfg: PipelineConfig, out: str, sft_dir: str, reward_dir: str) -> list[str]:
    config = {"ppo": cfg.ppo_config, "rloo": cfg.rloo_config, "grpo": cfg.grpo_config}[cfg.method]
    return [
        stage_config(config),
        _run(cfg),
        f"output_dir={out}",
        f"model.name_or_path={sft_dir}",
        f"reward.path={reward_dir}",
        f"seed={cfg.seed}",
        *cfg.ppo,
    ]


def dpo_args(cfg: PipelineConfig, out: str, sft_dir: str, kwise: str) -> list[str]:
    return ranking_stage_args(cfg, cfg.dpo_config, cfg.dpo, out, sft_dir, kwise)


def needs_reward(cfg: PipelineConfig, rnd: int) -> bool:
    """Whether round `rnd` trains a reward model: the online methods train against it and `to_stage=reward` asks for
    it; with method=dpo only active ranking does, choosing the next round's tasks with it (a DPO round never reads
    it, and it would take half the round's time)."""
    if cfg.method != "dpo" or cfg.to_stage == "reward":
        return True
    return cfg.acquisition.needs_reward and rnd < cfg.rounds


def policy_stage(cfg: PipelineConfig, out: str, sft_dir: str, reward_dir: str | None, export_dir: str):
    """(stage command, its arguments) of the round's policy optimisation, by `method`."""
    if cfg.method == "dpo":
        return "dpo", dpo_args(cfg, out, sft_dir, os.path.join(export_dir, "kwise"))
    return "ppo", ppo_args(cfg, out, sft_dir, reward_dir)


def train_policy(cfg: PipelineConfig, paths: dict, out: str, name: str, show=print) -> float:
    """One more policy stage (`cfg.method` with `cfg`'s overrides) from a finished round: the SFT base, that round's
    export (`paths["export"]`) and reward model (`paths["reward"]`), written to `out`. Returns its wall time in s.

    `rlhf demo` trains every method from the same rankings this way, each beside the round's own policy.
    """
    sft_dir = os.path.join(os.path.abspath(cfg.output_dir), "sft")
    command, args = policy_stage(cfg, out, sft_dir, paths["reward"], paths["export"])
    return Runner(cfg, show).run(name, command, args, train=True)


def check_stages(cfg: PipelineConfig, out: str) -> None:
    """Load every stage's config (YAML + the pipeline's and the user's overrides) before the first stage runs, so
    a bad PPO override is one line naming `pipeline stage ppo` now, not after SFT has trained."""
    from alignment.dpo.config import DPOConfig
    from alignment.ppo.config import PPOConfig
    from alignment.sft import SFTConfig
    from reward.rankings.config import ExportConfig
    from reward.rankings.sampling import SampleConfig
    from reward.train import RewardConfig

    store, sft_dir = os.path.join(out, "rankings.db"), os.path.join(out, "sft")
    kwise = os.path.join(out, "export", "kwise")
    stages = {
        "sft": (SFTConfig, sft_args(cfg, sft_dir)),
        "sample": (SampleConfig, sample_args(cfg, os.path.join(out, "sample"), store, sft_dir, 1, None)),
        "export": (ExportConfig, export_args(cfg, os.path.join(out, "export"), store)),
        "reward": (RewardConfig, reward_args(cfg, os.path.join(out, "reward"), sft_dir, kwise)),
    }
    command, args = policy_stage(
        cfg, os.path.join(out, cfg.method), sft_dir, os.path.join(out, "reward"), os.path.join(out, "export")
    )
    stages[cfg.method] = (DPOConfig if command == "dpo" else PPOConfig, args)
    for name, (cls, args) in stages.items():
        path = args[0] if args and "=" not in args[0] else None
        load_config(cls, path, args[1:] if path else args, label=f"pipeline stage {name}")


def run(cfg: PipelineConfig, show=print) -> dict:
    out = os.path.abspath(cfg.output_dir)
    check_output_dir(cfg.output_dir)
    check_stages(cfg, out)
    runner = Runner(cfg, show)
    store_url = os.path.join(out, "rankings.db")
    sft_dir = os.path.join(out, "sft")
    start_at = STAGES.index(cfg.from_stage)
    results: dict = {"rounds": []}

    # 1. SFT (once): every round's policy and reward model start from it.
    if start_at <= 0:
        runner.run("sft", "sft", sft_args(cfg, sft_dir), train=True)
    policy, reward = sft_dir, None
    for rnd in range(1, cfg.rounds + 1):
        first = rnd == 1
        rdir = out if first else os.path.join(out, f"round-{rnd}")
        paths = {s: os.path.join(rdir, s) for s in ("sample", "export", "reward", cfg.method)}

        # 2. Sample K completions per prompt from the current policy into the (shared) store; with acquisition,
        #    M candidates each, of which the previous round's reward model chooses what people rank.
        if not first or start_at <= 1:
            runner.run(
                f"round-{rnd}/sample", "sample", sample_args(cfg, paths["sample"], store_url, policy, rnd, reward)
            )

        # 3. Rank: scripted annotators through the real server, or people in the browser.
        if not first or start_at <= 2:
            started = time.time()
            if cfg.annotators.kind == "scripted":
                n = rank_with_scripted_annotators(cfg, store_url, show)
            else:
                n = wait_for_people(cfg, store_url, show)
            show(f"round-{rnd}/rank: {n} rankings in {time.time() - started:.0f}s")

        # 4. Export every ranking so far (all rounds) as K-wise and pairwise datasets.
        if not first or start_at <= 3:
            runner.run(f"round-{rnd}/export", "rank", ["export", *export_args(cfg, paths["export"], store_url)])

        # 5. Reward model on the SFT model, held-out split by prompt from the export (only when something reads it).
        if not needs_reward(cfg, rnd):
            paths.pop("reward")
        elif not first or start_at <= 4:
            kwise = os.path.join(paths["export"], "kwise")
            runner.run(f"round-{rnd}/reward", "reward", reward_args(cfg, paths["reward"], sft_dir, kwise), train=True)

        reward = paths.get("reward")
        if cfg.to_stage == "reward":
            results["rounds"].append(paths)
            continue
        # 6. The policy on one frozen base (the SFT model): PPO, RLOO or GRPO against this round's reward model,
        #    or DPO from the exported rankings.
        command, args = policy_stage(cfg, paths[cfg.method], sft_dir, reward, paths["export"])
        runner.run(f"round-{rnd}/{cfg.method}", command, args, train=True)
        policy = paths[cfg.method]
        results["rounds"].append(paths)
    results["sft"] = sft_dir
    results["policy"] = policy
    results["seconds"] = runner.seconds
    show(f"pipeline: done; final policy {policy}")
    return results
