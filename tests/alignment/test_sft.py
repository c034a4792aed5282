"""SFT end to end on the embedded tiny model, each run in a fresh process as a user runs it."""

import json
import os

import pytest
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

QUICK = ["data.limit=256", "data.eval_size=32", "train.log_steps=2", "save_merged=false"]


def train_lines(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if "train/loss" in line]


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "adapter_model.safetensors"))


def test_loss_falls_and_outputs_load_with_peft(tmp_path, builtin_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    r = run_cli(
        "sft",
        "configs/sft.yaml",
        f"output_dir={out}",
        "data.limit=512",
        "data.eval_size=32",
        "train.max_steps=40",
        "train.log_steps=5",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [line["train/loss"] for line in train_lines(out)]
    assert losses[-1] < 0.8 * losses[0], losses
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"] == {"adapter": ".", "model": "merged"}
    assert manifest["metrics"]["eval/perplexity"] > 1
    assert (out / "config.yaml").is_file()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Review of the cafe:", return_tensors="pt")
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(builtin_model), out).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, policy(**ids).logits, atol=1e-4, rtol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(builtin_model).eval()
        assert not torch.allclose(base(**ids).logits, policy(**ids).logits, atol=1e-3)


def test_kill_after_checkpoint_then_resume_equals_uninterrupted_run(tmp_path):
    args = ["configs/sft.yaml", *QUICK, "train.max_steps=8", "checkpoint.save_steps=4", "checkpoint.keep_last=1"]
    full = run_cli("sft", *args, f"output_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run_cli("sft", *args, f"output_dir={tmp_path / 'cut'}", env={"RLHF_KILL_AFTER_CHECKPOINT": "4"})
    assert killed.returncode == -9  # SIGKILL right after the step-4 checkpoint was written
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    resumed = run_cli("sft", *args, f"output_dir={tmp_path / 'cut'}", "checkpoint.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    a, b = adapter_tensors(tmp_path / "full"), adapter_tensors(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    strip = lambda lines: [{k: v for k, v in x.items() if k != "train/tokens_per_second"} for x in lines]  # noqa: E731
    assert strip(train_lines(tmp_path / "full")) == strip(train_lines(tmp_path / "cut"))


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning", "selective", "full"])
def test_other_adapter_methods_train_and_save(tmp_path, method):
    out = tmp_path / method
    extra = ["adapter.trainable=layers.1.,lm_head"] if method == "selective" else []
    r = run_cli(
        "sft", "configs/sft.yaml", *QUICK, "train.max_steps=3", f"adapter.method={method}", f"output_dir={out}", *extra
    )
    assert r.returncode == 0, r.stderr[-3000:]
    saved = set(os.listdir(out))
    if method in ("ia3", "prompt_tuning"):
        assert {"adapter_config.json", "adapter_model.safetensors"} <= saved
    else:
        assert {"config.json", "model.safetensors"} <= saved


def test_messages_data_with_packing(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Review of the {t}:"},
                {"role": "assistant", "content": "the food was good."},
            ]
        }
        for t in ("cafe", "hotel", "park", "gym") * 16
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "chat"
    r = run_cli(
        "sft",
        "configs/sft.yaml",
        f"data.path={data}",
        "data.packing=true",
        "train.max_steps=4",
        f"output_dir={out}",
        "save_merged=false",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["train_rows"] < 64  # 64 short conversations packed into fewer rows


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path):
    out = tmp_path / "wb"
    r = run_cli(
        "sft",
        "configs/sft.yaml",
        *QUICK,
        "train.max_steps=4",
        "tracking.wandb=true",
        "tracking.mode=offline",
        f"output_dir={out}",
        env={"WANDB_DIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [d for d in (out / "wandb").iterdir() if d.name.startswith("offline-run-")]
    assert len(runs) == 1
    records = read_wandb_records(next(runs[0].glob("run-*.wandb")))
    # wandb stores "train/loss" as the nested key ["train", "loss"]
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    logged = [h["train/loss"] for h in history if "train/loss" in h]
    assert logged == pytest.approx([line["train/loss"] for line in train_lines(out)])
    assert any("eval/perplexity" in h for h in history)
    config_keys = {u.key for r in records if r.HasField("config") for u in r.config.update}
    assert {"train", "model", "adapter"} <= config_keys


def read_wandb_records(path):
    """Protobuf records of an offline .wandb file (LevelDB-log framing: 32 KiB blocks, 7-byte chunk headers)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk completes a record
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.parametrize(
    "args, message",
    [
        (["lr=1"], "unknown key 'lr'; did you mean 'train.learning_rate'?"),
        (["data.path=missing.jsonl"], "data.path: 'missing.jsonl' does not exist"),
        (["model.name_or_path=./no/such/model"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    r = run_cli("sft", "configs/sft.yaml", f"output_dir={tmp_path}", *args)
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def test_bad_row_names_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    r = run_cli("sft", "configs/sft.yaml", f"output_dir={tmp_path / 'o'}", f"data.path={data}")
    assert r.returncode == 2
    assert f"{data}:2: expected 'prompt'+'completion' or 'messages'" in r.stderr
