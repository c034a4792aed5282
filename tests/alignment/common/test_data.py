import json

import pytest

from alignment.common.data import load_rows
from alignment.common.errors import UserError

ROWS = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]


def test_every_file_format_and_dataset_folder_give_the_same_rows(tmp_path):
    import datasets
    import pandas as pd

    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "ds"))
    for name in ("d.jsonl", "d.json", "d.parquet", "d.csv", "ds"):
        assert load_rows(str(tmp_path / name)) == ROWS, name


def test_message_lists_survive_parquet(tmp_path):
    import pandas as pd

    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    assert load_rows(str(tmp_path / "m.parquet")) == rows


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": 1\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        load_rows(str(path))


def test_missing_paths_and_splits_are_user_errors(tmp_path):
    import datasets

    with pytest.raises(UserError, match="does not exist"):
        load_rows(str(tmp_path / "nope.jsonl"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(UserError, match="no split 'test' \\(has train\\)"):
        load_rows(str(tmp_path / "ds"), split="test")
    with pytest.raises(UserError, match="unsupported file type"):
        (tmp_path / "d.txt").write_text("x")
        load_rows(str(tmp_path / "d.txt"))


def test_builtin_data_is_deterministic():
    assert load_rows("builtin:reviews-sft", limit=5) == load_rows("builtin:reviews-sft", limit=5)
    assert {"prompt", "completion"} <= set(load_rows("builtin:reviews-sft", limit=1)[0])


def test_prompts_from_prompt_or_messages_columns(tmp_path):
    from alignment.common.data import load_prompts

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [{"prompt": "p"}, {"prompt": chat[:1]}, {"messages": chat}, {"text": "x"}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows[:3]) + "\n")
    assert load_prompts(str(path)) == ["p", chat[:1], chat[:1]]  # the final answer is not part of the prompt
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UserError, match=r"p\.jsonl:4: expected a non-empty 'prompt'"):
        load_prompts(str(path))
