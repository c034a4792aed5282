"""The worlds benchmark's CI-sized subset: `python benchmarks/worlds.py` on the demo's world (its run shared with the
demo test) and one more world of another domain, K, noise and vocabulary, with the shipped defaults. Every cell must
beat SFT (win rate >= 60%) and be healthy beside SFT's samples, as on the whole family (README, docs/worlds.md)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SECOND = "weather_length"
"""The second world in CI: another domain and vocabulary, K = 5, precise annotators, a length target."""


def test_the_shipped_defaults_hold_on_two_worlds(demo_run, second_world):
    root = demo_run[0].parent  # the demo test's run is the reviews world at seed 42: read, not trained again
    # the second world's run (tests/conftest.py) is read as well, not trained again; its base from its own cache
    os.symlink(os.path.join(second_world[0], f"{SECOND}-42"), root / f"{SECOND}-42")
    env = {**os.environ, "WANDB_MODE": "offline", "RLHF_CACHE": os.path.join(second_world[0], "cache")}
    proc = subprocess.run(
        [sys.executable, "benchmarks/worlds.py", "--worlds", "reviews", SECOND, "--seeds", "42", "--out", str(root),
         "--json", str(root / "worlds.json")],
        cwd=REPO, capture_output=True, text=True, timeout=2400, env=env,
    )  # fmt: skip
    print(proc.stdout[-4000:])
    cells = json.loads((root / "worlds.json").read_text())["cells"]
    for world, methods in cells.items():
        for method, cell in methods.items():
            assert cell["win_rate"] >= 0.60, (world, method, cell)
            assert cell["healthy"], (world, method, cell)
    assert "Traceback" not in proc.stderr and "acceptance:" in proc.stdout, proc.stderr[-2000:]
    assert "| weather_length | PPO |" in proc.stdout


def test_a_world_base_loads_through_from_pretrained_and_knows_its_words(second_world, monkeypatch):
    """The second world's base, built by its run (in that run's own model cache), loads
    through the real `from_pretrained` and its tokenizer spells the world's text without unknown tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.assets.worlds import WORLDS
    from alignment.runtime import tiny

    monkeypatch.setenv("RLHF_CACHE", os.path.join(second_world[0], "cache"))
    path = tiny.resolve(f"builtin:tiny-llama@{SECOND}")  # built already: resolving it only finds the folder
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    assert len(tok) == model.config.vocab_size <= 500
    text = WORLDS[SECOND].sft_rows(1)[0]["completion"]
    assert tok.decode(tok(text)["input_ids"]) == text and tok.unk_token_id not in tok(text)["input_ids"]
