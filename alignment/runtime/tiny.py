"""`builtin:tiny-llama` (and `builtin:tiny-llama@<world>`): a small Llama and its tokenizer, built offline and cached.

The model is written with `save_pretrained` and every stage loads it back through the ordinary
`from_pretrained` path, so the demo and the tests exercise exactly what a hub model goes through.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from alignment.assets import reviews, worlds
from alignment.common.errors import UserError

BUILTIN_PREFIX = "builtin:"
VERSION = "v5"  # bump when the recipe below changes, so stale caches are rebuilt

# Llama-style chat template with explicit role tokens; prefix-consistent, which the assistant-turn
# masking in formatting.py relies on.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

SIZES = {
    "tiny-llama": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4),
    "small-llama": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8),
}


def cache_root() -> str:
    return os.environ.get("RLHF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rlhf"))


def is_builtin(name: str) -> bool:
    return name.startswith(BUILTIN_PREFIX)


def resolve(name: str) -> str:
    """Map `builtin:<size>` (the reviews world's) or `builtin:<size>@<world>` to its cached folder, building it the
    first time; other names pass through."""
    if not is_builtin(name):
        return name
    size, _, world = name[len(BUILTIN_PREFIX) :].partition("@")
    if size not in SIZES:
        raise UserError(f"unknown built-in model '{name}'; available: {', '.join('builtin:' + s for s in SIZES)}")
    if world and world not in worlds.WORLDS:
        raise UserError(f"unknown world in built-in model '{name}'; worlds: {', '.join(worlds.WORLDS)}")
    w = worlds.WORLDS[world or "reviews"]
    name = f"{size}-{VERSION}" if w.name == "reviews" else f"{size}@{w.base_name}-{VERSION}"
    path = os.path.join(cache_root(), name)
    if not os.path.exists(os.path.join(path, "config.json")):
        build(size, path, w)
    return path


def build_tokenizer(vocab_size: int = 640, corpus: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The full byte alphabet keeps every string encodable (newlines in chat templates, any user text).
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or reviews.corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def pretrain(model, tokenizer, world=None, steps: int = 300, batch_size: int = 32, lr: float = 3e-3) -> None:
    """A short language-model pretraining on the world's text (default: reviews), so the base "knows" the language.

    Completions and bare prompts as separate documents (never "title: review"): the prompt/answer format
    is what SFT teaches, as it would on a real pretrained model.
    """
    import random

    import torch

    world = world or worlds.WORLDS["reviews"]
    rng = random.Random(0)
    texts = world.documents(rng, steps * batch_size // 2, steps * batch_size // 8)
    rng.shuffle(texts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    model.train()
    for step in range(steps):
        chunk = texts[(step * batch_size) % len(texts) :][:batch_size]
        # Documents end with EOS, as in real pretraining: the base knows how to stop.
        enc = tokenizer(
            [tokenizer.bos_token + t + tokenizer.eos_token for t in chunk], return_tensors="pt", padding=True
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()


def build(size: str, path: str, world=None) -> None:
    """Build and save a world's model + tokenizer (default: reviews) to `path` atomically (safe when ranks race)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    world = world or worlds.WORLDS["reviews"]
    tokenizer = build_tokenizer(world.vocab_size, world.corpus())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SIZES[size],
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        pretrain(model, tokenizer, world)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{size}-", dir=os.path.dirname(path))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, path)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
