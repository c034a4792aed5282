"""`PPOConfig`: every hyperparameter of `rlhf ppo` (PPO, RLOO, GRPO), with a docstring under each field
(`rlhf ppo --help`).

Batch vocabulary (TRL's): each *update* samples `rollout.per_device_batch_size` episodes on every
process (`rollout.samples_per_prompt` = k responses to each of batch / k prompts), then runs `ppo.epochs`
passes over them in `ppo.num_minibatches` shuffled minibatches; a minibatch is one optimizer step of
`ppo.gradient_accumulation_steps` micro-batches. Steps in metrics.jsonl and checkpoints count updates.
`algorithm` picks the advantage: PPO's GAE over a value adapter, or RLOO's / GRPO's group baseline over
the k samples of a prompt (no value adapter); the clipped update is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.common.errors import ConfigError
from alignment.common.functions import check_function
from alignment.config.shared import AdapterConfig, CheckpointConfig, HubOptions, ModelConfig, TrackingConfig, require
from alignment.runtime.health import HealthConfig
from reward.preference import MIN_SPREAD


@dataclass
class PPODataConfig:
    RANGES: ClassVar = {"limit": ">= 1", "max_prompt_length": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    path: str = ""
    """Prompt rows (`prompt`: a string or a message list, or `messages` minus the final answers): a
    jsonl/json/parquet/csv file, a `datasets` folder, a hub id, or `builtin:reviews-prompts`."""
    split: str = "train"
    """Split to read (dataset folders, hub ids and builtin data)."""
    limit: int | None = None
    """Use only the first N prompts (quick runs)."""
    max_prompt_length: int = 256
    """Prompt tokens kept; longer prompts lose tokens from the left (the end is what the response continues)."""


@dataclass
class ValueConfig:
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    """The value LoRA adapter (a value head sits on its last hidden state)."""
    init_from_reward: bool = False
    """Start the value adapter and head as copies of the reward adapter and score head (one-base reward only)."""
    share_with_policy: bool = False
    """One adapter for policy and value (half the adapter memory, one backbone pass per training step)."""


@dataclass
class PPORewardConfig:
    RANGES: ClassVar = {"batch_size": ">= 1", "max_length": ">= 2", "min_std": "> 0"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    path: str | None = None
    """A reward-stage run folder. Carried as an adapter on the policy's base when it was trained on that base,
    else loaded as a separate model (any base or tokenizer)."""
    separate: bool = False
    """Load `path` as its own model even when it could ride on the policy's base as an adapter."""
    function: str | None = None
    """Programmatic reward `module:function`: f(prompts, completions) -> list[float], lists of strings passed by
    name (TRL's convention; `**kwargs` allowed), one float per completion. Excludes `path`."""
    monitor: str | None = None
    """A `module:function` like `function`, scored on every rollout and logged as `objective/monitor`, never
    trained on: a metric you trust (a gold preference, a safety classifier) to watch the proxy against."""
    normalize: Literal["auto", "stats", "running", "none"] = "auto"
    """Score normalisation: `stats` (the reward folder's reward_stats.json), `running` (running mean/std of all
    scores so far), `none`; `auto` is stats with a reward folder and none with a function."""
    min_std: float = MIN_SPREAD
    """The least spread `stats` and `running` divide by, in the reward model's Bradley-Terry units (log-odds).
    A model whose scores spread less than 0.1 prefers no completion to another more than ~54% of the time: it
    has learned (almost) no preference, and dividing by its spread would make its noise the objective (one
    spread 0.017, scaled 57x, drove PPO 90 nats from SFT with no sample ending; docs/worlds.md). Floored, its
    scores are scaled at most 10x, and the run warns. A model that ranks its held-out pairs no better than chance
    (the reward folder's eval.json) is never scaled up: its floor is 1, the Bradley-Terry scale β is measured in."""
    batch_size: int = 16
    """Texts per forward pass of a separate reward model."""
    max_length: int = 1024
    """Tokens of prompt + completion a separate reward model sees (cut from the left)."""


@dataclass
class RolloutConfig:
    RANGES: ClassVar = {"per_device_batch_size": ">= 1", "response_length": ">= 1", "temperature": "> 0"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    per_device_batch_size: int = 8
    """Episodes (sampled responses) per update on each process: batch / samples_per_prompt prompts."""
    samples_per_prompt: int = 1
    """k responses sampled for each prompt (>= 2 for rloo and grpo, whose baseline is the prompt's other samples);
    must divide per_device_batch_size."""
    response_length: int = 32
    """Most tokens sampled per response."""
    temperature: float = 0.7
    """Sampling temperature, also applied to every log-prob (policy and reference), so ratios and KL are exact."""
    stop_at_eos: bool = True
    """End a response at its first EOS (kept, tokens after it are padding and carry no loss)."""
    missing_eos_penalty: float | None = 1.0
    """Subtracted from the (normalised) score of a response with no EOS; None for no penalty."""
    broken_text_penalty: float | None = 1.0
    """Subtracted from the (normalised) score of a response whose tokens decode to a broken character (U+FFFD: bytes
    that form no text); None for no penalty. A reward model has rarely seen such bytes, and can score them high: on
    the recipe world PPO learned to open a third of its answers with one (benchmarks/worlds.py)."""


@dataclass
class PPOAlgoConfig:
    RANGES: ClassVar = {
        "epochs": ">= 1",
        "num_minibatches": ">= 1",
        "gradient_accumulation_steps": ">= 1",
        "cliprange": "> 0",
        "cliprange_value": "> 0",
        "vf_coef": ">= 0",
        "gamma": "[0, 1]",
        "lam": "[0, 1]",
        "target_kl": "> 0",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    epochs: int = 4
    """Passes over each rollout batch."""
    num_minibatches: int = 1
    """Shuffled minibatches per pass; each is one optimizer step."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per minibatch (memory: a micro-batch is batch / (num_minibatches * this) episodes)."""
    cliprange: float = 0.2
    """Policy ratio clip epsilon."""
    target_kl: float | None = None
    """Skips the rest of an update's optimizer steps once a minibatch's `policy/approxkl` (k3, mean per token, over
    every process; measured in its forward pass, so it shows how far the steps before it went) exceeds this
    (Stable-Baselines3's and CleanRL's `target_kl`; TRL's old `early_stopping`). The clip bounds the ratio only on
    the tokens sampled: through shared weights the other tokens can still move far in one update. Skipped steps
    still advance the learning-rate schedule; `policy/steps_skipped` counts them. None: every step runs."""
    cliprange_value: float = 0.2
    """Value clip range around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """PPO: normalise advantages to mean 0, std 1 over each process's rollout batch (RLOO/GRPO: see grpo.scale)."""
    logits_chunk_size: int = 1024
    """Response positions per LM-head call in scoring and training: only this many positions' vocabulary-wide
    logits exist at a time (never [batch, sequence, vocabulary]; on CPU also at most 4M logits, 27 positions of
    a 151,936-way vocabulary). Passes with under 4M logits in all keep them for the backward pass; larger ones
    recompute each chunk there."""
    old_logprobs_from_update: bool = True
    """Take the rollout policy's log-probs (PPO: and values) from the update's own on-policy forward pass, detached,
    instead of a scoring pass first, where that pass covers what the advantages need: RLOO/GRPO with one optimizer
    step per rollout (`epochs` 1, one minibatch; with kl.mode = reward also one micro-batch); PPO with one
    micro-batch per epoch (`num_minibatches` 1, `gradient_accumulation_steps` 1), whose first pass gives log-probs
    (and, with `value.share_with_policy`, values; a value adapter of its own is scored first) for GAE. The policy
    scored is the one about to be trained, so the numbers are the same (ratio exactly 1, the same run bit for bit) and a forward pass per rollout is saved, as
    TRL's GRPO does; false scores first."""
    checkpoint_roles: list[str] = field(default_factory=lambda: ["policy", "value"])
    """With `model.gradient_checkpointing`: the training passes (policy, value) that recompute their activations
    in the backward pass; the others keep them (faster, more memory)."""


@dataclass
class GRPOAlgoConfig:
    scale: Literal["group", "batch", "none"] = "batch"
    """GRPO's advantage (r - group mean) / std: the std of the prompt's k scores (`group`, DeepSeekMath), of
    the whole batch over all processes (`batch`, TRL's scale_rewards="batch"), or no division (`none`, Dr. GRPO).
    `group` weights prompts by how little their samples differ, so it does not ascend J itself."""


@dataclass
class LossConfig:
    aggregation: Literal["sequence_mean", "token_mean", "constant"] = "constant"
    """RLOO/GRPO: how per-token losses sum to the step's loss. `constant`: sum / (sequences * response_length)
    (Dr. GRPO; the gradient is a fixed multiple of REINFORCE's, so it ascends J); `sequence_mean`: mean per
    sequence, then over sequences (GRPO paper; favours short sequences); `token_mean`: mean over every token of
    the optimizer step on all processes (DAPO, TRL's default). PPO always takes the token mean."""


@dataclass
class KLConfig:
    RANGES: ClassVar = {"coef": ">= 0", "target": "> 0", "horizon": "> 0"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    mode: Literal["reward", "loss"] = "reward"
    """Where the KL to the reference enters: `reward` subtracts coef * (per-token estimator, summed) from each
    score (RLOO's and PPO's form; with k1 its optimum is exactly pi_ref * exp(r / coef) / Z); `loss` (rloo and
    grpo only) adds coef * the k3 estimate per token to the loss, as GRPO does: its gradient is that of
    KL(pi_ref || pi), so it regularises but does not aim at that optimum."""
    estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL in the reward: k1 = log p - log p_ref (unbiased), k3 = (r - 1) - log r (unbiased, >= 0)."""
    coef: float = 0.05
    """KL coefficient beta (the initial value when adaptive)."""
    controller: Literal["fixed", "adaptive"] = "fixed"
    """`adaptive` moves beta towards `target` KL (Ziegler et al. 2019)."""
    target: float = 6.0
    """Adaptive: target KL per episode (nats, summed over tokens)."""
    horizon: float = 10000.0
    """Adaptive: episodes over which beta adjusts."""


@dataclass
class PPOTrainConfig:
    RANGES: ClassVar = {
        "total_episodes": ">= 1",
        "learning_rate": "> 0",
        "warmup_ratio": "[0, 1]",
        "weight_decay": ">= 0",
        "adam_eps": "> 0",
        "max_grad_norm": ">= 0",
        "log_steps": ">= 1",
        "sample_steps": ">= 0",
        "sample_rows": ">= 1",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    total_episodes: int = 1024
    """Episodes (sampled responses) over all processes; updates = ceil(total / (batch * processes))."""
    learning_rate: float = 1e-5
    """Peak learning rate of the policy and value adapters and the value head."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "linear"
    """Decay after warmup, over all optimizer steps."""
    warmup_ratio: float = 0.0
    """Fraction of the optimizer steps spent warming up linearly."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_eps: float = 1e-5
    """AdamW epsilon."""
    lr_from_beta: float | None = 0.25
    """Above this KL coefficient the learning rate is learning_rate * lr_from_beta / kl.coef (initial coef):
    the KL-regularised objective's curvature grows with beta and its optimum moves closer to the reference,
    so a fixed step overshoots it. null: learning_rate whatever beta."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    log_steps: int = 1
    """Log metrics every this many updates."""
    sample_steps: int = 10
    """Log a table of sample completions (prompt, completion, score) at the first update and every this many
    updates; 0 never."""
    sample_rows: int = 8
    """Rows in each sample table."""


@dataclass
class PPOConfig(HubOptions):
    RUN_PATHS: ClassVar = {
        "output_dir": "{algorithm}",
        "model.name_or_path": "sft",
        "reward.path": ("reward", "reward.function"),
    }
    """With `run=runs/x`: the base runs/x/sft, the reward model runs/x/reward (unless reward.function is set), the
    output runs/x/<algorithm> (runs/x/ppo, runs/x/rloo, runs/x/grpo)."""
    run: str = ""
    """Run folder of the pipeline (runs/x): base model runs/x/sft, reward.path runs/x/reward (unless
    reward.function is set), output_dir runs/x/<algorithm> (ppo, rloo or grpo)."""
    output_dir: str = ""
    """Run folder: policy adapter (top level), tokenizer, optional merged/, checkpoints, metrics.jsonl and
    manifest.json."""
    seed: int = 42
    """Seed for adapter init, prompt order, sampling and minibatch shuffling (the same on every process)."""
    algorithm: Literal["ppo", "rloo", "grpo"] = "ppo"
    """`ppo` (GAE over a value adapter), `rloo` (leave-one-out baseline over a prompt's k samples) or `grpo`
    (each score minus its group's mean, divided by a std per `grpo.scale`); rloo and grpo create no value adapter."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The frozen base: an SFT run folder (its merged model) or any causal LM."""
    policy: AdapterConfig = field(default_factory=AdapterConfig)
    """The policy LoRA adapter."""
    value: ValueConfig = field(default_factory=ValueConfig)
    reward: PPORewardConfig = field(default_factory=PPORewardConfig)
    data: PPODataConfig = field(default_factory=PPODataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ppo: PPOAlgoConfig = field(default_factory=PPOAlgoConfig)
    grpo: GRPOAlgoConfig = field(default_factory=GRPOAlgoConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    train: PPOTrainConfig = field(default_factory=PPOTrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    """Guardrails on the rollouts against the first update's (the reference's): warnings, an opt-in stop on KL."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    save_merged: bool = False
    """Also save the policy merged into the base under output_dir/merged."""

    def validate(self) -> None:
        require(self, "output_dir", "model.name_or_path", "data.path")
        if bool(self.reward.path) == bool(self.reward.function):
            raise ConfigError("set exactly one of 'reward.path' (a reward-stage folder) or 'reward.function'")
        if self.reward.function and ":" not in self.reward.function:
            raise ConfigError(f"'reward.function' must be module:function, got '{self.reward.function}'")
        if self.reward.monitor and ":" not in self.reward.monitor:
            raise ConfigError(f"'reward.monitor' must be module:function, got '{self.reward.monitor}'")
        if self.reward.function and self.reward.normalize == "stats":
            raise ConfigError("'reward.normalize' = stats needs a reward folder's reward_stats.json, not a function")
        if self.reward.function and self.value.init_from_reward:
            raise ConfigError("'value.init_from_reward' needs a reward adapter (reward.path), not a function")
        r, p = self.rollout, self.ppo
        self._validate_algorithm()
        per_step = p.num_minibatches * p.gradient_accumulation_steps
        if r.per_device_batch_size % per_step:
            raise ConfigError(
                f"'rollout.per_device_batch_size' ({r.per_device_batch_size}) must be divisible by "
                f"ppo.num_minibatches * ppo.gradient_accumulation_steps ({per_step})",
                key="rollout.per_device_batch_size",
            )
        for key, value in [
            ("rollout.per_device_batch_size", r.per_device_batch_size),
            ("rollout.response_length", r.response_length),
            ("rollout.samples_per_prompt", r.samples_per_prompt),
            ("ppo.epochs", p.epochs),
            ("ppo.num_minibatches", p.num_minibatches),
            ("ppo.gradient_accumulation_steps", p.gradient_accumulation_steps),
            ("ppo.logits_chunk_size", p.logits_chunk_size),
            ("train.total_episodes", self.train.total_episodes),
            ("train.log_steps", self.train.log_steps),
        ]:
            if value < 1:
                raise ConfigError(f"'{key}' must be >= 1, got {value}")
        unknown = sorted(set(p.checkpoint_roles) - {"policy", "value"})
        if unknown:
            raise ConfigError(
                f"'ppo.checkpoint_roles': unknown role {unknown[0]!r}; the roles that train are policy, value"
            )
        if r.temperature <= 0:
            raise ConfigError(f"'rollout.temperature' must be > 0, got {r.temperature}")
        if self.kl.controller == "adaptive" and (self.kl.target <= 0 or self.kl.horizon <= 0):
            raise ConfigError("'kl.target' and 'kl.horizon' must be > 0 for the adaptive controller")
        if self.value.init_from_reward and self.value.share_with_policy:
            raise ConfigError("'value.init_from_reward' and 'value.share_with_policy' exclude each other")
        for key, adapter in [("policy", self.policy), ("value.adapter", self.value.adapter)]:
            if adapter.method != "lora":
                raise ConfigError(f"'{key}.method' must be lora for one-base PPO, got '{adapter.method}'")
        check_function(self.reward.function, "reward.function", batch=True)  # last: they run the user's code
        check_function(self.reward.monitor, "reward.monitor", batch=True)

    def _validate_algorithm(self) -> None:
        """The group settings: k >= 2 dividing the batch for rloo/grpo; no value adapter; the KL's form and beta."""
        r, k = self.rollout, self.rollout.samples_per_prompt
        if self.kl.coef < 0:
            raise ConfigError(f"'kl.coef' must be >= 0, got {self.kl.coef}")
        if self.train.lr_from_beta is not None and self.train.lr_from_beta <= 0:
            raise ConfigError(f"'train.lr_from_beta' must be > 0 or null, got {self.train.lr_from_beta}")
        if self.algorithm != "ppo":
            if k < 2:
                raise ConfigError(
                    f"'rollout.samples_per_prompt' must be >= 2 for {self.algorithm} (its baseline is "
                    f"the other samples of the prompt), got {k}"
                )
            if self.value.init_from_reward:
                raise ConfigError(f"'value.init_from_reward': {self.algorithm} trains no value adapter")
        elif self.kl.mode == "loss":
            raise ConfigError("'kl.mode' = loss is for rloo and grpo; PPO puts the KL in the per-token reward")
        if k >= 1 and r.per_device_batch_size % k:
            raise ConfigError(
                f"'rollout.per_device_batch_size' ({r.per_device_batch_size}) must be divisible by "
                f"rollout.samples_per_prompt ({k})"
            )
