"""Generation helpers: left padding, positions, masks from EOS, the explicit sampling config."""

import torch

from alignment.runtime import generation as G

# --- masks from EOS ------------------------------------------------------------------------------


def test_response_mask_truncation_and_has_eos():
    EOS, PAD = 2, 0
    responses = torch.tensor(
        [
            [5, 6, 2, 7, 2],  # EOS in the middle: tokens after it are padding
            [2, 5, 5, 5, 5],  # EOS first: only the EOS is real
            [5, 6, 7, 8, 9],  # no EOS: all real (truncated at max length)
            [5, 6, 7, 8, 2],  # EOS last
        ]
    )
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
        dtype=torch.bool,
    )
    assert torch.equal(G.response_mask(responses, EOS), expected)
    assert G.has_eos(responses, EOS).tolist() == [True, True, False, True]
    assert G.truncate_after_eos(responses, EOS, PAD).tolist() == [
        [5, 6, 2, 0, 0],
        [2, 0, 0, 0, 0],
        [5, 6, 7, 8, 9],
        [5, 6, 7, 8, 2],
    ]


def test_left_pad_and_positions_count_real_tokens_only():
    ids, mask = G.left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert G.position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]


def test_sampling_ignores_the_models_own_generation_config(tiny_llama_dir):
    """A hub generation_config (here greedy-like top_k=1 and a repetition penalty) must not reshape what we sample:
    the explicit config samples the full softmax, and full_width pads every row to max_new_tokens."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.generation_config.top_k, model.generation_config.repetition_penalty = 1, 5.0
    queries, query_mask = G.left_pad([[1, 10, 11], [1, 12]], pad_id=0)
    config = G.generation_config(6, 1.0, pad_id=0, eos_id=None, num_return_sequences=8)
    assert (config.top_k, config.top_p, config.repetition_penalty, config.eos_token_id) == (0, 1.0, 1.0, [])
    torch.manual_seed(0)
    out = G.generate(model, queries, query_mask, config, full_width=True)
    assert out.responses.shape == (16, 6) and out.queries.shape == (16, 3)
    assert torch.equal(out.queries[:8], queries[:1].expand(8, -1))  # a prompt's samples are adjacent
    assert bool(out.response_mask.all()) and not out.contains_eos.any()  # no EOS given: nothing stops
    assert len({tuple(r) for r in out.responses[:8].tolist()}) > 1  # top_k=1 would make all 8 the same
    ids, attention = out.sequences(slice(0, 2))
    assert ids.shape == (2, 9) and attention[:, :3].tolist() == query_mask[:1].expand(2, -1).tolist()


def test_few_row_linears_equal_the_plain_layer_and_are_undone(monkeypatch):
    """The sampling-time forward for few rows on CPU (W @ x^T, transposed back) gives x @ W^T + b within float32
    rounding, in the input's shape, contiguous; many rows, small weights and other dtypes take the plain path
    unchanged; only the model's own layers change, only inside the block, and torch.nn.functional never does."""
    monkeypatch.setenv(G.FEW_ROW_SWITCH, "on")  # the path itself, whatever this machine measures
    F, plain = torch.nn.functional, torch.nn.functional.linear
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "big": torch.nn.Linear(384, 512),
            "unbiased": torch.nn.Linear(384, 512, bias=False),
            "small": torch.nn.Linear(384, 16),  # a LoRA A matrix: the plain path is faster there
            "float64": torch.nn.Linear(384, 512).double(),
        }
    )
    big, gen = model["big"], torch.Generator().manual_seed(0)
    few, many = torch.randn(2, 3, 384, generator=gen), torch.randn(G.FEW_ROWS + 1, 384, generator=gen)
    with torch.no_grad(), G.few_row_linears(model, "cpu"):
        assert F.linear is plain and "forward" in vars(big) and "forward" not in vars(model["small"])
        out = big(few)
        assert out.shape == (2, 3, 512) and out.is_contiguous()
        torch.testing.assert_close(out, plain(few, big.weight, big.bias), rtol=1e-5, atol=1e-4)
        unbiased = model["unbiased"]
        torch.testing.assert_close(unbiased(few), plain(few, unbiased.weight), rtol=1e-5, atol=1e-4)
        assert torch.equal(big(many), plain(many, big.weight, big.bias))
        assert torch.equal(model["small"](few), plain(few, model["small"].weight, model["small"].bias))
        double = model["float64"]
        assert torch.equal(double(few.double()), plain(few.double(), double.weight, double.bias))
    assert F.linear is plain and not any("forward" in vars(m) for m in model.modules())


def test_few_row_linears_follow_the_measurement_or_the_switch(monkeypatch):
    """Off the switch, nothing changes; `auto` asks the one-time measurement (remembered per shape and threads)."""
    model = torch.nn.Linear(384, 512)
    monkeypatch.setenv(G.FEW_ROW_SWITCH, "off")
    with G.few_row_linears(model, "cpu"):
        assert "forward" not in vars(model)
    monkeypatch.setenv(G.FEW_ROW_SWITCH, "auto")
    monkeypatch.setattr(G, "_MEASURED", {})
    with G.few_row_linears(model, "cpu"):
        assert ("forward" in vars(model)) == G._MEASURED[(512, 384, torch.get_num_threads())]
    assert "forward" not in vars(model)
    with G.few_row_linears(model, "meta"):  # not on CPU: never
        assert "forward" not in vars(model)
