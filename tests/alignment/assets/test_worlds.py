"""The family of worlds: each one's data, prompts and gold, by hand where the rule is simple."""

import statistics

import pytest

from alignment.assets import worlds
from alignment.assets.worlds import WORLDS
from alignment.common.data import load_rows
from alignment.common.functions import load_batch_function, load_item_function


def completion_of(row: dict) -> tuple:
    if "messages" in row:
        return row["messages"][:-1], row["messages"][-1]["content"]
    return row["prompt"], row["completion"]


def test_the_family_varies_what_the_issue_asks():
    family = list(WORLDS.values())
    assert len(family) >= 7 and family[0].name == "reviews"
    assert {w.k for w in family} >= {2, 3, 4, 5, 6}
    assert min(w.temperature for w in family) <= 0.5 and max(w.temperature for w in family) >= 2
    assert any(w.careless for w in family) and any(w.domain == "support" for w in family)
    assert len({w.gold_kind for w in family}) == len(family)
    assert len({(w.domain, w.vocab_size) for w in family}) >= 5


@pytest.mark.parametrize("name", list(WORLDS))
def test_each_world_has_data_prompts_and_a_gold_with_room(name):
    world = WORLDS[name]
    rows = load_rows(f"builtin:{name}-sft", split="train")
    assert len(rows) == 2000 and all(("prompt" in r and "completion" in r) or "messages" in r for r in rows)
    train, test = load_rows(f"builtin:{name}-prompts", "train"), load_rows(f"builtin:{name}-prompts", "test")
    assert train and test and not {str(r["prompt"]) for r in train} & {str(r["prompt"]) for r in test}
    gold = load_item_function(world.spec(), "judge")
    scores = [gold(p, c) for p, c in map(completion_of, rows[:400])]
    # SFT is neutral-ish and varied: a policy has room above SFT's mean, and rankings carry signal
    assert statistics.pstdev(scores) > 0.5 and max(scores) > statistics.mean(scores) + 1.0
    batch = load_batch_function(world.spec(batch=True), "reward.function")
    prompts, completions = zip(*map(completion_of, rows[:5]))
    assert batch(list(prompts), list(completions)) == [gold(p, c) for p, c in zip(prompts, completions)]
    assert world.repeats() * len(train) >= world.tasks


def test_gold_rules_by_hand():
    w = WORLDS
    assert w["reviews"].gold_reward("the food was great and the staff were rude.") == 0.0
    assert w["reviews_contrast"].gold_reward("the food was great and the price was awful.") == 2.0
    assert w["reviews_contrast"].gold_reward("the food was awful and the price was great.") == -2.0
    assert w["reviews_contrast"].gold_reward("the price was great and the room was great.") == -1.0
    assert (
        w["recipes_format"].gold_reward("first chop the onions, mix the rice, then bake the eggs, serve it warm.") == 6
    )
    assert w["recipes_format"].gold_reward("bake the eggs.") == pytest.approx(-1.2)
    dish = "soup"
    own = worlds.domains.dish_ingredients(dish)
    other = next(i for i in worlds.domains.INGREDIENTS if i not in own)
    text = f"chop the {own[0]}, then fry the {other}."
    assert w["recipes_relevance"].gold_reward(text, f"Recipe for the {dish}:") == 0.5
    for silent in ("", "serve it soon."):  # no ingredient at all: nothing about the dish, below a wrong ingredient
        assert w["recipes_relevance"].gold_reward(silent, f"Recipe for the {dish}:") == worlds.NO_INGREDIENT
    assert w["weather_length"].gold_reward(" ".join(["sunny"] * 14)) == 0.0
    assert w["weather_length"].gold_reward("sunny.") == pytest.approx(-3.25)
    chat = [{"role": "system", "content": "..."}, {"role": "user", "content": "hi, my printer has no sound."}]
    good = "sorry to hear that. please check the volume on the printer. thanks for your patience."
    assert w["support_chat"].gold_reward(good, chat) == 2.5
    assert w["support_chat"].gold_reward("ok. please restart it. whatever.", chat) == -2.5


def test_an_unknown_world_is_one_line():
    from alignment.common.errors import ConfigError, UserError
    from alignment.runtime import tiny

    with pytest.raises(ConfigError, match="unknown world 'nope'; have reviews"):
        worlds.get("nope")
    with pytest.raises(UserError, match="unknown world in built-in model 'builtin:tiny-llama@nope'"):
        tiny.resolve("builtin:tiny-llama@nope")
    with pytest.raises(UserError, match="unknown built-in dataset 'builtin:nope-sft'"):
        load_rows("builtin:nope-sft")
