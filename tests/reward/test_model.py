"""Where the reward model's base comes from: an SFT run folder's merged model, a plain folder, a builtin."""

import json
import os
import shutil

import pytest

from alignment.common.errors import UserError
from alignment.config.shared import ModelConfig
from alignment.runtime import tiny
from reward import model as M


def test_sft_run_folder_resolves_to_its_merged_model(tmp_path, monkeypatch):
    src = tiny.resolve("builtin:tiny-llama")
    run = tmp_path / "sft"
    shutil.copytree(src, run / "merged")
    (run / "manifest.json").write_text(json.dumps({"stage": "sft", "outputs": {"adapter": ".", "model": "merged"}}))
    monkeypatch.chdir(tmp_path)
    path = M.base_path(ModelConfig(name_or_path="sft"))
    # Absolute: adapter_config.json records it, and it must load from any working directory.
    assert path == str(run / "merged") and os.path.isabs(path)
    assert M.load_tokenizer(ModelConfig(name_or_path="sft")).pad_token_id is not None
    assert M.base_path(ModelConfig(name_or_path="builtin:tiny-llama")) == src


def test_adapter_only_sft_folder_is_a_user_error(tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    (run / "manifest.json").write_text(json.dumps({"outputs": {"adapter": ".", "model": "."}}))
    with pytest.raises(UserError, match="adapter without a merged model"):
        M.base_path(ModelConfig(name_or_path=str(run)))


def test_normalize_with_reward_stats(tmp_path):
    import torch

    (tmp_path / M.STATS_FILE).write_text(json.dumps({"mean": 2.0, "std": 4.0, "count": 3}))
    stats = M.read_stats(str(tmp_path))
    assert M.normalize(torch.tensor([2.0, 6.0, -2.0]), stats).tolist() == [0.0, 1.0, -1.0]
    with pytest.raises(UserError, match="no reward_stats.json"):
        M.read_stats(str(tmp_path / "missing"))
