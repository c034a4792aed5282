"""Per-token log-probs and entropy against naive Python loops."""

import math

import pytest
import torch

from alignment.runtime import logprobs as LP


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# --- log-probs and entropy -----------------------------------------------------------------------


def test_logprobs_from_logits_matches_loop_with_temperature():
    B, T, V, temp = 3, 4, 7, 0.7
    logits = _rand(B, T, V)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    got = LP.logprobs_from_logits(logits, tokens, temperature=temp)
    for b in range(B):
        for t in range(T):
            z = [logits[b, t, v].item() / temp for v in range(V)]
            log_norm = math.log(sum(math.exp(x) for x in z))
            assert got[b, t].item() == pytest.approx(z[tokens[b, t]] - log_norm, abs=1e-12)


def test_logprobs_upcast_bf16_and_match_sampling_distribution():
    logits = _rand(2, 3, 5).to(torch.bfloat16)
    tokens = torch.tensor([[0, 1, 2], [3, 4, 0]])
    got = LP.logprobs_from_logits(logits, tokens, temperature=0.5)
    assert got.dtype == torch.float32
    # the distribution sampling uses: softmax(logits / T) in fp32
    ref = torch.log_softmax(logits.float() / 0.5, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(got, ref)


def test_entropy_from_logits_matches_loop():
    logits, temp = _rand(2, 3, 5), 1.3
    got = LP.entropy_from_logits(logits, temperature=temp)
    for b in range(2):
        for t in range(3):
            z = [logits[b, t, v].item() / temp for v in range(5)]
            s = sum(math.exp(x) for x in z)
            p = [math.exp(x) / s for x in z]
            assert got[b, t].item() == pytest.approx(-sum(q * math.log(q) for q in p), abs=1e-12)
    # uniform logits: entropy is log V
    assert LP.entropy_from_logits(torch.zeros(1, 1, 8))[0, 0].item() == pytest.approx(math.log(8), abs=1e-6)


# --- chunked, from hidden states -----------------------------------------------------------------


def _head(H=6, V=11, seed=3, bias=True):
    torch.manual_seed(seed)
    return torch.nn.Linear(H, V, bias=bias).double()


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 5, 100])
def test_hidden_logprobs_and_entropy_equal_full_logits_with_gradients(chunk, recompute, monkeypatch):
    # chunks recomputed in the backward pass (large logits) or kept (a small vocabulary): the same numbers
    monkeypatch.setattr(LP, "CHECKPOINT_MIN_LOGITS", 0 if recompute else 1 << 22)
    B, T, H, temp = 3, 5, 6, 0.7
    head = _head(H)
    hidden = _rand(B, T, H, seed=2).requires_grad_(True)
    tokens = torch.randint(0, 11, (B, T), generator=torch.Generator().manual_seed(4))
    weights = _rand(B, T, seed=5)
    # the full computation: [B, T, V] logits, then today's functions
    logits = head(hidden)
    ref_lp, ref_ent = LP.logprobs_from_logits(logits, tokens, temp), LP.entropy_from_logits(logits, temp)
    ((ref_lp * weights).sum() + (ref_ent * weights.flip(0)).sum()).backward()
    ref_grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad = head.weight.grad = head.bias.grad = None

    lp, ent = LP.hidden_logprobs(hidden, head, tokens, temp, chunk_size=chunk, with_entropy=True)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-12)
    ((lp * weights).sum() + (ent * weights.flip(0)).sum()).backward()
    for got, ref in zip([hidden.grad, head.weight.grad, head.bias.grad], ref_grads):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_hidden_logprobs_fp32_tolerance_and_no_entropy_by_default():
    head = torch.nn.Linear(16, 50).requires_grad_(False)
    hidden = torch.randn(2, 7, 16, requires_grad=True)
    tokens = torch.randint(0, 50, (2, 7))
    lp, ent = LP.hidden_logprobs(hidden, head, tokens, temperature=1.3, chunk_size=3)
    assert ent is None and lp.dtype == torch.float32
    torch.testing.assert_close(lp, LP.logprobs_from_logits(head(hidden), tokens, 1.3))
    (g,) = torch.autograd.grad(lp.sum(), hidden)
    (ref,) = torch.autograd.grad(LP.logprobs_from_logits(head(hidden), tokens, 1.3).sum(), hidden)
    torch.testing.assert_close(g, ref)


def test_response_logprobs_from_hidden_shifts_like_response_logprobs():
    B, P, T, H = 2, 3, 4, 6
    head = _head(H)
    hidden = _rand(B, P + T, H, seed=7)
    responses = torch.randint(0, 11, (B, T), generator=torch.Generator().manual_seed(8))
    got, _ = LP.response_logprobs_from_hidden(hidden, head, responses, P, 0.9, chunk_size=3)
    torch.testing.assert_close(got, LP.response_logprobs(head(hidden), responses, P, 0.9), rtol=0, atol=1e-12)


def test_policy_logprobs_of_a_saved_llama_equal_its_full_logits(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.runtime.generation import position_ids_from_mask

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         vocab_size=97, max_position_embeddings=64)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 2], [3, 4, 5, 6, 10, 11, 12, 13]])
    attn = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    P, mask = 4, torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    lp, ent = LP.policy_logprobs(model, ids, attn, P, temperature=0.7, chunk_size=3, with_entropy=True)
    torch.testing.assert_close(lp, LP.response_logprobs(logits, ids[:, P:], P, 0.7))
    torch.testing.assert_close(ent, LP.entropy_from_logits(logits[:, P - 1 : -1], 0.7))
    seq = LP.policy_sequence_logprobs(model, ids, attn, mask, P, temperature=0.7, chunk_size=2)
    torch.testing.assert_close(seq, LP.sequence_logprobs(logits, ids[:, P:], mask, P, 0.7))
    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    assert LP.chunkable(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")))
    prompt_tuned = LlamaForCausalLM.from_pretrained(tmp_path)
    # virtual tokens enter in PEFT's own forward, which the trunk alone would skip
    assert not LP.chunkable(
        get_peft_model(prompt_tuned, PromptTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM"))
    )
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    model.config.final_logit_softcapping = 30.0  # a model that caps logits after the head: the full path
    assert not LP.chunkable(model)
    lp_full, _ = LP.policy_logprobs(model, ids, attn, P, temperature=0.7)
    torch.testing.assert_close(lp_full, lp)


def test_cpu_chunks_hold_at_most_cpu_chunk_logits(monkeypatch):
    """On CPU a large vocabulary shrinks the chunk (its [n, V] temporaries are the memory peak): same numbers."""
    head, calls = _head(), []
    head.register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    hidden, tokens = _rand(3, 5, 6, seed=2), torch.randint(0, 11, (3, 5))
    full, _ = LP.hidden_logprobs(hidden, head, tokens, 0.7, chunk_size=100)
    assert calls == [15]
    monkeypatch.setattr(LP, "CPU_CHUNK_LOGITS", 4 * 11 + 3)  # 4 positions of an 11-way vocabulary
    calls.clear()
    capped, _ = LP.hidden_logprobs(hidden, head, tokens, 0.7, chunk_size=100)
    assert calls == [4, 4, 4, 3]
    torch.testing.assert_close(capped, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("with_entropy", [False, True])
@pytest.mark.parametrize("mask", [None, "few", "most"])
@pytest.mark.parametrize("temp", [1.0, 0.7])
def test_a_large_frozen_heads_in_place_chunks_equal_autograd(with_entropy, mask, temp, monkeypatch):
    """A large frozen head's chunks are computed in place, and recomputed in the backward pass with their gradient
    from closed forms (two [n, V] buffers, not autograd's four to six): the same log-probs, entropy, log-mass and
    hidden-state gradient as autograd through the full logits, for a mask of a few tokens or all but a few (entropy
    and mass at once take the checkpointed path)."""
    monkeypatch.setattr(LP, "CHECKPOINT_MIN_LOGITS", 0)
    monkeypatch.setattr(LP, "LEAN_MIN_VOCAB", 0)  # an 11-way head stands in for a 150k one
    B, T, H, V = 3, 5, 6, 11
    head = _head(H, V).requires_grad_(False)
    hidden = _rand(B, T, H, seed=2).requires_grad_(True)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(4))
    mass_on = None if mask is None else torch.zeros(V, dtype=torch.bool)
    if mask is not None:
        mass_on[[1, 4, 7] if mask == "few" else list(range(2, V))] = True
    weights = _rand(B, T, 3, seed=5)

    def loss(stats):
        out = (stats.logprobs * weights[..., 0]).sum()
        out = out + (0 if stats.entropy is None else (stats.entropy * weights[..., 1]).sum())
        return out + (0 if stats.log_mass is None else (stats.log_mass * weights[..., 2]).sum())

    got = LP.hidden_token_stats(hidden, head, tokens, temp, chunk_size=4, with_entropy=with_entropy, mass_on=mass_on)
    (grad,) = torch.autograd.grad(loss(got), hidden)
    z = head(hidden) / temp
    logp = torch.log_softmax(z, -1)
    want = LP.TokenStats(
        logp.gather(-1, tokens[..., None]).squeeze(-1),
        -(logp.exp() * logp).sum(-1) if with_entropy else None,
        None if mass_on is None else torch.logsumexp(logp[..., mass_on], -1),
    )
    (want_grad,) = torch.autograd.grad(loss(want), hidden)
    for a, b in zip(got[:3], want[:3]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=0, atol=1e-12)
