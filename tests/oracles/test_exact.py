"""Exact-optimum math against brute force on hand-made distributions and a tiny Llama."""

import itertools
import math

import pytest
import torch

from tests.oracles import exact as E


class TableLM:
    """A causal 'LM' whose next-token logits depend on the previous token and the position: a fixed table.

    Small enough to score with a Python loop, and still position- and history-dependent.
    """

    def __init__(self, vocab: int, max_len: int, seed: int):
        self.table = torch.randn(
            max_len, vocab, vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )

    def __call__(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        return self.table[positions, input_ids]

    def next_probs(self, prefix, temperature=1.0):
        logits = [x / temperature for x in self.table[len(prefix) - 1, prefix[-1]].tolist()]
        z = sum(math.exp(x) for x in logits)
        return [math.exp(x) / z for x in logits]

    def brute_prob(self, prompt, response, eos=None, temperature=1.0):
        """Product of next-token probabilities, one Python step at a time, stopping after the first EOS."""
        seq, prob = list(prompt), 1.0
        for tok in response:
            prob *= self.next_probs(seq, temperature)[tok]
            seq.append(tok)
            if tok == eos:
                break
        return prob


def test_enumerate_responses_counts_and_canonical_padding():
    V, Lr, EOS, PAD = 4, 3, 3, 9
    plain = E.enumerate_responses(V, Lr)
    assert plain.shape == (V**Lr, Lr) and len(set(map(tuple, plain.tolist()))) == V**Lr

    with_eos = E.enumerate_responses(V, Lr, eos_token_id=EOS, pad_token_id=PAD).tolist()
    # first EOS at position k: (V-1)^k responses; no EOS: (V-1)^L
    assert len(with_eos) == sum((V - 1) ** k for k in range(Lr)) + (V - 1) ** Lr == 40
    assert len(set(map(tuple, with_eos))) == len(with_eos)
    for row in with_eos:
        if EOS in row:
            k = row.index(EOS)
            assert row[k + 1 :] == [PAD] * (Lr - k - 1)
        assert PAD not in row or EOS in row
    assert [3, 9, 9] in with_eos and [0, 3, 9] in with_eos and [0, 1, 2] in with_eos
    with pytest.raises(ValueError, match="eos_token_id"):
        E.enumerate_responses([0, 1], 2, eos_token_id=5)


@pytest.mark.parametrize("eos", [None, 2])
def test_sequence_logprobs_match_step_by_step_loop(eos):
    V, Lr, temp = 4, 3, 0.8
    lm = TableLM(V, 8, seed=0)
    prompts = [torch.tensor([1, 0]), torch.tensor([3, 3, 1])]
    responses = E.enumerate_responses(V, Lr, eos_token_id=eos)
    logp = E.sequence_logprobs(lm, prompts, responses, eos_token_id=eos, temperature=temp, batch_size=7)
    assert logp.shape == (2, responses.shape[0]) and logp.dtype == torch.float64
    for i, prompt in enumerate(prompts):
        for j, resp in enumerate(responses.tolist()):
            assert logp[i, j].exp().item() == pytest.approx(lm.brute_prob(prompt.tolist(), resp, eos, temp), abs=1e-12)
    # every response the sampler can produce is listed exactly once: the probabilities sum to 1
    torch.testing.assert_close(E.total_mass(logp), torch.ones(2, dtype=torch.float64))


def test_absorbing_eos_equals_marginal_over_all_continuations():
    """P(truncated response) equals the summed probability of every full-length sequence sharing that prefix."""
    V, Lr, EOS = 3, 4, 1
    lm = TableLM(V, 8, seed=1)
    prompt = [2, 0]
    marginal = {}
    for full in itertools.product(range(V), repeat=Lr):
        key = full[: full.index(EOS) + 1] if EOS in full else full
        marginal[key] = marginal.get(key, 0.0) + lm.brute_prob(prompt, full, eos=None)
    responses = E.enumerate_responses(V, Lr, eos_token_id=EOS)
    logp = E.sequence_logprobs(lm, [torch.tensor(prompt)], responses, eos_token_id=EOS)[0]
    assert len(marginal) == responses.shape[0]
    for resp, lp in zip(responses.tolist(), logp.tolist()):
        key = tuple(resp[: resp.index(EOS) + 1]) if EOS in resp else tuple(resp)
        assert math.exp(lp) == pytest.approx(marginal[key], abs=1e-12)


def _random_logp(P, N, seed):
    return torch.log_softmax(torch.randn(P, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)


def test_kl_reward_objective_match_brute_force():
    P, N, beta = 3, 6, 0.3
    logp, ref = _random_logp(P, N, 0), _random_logp(P, N, 1)
    rewards = torch.randn(P, N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kl, er, j = E.exact_kl(logp, ref), E.expected_reward(logp, rewards), E.objective(logp, ref, rewards, beta)
    for i in range(P):
        p, q, r = logp[i].exp().tolist(), ref[i].exp().tolist(), rewards[i].tolist()
        kl_i = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        er_i = sum(pi * ri for pi, ri in zip(p, r))
        assert kl[i].item() == pytest.approx(kl_i, abs=1e-12)
        assert er[i].item() == pytest.approx(er_i, abs=1e-12)
        assert j[i].item() == pytest.approx(er_i - beta * kl_i, abs=1e-12)
        j_star = beta * math.log(sum(qi * math.exp(ri / beta) for qi, ri in zip(q, r)))
        assert E.optimal_objective(ref, rewards, beta)[i].item() == pytest.approx(j_star, abs=1e-12)


def test_kl_ignores_responses_the_policy_never_emits():
    logp = torch.tensor([[0.0, -math.inf]], dtype=torch.float64)
    ref = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
    assert E.exact_kl(logp, ref).item() == pytest.approx(math.log(2))


def test_gibbs_policy_reaches_the_optimum_and_nothing_beats_it():
    P, N, beta = 4, 9, 0.5
    ref = _random_logp(P, N, 3)
    rewards = torch.rand(P, N, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    j_star = E.optimal_objective(ref, rewards, beta)
    best = E.optimal_logprobs(ref, rewards, beta)
    torch.testing.assert_close(E.objective(best, ref, rewards, beta), j_star, rtol=0, atol=1e-12)
    # the reference itself: J = E_ref[r], strictly below J* here
    assert (E.objective(ref, ref, rewards, beta) < j_star - 1e-6).all()
    for seed in range(5):
        other = _random_logp(P, N, 10 + seed)
        assert (E.objective(other, ref, rewards, beta) <= j_star + 1e-12).all()
    # a step from the reference towards pi* gains a share of the gap; pi* itself all of it
    j_ref = E.objective(ref, ref, rewards, beta).mean().item()
    assert E.gain_fraction(j_star.mean().item(), j_ref, j_star.mean().item()) == pytest.approx(1.0)
    mix = torch.logaddexp(best + math.log(0.5), ref + math.log(0.5))
    frac = E.gain_fraction(E.objective(mix, ref, rewards, beta).mean().item(), j_ref, j_star.mean().item())
    assert 0.5 < frac < 1.0  # J is concave in pi: the midpoint gains more than half


def test_optimum_is_stable_for_large_reward_over_beta():
    ref = torch.log(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    rewards = torch.tensor([[1000.0, 0.0]], dtype=torch.float64)
    beta = 0.01  # r / beta = 1e5: exp would overflow
    # beta * log(0.25 * e^(1000/beta) + 0.75) = 1000 + beta * log(0.25) up to e^-1e5
    assert E.optimal_objective(ref, rewards, beta).item() == pytest.approx(1000 + beta * math.log(0.25), abs=1e-9)
    best = E.optimal_logprobs(ref, rewards, beta)
    assert E.objective(best, ref, rewards, beta).item() == pytest.approx(1000 + beta * math.log(0.25), abs=1e-9)


def test_evaluate_report_and_mass_check():
    ref = _random_logp(2, 5, 5)
    rewards = torch.randn(2, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    rep = E.evaluate(ref, ref, rewards, beta=0.1)
    assert rep.kl == pytest.approx(0.0, abs=1e-15)
    assert rep.objective == pytest.approx(rep.reward) and rep.optimum > rep.objective
    missing = ref.clone()
    missing[:, 0] = -math.inf  # as if a token the sampler can emit were not enumerated
    with pytest.raises(ValueError, match="enumerate every token"):
        E.evaluate(missing, ref, rewards, beta=0.1)
    with pytest.raises(ValueError, match="no achievable gain"):
        E.gain_fraction(0.5, 1.0, 1.0)


def test_tiny_llama_teacher_forcing_equals_incremental_scoring():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=5, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    V, Lr, EOS, temp = 5, 3, 4, 1.5
    prompts = [torch.tensor([0, 1]), torch.tensor([2])]
    responses = E.enumerate_responses(V, Lr, eos_token_id=EOS)
    logp = E.sequence_logprobs(E.causal_lm_logits_fn(model), prompts, responses, EOS, temperature=temp)
    torch.testing.assert_close(E.total_mass(logp), torch.ones(2, dtype=torch.float64))
    # score a few responses one token at a time, each step its own forward pass over the prefix
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for j in [0, 7, responses.shape[0] - 1]:
                seq, total = prompt.tolist(), 0.0
                for tok in responses[j].tolist():
                    logits = model(input_ids=torch.tensor([seq])).logits[0, -1].double() / temp
                    total += torch.log_softmax(logits, -1)[tok].item()
                    seq.append(tok)
                    if tok == EOS:
                        break
                assert logp[i, j].item() == pytest.approx(total, abs=1e-5)


def test_policy_samples_follow_the_exact_probabilities():
    """What the rollout samples (temperature, EOS, padding) is the distribution exact.py enumerates."""
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.ppo.model import build_ppo_model
    from alignment.runtime.generation import truncate_after_eos

    torch.manual_seed(0)
    V, Lr, EOS, PAD, temp, n = 4, 3, 3, 0, 1.7, 2000
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, pad_token_id=PAD, eos_token_id=EOS, initializer_range=0.3,
    )  # fmt: skip
    model = build_ppo_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    prompt = torch.tensor([1, 2, 2])
    torch.manual_seed(1)
    out = model.generate(
        prompt.expand(n, 3), torch.ones(n, 3, dtype=torch.long), do_sample=True, temperature=temp,
        max_new_tokens=Lr, eos_token_id=EOS, pad_token_id=PAD,
    )  # fmt: skip
    # generate stops when every row has ended: pad to L, and canonicalise what follows each EOS
    samples = torch.nn.functional.pad(out[:, 3:], (0, Lr - (out.shape[1] - 3)), value=PAD)
    samples = truncate_after_eos(samples, EOS, PAD)

    responses = E.enumerate_responses(V, Lr, eos_token_id=EOS, pad_token_id=PAD)
    index = {tuple(r): i for i, r in enumerate(responses.tolist())}
    counts = torch.zeros(len(index), dtype=torch.float64)
    for row in samples.tolist():
        counts[index[tuple(row)]] += 1

    def chi2(temperature):
        policy = lambda ids, am: model(ids, am, role="policy")  # noqa: E731
        expected = E.sequence_logprobs(policy, [prompt], responses, EOS, temperature=temperature)[0].exp() * n
        return ((counts - expected) ** 2 / expected).sum().item()

    dof = len(index) - 1  # 39: chi2 has mean 39 and sd 8.8 when the distributions agree
    threshold = dof + 6 * math.sqrt(2 * dof)
    assert chi2(temp) < threshold
    assert chi2(1.0) > 3 * threshold  # the same samples scored without the temperature do not fit


def test_evaluate_model_uses_policy_against_reference():
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.ppo.model import build_ppo_model

    torch.manual_seed(0)
    V, Lr, EOS, beta = 4, 2, 3, 0.5
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, pad_token_id=0, eos_token_id=EOS,
    )  # fmt: skip
    model = build_ppo_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    prompts = [torch.tensor([1, 2]), torch.tensor([2])]
    responses = E.enumerate_responses(V, Lr, eos_token_id=EOS)
    rewards = (responses == 1).sum(-1).double().expand(2, -1)  # count of token 1
    start = E.evaluate_model(model, prompts, responses, rewards, beta, EOS)
    assert start.kl == 0.0 and start.objective == pytest.approx(start.reward) and start.optimum > start.objective
    with torch.no_grad():  # any other policy: positive KL, J below J*, same J*
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    moved = E.evaluate_model(model, prompts, responses, rewards, beta, EOS)
    assert moved.kl > 0 and moved.objective < moved.optimum and moved.optimum == pytest.approx(start.optimum)
