"""The one rule for whether a ranking carries a preference, by hand, and the importer and export applying it."""

from __future__ import annotations

import pytest

from alignment.common.errors import UserError
from reward import preference as P


@pytest.mark.parametrize(
    "completions, ranks, ties, reason",
    [
        (["a", "b"], [1, 2], "drop", None),
        (["same", "same"], [1, 2], "drop", P.IDENTICAL),  # chosen == rejected
        ([" same", "same\n"], [1, 2], "drop", P.IDENTICAL),  # only whitespace apart
        (["a", "a", "b"], [1, 2, 3], "drop", P.IDENTICAL),  # one text ranked above itself
        (["a", "a", "b"], [1, 1, 3], "drop", None),  # a duplicate tied with itself is consistent
        (["a", "b", "c"], [2, 2, 2], "drop", P.TIED),
        (["a", "b", "c"], [2, 2, 2], "davidson", None),  # a tie-aware loss learns that they are alike
        ([[{"role": "assistant", "content": "x"}]] * 2, [1, 2], "drop", P.IDENTICAL),
    ],
)
def test_no_preference(completions, ranks, ties, reason):
    found = P.no_preference(completions, ranks, ties)
    assert (found and found[0]) == reason


def test_check_ranks_names_the_row():
    assert P.check_ranks([2, 1, 2], 3, "f:1") == [2, 1, 2]
    bad = [([1], "1 ranks for 2"), ("12", "'ranks' of type str"), ([0, 1], "integers >= 1"), ([True, 2], ">= 1")]
    for ranks, needle in bad:
        with pytest.raises(UserError, match=f"^f:1: .*{needle}"):
            P.check_ranks(ranks, 2, "f:1")


def test_a_task_needs_distinct_nonempty_completions():
    assert P.distinct_and_nonempty(["a", "b", "c"])
    assert not P.distinct_and_nonempty(["a", "a ", "b"]) and not P.distinct_and_nonempty(["a", "  "])


def test_the_importer_skips_tasks_with_a_repeated_completion_and_refuses_ranks_out_of_shape(tmp_path):
    from reward.rankings.config import ImportConfig
    from reward.rankings.importer import read_tasks
    from tests.conftest import write_jsonl

    rows = [{"prompt": "p", "completions": ["a", "a", "b"]}, {"prompt": "q", "completions": ["a", "b"]}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    tasks, skipped = read_tasks(ImportConfig(path=path, store=str(tmp_path / "r.db")))
    assert [t["prompt"] for t in tasks] == ["q"] and skipped == 1
    path = write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "completions": ["a", "b"], "ranks": [1, "x"]}])
    with pytest.raises(UserError, match=r"k.jsonl:1: ranks must be integers"):
        read_tasks(ImportConfig(path=path, store=str(tmp_path / "r.db")))


def test_the_export_counts_rankings_without_a_preference():
    from reward.rankings.config import ExportConfig
    from reward.rankings.export import build_rows

    base = {"prompt": "p", "is_chat": False, "completions": ["a", "b"], "models": ["m", "m"], "seeds": [1, 2]}
    base |= {"task_meta": {}, "order_shown": [0, 1], "seconds": 1.0, "annotator": "ann", "prompt_id": 1}
    tied = {**base, "task_id": 1, "ranking_id": 1, "ranks": [1, 1]}
    ranked = {**base, "task_id": 2, "ranking_id": 2, "ranks": [1, 2], "completions": ["c", "d"]}
    kwise, pairwise, counts = build_rows([tied, ranked], ExportConfig(store="x.db", output_dir="o"))
    assert len(kwise) == 2 and len(pairwise) == 1 and counts["kwise_rows_without_preference"] == 1
