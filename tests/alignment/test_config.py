import glob
import os

import pytest

from alignment.config import ConfigError, describe, field_docs, load_config
from alignment.sft import SFTConfig, SFTDataConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_and_overrides_resolve_to_typed_values(tmp_path):
    path = write(tmp_path, "output_dir: out\ndata:\n  path: d.jsonl\ntrain:\n  learning_rate: 1e-4\n")
    cfg = load_config(SFTConfig, path, ["train.per_device_batch_size=4", "adapter.target_modules=q_proj,v_proj",
                                        "model.name_or_path=builtin:tiny-llama"])  # fmt: skip
    assert cfg.train.learning_rate == 1e-4  # YAML reads 1e-4 as a string; it must become a float
    assert cfg.train.per_device_batch_size == 4
    assert cfg.adapter.target_modules == ["q_proj", "v_proj"]
    assert cfg.model.name_or_path == "builtin:tiny-llama"
    assert SFTConfig().model.name_or_path == ""  # built-in models only when named


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=1", "unknown key 'lr'; did you mean 'train.learning_rate'?"),
        ("train.lr=1", "did you mean 'train.learning_rate'?"),
        ("modle.dtype=float32", "did you mean 'model.dtype'?"),
        ("train.epochs=abc", "'train.epochs' must be a number, got 'abc'"),
        ("seed=1.5", "'seed' must be an integer"),
        ("adapter.method=lorra", "did you mean 'lora'?"),
        ("save_merged=maybe", "'save_merged' must be true or false"),
        ("novalue", "is not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, override, message):
    path = write(tmp_path, "output_dir: out\nmodel:\n  name_or_path: m\ndata:\n  path: d.jsonl\n")
    with pytest.raises(ConfigError) as err:
        load_config(SFTConfig, path, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_yaml_key_names_the_file(tmp_path):
    path = write(tmp_path, "output_dir: out\ntrain:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'train\.lr'; did you mean 'train\.learning_rate'"):
        load_config(SFTConfig, path)


def test_missing_required_value_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="missing required value 'data.path'"):
        load_config(SFTConfig, write(tmp_path, "output_dir: out\nmodel:\n  name_or_path: builtin:tiny-llama\n"))
    with pytest.raises(ConfigError, match=r"c\.yaml:2: not valid YAML"):
        load_config(SFTConfig, write(tmp_path, "a: 1\n b: [\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(SFTConfig, str(tmp_path / "missing.yaml"))


def test_every_field_is_documented():
    lines = describe(SFTConfig)
    assert any(line.strip().startswith("train.learning_rate") for line in lines)
    from alignment import config

    for cls in (config.ModelConfig, config.AdapterConfig, config.TrainConfig, SFTDataConfig):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if f not in docs]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def stage_class(path: str):
    """The config class of a shipped YAML, by its file name (litgpt's 'every shipped config loads')."""
    name = os.path.basename(path)
    if name.startswith("sft"):
        return SFTConfig
    if name.startswith("reward"):
        return pytest.importorskip("reward.train").RewardConfig
    if name.startswith(("ppo", "rloo", "grpo")):
        return pytest.importorskip("alignment.ppo.config").PPOConfig
    if name.startswith("dpo"):
        return pytest.importorskip("alignment.dpo.config").DPOConfig
    if name.startswith("sample"):
        return pytest.importorskip("reward.rankings.sampling").SampleConfig
    if name.startswith("rank"):
        return pytest.importorskip("reward.rankings.config").RankConfig
    if name.startswith("pipeline"):
        return pytest.importorskip("alignment.pipeline").PipelineConfig
    if name.startswith("eval"):
        return pytest.importorskip("alignment.evaluate").EvalConfig
    return None


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))), ids=os.path.basename)
def test_every_shipped_config_loads(path):
    cls = stage_class(path)
    assert cls is not None, f"{path}: no config class is known for this file name"
    load_config(cls, path)


def test_ppo_memory_settings_are_checked():
    from alignment.ppo.config import PPOConfig

    base = ["output_dir=o", "model.name_or_path=m", "data.path=d", "reward.path=r"]
    cfg = load_config(PPOConfig, None, [*base, "ppo.logits_chunk_size=64", "ppo.checkpoint_roles=[value]"])
    assert cfg.ppo.logits_chunk_size == 64 and cfg.ppo.checkpoint_roles == ["value"]
    with pytest.raises(ConfigError, match="'ppo.logits_chunk_size' must be >= 1, got 0"):
        load_config(PPOConfig, None, [*base, "ppo.logits_chunk_size=0"])
    with pytest.raises(ConfigError, match="'ppo.checkpoint_roles': unknown role 'reward'"):
        load_config(PPOConfig, None, [*base, "ppo.checkpoint_roles=[policy, reward]"])
