"""`rlhf demo`'s method selection: which stages a `methods` list runs, and one line for a bad name."""

import pytest

from alignment.assets import worlds
from alignment.demo import METHODS, DemoConfig, method_pipeline, world_overrides
from alignment.pipeline import PipelineConfig


def run_demo_cli(capsys, *args: str) -> tuple[int, str]:
    from alignment.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["demo", *args])
    return done.value.code, capsys.readouterr().err


@pytest.mark.parametrize("methods", ["[ppo,dpo_pairwise]", "[]", "[ppo,ppo]"])
def test_bad_methods_are_one_line_naming_the_key(capsys, tmp_path, methods):
    code, err = run_demo_cli(capsys, f"output_dir={tmp_path / 'demo'}", f"methods={methods}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "'methods'" in lines[0] and "dpo_kwise" in lines[0], err
    assert not (tmp_path / "demo").exists()  # nothing ran, nothing half-written


def test_every_method_by_default_and_each_stage_config():
    cfg = DemoConfig()
    assert cfg.methods == ["ppo", "rloo", "grpo", "dpo", "dpo_kwise"] == list(METHODS)
    pipe = PipelineConfig(output_dir="/runs/demo", ppo=["reward.monitor=x:y"])
    rloo = method_pipeline(pipe, cfg, "rloo")
    world = world_overrides(worlds.get(cfg.world))
    # the world's data, lengths and gold first, then the demo's settings for the method
    assert (rloo.method, rloo.ppo) == ("rloo", [*world["online"], *cfg.rloo]) and pipe.method == "ppo"
    assert method_pipeline(pipe, cfg, "grpo").method == "grpo"
    pairwise, kwise = method_pipeline(pipe, cfg, "dpo"), method_pipeline(pipe, cfg, "dpo_kwise")
    assert pairwise.method == kwise.method == "dpo"
    assert (pairwise.dpo[0], kwise.dpo[0]) == ("loss.type=sigmoid", "loss.type=plackett_luce")
    # the same data (the K-wise export), batches and settings for both: the comparison is of the loss only
    assert pairwise.dpo[1:] == kwise.dpo[1:] == [*world["dpo"], *cfg.dpo] and cfg.dpo == cfg.dpo_kwise
