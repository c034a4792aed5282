import pytest

from alignment.config import ConfigError, UserError
from alignment.runtime.functions import load_function, load_scorer


def test_loads_by_module_and_name_and_adapts_both_signatures():
    assert load_function("os.path:join", "k")("a", "b") == "a/b"
    gold = load_scorer("alignment.assets.gold:gold_reward", "judge")  # takes (completion)
    assert gold("the food was great.") == 1.0
    by_prompt = load_scorer("os.path:join", "judge")  # (completion, prompt): join returns a str, not a number
    with pytest.raises(UserError, match="judge: os.path:join must return a number, got str"):
        by_prompt("a", "b")


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


def test_non_finite_scores_are_refused():
    score = load_scorer("math:log", "annotators.score")  # log(0) raises; log of a negative is a ValueError too
    assert score(1.0) == 0.0
    inf = load_scorer("builtins:float", "judge")
    with pytest.raises(UserError, match="returned inf"):
        inf("inf")
