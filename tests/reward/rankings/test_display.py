"""What people see of model text: no half character where sampling's length limit cut one, every other invalid byte
marked (never a U+FFFD), and an annotator's speed counted over the time they worked."""

from __future__ import annotations

import pytest

from alignment.runtime.generation import drop_cut_character
from reward.rankings.app.render import marked
from reward.rankings.store.reports import MIN_WINDOW_SECONDS, PAUSE_SECONDS, rankings_per_hour


@pytest.fixture(scope="module")
def byte_level_tokenizer():
    """A byte-level BPE tokenizer (GPT-2/Qwen style) with no merges across multi-byte characters: each byte of `☕`
    is its own token, so a limit can cut the character between them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a good cup of coffee", "the cafe was nice"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_a_character_cut_by_the_length_limit_is_dropped(byte_level_tokenizer):
    ids = byte_level_tokenizer("coffee ☕")["input_ids"]
    cut = byte_level_tokenizer.decode(ids[:-1])  # the limit fell inside ☕ (3 bytes, 3 tokens)
    assert cut.endswith("\ufffd")
    assert drop_cut_character(cut, cut=True) == "coffee "
    assert drop_cut_character(byte_level_tokenizer.decode(ids), cut=True) == "coffee ☕"
    assert drop_cut_character(cut, cut=False) == cut  # a response that ended by itself keeps what it produced


def test_other_invalid_bytes_are_marked_and_the_text_stays_escaped():
    html = str(marked("<b>caf\ufffd\ufffd</b> & \ufffd"))
    assert "\ufffd" not in html and html.count('class="bad-bytes"') == 2  # one mark per run
    assert html.startswith("&lt;b&gt;caf<span") and "&amp;" in html


@pytest.mark.parametrize(
    "times, seconds, expected",
    [
        ([], [], None),
        ([100.0 + i * 0.01 for i in range(428)], [0.005] * 428, 428 * 3600 / MIN_WINDOW_SECONDS),  # a scripted burst
        ([60.0 * i for i in range(1, 121)], [40.0] * 120, 120 * 3600 / (40 + 119 * 60)),  # one a minute for 2 hours
        # a 3-hour lunch between two sessions of 30 one-minute rankings does not count as work
        (
            [60.0 * i for i in range(30)] + [20000 + 60.0 * i for i in range(30)],
            [50.0] * 60,
            60 * 3600 / (50 + 29 * 60 + 50 + 29 * 60),
        ),
    ],
)
def test_rankings_per_hour_count_working_time_with_a_floor(times, seconds, expected):
    got = rankings_per_hour(times, seconds)
    assert got == pytest.approx(expected) if expected is not None else got is None
    assert PAUSE_SECONDS < 20000 - 29 * 60


def test_the_admin_page_shows_a_sane_rate_for_a_scripted_annotator(store):
    """Through the store: 30 rankings in a burst are 30 per 15 minutes, not 3,600 / (median seconds)."""
    from tests.reward.rankings.conftest import add_tasks

    add_tasks(store, 30)
    store.add_user("bot", password="pw-bot")
    bot = store.authenticate("bot", "pw-bot")
    for _ in range(30):
        view = store.next_task(bot.id, 1, 600)
        store.submit(bot.id, view.task_id, list(range(1, len(view.completions) + 1)), f"k{view.task_id}", 1)
    (row,) = [r for r in store.annotator_rows() if r["name"] == "bot"]
    assert row["rankings"] == 30 and row["per_hour"] == pytest.approx(30 * 3600 / MIN_WINDOW_SECONDS)
