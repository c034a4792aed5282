"""docs/tutorial.md, run as a reader would: every shell and Python block verbatim, in order, in an empty folder, with
the installed `rlhf` console script. A block that cannot run here carries `<!-- not run: REASON -->` on the line
before it, and is skipped for that reason only.

Then: every output landed in the one run folder, the run folder was moved, and every model loaded from its new place
through its card's own loading lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

TUTORIAL = os.path.join(REPO, "docs", "tutorial.md")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*$")
RUNNERS = {
    "bash": ["bash", "-euo", "pipefail", "-c"],
    "sh": ["bash", "-euo", "pipefail", "-c"],
    "python": [sys.executable, "-c"],
}
STAGES = ["sft", "sample", "export", "reward", "dpo", "ppo", "rloo", "eval"]


def code_blocks(path: str) -> list[dict]:
    """Every fenced block of a Markdown file: its language, code, and the reason it is not run (None: it runs)."""
    text = open(path, encoding="utf-8").read()
    found = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        found.append(
            {
                "lang": m["lang"],
                "code": m["code"],
                "reason": reason["reason"] if reason else None,
                "line": text[: m.start()].count("\n") + 1,
            }
        )
    return found


def test_every_block_runs_or_says_why_not():
    blocks = code_blocks(TUTORIAL)
    assert len(blocks) >= 10
    for b in blocks:
        assert b["reason"] is None or b["reason"], f"line {b['line']}: a not-run marker needs its reason"
        assert b["lang"] in RUNNERS or b["reason"], f"line {b['line']}: ```{b['lang']} neither runs nor says why not"
    assert [b["reason"] for b in blocks if b["reason"]] == ["needs people (and a browser)"]


@pytest.mark.slow
def test_the_tutorial_runs_verbatim_and_the_moved_run_loads(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    assert os.path.isfile(os.path.join(bin_dir, "rlhf")), "the rlhf console script (pip install -e . / ./setup.sh)"
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)  # only what a user has: the installed package and their own folder
    outputs = []
    for b in code_blocks(TUTORIAL):
        if b["reason"]:
            continue
        proc = subprocess.run(
            [*RUNNERS[b["lang"]], b["code"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"docs/tutorial.md line {b['line']} failed:\n{b['code']}\n{out[-4000:]}"
        assert "Traceback" not in out, out[-4000:]
        if "rlhf " in b["code"]:  # our commands' output, without third-party noise (the user's own Python is theirs)
            assert "Setting accelerator" not in out and "Saving the dataset" not in out, out[-4000:]
        outputs.append(out)

    # Every output is in the run folder (now moved): nothing else appeared beside the user's own files.
    assert set(os.listdir(tmp_path)) <= {"own", "myscore.py", "__pycache__", "runs", "elsewhere"}
    assert os.listdir(tmp_path / "runs") == []
    run = tmp_path / "elsewhere" / "mine"
    assert (run / "rankings.db").is_file()
    for stage in STAGES:
        assert (run / stage / "manifest.json").is_file(), stage

    # Each training stage ended with its closing line; the moved run's adapters record their bases portably.
    text = "\n".join(outputs)
    for stage in ("sft", "reward", "dpo", "ppo", "annotate", "export", "eval"):
        assert re.search(rf"^(\[[\d:]+\] )?{stage}: done", text, re.M), stage
    base = json.loads((run / "sft" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tmp_path / "own" / "mymodel")  # given as own/mymodel: outside the run, recorded absolute
    for stage in ("reward", "dpo", "ppo", "rloo"):
        assert json.loads((run / stage / "adapter_config.json").read_text())["base_model_name_or_path"] == "sft/merged"
    # The cards' loading lines ran from the new place, for every model (the tutorial's last blocks).
    for stage in ("sft", "reward", "dpo", "ppo", "rloo"):
        assert f"{stage}: loaded from {run}" in text, stage
    rloo_card = (run / "rloo" / "README.md").read_text()
    assert "The RLOO policy" in rloo_card and "PPO policy" not in rloo_card
    assert "`plackett_luce` loss" in (run / "dpo" / "README.md").read_text()
