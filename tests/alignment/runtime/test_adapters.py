import pytest
import torch

from alignment.common.errors import UserError
from alignment.config.shared import AdapterConfig
from alignment.runtime import adapters


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning"])
def test_peft_methods_train_only_their_parameters_and_round_trip(tiny_llama_dir, tmp_path, method):
    from peft import PeftModel

    model = adapters.apply(load(tiny_llama_dir), AdapterConfig(method=method, r=4, num_virtual_tokens=4))
    trainable, total = adapters.count_parameters(model)
    assert 0 < trainable < total / 5
    base_names = {n for n, p in model.named_parameters() if p.requires_grad and "base_layer" in n}
    assert not base_names  # base frozen
    for p in (p for p in model.parameters() if p.requires_grad):
        torch.nn.init.normal_(p, std=0.1)  # move the adapter away from its identity init
    model.save_pretrained(tmp_path)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        expected = model.eval()(ids).logits
        loaded = PeftModel.from_pretrained(load(tiny_llama_dir), tmp_path).eval()
        torch.testing.assert_close(loaded(ids).logits, expected)


def test_selective_trains_only_named_layers(tiny_llama_dir):
    model = adapters.apply(load(tiny_llama_dir), AdapterConfig(method="selective", trainable=["layers.1."]))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("layers.1." in n for n in names)
    with pytest.raises(UserError, match="no parameter name contains"):
        adapters.apply(load(tiny_llama_dir), AdapterConfig(method="selective", trainable=["nope"]))


def test_full_trains_everything(tiny_llama_dir):
    model = adapters.apply(load(tiny_llama_dir), AdapterConfig(method="full"))
    trainable, total = adapters.count_parameters(model)
    assert trainable == total


def test_merge_gives_the_adapted_model(tiny_llama_dir, tmp_path):
    model = adapters.apply(load(tiny_llama_dir), AdapterConfig(r=4))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    model.save_pretrained(tmp_path / "adapter")
    adapters.merge_to(str(tmp_path / "adapter"), tiny_llama_dir, str(tmp_path / "merged"), torch.float32)
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        torch.testing.assert_close(
            load(str(tmp_path / "merged"))(ids).logits, model.eval()(ids).logits, atol=1e-5, rtol=1e-5
        )
