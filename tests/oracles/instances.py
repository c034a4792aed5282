"""A family of exact instances: tasks small enough to enumerate every response, generated from a shape and a seed.

Each instance is a random tiny Llama over a word vocabulary of 5-9 tokens (pad, EOS and 3-7 words), 1-4 prompts
of different lengths, responses of at most 2-4 tokens, and a reward of one kind:

- `dense`: every word of the response is worth a seeded amount that depends on the prompt's last word;
- `sparse`: 1 point when the response holds the prompt's seeded target word, nothing otherwise (a binary reward
  most responses miss);
- `length`: seeded word values minus a cost per word, so the best responses are short but not empty;
- `eos`: every word earns, and a response that does not end (no EOS within the limit) loses `eos_penalty`.

Every instance's objective includes the stage's missing-EOS penalty (`rollout.missing_eos_penalty`, passed to
the online stages as the instance's own), so `rewards()` is exactly what PPO, RLOO and GRPO optimise, and the
preference data for DPO is labelled with the same rewards (see tests/oracles/exact.py): every method is measured
against the same J* = beta * log E_ref[exp(r / beta)].

    inst = instance("sparse", seed=0)
    inst.build(folder)                         # base model + tokenizer + prompts.jsonl, saved to disk
    inst.reward_spec                           # reward.function for the online stages
    inst.rewards(tokenizer)                    # [P, N] exact rewards of the enumerated responses
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cached_property

import torch

from tests.oracles import exact

SHAPES = {
    # name: (words in the vocabulary besides pad and EOS, response length, prompt lengths, reward kind)
    "dense": (3, 3, (1, 1, 1, 2), "dense"),
    "sparse": (5, 2, (1, 3), "sparse"),
    "length": (4, 4, (3,), "length"),
    "eos": (7, 3, (1, 2, 3), "eos"),
}
"""The shapes the exact check runs every method on: vocabularies 5-9, responses of 2-4 tokens, 1-4 prompts."""
WORD_NAMES = ["a", "b", "c", "d", "e", "f", "g"]
PAD, EOS = "<pad>", "</s>"


@dataclass(frozen=True)
class Instance:
    """One exact instance: its shape and seed decide the vocabulary, prompts, reward and base model."""

    shape: str
    seed: int = 0

    @property
    def words(self) -> list[str]:
        return WORD_NAMES[: SHAPES[self.shape][0]]

    @property
    def vocabulary(self) -> list[str]:
        return [PAD, EOS, *self.words]

    @property
    def length(self) -> int:
        return SHAPES[self.shape][1]

    @property
    def kind(self) -> str:
        return SHAPES[self.shape][3]

    @property
    def eos_penalty(self) -> float:
        """The stage's missing-EOS penalty this instance runs with (part of its objective)."""
        return 3.0 if self.kind == "eos" else 1.0

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.seed}"

    @cached_property
    def prompts(self) -> list[str]:
        """Distinct prompts of the shape's lengths, drawn from the words."""
        rng = random.Random(f"{self.name}:prompts")
        out: list[str] = []
        for n in SHAPES[self.shape][2]:
            while (p := " ".join(rng.choice(self.words) for _ in range(n))) in out:
                pass
            out.append(p)
        return out

    @cached_property
    def values(self) -> dict:
        """The seeded numbers the reward reads."""
        rng = random.Random(f"{self.name}:reward")
        words = self.words
        if self.kind == "dense":
            return {(last, w): round(rng.uniform(-1, 1), 3) for last in words for w in words}
        if self.kind == "sparse":
            return {p: rng.choice(words) for p in self.prompts}
        if self.kind == "length":
            return {w: round(rng.uniform(0, 1.2), 3) for w in words} | {"cost": 0.5}
        return {w: round(rng.uniform(0.1, 0.6), 3) for w in words}

    def score(self, prompt: str, completion: str) -> float:
        """The reward function's value of a completion's words (the EOS is not in the text: the stage's penalty)."""
        words = completion.split()  # a prompt that is not the instance's (a stage's probe call) scores 0
        if self.kind == "dense":
            last = (prompt.split() or [""])[-1]
            return sum(self.values.get((last, w), 0.0) for w in words)
        if self.kind == "sparse":
            return 1.0 if self.values.get(prompt) in words else 0.0
        if self.kind == "length":
            return sum(self.values[w] for w in words if w in self.words) - self.values["cost"] * len(words)
        return sum(self.values[w] for w in words if w in self.words)

    def reward(self, prompts: list[str], completions: list[str]) -> list[float]:
        """`reward.function` of the online stages: f(prompts, completions) -> scores."""
        return [self.score(p, c) for p, c in zip(prompts, completions)]

    @property
    def reward_spec(self) -> str:
        return f"tests.oracles.instances:{self.shape.upper()}_{self.seed}.reward"

    # -- the model and the exact numbers --------------------------------------------------------------
    def tokenizer(self):
        """The word-level tokenizer: one token per word, pad, EOS; every prompt starts with EOS."""
        from tokenizers import Tokenizer, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(self.vocabulary)}, unk_token=PAD))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        # EOS doubles as BOS (OPT's convention; it keeps the vocabulary at 5-9). Without a distinct first token a
        # causal LM cannot tell the context "b" from "b b": attention over identical tokens returns the same vector
        # whatever the positions, so P(next | b) = P(next | b b), and an optimum such as "b </s>" after the prompt
        # "b" (0.999 of the mass) is out of every policy's reach (at most 1/4).
        tok.post_processor = processors.TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)

    def build(self, root) -> tuple[str, object]:
        """Save the random base and its word-level tokenizer under root/base, the prompts to root/prompts.jsonl;
        returns (base folder, tokenizer)."""
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = self.tokenizer()
        config = LlamaConfig(
            vocab_size=len(self.vocabulary), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=32, pad_token_id=0, eos_token_id=1, bos_token_id=None,
            tie_word_embeddings=False,
        )  # fmt: skip
        with torch.random.fork_rng():
            torch.manual_seed(1000 + self.seed + 7 * list(SHAPES).index(self.shape))
            model = LlamaForCausalLM(config)
            with torch.no_grad():
                # The final norm fixes |h|, so with the default 0.02 init the logits span well under one nat and no
                # adapter below the head could express a peaked policy; a trained LM head has this kind of range.
                model.lm_head.weight.normal_(0, 0.25)
        base = root / "base"
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        with open(root / "prompts.jsonl", "w") as f:
            f.writelines(json.dumps({"prompt": p}) + "\n" for p in self.prompts)
        return str(base), tokenizer

    def responses(self) -> torch.Tensor:
        """Every distinct response [N, L] (padded after its EOS)."""
        return exact.enumerate_responses(len(self.vocabulary), self.length, eos_token_id=1, pad_token_id=0)

    def rewards(self, tokenizer) -> torch.Tensor:
        """[P, N] the reward every method optimises for each enumerated response: the function's score of its text,
        minus the missing-EOS penalty."""
        from alignment.runtime.generation import decode, has_eos, response_mask

        responses = self.responses()
        texts = decode(tokenizer, responses, response_mask(responses, 1))
        penalty = self.eos_penalty * (~has_eos(responses, 1)).double()
        return torch.stack([torch.tensor(self.reward([p] * len(texts), texts), dtype=torch.float64) - penalty
                            for p in self.prompts])  # fmt: skip

    def prompt_ids(self, tokenizer) -> list[torch.Tensor]:
        return [torch.tensor(tokenizer(p)["input_ids"]) for p in self.prompts]


def instance(shape: str, seed: int = 0) -> Instance:
    return Instance(shape, seed)


# `reward.function=tests.oracles.instances:<SHAPE>_<seed>.reward` names an instance's reward in a stage config.
for _shape in SHAPES:
    for _seed in range(3):
        globals()[f"{_shape.upper()}_{_seed}"] = Instance(_shape, _seed)
