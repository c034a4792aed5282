"""One frozen base, four roles: policy, value, reward and reference from one model in memory.

The base causal LM is wrapped once by PEFT and carries three LoRA adapters:
- `policy` (trainable): the language-model head on top gives the policy logits;
- `value` (trainable, or the policy adapter when `share_policy_value`): a scalar `value_head` on the
  last hidden states gives per-token values;
- `reward` (frozen): loaded from the reward stage's folder, a PEFT LoRA adapter saved from a
  sequence-classification model with its `score` Linear in `modules_to_save` (what
  `AutoPeftModelForSequenceClassification` loads); the score Linear becomes `reward_head`;
and the reference is the same base with every adapter disabled.

Trap (PLATFORM.md): PEFT's `set_adapter` and `disable_adapter` rewrite `requires_grad` (the active
adapter trainable, every other frozen). Switching roles that way would freeze the value adapter while
the policy runs and unfreeze nothing else on exit, which under ZeRO-3 crashes and under DDP silently
trains the wrong thing. Every switch here goes through `role()`, which puts back the flags fixed at
construction: policy and value LoRA + value head trainable, everything else frozen.

`forward(input_ids, attention_mask, role=...)` dispatches to the roles so that a DDP/DeepSpeed-wrapped
model is always entered through its wrapper's forward.
"""

from __future__ import annotations

import copy
import os
import re
from contextlib import contextmanager

import torch
from torch import nn

from alignment.common.errors import UserError
from alignment.config.shared import AdapterConfig
from alignment.runtime.generation import position_ids_from_mask
from alignment.runtime.logprobs import LOGITS_CHUNK_SIZE, score_tokens
from alignment.runtime.models import disable_dropout, portable_base

# What PEFT names a sequence-classification head in `modules_to_save` (it adds both for SEQ_CLS).
HEAD_NAMES = frozenset({"score", "classifier"})
ROLES = ("policy", "value", "reward", "reference", "policy_and_value", "policy_logprobs", "reference_logprobs")


def lora_config(cfg: AdapterConfig):
    """PEFT LoraConfig for a causal LM from the stage's adapter settings (PPO adapters are LoRA)."""
    from peft import LoraConfig

    if cfg.method != "lora":
        raise UserError(f"adapter.method: PPO's policy and value adapters are LoRA, got '{cfg.method}'")
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        modules_to_save=cfg.modules_to_save or None,
        task_type="CAUSAL_LM",
    )


def read_reward_adapter(folder: str):
    """(LoraConfig for a causal LM, adapter weights, score-head weights) from a reward stage adapter folder.

    The LoRA keys of a sequence-classification and a causal-LM model of one architecture are the same
    (both keep the backbone under the same attribute). Of the adapter's `modules_to_save`, the
    classification head (`score`/`classifier`) becomes `reward_head`; any other module trained in
    full (e.g. `embed_tokens`) stays in the adapter as the reward's own copy, used only while the
    reward role runs.
    """
    from peft import PeftConfig
    from peft.utils import load_peft_weights

    if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
        raise UserError(f"reward adapter: '{folder}' has no adapter_config.json (expected a PEFT adapter folder)")
    cfg = copy.deepcopy(PeftConfig.from_pretrained(folder))
    if cfg.peft_type != "LORA":
        raise UserError(f"reward adapter: '{folder}' is a {cfg.peft_type} adapter; one-base PPO needs LoRA")
    saved = set(cfg.modules_to_save or [])
    head_names = saved & HEAD_NAMES
    weights = load_peft_weights(folder, device="cpu")
    adapter, head = {}, {}
    for key, value in weights.items():
        module, _, param = key.rpartition(".")
        if module.rpartition(".")[2] in head_names:
            head[param] = value
        else:
            adapter[key] = value
    if "weight" not in head:
        raise UserError(f"reward adapter: '{folder}' saves no score head (modules_to_save={sorted(saved)})")
    cfg.modules_to_save = sorted(saved - HEAD_NAMES) or None
    cfg.task_type = "CAUSAL_LM"
    cfg.inference_mode = True
    return cfg, adapter, head


class PPOModel(nn.Module):
    """The four roles on one PEFT-wrapped base. Build with `build_ppo_model`."""

    def __init__(
        self, peft_model, value_head: nn.Linear | None, reward_head: nn.Linear | None, share_policy_value: bool
    ):
        super().__init__()
        self.peft = peft_model
        self.value_head = value_head
        self.reward_head = reward_head
        value_adapter = None if value_head is None else "policy" if share_policy_value else "value"
        self.adapters = {"policy": "policy", "value": value_adapter, "reward": "reward"}
        self.share_policy_value = share_policy_value
        self.logits_chunk_size = LOGITS_CHUNK_SIZE
        """Response positions per LM-head call in the log-prob roles (only that many positions' logits exist)."""
        self.checkpoint_roles = {"policy", "value", "reward", "reference"}
        """Roles whose passes recompute activations in the backward pass when gradient checkpointing is on."""
        self._disabled = False
        self._fix_trainable()

    # -- requires_grad bookkeeping -------------------------------------------------------------

    def _fix_trainable(self) -> None:
        """Decide once which parameters train: the policy and value LoRA weights, their adapters' full module
        copies (`modules_to_save`, e.g. the LM head) and the value head; never the reward adapter's."""
        trainable_adapters = {self.adapters["policy"], self.adapters["value"]} - {None}

        def trains(name: str) -> bool:
            return any(
                (f".{adapter}." in name and "lora_" in name) or f".modules_to_save.{adapter}." in name
                for adapter in trainable_adapters
            )

        self._trainable = {name: name.startswith("value_head.") or trains(name) for name, _ in self.named_parameters()}
        self.restore_requires_grad()

    def restore_requires_grad(self) -> None:
        """Put back the construction-time flags that PEFT's adapter switching overwrites."""
        for name, param in self.named_parameters():
            param.requires_grad_(self._trainable[name])

    def trainable_parameter_names(self) -> list[str]:
        return [name for name, train in self._trainable.items() if train]

    @contextmanager
    def role(self, name: str):
        """Run the block with `name`'s adapter active (policy, value, reward; reference: none), flags kept as built."""
        if name == "reward" and self.reward_head is None:
            raise UserError("this PPO model has no reward adapter (a separate reward model or function scores)")
        if name == "value" and self.value_head is None:
            raise RuntimeError("this model has no value adapter (RLOO and GRPO need none)")
        with self._adapter(None if name == "reference" else self.adapters[name]):
            yield

    def _current_role(self) -> str:
        """The role whose adapter runs now (policy when policy and value share one adapter)."""
        if self._disabled:
            return "reference"
        return next(role for role, adapter in self.adapters.items() if adapter == self.peft.active_adapter)

    def _current_adapter(self) -> str | None:
        """The adapter the base runs with now; None while adapters are disabled (the reference)."""
        return None if self._disabled else self.peft.active_adapter

    @contextmanager
    def _adapter(self, adapter: str | None):
        if adapter is None:
            was_disabled = self._disabled
            try:
                with self.peft.disable_adapter():
                    self._disabled = True
                    self.restore_requires_grad()
                    yield
            finally:
                self._disabled = was_disabled
                self.restore_requires_grad()
            return
        if self._disabled:
            # PEFT would re-enable adapters under the reference's feet; no PPO step needs this
            raise RuntimeError(f"cannot run the '{adapter}' adapter inside the reference role")
        previous = self.peft.active_adapter
        try:
            self._activate(adapter)
            yield
        finally:
            self._activate(previous)

    def _activate(self, adapter: str) -> None:
        if self.peft.active_adapter != adapter:
            self.peft.set_adapter(adapter)
            self.restore_requires_grad()

    # -- the roles -----------------------------------------------------------------------------

    def _backbone(self):
        """The transformer without its LM head (LoRA layers are injected in place, so adapters apply)."""
        return self.peft.get_base_model().base_model

    def _hidden(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        out = self._backbone()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state

    def _lm_logits(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        return self.peft(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def policy_logits(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Policy logits [B, S, V] for input_ids/attention_mask [B, S]."""
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        with self.role("policy"):
            return self._lm_logits(input_ids, attention_mask, position_ids)

    @torch.no_grad()
    def reference_logits(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Reference logits [B, S, V]: the base with adapters off (no graph: nothing here trains)."""
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        with self.role("reference"):
            return self._lm_logits(input_ids, attention_mask, position_ids)

    def values(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Value estimate per position [B, S] (float32); values[:, t] is V of the state after token t."""
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        with self.role("value"):
            return self._values(self._hidden(input_ids, attention_mask, position_ids))

    def policy_and_values(self, input_ids, attention_mask, position_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy logits [B, S, V], values [B, S]); one backbone pass when policy and value share an adapter."""
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        if not self.share_policy_value:
            return (
                self.policy_logits(input_ids, attention_mask, position_ids),
                self.values(input_ids, attention_mask, position_ids),
            )
        with self.role("policy"):
            hidden = self._hidden(input_ids, attention_mask, position_ids)
            logits = self.peft.get_base_model().get_output_embeddings()(hidden)
            return logits, self._values(hidden)

    def policy_logprobs(
        self,
        input_ids,
        attention_mask,
        position_ids=None,
        *,
        prompt_width: int,
        temperature: float,
        with_entropy: bool = False,
        with_values: bool = False,
    ):
        """(log-probs [B, T], entropy [B, T] or None, values [B, T] or None) of the response `input_ids[:, P:]`.

        The LM head runs only on the T response positions, `logits_chunk_size` at a time (never [B, S, V]);
        values[:, t] is V of the state before response token t. With `with_values` and a shared adapter the
        backbone runs once for both.
        """
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        shared = with_values and self.share_policy_value
        with self.role("policy"):
            logprobs, entropy, hidden = self._response_logprobs(
                input_ids, attention_mask, position_ids, prompt_width, temperature, with_entropy
            )
            if shared:
                values = self._values(hidden[:, prompt_width - 1 : -1])
        if with_values and not shared:
            values = self.values(input_ids, attention_mask, position_ids)[:, prompt_width - 1 : -1]
        return logprobs, entropy, values if with_values else None

    @torch.no_grad()
    def reference_logprobs(
        self,
        input_ids,
        attention_mask,
        position_ids=None,
        *,
        prompt_width: int,
        temperature: float,
        with_entropy: bool = False,
    ):
        """(log-probs [B, T], entropy or None) of the response under the reference (adapters off), chunked."""
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        with self.role("reference"):
            logprobs, entropy, _ = self._response_logprobs(
                input_ids, attention_mask, position_ids, prompt_width, temperature, with_entropy
            )
        return logprobs, entropy

    def _response_logprobs(self, input_ids, attention_mask, position_ids, prompt_width, temperature, with_entropy):
        """(log-probs, entropy or None, last hidden states or None) with the active adapter (`score_tokens`)."""
        stats = score_tokens(
            self.peft,
            input_ids,
            attention_mask,
            prompt_width,
            temperature,
            position_ids,
            self.logits_chunk_size,
            with_entropy,
            keep_hidden=self.share_policy_value,
        )
        return stats.logprobs, stats.entropy, stats.hidden

    @torch.no_grad()
    def reward_scores(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Reward [B] (float32): the score head on the hidden state of each row's last real token.

        Rows are right-padded responses after (possibly left-padded) prompts; the last real token is
        the rightmost position with attention_mask 1, which is where a sequence-classification model
        scores a right-padded row.
        """
        position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
        with self.role("reward"):
            hidden = self._hidden(input_ids, attention_mask, position_ids)
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (positions * attention_mask.long()).argmax(-1)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last_hidden = hidden[rows, last]
        return self.reward_head(last_hidden.to(self.reward_head.weight.dtype))[:, 0].float()

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        """Sample from the policy (`transformers` generate kwargs); returns prompt + response ids [B, S + T].

        Under ZeRO-3 call it inside `trl.models.utils.unwrap_model_for_generation` so weights are
        gathered once per rollout, not once per token.
        """
        # PPO scores every sample under the full softmax(logits / temperature); a top-k/top-p cut from
        # the model's generation_config (top_k=50 by default) would sample another distribution
        kwargs.setdefault("top_k", 0)
        kwargs.setdefault("top_p", 1.0)
        with self.role("policy"):
            return self.peft.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def forward(self, input_ids, attention_mask, role: str = "policy", position_ids=None, **kwargs):
        """Dispatch to a role (see ROLES), so wrapped (DDP/DeepSpeed) models are entered through forward.

        The log-prob roles take `prompt_width`, `temperature` and `with_entropy` (policy: `with_values`) as keywords.
        """
        fns = {
            "policy_logprobs": self.policy_logprobs,
            "reference_logprobs": self.reference_logprobs,
            "policy": self.policy_logits,
            "value": self.values,
            "reward": self.reward_scores,
            "reference": self.reference_logits,
            "policy_and_value": self.policy_and_values,
        }
        if role not in fns:
            raise ValueError(f"unknown role '{role}'; one of {ROLES}")
        return fns[role](input_ids, attention_mask, position_ids, **kwargs)

    # -- what Accelerate/DeepSpeed and trl's unwrap_model_for_generation ask of a HF model -----

    @property
    def config(self):
        """The base's config (Accelerate fills DeepSpeed `auto` bucket sizes from `hidden_size`)."""
        return self.peft.get_base_model().config

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.peft.get_base_model(), "is_gradient_checkpointing", False))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Checkpoint each decoder layer; the backward-pass recomputation replays the adapter of its forward."""
        # non-reentrant checkpointing: the reentrant kind drops gradients when no input requires grad,
        # which is always the case for adapters on a frozen base
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        base = self.peft.get_base_model()
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # transformers recomputes a layer in the backward pass with whatever adapter is active *then*. The
        # policy and value passes run through the same layers, so by the time the value loss backpropagates
        # the policy adapter may be active again: the recomputation would use the wrong LoRA weights
        # (silently wrong gradients when both ranks match, a shape error otherwise).
        for module in base.modules():
            fn = getattr(module, "_gradient_checkpointing_func", None)
            if fn is not None and not getattr(fn, "role_aware", False):
                module._gradient_checkpointing_func = self._role_aware(fn)

    def _role_aware(self, checkpoint_fn):
        def checkpointed(function, *args, **kwargs):
            if self._current_role() not in self.checkpoint_roles:
                return function(*args, **kwargs)  # this role keeps its activations: no recomputation
            forward_adapter = self._current_adapter()

            def run(*a, **k):
                if self._current_adapter() == forward_adapter:
                    return function(*a, **k)
                with self._adapter(forward_adapter):  # recomputing after a role switch
                    return function(*a, **k)

            return checkpoint_fn(run, *args, **kwargs)

        checkpointed.role_aware = True
        return checkpointed

    def gradient_checkpointing_disable(self) -> None:
        self.peft.get_base_model().gradient_checkpointing_disable()

    # -- saving --------------------------------------------------------------------------------

    def save_policy(
        self, folder: str, state_dict: dict | None = None, run_folder: str | None = None, run: str | None = None
    ) -> None:
        """Save the policy adapter so `PeftModel.from_pretrained(base, folder)` loads it as its default adapter.

        `state_dict` is the full model state (e.g. gathered from ZeRO-3 shards); default: the live weights.
        `run_folder`: where the adapter will live when `folder` is a temp folder it is staged in.
        """
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        if state_dict is not None:
            # keys of the full PPOModel state start with "peft."; PEFT expects them without it
            state_dict = {k[len("peft.") :]: v for k, v in state_dict.items() if k.startswith("peft.")}
        weights = get_peft_model_state_dict(self.peft, state_dict=state_dict, adapter_name="policy")
        os.makedirs(folder, exist_ok=True)
        # PEFT writes non-default adapter names into a subfolder; writing the files ourselves keeps the
        # folder loadable as is
        config = copy.deepcopy(self.peft.peft_config["policy"])
        config.inference_mode = True
        config.save_pretrained(folder)
        portable_base(folder, run, run_folder)  # the SFT base in the run folder `run` is recorded as sft/merged
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in weights.items()},
            os.path.join(folder, "adapter_model.safetensors"),
        )


def build_ppo_model(
    base: nn.Module,
    policy_config,
    value_config=None,
    reward_adapter: str | None = None,
    share_policy_value: bool = False,
    init_value_from_reward: bool = False,
    with_value: bool = True,
) -> PPOModel:
    """Wrap a loaded causal LM (frozen from here on) with the policy/value/reward adapters and the heads.

    policy_config / value_config: peft LoraConfig (see `lora_config`); value_config defaults to the
    policy's. reward_adapter: the reward stage's adapter folder (None when a separate reward model or a
    function scores). init_value_from_reward: start the value adapter and head as copies of the reward's.
    with_value False: no value adapter and no value head (RLOO, GRPO: the base carries policy + reward only).
    """
    from peft import get_peft_model

    hidden = base.config.hidden_size
    disable_dropout(base)
    base.requires_grad_(False)
    peft_model = get_peft_model(base, copy.deepcopy(policy_config), adapter_name="policy")
    policy_copies = list(policy_config.modules_to_save or [])

    reward_head = None
    if reward_adapter is not None:
        reward_cfg, reward_lora, reward_head_sd = read_reward_adapter(reward_adapter)
        peft_model.add_adapter("reward", outside(reward_cfg, policy_copies))
        _load_adapter_weights(peft_model, reward_lora, "reward", reward_adapter)
        weight = reward_head_sd["weight"]
        if weight.shape[1] != hidden:
            raise UserError(
                f"reward adapter: score head takes {weight.shape[1]} features but the base has hidden size {hidden}; "
                "train the reward model on the same base"
            )
        reward_head = nn.Linear(hidden, weight.shape[0], bias="bias" in reward_head_sd)
        reward_head.load_state_dict({k: v.float() for k, v in reward_head_sd.items()})

    if not with_value:
        if init_value_from_reward:
            raise UserError("init_value_from_reward needs a value adapter")
        value_head = None
    elif init_value_from_reward:
        if reward_head is None:
            raise UserError("init_value_from_reward needs a reward adapter")
        if share_policy_value:
            raise UserError("init_value_from_reward and share_policy_value exclude each other (one adapter, two inits)")
        # LoRA only: the value trains LoRA weights, never a full copy of a module the reward saved
        value_config = copy.deepcopy(reward_cfg)
        value_config.modules_to_save = None
        value_head = nn.Linear(hidden, 1, bias=reward_head.bias is not None)
        value_head.load_state_dict({k: v[:1].clone() for k, v in reward_head.state_dict().items()})
    else:
        value_head = nn.Linear(hidden, 1)
        # small init so early values do not swamp the advantages (the value head learns the scale)
        nn.init.normal_(value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(value_head.bias)
    if with_value and not share_policy_value:
        from_policy = value_config is None
        value_config = copy.deepcopy(policy_config if from_policy else value_config)
        if from_policy:  # the policy's LoRA settings; its full copies (an LM head) are no use to a value
            value_config.modules_to_save = None
        value_config.inference_mode = False
        peft_model.add_adapter("value", outside(value_config, policy_copies))
        if init_value_from_reward:
            lora_only = {k: v for k, v in reward_lora.items() if "lora_" in k}
            _load_adapter_weights(peft_model, lora_only, "value", reward_adapter)
    peft_model.set_adapter("policy")
    # both heads stay float32 whatever the base dtype: values and scores feed fp32 PPO math
    if value_head is not None:
        value_head.to(base.device)
    if reward_head is not None:
        reward_head.to(base.device)
    return PPOModel(peft_model, value_head, reward_head, share_policy_value)


def outside(config, modules: list[str]):
    """`config` with LoRA kept out of `modules` (the policy's full copies, e.g. the LM head) and their insides.

    Once the policy saves a full copy of a module, PEFT wraps it, and an adapter added later with `all-linear`
    would find the Linear layers inside the wrapper (`lm_head.original_module`, `lm_head.modules_to_save.policy`)
    under names its output-layer exclusion does not match: a LoRA the value or reward role never uses, left
    without gradients (which DDP refuses) and renaming the policy's copy in its saved weights.
    """
    if not modules:
        return config
    names = "|".join(re.escape(m) for m in modules)
    pattern = rf"(.*\.)?({names})(\..*)?"
    config = copy.deepcopy(config)
    existing = config.exclude_modules
    if isinstance(existing, str):
        pattern = f"({existing})|({pattern})"
    elif existing:
        pattern = "|".join([f"(.*\\.)?{re.escape(m)}" for m in existing] + [f"({pattern})"])
    config.exclude_modules = pattern
    return config


def _load_adapter_weights(peft_model, weights: dict, adapter_name: str, folder: str) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, weights, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if f".{adapter_name}." in k and ("lora_" in k or "modules_to_save" in k)]
    unexpected = [k for k in result.unexpected_keys if "lora_" in k or "modules_to_save" in k]
    if missing or unexpected:
        raise UserError(
            f"reward adapter: '{folder}' does not fit this base "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); train the reward model on the same base"
        )
