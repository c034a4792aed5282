"""User functions: one convention (prompt first, arguments by name), checked when the config loads."""

import os
import subprocess
import sys

import pytest

from alignment.common.errors import ConfigError, UserError
from alignment.common.functions import load_batch_function, load_function, load_item_function

HERE = __name__


def completion_first(completion, prompt):
    return len(completion) - 10 * len(prompt)


def completion_only(completion):
    return float(len(completion))


def with_kwargs(**kwargs):
    return float(len(kwargs["completion"]) + len(kwargs["prompt"]))


def unnamed(a, b):
    return 0.0


def text_and_context(text, context):
    return 0.0


def needs_more(prompt, completion, weight):
    return 0.0


def positional_only(prompt, completion, /):
    return 0.0


def raises(prompt, completion):
    raise KeyError("no such topic")


def raises_later(prompt, completion):
    if "boom" in completion:
        raise ValueError("boom")
    return 1.0


def not_finite(prompt, completion):
    return float("inf")


def batch(prompts, completions):
    return [len(c) - len(p) for p, c in zip(prompts, completions)]


def batch_trl_style(completions, **kwargs):
    return [float(len(c)) for c in completions]


def batch_one_short(prompts, completions):
    return [0.0] * (len(completions) - 1)


def test_loads_by_module_and_name():
    assert load_function("os.path:join", "k")("a", "b") == "a/b"


def test_per_item_arguments_go_by_name_so_their_order_cannot_swap_them():
    assert load_item_function(f"{HERE}:completion_first", "judge")("x", "abcd") == -6.0
    assert load_item_function(f"{HERE}:completion_only", "judge")("a long prompt", "abc") == 3.0
    assert load_item_function(f"{HERE}:with_kwargs", "judge")("ab", "abc") == 5.0
    gold = load_item_function("alignment.assets.gold:gold_reward", "annotators.score")
    assert gold("Review of the cafe:", "the food was great.") == 1.0


@pytest.mark.parametrize("name", ["unnamed", "text_and_context", "needs_more", "positional_only"])
def test_parameters_not_named_by_the_convention_are_refused_at_load(name):
    with pytest.raises(ConfigError) as err:
        load_item_function(f"{HERE}:{name}", "annotators.score")
    message = str(err.value)
    assert message.startswith("annotators.score: ") and "\n" not in message
    assert "f(prompt: str, completion: str) -> float" in message and "prompt=..., completion=..." in message


def test_builtins_without_named_parameters_are_refused():
    with pytest.raises(ConfigError, match=r"judge: math:log\(.*\) must be f\(prompt: str, completion: str\)"):
        load_item_function("math:log", "judge")


def test_a_function_that_raises_on_the_probe_is_refused_at_load_naming_the_key():
    with pytest.raises(ConfigError) as err:
        load_item_function(f"{HERE}:raises", "score")
    assert (
        str(err.value)
        == f"score: {HERE}:raises raised KeyError: 'no such topic' (on a probe call when the config loaded)"
    )


def test_later_raises_and_bad_values_are_one_line_naming_the_key():
    score = load_item_function(f"{HERE}:raises_later", "score")
    with pytest.raises(UserError, match=f"^score: {HERE}:raises_later raised ValueError: boom$"):
        score("p", "boom")
    with pytest.raises(ConfigError, match="returned inf"):
        load_item_function(f"{HERE}:not_finite", "judge")


def test_batch_functions_take_prompts_and_completions_by_name():
    fn = load_batch_function(f"{HERE}:batch", "reward.function")
    assert fn(["ab", "a"], ["abcd", "abc"]) == [2.0, 2.0]
    trl = load_batch_function(f"{HERE}:batch_trl_style", "reward.monitor")
    assert trl(["p"], ["abc"]) == [3.0]
    assert load_batch_function("alignment.assets.gold:gold", "reward.function")(["p"], ["great"]) == [1.0]
    with pytest.raises(ConfigError, match="reward.function: .* returned 1 scores for 2 completions"):
        load_batch_function(f"{HERE}:batch_one_short", "reward.function")
    with pytest.raises(ConfigError, match=r"must be f\(prompts: list\[str\], completions: list\[str\]\)"):
        load_batch_function(f"{HERE}:completion_first", "reward.function")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "is not of the form package.module:function"),
        ("no_such_module:f", "cannot import 'no_such_module'"),
        ("os.path:no_such_function", "'os.path' has no function 'no_such_function'"),
    ],
)
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_function(spec, "reward.function")
    assert str(err.value).startswith("reward.function: ")


def test_the_working_directory_is_importable_and_sys_path_is_left_as_it_was(tmp_path, monkeypatch):
    (tmp_path / "my_scores_23.py").write_text("def score(prompt, completion):\n    return 2.0\n")
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert load_item_function("my_scores_23:score", "score")("p", "c") == 2.0
    assert sys.path == before


def test_the_installed_console_script_imports_from_the_working_directory(tmp_path):
    """`rlhf` (a console script, which puts its bin folder on sys.path, not the working directory) finds
    ./mymodule.py, and a prompt-first/completion-first ambiguity is refused before any work: one line, exit 2."""
    (tmp_path / "mymodule.py").write_text("def score(text, context):\n    return len(text)\n")
    rlhf = os.path.join(os.path.dirname(sys.executable), "rlhf")
    args = [rlhf, "rank", "annotate", "store=s.db", "users=a", "score=mymodule:score", "password=pw-pw"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "score: mymodule:score(text, context) must be f(prompt: str, completion: str) -> float" in proc.stderr
    assert not (tmp_path / "s.db").exists()
