"""The scripted annotator: Plackett-Luce sampling statistics, and ranking through the app's JSON API."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from reward.rankings.annotator import ScriptedAnnotator, plackett_luce_ranks
from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig
from tests.reward.rankings.conftest import add_tasks, local_client


def test_zero_temperature_is_the_score_order():
    assert plackett_luce_ranks([0.1, 3.0, -1.0, 2.0], 0, random.Random(0)) == [3, 1, 4, 2]


def test_first_place_frequencies_follow_the_softmax():
    # Plackett-Luce: P(item i ranked first) = exp(s_i / T) / sum_j exp(s_j / T).
    scores, temperature, n = [0.0, 1.0, 2.0], 1.0, 20000
    rng = random.Random(0)
    firsts = Counter(plackett_luce_ranks(scores, temperature, rng).index(1) for _ in range(n))
    z = sum(math.exp(s / temperature) for s in scores)
    for i, s in enumerate(scores):
        assert abs(firsts[i] / n - math.exp(s / temperature) / z) < 0.015
    # For K = 2 it is Bradley-Terry: P(a over b) = sigmoid((s_a - s_b) / T).
    wins = sum(plackett_luce_ranks([1.0, 0.0], 0.5, rng)[0] == 1 for _ in range(n))
    assert abs(wins / n - 1 / (1 + math.exp(-2.0))) < 0.015


def test_scripted_annotator_ranks_every_task_through_the_api(store):
    add_tasks(store, 5, k=3)
    store.add_user("bot", password="pw-bot")
    app = create_app(RankConfig(store=store.url, annotators_per_task=1), store=store)
    # Longer text = better; temperature 0 makes the expected ranks exact.
    bot = ScriptedAnnotator(
        "http://testserver", "bot", "pw-bot", lambda p, t: len(t) + int(t.split()[1]), temperature=0
    )
    bot.http = local_client(app)
    assert bot.run() == 5
    rows = store.rankings()
    assert len(rows) == 5 and all(r["ranks"] == [3, 2, 1] for r in rows)
    assert {a["ranking_id"] for a in bot.acknowledged} == {r["ranking_id"] for r in rows}
    assert bot.run() == 0  # nothing left


def test_noise_depends_on_the_task_and_seed_not_on_who_draws_it():
    # The pipeline's annotators share a seed when each task gets one ranking: which thread leases a task
    # is timing, so the ranks (and everything trained on them) must be a function of the task alone.
    def task(task_id):
        texts = ["a b c", "a b", "a b c d", "a"]
        return {
            "task_id": task_id,
            "prompt": "p",
            "completions": [{"position": i, "text": t} for i, t in enumerate(texts)],
        }

    def bot(name, seed):
        return ScriptedAnnotator("http://unused", name, "pw", lambda p, t: len(t.split()), temperature=2.0, seed=seed)

    first, second = bot("one", 7), bot("two", 7)
    forward = [first.rank(task(i)) for i in range(40)]
    backward = [second.rank(task(i)) for i in reversed(range(40))][::-1]
    assert forward == backward
    assert len({tuple(r) for r in forward}) > 1  # really noisy at this temperature
    assert [bot("three", 8).rank(task(i)) for i in range(40)] != forward  # another seed, other noise


@pytest.mark.slow  # real server processes, and the client's retries against a closed port
def test_a_run_whose_server_cannot_start_or_be_reached_is_one_line_with_the_servers_own_words(tmp_path, store):
    from alignment.common.errors import UserError
    from reward.rankings.annotator import run_scripted
    from reward.rankings.app.process import RankServer
    from reward.rankings.config import AnnotateConfig

    def annotate(**settings):
        cfg = AnnotateConfig(users=["bot"], score="alignment.assets.gold:gold_reward", password="pw-bot", **settings)
        with pytest.raises(UserError) as err:
            run_scripted(cfg)
        assert "\n" not in str(err.value)
        return str(err.value)

    missing = str(tmp_path / "none.db")
    assert annotate(store=missing) == (
        f"the ranking server for this run exited (code 2): {missing}: ranking store not found "
        "(run `rlhf sample` first, or check the path)"
    )
    assert annotate(store=store.url, url="http://127.0.0.1:9").startswith(
        "user 'bot' cannot log in at http://127.0.0.1:9: cannot reach the ranking server (ConnectError"
    )
    store.add_user("bot", password="other-pw")
    with RankServer(store=store.url, login_max_failures=1) as server:
        assert annotate(store=store.url, url=server.url) == (
            f"user 'bot' cannot log in at {server.url}: HTTP 401: wrong user name or password"
        )
        assert annotate(store=store.url, url=server.url).startswith(
            f"user 'bot' cannot log in at {server.url}: HTTP 429: too many failed logins; try again in"
        )


def test_a_failing_score_stops_every_annotator_with_one_line_and_releases_its_leases(store):
    """The score raising on the third task: rank_in_parallel raises one UserError naming the annotator and the
    error, the other annotator stops after its current task, and no task is left leased (not skipped either: the
    same accounts can rank them once the function is fixed)."""
    import pytest

    from alignment.common.errors import UserError
    from reward.rankings.annotator import rank_in_parallel

    add_tasks(store, 12, k=3)
    for name in ("bot1", "bot2"):
        store.add_user(name, password="pw-" + name)
    app = create_app(RankConfig(store=store.url, annotators_per_task=1), store=store)
    seen = []

    def score(prompt, completion):
        seen.append(prompt)
        if len(set(seen)) > 2:
            raise ValueError("this topic is unknown")
        return float(len(completion))

    bots = []
    for name in ("bot1", "bot2"):
        bot = ScriptedAnnotator("http://testserver", name, "pw-" + name, score, temperature=0)
        bot.http = local_client(app)
        bots.append(bot)
    with pytest.raises(UserError) as err:
        rank_in_parallel(bots)
    assert "\n" not in str(err.value) and "annotator 'bot" in str(err.value)
    assert "ValueError: this topic is unknown" in str(err.value)
    overview = store.overview(1)
    assert overview["leased_now"] == 0
    assert overview["rankings"] < 12
    assert all(a["skips"] == 0 for a in store.annotator_rows())
    # fixed, the same accounts rank what is left
    for bot in bots:
        bot.score = lambda prompt, completion: float(len(completion))
    assert sum(rank_in_parallel(bots)) == 12 - overview["rankings"]


def test_rank_annotate_with_a_raising_score_exits_2_with_one_line(tmp_path):
    """`rlhf rank annotate` on a score that passes the probe but raises on real tasks: exit 2, one line, no
    traceback (per thread or otherwise), no task left leased."""
    from reward.rankings.store import open_store
    from tests.conftest import run_cli

    (tmp_path / "flaky.py").write_text(
        "def score(prompt, completion):\n    if 'answer 1' in completion:\n        raise RuntimeError('flaky')\n"
        "    return 1.0\n"
    )
    store = open_store(str(tmp_path / "rank.db"))
    add_tasks(store, 4, k=3)
    store.close()
    proc = run_cli(
        "rank",
        "annotate",
        "store=rank.db",
        "users=b1,b2",
        "score=flaky:score",
        "create_users=true",
        "password=pw-bots",
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "score: flaky:score raised RuntimeError: flaky" in proc.stderr
    store = open_store(str(tmp_path / "rank.db"))
    assert store.overview(1)["leased_now"] == 0
    store.close()
