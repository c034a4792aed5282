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
