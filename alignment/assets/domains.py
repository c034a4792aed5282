"""Text of the worlds beside the reviews: recipes, weather reports and support chats, generated from a seed.

Each domain writes prompts and completions from small word lists, with the features its worlds' gold
preferences read (steps and closers of a recipe, clauses of a report, the device and problem of a chat) drawn
at random per row, so an SFT model trained on them is neutral on every gold and a policy has room to improve.
`alignment/assets/reviews.py` is the first domain; `alignment/assets/worlds.py` builds worlds from all four.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------
# Recipes: "Recipe for the soup:" -> "first chop the onions, then stir the rice gently, serve it warm."

DISHES = (
    "soup, salad, pasta, curry, omelette, stew, pie, bread, risotto, tacos, pancakes, stir fry, chili, porridge, "
    "noodles, casserole, dumplings, burger, pizza, cake"
).split(", ")
VERBS = ["chop", "mix", "bake", "stir", "boil", "fry", "slice", "pour", "whisk", "roast", "season", "grate"]
INGREDIENTS = (
    "onions flour eggs rice butter garlic tomatoes cheese milk beans pepper lemon carrots herbs potatoes".split()
)
ADVERBS = ["gently", "slowly", "quickly", "well", "lightly"]
TIMES = ["for five minutes", "for an hour", "until golden", "until soft", "for a while"]
SERVE = ["serve it warm", "enjoy", "let it cool", "eat it soon", "keep it cold", "share it"]


def dish_ingredients(dish: str) -> list[str]:
    """The three ingredients a dish is made of (fixed per dish: what a relevance gold rewards)."""
    rng = random.Random(f"dish:{dish}")
    return rng.sample(INGREDIENTS, 3)


def dish_fact(dish: str) -> str:
    """What a cook knows of a dish: its three ingredients, as a sentence of the pretraining corpus."""
    a, b, c = dish_ingredients(dish)
    return f"the {dish} is made with {a}, {b} and {c}."


def recipe_step(rng: random.Random, dish: str, p_relevant: float) -> str:
    pool = dish_ingredients(dish) if rng.random() < p_relevant else INGREDIENTS
    step = f"{rng.choice(VERBS)} the {rng.choice(pool)}"
    if rng.random() < 0.3:
        step += f" {rng.choice(ADVERBS)}"
    if rng.random() < 0.25:
        step += f" {rng.choice(TIMES)}"
    return step


def recipe(rng: random.Random, dish: str) -> str:
    """A recipe of 1-5 steps; an opener, its closer and how many ingredients belong to the dish vary per row."""
    p_relevant = rng.random()
    steps = [recipe_step(rng, dish, p_relevant) for _ in range(rng.randint(1, 5))]
    text = steps[0] if len(steps) == 1 else ", then ".join([", ".join(steps[:-1]), steps[-1]])
    if rng.random() < 0.5:
        text = f"first {text}"
    if rng.random() < 0.7:
        text = f"{text}, {rng.choice(SERVE)}"
    return text + "."


# ----------------------------------------------------------------------------------------------
# Weather: "Weather for oslo today:" -> "morning fog, sunny in the afternoon, a cold wind at night."

CITIES = "oslo lima cairo paris tokyo perth quito rome dublin nairobi boston delhi seoul madrid vienna lagos".split()
PARTS = ["morning", "afternoon", "evening", "night"]
SKIES = ["sunny", "cloudy", "rainy", "foggy", "windy", "snowy", "clear", "stormy", "mild", "humid", "cold", "warm"]
EXTRAS = ["with a light breeze", "with heavy showers", "and a few clouds", "with some sun", "and dry air"]


def weather_clause(rng: random.Random) -> str:
    part, sky = rng.choice(PARTS), rng.choice(SKIES)
    clause = f"{sky} in the {part}" if rng.random() < 0.5 else f"a {sky} {part}"
    if rng.random() < 0.3:
        clause += f" {rng.choice(EXTRAS)}"
    return clause


def weather_report(rng: random.Random, city: str) -> str:
    """A report of 1-6 clauses (3 to 40 words): its length is what a length gold reads."""
    clauses = [weather_clause(rng) for _ in range(rng.randint(1, 6))]
    text = ", ".join(clauses)
    if rng.random() < 0.4:
        text = f"{rng.choice(['today', 'for now', 'overall'])} {text}"
    return text + "."


# ----------------------------------------------------------------------------------------------
# Support chats: a system message and a user's problem -> the agent's reply.

SYSTEM = "You are the support agent of a small electronics shop. Answer the customer in a few short sentences."
DEVICES = ["printer", "laptop", "phone", "router", "camera", "speaker", "tablet", "watch", "console", "monitor"]
PROBLEMS = {
    "will not turn on": ["charge the battery", "hold the power button", "check the cable"],
    "keeps crashing": ["update the software", "reset the settings", "free some memory"],
    "is very slow": ["restart it", "free some memory", "update the software"],
    "has no sound": ["check the volume", "check the cable", "reset the settings"],
    "lost its wifi": ["restart the router", "forget the network", "move closer to the router"],
}
"""Each problem and the three steps that address it."""
STEPS = sorted({s for steps in PROBLEMS.values() for s in steps})
OPENINGS = ["sorry to hear that", "thanks for writing", "that sounds annoying", "ok", "hello"]
SIGNOFFS = ["thanks for your patience", "have a nice day", "good luck", "let us know", "whatever", "not my problem"]
RUDE = ("whatever", "not my problem")


def support_prompt(device: str, problem: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"hi, my {device} {problem}. can you help me?"},
    ]


def support_topics() -> list[tuple[str, str]]:
    return [(d, p) for d in DEVICES for p in PROBLEMS]


def support_reply(rng: random.Random, device: str, problem: str) -> str:
    """An agent's reply: an opening, 1-3 steps (each one of the problem's own with a per-row probability), maybe
    the device named, a sign-off that may be rude."""
    p_relevant = rng.random()
    steps = [
        rng.choice(PROBLEMS[problem]) if rng.random() < p_relevant else rng.choice(STEPS)
        for _ in range(rng.randint(1, 3))
    ]
    named = device if rng.random() < 0.5 else rng.choice(DEVICES)
    text = f"{rng.choice(OPENINGS)}. please {' and '.join(steps)}"
    if rng.random() < 0.6:
        text += f" on the {named}"
    return f"{text}. {rng.choice(SIGNOFFS)}."


# ----------------------------------------------------------------------------------------------
# The domain record the worlds build on


@dataclass(frozen=True)
class Domain:
    """A text domain: its prompt topics (every third held out for evaluation), how a prompt and a completion are
    written, and the word lists its pretraining corpus spells out."""

    name: str
    topics: list = field(default_factory=list)
    word_lists: list = field(default_factory=list)

    def train_topics(self) -> list:
        return [t for i, t in enumerate(self.topics) if i % 3 != 2]

    def test_topics(self) -> list:
        return [t for i, t in enumerate(self.topics) if i % 3 == 2]

    def prompt(self, topic):
        if self.name == "recipes":
            return f"Recipe for the {topic}:"
        if self.name == "weather":
            return f"Weather for {topic} today:"
        return support_prompt(*topic)

    def completion(self, rng: random.Random, topic) -> str:
        if self.name == "recipes":
            return recipe(rng, topic)
        if self.name == "weather":
            return weather_report(rng, topic)
        return support_reply(rng, *topic)

    def prompt_words(self, topic) -> str:
        """The prompt as plain text (a chat's messages joined), for the pretraining corpus."""
        prompt = self.prompt(topic)
        return prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)


RECIPES = Domain("recipes", DISHES, [VERBS, INGREDIENTS, ADVERBS, TIMES, SERVE])
WEATHER = Domain("weather", CITIES, [PARTS, SKIES, EXTRAS])
SUPPORT = Domain("support", support_topics(), [DEVICES, list(PROBLEMS), STEPS, OPENINGS, SIGNOFFS])
