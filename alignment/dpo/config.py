"""`DPOConfig`: every hyperparameter of `rlhf dpo`, with a docstring under each field (`rlhf dpo --help`).

Batch vocabulary: a micro-batch holds `train.per_device_batch_size` ranked prompts on each process (a
pairwise row is a prompt with K = 2), and all their completions go through the model in one forward
pass; an optimizer step is `train.gradient_accumulation_steps` micro-batches on every process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.common.errors import ConfigError
from alignment.config.shared import (
    AdapterConfig,
    CheckpointConfig,
    HubOptions,
    ModelConfig,
    TrackingConfig,
    TrainConfig,
    require,
)
from alignment.runtime.health import HealthConfig


@dataclass
class DPODataConfig:
    RANGES: ClassVar = {
        "test_size": ">= 0",
        "k": ">= 2",
        "limit": ">= 1",
        "max_length": ">= 2",
        "max_prompt_length": ">= 1",
        "max_completion_length": ">= 1",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    path: str = ""
    """K-wise rankings (`prompt`, `completions`, `ranks`, or `scores` as a soft label) or TRL preference rows
    (`prompt`/`chosen`/`rejected`, strings or message lists, optional `chosen_probability` soft label): a jsonl/json/parquet/csv file, a
    `datasets` folder, a hub id, or `builtin:reviews-rankings`."""
    split: str = "train"
    """Split to train on (dataset folders and hub ids)."""
    eval_path: str | None = None
    """Held-out preferences; otherwise `test_size` of the prompts are held out from `path`."""
    eval_split: str = "test"
    """Split of eval_path to evaluate on (dataset folders and hub ids; files are read whole)."""
    test_size: float = 0.1
    """Held-out share (<1) or count (>=1) of distinct prompts when there is no eval_path; 0 for none."""
    unusable: Literal["drop", "error"] = "drop"
    """Rows with no preference (chosen == rejected, a text ranked apart from itself, or every completion tied
    under loss.ties=drop): `drop` skips and counts them (a warning), `error` stops at the first, naming its row.
    No usable row at all is an error."""
    k: int | None = None
    """Require exactly K completions per row (rows with another K, pairs included, are an error); None accepts
    any K >= 2."""
    limit: int | None = None
    """Use only the first N rows (quick runs)."""
    max_length: int = 512
    """Tokens of prompt + completion; completions are cut from the right to fit."""
    max_prompt_length: int = 256
    """Prompt tokens kept; longer prompts lose tokens from the left (the end is what completions continue)."""
    max_completion_length: int | None = None
    """Completion tokens kept (EOS included), cut from the right; None: whatever max_length leaves."""
    annotator_weights: Literal["equal", "estimated"] = "equal"
    """Each training ranking's weight in the loss: `equal`, or `estimated`: its row's `annotator_weight` (from
    `rlhf rank export`: each annotator's estimated reliability), scaled to mean 1, so careless rankings count less."""


@dataclass
class DPOLossConfig:
    RANGES: ClassVar = {
        "beta": "> 0",
        "tie_param": "> 0",
        "sft_weight": ">= 0",
        "off_support_weight": ">= 0",
        "label_smoothing": "[0, 0.5)",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    type: Literal["sigmoid", "ipo", "plackett_luce"] = "plackett_luce"
    """`sigmoid` (DPO), `ipo`, or `plackett_luce` (listwise DPO over a whole ranking). sigmoid and ipo use
    every strict pair of a K-wise ranking; at K = 2 all three see the same pair (and PL equals sigmoid)."""
    beta: float = 0.1
    """KL strength: the implicit reward is beta * log(pi / pi_ref)."""
    ties: Literal["drop", "davidson"] = "drop"
    """Tied completions: no comparison inside a tie (`drop`), or Davidson-Luce tie likelihood (plackett_luce only)."""
    tie_param: float = 1.5
    """Davidson nu (> 0): how likely ties are at equal reward."""
    length_normalize: bool = False
    """Use the mean log-prob per completion token instead of the sum (TRL's IPO and `sigmoid_norm` do)."""
    label_smoothing: float = 0.0
    """eps: a hard label (ranks, or a pair without `chosen_probability`) is taken as right with probability 1 - eps,
    so the loss is (1 - eps) loss(ranking) + eps loss(reversed ranking), as a soft pair label of 1 - eps (cDPO,
    TRL's `label_smoothing`; at K = 2 exactly). It bounds the margin DPO drives a pair to (beta h = logit(1 - eps))
    instead of pushing it without end. Soft labels (`chosen_probability`, `scores`) are used as they are."""
    sft_weight: float = 0.0
    """Weight of an NLL term on each prompt's best-ranked completion (mean per token; RPO, TRL's `rpo_alpha`): keeps
    the preferred answers likely while the preference loss pushes the others down (0: plain DPO)."""
    off_support_weight: float = 0.0
    """Weight of a term that keeps the probability the policy gives tokens no training completion contains at most
    the reference's, per position (mean nats of the rise): DPO's likelihood displacement sends probability there
    (broken bytes, words from nowhere). 0 on data that uses every token. Needs a reference pass every step."""
    precompute_ref: bool = False
    """Compute the reference log-probs of every training completion once before training (one pass with
    adapters off), instead of a reference forward pass in every step."""


@dataclass
class DPOTrainConfig(TrainConfig):
    RANGES: ClassVar = {**TrainConfig.RANGES, "lr_from_beta": "> 0", "min_pairs_per_step": ">= 0"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    lr_from_beta: float | None = 0.3
    """Above this beta the learning rate is learning_rate * lr_from_beta / loss.beta, as PPO's rule for kl.coef: the
    log-ratios DPO must reach scale as r / beta, so a fixed step overshoots a near optimum. Below it the rate stays
    learning_rate: 3x the rate at beta 0.1 left K-wise DPO at 14-92% of the exact gain where learning_rate reaches
    97-99%, and pairwise DPO no better (docs/worlds.md). null: learning_rate whatever beta."""
    min_pairs_per_step: int = 24
    """The fewest comparisons (strict pairs of the rankings, every pair of a scored one, on average) one optimizer step
    averages over, every process and micro-batch together: where the rankings hold fewer at per_device_batch_size
    (K = 2: one pair each, K = 3: three), each device takes more rankings per step (`rankings_per_device`). Adam
    moves the policy about as far per step whatever the gradient's signal, so many steps over a few noisy
    comparisons walk it off the reference (rankings of 2 that carried no preference: KL 5.8 nats, a fifth of the
    samples never ending). 0: off."""


@dataclass
class DPOEvalConfig:
    RANGES: ClassVar = {"batch_size": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    batch_size: int | None = None
    """Prompts per evaluation forward pass on each process; None uses train.per_device_batch_size."""


@dataclass
class DPOConfig(HubOptions):
    RUN_PATHS: ClassVar = {
        "output_dir": "dpo",
        "model.name_or_path": "sft",
        "data.path": "export/kwise",
        "data.eval_path": "export/kwise",
    }
    """With `run=runs/x`: trains on runs/x/sft (also the reference) with the export runs/x/export/kwise (its test
    split held out)."""
    run: str = ""
    """Run folder of the pipeline (runs/x): base model runs/x/sft, data runs/x/export/kwise, output_dir runs/x/dpo."""
    output_dir: str = ""
    """Run folder: the policy adapter, tokenizer, config.yaml, metrics.jsonl, eval.json, manifest.json, checkpoints."""
    seed: int = 42
    """Seed for the adapter init, the held-out split and the data order."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base: an SFT run folder (its merged model), a model folder or hub id. It is also the reference."""
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    """The policy adapter (LoRA or IA3: the reference is the base with it switched off)."""
    data: DPODataConfig = field(default_factory=DPODataConfig)
    loss: DPOLossConfig = field(default_factory=DPOLossConfig)
    train: DPOTrainConfig = field(default_factory=DPOTrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: DPOEvalConfig = field(default_factory=DPOEvalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    """Guardrails: the policy's own samples against the reference's (EOS rate, broken characters, KL budget) at each
    evaluation and at the end, and the chosen log-prob over training."""
    save_merged: bool = False
    """Also save the policy merged into the base under output_dir/merged (a standalone model)."""

    def validate(self) -> None:
        require(self, "output_dir", "model.name_or_path", "data.path")
        if self.loss.ties == "davidson" and self.loss.type != "plackett_luce":
            raise ConfigError(
                "'loss.ties=davidson' needs loss.type=plackett_luce (sigmoid and ipo drop ties)", key="loss.ties"
            )
        if self.adapter.method not in ("lora", "ia3"):
            raise ConfigError(
                f"'adapter.method' must be lora or ia3 for DPO (the reference is the base with the adapter off), "
                f"got '{self.adapter.method}'",
                key="adapter.method",
            )
        d = self.data
        if d.max_length <= d.max_prompt_length:
            raise ConfigError(
                f"'data.max_length' ({d.max_length}) must exceed 'data.max_prompt_length' ({d.max_prompt_length})",
                key="data.max_length",
            )
