"""alignment/runtime/models.py: the base a stage builds on and its tokenizer (one copy for every stage)."""

import json
import os
import shutil

import pytest

from alignment.common.errors import UserError
from alignment.config.shared import ModelConfig
from alignment.runtime import models, tiny


def test_sft_run_folder_resolves_to_its_merged_model(tmp_path, monkeypatch):
    src = tiny.resolve("builtin:tiny-llama")
    run = tmp_path / "sft"
    shutil.copytree(src, run / "merged")
    (run / "manifest.json").write_text(json.dumps({"stage": "sft", "outputs": {"adapter": ".", "model": "merged"}}))
    monkeypatch.chdir(tmp_path)
    path = models.base_model_path(ModelConfig(name_or_path="sft"))
    # Absolute: adapter_config.json records it, and it must load from any working directory.
    assert path == str(run / "merged") and os.path.isabs(path)
    assert models.load_base_tokenizer(ModelConfig(name_or_path="sft")).pad_token_id is not None
    assert models.base_model_path(ModelConfig(name_or_path="builtin:tiny-llama")) == src


def test_adapter_only_sft_folder_is_a_user_error(tmp_path):
    run = tmp_path / "sft"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    (run / "manifest.json").write_text(json.dumps({"outputs": {"adapter": ".", "model": "."}}))
    with pytest.raises(UserError, match="adapter without a merged model"):
        models.base_model_path(ModelConfig(name_or_path=str(run)))
