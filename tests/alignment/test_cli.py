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
