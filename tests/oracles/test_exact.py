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


def test_expected_length_counts_the_tokens_before_the_first_eos_by_loop():
    responses = E.enumerate_responses(4, 3, eos_token_id=1, pad_token_id=0)  # pad counts as a word, as sampled
    logp = _random_logp(2, responses.shape[0], 3)
    got = E.expected_length(logp, responses, eos_token_id=1)
    for i in range(2):
        words = [next((t for t, tok in enumerate(row) if tok == 1), len(row)) for row in responses.tolist()]
        assert got[i].item() == pytest.approx(sum(p * w for p, w in zip(logp[i].exp().tolist(), words)), abs=1e-12)
    empty = torch.full_like(logp, -math.inf)
    empty[:, int((responses[:, 0] == 1).nonzero())] = 0.0  # all mass on the EOS alone: the empty answer
    assert E.expected_length(empty, responses, 1).tolist() == [0.0, 0.0]


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


# --- preference data with the same optimum (DPO) ---------------------------------------------------


def test_bradley_terry_probabilities_and_all_pairs_by_loop():
    rewards = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    probs = E.bradley_terry_probabilities(rewards)
    for p in range(2):
        for a in range(3):
            for b in range(3):
                want = 1 / (1 + math.exp(-(rewards[p, a] - rewards[p, b]).item()))
                assert probs[p, a, b].item() == pytest.approx(want, abs=1e-15)
    pairs = E.all_pairs(rewards)
    assert len(pairs.prompt) == 2 * 3
    seen = set()
    for p, c, r, q in zip(*(x.tolist() for x in (pairs.prompt, pairs.chosen, pairs.rejected, pairs.probability))):
        assert c != r and rewards[p, c] >= rewards[p, r] and q == pytest.approx(probs[p, c, r].item())
        seen.add((p, min(c, r), max(c, r)))
    assert len(seen) == 6  # every unordered pair once
    assert 0.5 in pairs.probability.tolist()  # equal rewards: a coin flip, whichever is called chosen


def _free_policy(logp):
    return logp.clone().requires_grad_(True)


def test_gibbs_optimum_minimises_the_population_dpo_loss_on_bradley_terry_labels():
    """Soft labels sigmoid(r_a - r_b) at beta: DPO's population loss is stationary and minimal at pi_ref e^(r/beta) / Z."""
    P, N = 3, 7
    ref = _random_logp(P, N, 20)
    rewards = 2 * torch.randn(P, N, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    pairs = E.all_pairs(rewards)
    sampled = E.sample_pairs(ref, rewards, n_per_prompt=50, seed=3)
    for beta in (0.1, 0.5, 1.0):
        best = E.optimal_logprobs(ref, rewards, beta)
        for chosen_pairs, weights in ((pairs, E.pair_weights(ref, pairs)), (pairs, None), (sampled, None)):
            theta = _free_policy(best)  # free logits: log_softmax(theta) is the policy
            loss = E.population_dpo_loss(torch.log_softmax(theta, -1), ref, chosen_pairs, beta, weights)
            (grad,) = torch.autograd.grad(loss, theta)
            assert grad.abs().max().item() < 1e-12
            for seed in range(3):
                noise = 0.2 * torch.randn(P, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
                moved = E.population_dpo_loss(torch.log_softmax(best + noise, -1), ref, chosen_pairs, beta, weights)
                assert moved.item() > loss.item()
        # the scaling: labels sigmoid((r_a - r_b) / beta) would aim elsewhere (unless beta = 1), so does IPO
        theta = _free_policy(best)
        scaled = E.PreferencePairs(pairs.prompt, pairs.chosen, pairs.rejected, torch.sigmoid(torch.logit(pairs.probability) / beta))  # fmt: skip
        wrongs = [E.population_dpo_loss(torch.log_softmax(theta, -1), ref, pairs, beta, loss_type="ipo")]
        if beta != 1.0:
            wrongs.append(E.population_dpo_loss(torch.log_softmax(theta, -1), ref, scaled, beta))
        for wrong in wrongs:
            (grad,) = torch.autograd.grad(wrong, theta)
            assert grad.abs().max().item() > 1e-4
    # and the optimum of DPO at beta is the PPO optimum at beta: the same J*
    torch.testing.assert_close(
        E.objective(E.optimal_logprobs(ref, rewards, 0.5), ref, rewards, 0.5), E.optimal_objective(ref, rewards, 0.5)
    )


def test_sampled_labels_keep_each_pair_with_its_probability_and_are_certain():
    pairs = E.PreferencePairs(
        torch.zeros(4000, dtype=torch.long), torch.zeros(4000, dtype=torch.long), torch.ones(4000, dtype=torch.long),
        torch.full((4000,), 0.7, dtype=torch.float64),
    )  # fmt: skip
    hard = E.sampled_labels(pairs, seed=0)
    kept = (hard.chosen == 0) & (hard.rejected == 1)
    assert (kept | (hard.chosen == 1) & (hard.rejected == 0)).all() and (hard.probability == 1).all()
    assert kept.double().mean().item() == pytest.approx(0.7, abs=0.03)
    assert torch.equal(E.sampled_labels(pairs, seed=0).chosen, hard.chosen)  # a seed gives the same labels


def test_sampled_pairs_come_from_the_reference_and_rankings_from_plackett_luce():
    ref = torch.log(torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64))
    rewards = torch.tensor([[0.0, 1.0, -0.5]], dtype=torch.float64)
    pairs = E.sample_pairs(ref, rewards, n_per_prompt=4000, seed=0)
    assert (pairs.chosen != pairs.rejected).all() and (rewards[0, pairs.chosen] >= rewards[0, pairs.rejected]).all()
    # unordered pair {a, b} drawn with probability 2 q_a q_b / (1 - sum q^2)
    q = ref[0].exp()
    for a, b in ((0, 1), (0, 2), (1, 2)):
        share = ((pairs.chosen == a) & (pairs.rejected == b) | (pairs.chosen == b) & (pairs.rejected == a)).double()
        want = 2 * q[a] * q[b] / (1 - (q**2).sum())
        assert share.mean().item() == pytest.approx(want.item(), abs=0.03)
    n = 3000
    rankings = E.sample_rankings(ref, rewards, k=3, n_per_prompt=n, seed=1)
    counts = {}
    for prompt, idx, ranks in rankings:
        assert prompt == 0 and sorted(idx) == [0, 1, 2] and sorted(ranks) == [1, 2, 3]
        order = tuple(i for _, i in sorted(zip(ranks, idx)))
        counts[order] = counts.get(order, 0) + 1
    w = rewards[0].exp().tolist()
    chi2 = 0.0
    for order in itertools.permutations(range(3)):
        a, b, c = order
        expected = n * w[a] / (w[a] + w[b] + w[c]) * w[b] / (w[b] + w[c])
        chi2 += (counts.get(order, 0) - expected) ** 2 / expected
    assert chi2 < 5 + 6 * math.sqrt(10)  # 5 degrees of freedom


def test_written_datasets_round_trip_to_the_enumerated_tokens(tmp_path):
    """Texts keep the EOS, so tokenising them gives back exactly the sequences the oracle scores; the reward stage's
    loader (which a DPO stage would share) reads both files."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from reward.data import load_rankings

    words = ["<pad>", "</s>", "a", "b", "c"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    responses = E.enumerate_responses(len(words), 2, eos_token_id=1, pad_token_id=0)
    texts = E.response_texts(tokenizer, responses, eos_token_id=1)
    assert len(set(texts)) == len(texts) and "</s>" in texts and "a </s>" in texts and "c c" in texts
    for row, text in zip(responses.tolist(), texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == row[: len(ids)] and all(x == 0 for x in row[len(ids) :])

    prompts = ["a", "b c"]
    ref = _random_logp(2, responses.shape[0], 30)
    rewards = torch.randn(2, responses.shape[0], generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    pairs = E.sample_pairs(ref, rewards, n_per_prompt=5, seed=0)
    path = E.write_pairwise_dataset(str(tmp_path / "pairs.jsonl"), prompts, texts, pairs)
    rows = [json.loads(line) for line in open(path)]
    assert len(rows) == 10 and set(rows[0]) == {"prompt", "chosen", "rejected", E.PROBABILITY_COLUMN}
    first = rows[0]
    p, c, r = pairs.prompt[0].item(), pairs.chosen[0].item(), pairs.rejected[0].item()
    assert (first["prompt"], first["chosen"], first["rejected"]) == (prompts[p], texts[c], texts[r])
    assert first[E.PROBABILITY_COLUMN] == pytest.approx(torch.sigmoid(rewards[p, c] - rewards[p, r]).item())
    loaded = load_rankings(path)
    assert loaded[0]["completions"] == [texts[c], texts[r]] and loaded[0]["ranks"] == [1, 2]

    rankings = E.sample_rankings(ref, rewards, k=4, n_per_prompt=3, seed=2)
    per_prompt = [texts, [t.upper() for t in texts]]  # per-prompt completion lists work too
    kwise = load_rankings(E.write_ranking_dataset(str(tmp_path / "kwise.jsonl"), prompts, per_prompt, rankings))
    assert len(kwise) == 6
    for (p, idx, ranks), row in zip(rankings, kwise):
        assert row["prompt"] == prompts[p] and row["ranks"] == ranks
        assert row["completions"] == [per_prompt[p][i] for i in idx]


@pytest.mark.parametrize("method", ["dpo", "dpo_kwise"])
def test_the_optimum_has_the_lowest_data_loss_on_exactly_labelled_rows(method):
    """What the exact check's `data loss` column compares a policy with: on exactly labelled rows pi* minimises DPO's
    loss (any policy scores at least as high), so a policy above it stopped short of what its data teach."""
    from tests.oracles.exact_check import data_loss, preference_rows

    P, N, beta = 2, 9, 0.5
    ref = _random_logp(P, N, 30)
    rewards = torch.randn(P, N, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    rows = preference_rows(method, ref, rewards, seed=0, preferences=200)
    best = E.optimal_logprobs(ref, rewards, beta)
    at_optimum = data_loss(method, rows, best, ref, rewards, beta)
    assert at_optimum < data_loss(method, rows, ref, ref, rewards, beta)
    for seed in range(3):
        noise = 0.3 * torch.randn(P, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert data_loss(method, rows, torch.log_softmax(best + noise, -1), ref, rewards, beta) > at_optimum
    # the same 200 rows with one sampled label each: pi* is no longer their minimiser, but the loss is defined
    sampled = preference_rows(method, ref, rewards, seed=0, preferences=200, labels="sampled")
    assert math.isfinite(data_loss(method, sampled, best, ref, rewards, beta, labels="sampled"))
