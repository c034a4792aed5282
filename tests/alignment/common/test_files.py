import json
import os

import pytest

from alignment.common import files


def test_write_json_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "eval.json")
    files.write_json(path, {"a": 1})
    files.write_json(path, {"b": [1, 2]}, sort_keys=True)
    assert json.loads(open(path).read()) == {"b": [1, 2]}
    assert os.listdir(tmp_path) == ["eval.json"]


def test_data_that_cannot_be_written_leaves_the_old_file_as_it_was(tmp_path):
    path = str(tmp_path / "manifest.json")
    files.write_json(path, {"steps": 3})
    with pytest.raises(TypeError):
        files.write_json(path, {"steps": object()})  # not JSON: nothing is half-written
    assert json.loads(open(path).read()) == {"steps": 3}
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_write_atomic_with_fsync_writes_the_text(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    files.write_atomic(path, "x\n", fsync=True)
    assert open(path).read() == "x\n"
