import glob
import os

import pytest

from alignment.common.errors import ConfigError
from alignment.config.loader import field_docs, load_config
from alignment.sft import SFTConfig, SFTDataConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_and_overrides_resolve_to_typed_values(tmp_path):
    path = write(tmp_path, "output_dir: out\ndata:\n  path: d.jsonl\ntrain:\n  learning_rate: 1e-4\n")
    cfg = load_config(
        SFTConfig,
        path,
        [
            "train.per_device_batch_size=4",
            "adapter.target_modules=q_proj,v_proj",
            "model.name_or_path=builtin:tiny-llama",
        ],
    )
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
    from alignment.config.command_line import describe

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


@pytest.mark.parametrize("path", ["configs/sft.yaml", "configs/ppo.yaml", "configs/dpo.yaml", "configs/reward.yaml"])
def test_a_saved_config_loads_back_to_the_same_config(path, tmp_path):
    """The config.yaml a run writes is a config file: `rlhf <stage> run/config.yaml` repeats the run. A field
    typed `list[str] | str` keeps "all-linear" a name (a list of one matches no module), and a comma list splits."""
    from alignment.config.loader import save_config

    cls = stage_class(path)
    cfg = load_config(cls, os.path.join(REPO, path), ["output_dir=out"])
    save_config(cfg, str(tmp_path / "config.yaml"))
    assert load_config(cls, str(tmp_path / "config.yaml")) == cfg
    sft = os.path.join(REPO, "configs/sft.yaml")
    assert load_config(SFTConfig, sft, ["adapter.target_modules=all-linear"]).adapter.target_modules == "all-linear"


def test_ppo_memory_settings_are_checked():
    from alignment.ppo.config import PPOConfig

    base = ["output_dir=o", "model.name_or_path=m", "data.path=d", "reward.path=r"]
    cfg = load_config(PPOConfig, None, [*base, "ppo.logits_chunk_size=64", "ppo.checkpoint_roles=[value]"])
    assert cfg.ppo.logits_chunk_size == 64 and cfg.ppo.checkpoint_roles == ["value"]
    with pytest.raises(ConfigError, match="'ppo.logits_chunk_size' must be >= 1, got 0"):
        load_config(PPOConfig, None, [*base, "ppo.logits_chunk_size=0"])
    with pytest.raises(ConfigError, match="'ppo.checkpoint_roles': unknown role 'reward'"):
        load_config(PPOConfig, None, [*base, "ppo.checkpoint_roles=[policy, reward]"])


def strings(value):
    """Every string in a (nested) resolved config: dataclass, dict or list."""
    import dataclasses

    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def run_configs(path: str, run: str) -> list:
    """Every config a shipped YAML resolves to under `run=`: for configs/rank.yaml, each rank command's."""
    cls = stage_class(path)
    if os.path.basename(path) != "rank.yaml":
        return [load_config(cls, path, [f"run={run}"])]
    from alignment.commands.rank import load_command
    from reward.rankings.config import AnnotateConfig, ExportConfig, ImportConfig, StatusConfig, UsersConfig

    extra = {ImportConfig: ["path=t.jsonl"], AnnotateConfig: ["users=a", "score=alignment.assets.gold:gold_reward"]}
    return [
        load_command(c, path, [f"run={run}", *extra.get(c, [])])
        for c in (cls, ExportConfig, StatusConfig, UsersConfig, ImportConfig, AnnotateConfig)
    ]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))), ids=os.path.basename)
def test_every_shipped_config_follows_run(path, tmp_path):
    """`run=` moves the whole chain: every run-derived key of every shipped YAML lands in the new run folder, and no
    value anywhere still points into the YAML's own run folder (a YAML that spells out `output_dir: runs/tiny/rloo`
    would otherwise write into another run)."""
    import yaml

    from alignment.config.loader import read_yaml

    own_run = read_yaml(path).get("run") or read_yaml(path).get("output_dir")
    run = str(tmp_path / "mine")
    for cfg in run_configs(path, run):
        for key, sub in getattr(type(cfg), "RUN_PATHS", {}).items():
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            if isinstance(sub, tuple) and not value:  # reward.path when reward.function replaces it
                continue
            for v in value.values() if isinstance(value, dict) else [value]:
                assert os.path.commonpath([run, os.path.abspath(v)]) == run, f"{type(cfg).__name__}.{key} = {v}"
        stale = [s for s in strings(cfg) if own_run and own_run in s]
        assert not stale, f"{os.path.basename(path)}: still points into {own_run}: {stale}"
    if read_yaml(path).get("algorithm"):
        assert cfg.output_dir == os.path.join(run, yaml.safe_load(open(path))["algorithm"])


def test_run_moves_yaml_paths_inside_its_own_run_only(tmp_path):
    """A path the YAML sets inside its own run follows `run=`; one outside it, or given as an override, stays."""
    path = write(
        tmp_path,
        "run: runs/a\noutput_dir: runs/a/out\ndata:\n  path: other/d.jsonl\nmodel:\n  name_or_path: runs/ab/m\n",
    )
    cfg = load_config(SFTConfig, path, ["run=runs/b"])
    assert (cfg.output_dir, cfg.data.path, cfg.model.name_or_path) == ("runs/b/out", "other/d.jsonl", "runs/ab/m")
    cfg = load_config(SFTConfig, path, ["run=runs/b", "output_dir=runs/a/out"])
    assert cfg.output_dir == "runs/a/out"
    assert load_config(SFTConfig, path).output_dir == "runs/a/out"
