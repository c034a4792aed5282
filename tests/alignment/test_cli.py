import os

import pytest

from alignment import cli
from alignment.config import UserError


def test_help_lists_commands(capsys):
    assert cli.run(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("sft", "sample", "rank", "reward", "ppo", "demo"):
        assert f"  {name} " in out


def test_stage_help_lists_keys_with_docs(capsys):
    assert cli.run(["sft", "--help"]) == 0
    out = capsys.readouterr().out
    assert "train.learning_rate" in out and "Peak learning rate." in out


def test_unknown_command_suggests():
    with pytest.raises(UserError, match="unknown command 'sfy'; did you mean 'sft'"):
        cli.run(["sfy"])


def test_main_turns_user_errors_into_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sft", "configs/sft.yaml", "lr=1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'lr'" in err


def test_openmp_spins_briefly_unless_the_user_says_otherwise():
    """Importing the package (before torch loads libgomp) sets GNU OpenMP's spin count, which decides how a CPU stage
    fares when another process holds a core; a value in the environment is kept."""
    import subprocess
    import sys

    code = "import alignment, os; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.strip() == "10000"
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "7"}, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert mine.stdout.strip() == "7"
