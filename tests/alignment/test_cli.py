import os

import pytest

from alignment import cli
from alignment.common.errors import UserError


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
    """The command line (before torch loads libgomp) sets GNU OpenMP's spin count, which decides how a CPU stage
    fares when another process holds a core; a value in the environment is kept (alignment/runtime/cpu_tuning.py)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, os\nfrom alignment import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    cli.main(['--help'])\n"
        "print(os.environ['GOMP_SPINCOUNT'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.strip() == "10000"
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "7"}, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert mine.stdout.strip() == "7"


def key_lines(out: str) -> list[str]:
    """The `  key = value  description` lines of a --help (not their wrapped continuations)."""
    section = out[out.index("config keys") :].split("\n\n")[0].splitlines()[1:]
    return [line for line in section if line.startswith("  ") and not line.startswith("   ")]


def help_of(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert cli.run(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["sft", "--help"],
        ["ppo", "--help"],
        ["pipeline", "--help"],
        ["eval", "--help"],
        ["rank", "serve", "--help"],
        ["rank", "users", "--help"],
        ["rank", "import", "--help"],
        ["rank", "annotate", "--help"],
        ["demo", "--help"],
    ],
)
def test_every_help_is_in_aligned_columns_with_yaml_values_and_named_choices(capsys, argv):
    import re

    lines = key_lines(help_of(capsys, *argv))
    assert len(lines) > 3
    assert len({line.index(" = ") for line in lines}) == 1  # the = of every key in one column
    parsed = [re.match(r"^  (\S+) +=(?: (\S+(?: \S+)*?))?(?: {2,}(\S.*))?$", line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m]
    starts = {m.start(3) for m in parsed if m.group(3)}
    assert len(starts) == 1, starts  # every description in one column
    values = [m.group(2) or "" for m in parsed]
    python_reprs = [v for v in values if re.search(r"\{'|', '", v) or v in ("None", "True", "False")]
    assert not python_reprs  # YAML, as a config file writes them: [policy, value], {sft: sft}, true


def test_help_shows_the_config_files_values_lists_as_yaml_and_every_choice(capsys):
    sample = help_of(capsys, "sample", "configs/sample.yaml", "--help")
    assert "values from configs/sample.yaml" in sample
    assert any(line.split() == ["repeats", "=", "8"] + line.split()[3:] for line in key_lines(sample))
    assert any(line.split()[:3] == ["store", "=", "runs/tiny/rankings.db"] for line in key_lines(sample))
    assert any(line.split()[:3] == ["repeats", "=", "1"] for line in key_lines(help_of(capsys, "sample", "--help")))
    ppo = help_of(capsys, "ppo", "configs/rloo.yaml", "run=runs/mine", "--help")
    assert any(line.split()[:3] == ["output_dir", "=", "runs/mine/rloo"] for line in key_lines(ppo))
    assert "ppo.checkpoint_roles             = [policy, value]" in ppo
    flat = " ".join(ppo.split())  # descriptions wrap
    assert "One of: ppo, rloo, grpo." in flat and "One of: lora, prompt_tuning, ia3, selective, full." in flat
    rank = help_of(capsys, "rank", "export", "configs/rank.yaml", "--help")
    assert any(line.split()[:3] == ["output_dir", "=", "runs/tiny/export"] for line in key_lines(rank))
    assert any(line.split()[:4] == ["schemas", "=", "[pairwise,", "kwise]"] for line in key_lines(rank))


def test_commands_that_take_a_user_function_print_its_signature(capsys):
    for argv in (["ppo", "--help"], ["eval", "--help"], ["pipeline", "--help"], ["rank", "annotate", "--help"]):
        assert "f(prompt: str, completion: str) -> float" in help_of(capsys, *argv), argv
    assert "f(prompt: str" not in help_of(capsys, "sft", "--help")


@pytest.mark.slow  # imports DeepSpeed three times
def test_the_command_line_quiets_third_party_output_and_importing_changes_nothing(tmp_path):
    """DeepSpeed's "Setting accelerator to CPU" warning (printed inside progress bars) and datasets' bars are silenced
    by the command-line entry point only: importing the packages sets no environment variable, and a user's own
    setting wins."""
    import subprocess
    import sys

    probe = (
        "import os, sys; before = dict(os.environ)\n"
        "import alignment.cli, alignment.config, alignment.runtime.loop, reward.rankings.export\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
        "if sys.argv[1] == 'cli': alignment.cli.quiet_third_party()\n"
        "from deepspeed.accelerator import get_accelerator; get_accelerator()\n"
        "print(os.environ.get('HF_DATASETS_DISABLE_PROGRESS_BARS'), os.environ.get('DATASETS_VERBOSITY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in cli.QUIET_ENV and k != "DS_ACCELERATOR"}

    def run(mode: str, **extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", probe, mode],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    library = run("library")
    assert "Setting accelerator to CPU" in library  # what a library call leaves alone
    quiet = run("cli")
    assert "Setting accelerator" not in quiet and "1 error" in quiet
    assert "1 info" in run("cli", DATASETS_VERBOSITY="info")  # the user's environment wins
