"""PPO math against naive Python loops and hand computations."""

import math

import pytest
import torch

from alignment.ppo import losses as L
from alignment.runtime.generation import response_mask
from alignment.runtime.logprobs import logprobs_from_logits


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _prefix_mask(lengths, T):
    return torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=torch.float64)


# --- masked statistics ---------------------------------------------------------------------------


def test_masked_mean_var_whiten_match_loop():
    x = _rand(3, 5, seed=2)
    mask = _prefix_mask([5, 2, 3], 5)
    vals = [x[b, t].item() for b in range(3) for t in range(5) if mask[b, t]]
    n = len(vals)
    mean = sum(vals) / n
    var_biased = sum((v - mean) ** 2 for v in vals) / n
    var_unbiased = var_biased * n / (n - 1)
    assert L.masked_mean(x, mask).item() == pytest.approx(mean, abs=1e-12)
    assert L.masked_var(x, mask).item() == pytest.approx(var_unbiased, abs=1e-12)
    assert L.masked_var(x, mask, unbiased=False).item() == pytest.approx(var_biased, abs=1e-12)
    row_means = L.masked_mean(x, mask, dim=1)
    for b, length in enumerate([5, 2, 3]):
        assert row_means[b].item() == pytest.approx(sum(x[b, :length].tolist()) / length, abs=1e-12)

    w = L.masked_whiten(x, mask)
    w_keep = L.masked_whiten(x, mask, shift_mean=False)
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                expected = (x[b, t].item() - mean) / math.sqrt(var_unbiased + 1e-8)
                assert w[b, t].item() == pytest.approx(expected, abs=1e-10)
                assert w_keep[b, t].item() == pytest.approx(expected + mean, abs=1e-10)
            else:
                assert w[b, t].item() == 0.0 and w_keep[b, t].item() == 0.0
    # whitened values have mean 0 and (unbiased) variance ~1 over the mask
    assert L.masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert L.masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-6)


def test_masked_var_unbiased_needs_two_values():
    with pytest.raises(ValueError, match="at least 2"):
        L.masked_var(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]))


# --- last real token ----------------------------------------------------------------------------


def test_last_token_index_of_prefix_masks():
    # the masks of tests/alignment/runtime/test_generation.py: EOS in the middle, first, none, last
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
        dtype=torch.bool,
    )
    assert L.last_token_index(expected).tolist() == [2, 0, 4, 4]


# --- KL, rewards, normalisation ------------------------------------------------------------------


def test_kl_estimators_by_hand_and_unbiased():
    logp = torch.tensor([math.log(0.5), math.log(0.25)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25), math.log(0.5)], dtype=torch.float64)
    assert L.kl_k1(logp, ref).tolist() == pytest.approx([math.log(2), -math.log(2)])
    # r = p_ref / p = 0.5 and 2: (r - 1) - log r
    assert L.kl_k3(logp, ref).tolist() == pytest.approx([-0.5 + math.log(2), 1 - math.log(2)])
    assert torch.equal(L.kl_per_token(logp, ref, "k3"), L.kl_k3(logp, ref))
    with pytest.raises(ValueError, match="k2"):
        L.kl_per_token(logp, ref, "k2")

    # over a whole distribution, E_p[k1] and E_p[k3] are both the exact KL(p || q)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    assert (p * L.kl_k1(p.log(), q.log())).sum().item() == pytest.approx(exact, abs=1e-12)
    assert (p * L.kl_k3(p.log(), q.log())).sum().item() == pytest.approx(exact, abs=1e-12)
    # k3 stays exact (not 0 from cancellation) for tiny differences, and is never negative
    tiny = L.kl_k3(torch.tensor([0.0]), torch.tensor([1e-4]))
    assert tiny.item() == pytest.approx(0.5e-8, rel=1e-3)
    assert (L.kl_k3(_rand(100, seed=3), _rand(100, seed=4)) >= 0).all()


def test_compute_rewards_matches_loop():
    B, T, beta = 3, 4, 0.1
    kl = _rand(B, T, seed=5)
    scores = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    lengths = [4, 1, 2]
    mask = _prefix_mask(lengths, T)
    got = L.compute_rewards(scores, kl, mask, beta)
    for b in range(B):
        for t in range(T):
            expected = 0.0
            if t < lengths[b]:
                expected = -beta * kl[b, t].item() + (scores[b].item() if t == lengths[b] - 1 else 0.0)
            assert got[b, t].item() == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="no real token"):
        L.compute_rewards(scores, kl, _prefix_mask([4, 0, 2], T), beta)


def test_normalize_and_penalize_scores():
    scores = torch.tensor([3.0, 1.0, -1.0])
    norm = L.normalize_scores(scores, mean=1.0, std=2.0)
    assert norm.tolist() == pytest.approx([1.0, 0.0, -1.0])
    out = L.penalize_no_eos(norm, torch.tensor([True, False, False]), penalty=1.5)
    assert out.tolist() == pytest.approx([1.0, -1.5, -2.5])


# --- GAE -----------------------------------------------------------------------------------------


def _gae_loop(rewards, values, lengths, gamma, lam):
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        n = lengths[b]
        last = 0.0
        for t in reversed(range(n)):
            next_v = values[b][t + 1] if t + 1 < n else 0.0
            delta = rewards[b][t] + gamma * next_v - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
            ret[b][t] = last + values[b][t]
    return adv, ret


def test_gae_matches_loop_over_masked_sequences():
    B, T, gamma, lam = 3, 6, 0.9, 0.8
    rewards, values = _rand(B, T, seed=6), _rand(B, T, seed=7)
    lengths = [6, 3, 1]
    mask = _prefix_mask(lengths, T)
    # garbage in padding must not leak in: the episode ends at the last real token
    values_with_garbage = values.clone()
    values_with_garbage[mask == 0] = 100.0
    rewards_with_garbage = rewards.clone()
    rewards_with_garbage[mask == 0] = -50.0
    adv, ret = L.gae(rewards_with_garbage, values_with_garbage, mask, gamma, lam)
    adv_ref, ret_ref = _gae_loop(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(adv_ref, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, torch.tensor(ret_ref, dtype=torch.float64), rtol=0, atol=1e-12)


def test_gae_hand_computation():
    # one sequence of 2 tokens, gamma = lam = 1: A_1 = r_1 - V_1, A_0 = r_0 + r_1 - V_0
    adv, ret = L.gae(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 1.0, 1.0)
    assert adv.tolist() == [[2.5, 1.75]]
    assert ret.tolist() == [[3.0, 2.0]]


# --- losses --------------------------------------------------------------------------------------


def test_policy_loss_matches_loop():
    B, T, clip = 2, 5, 0.2
    logp_old = _rand(B, T, seed=8) - 2
    logp = logp_old + 0.4 * _rand(B, T, seed=9)
    adv = _rand(B, T, seed=10)
    lengths = [5, 3]
    mask = _prefix_mask(lengths, T)
    loss, clipfrac, approxkl, ratio_mean = L.policy_loss(logp, logp_old, adv, mask, clip)
    losses, clipped, kls, ratios = [], [], [], []
    for b in range(B):
        for t in range(lengths[b]):
            r = math.exp(logp[b, t].item() - logp_old[b, t].item())
            a = adv[b, t].item()
            unclipped, clipped_loss = -a * r, -a * min(max(r, 1 - clip), 1 + clip)
            losses.append(max(unclipped, clipped_loss))
            clipped.append(1.0 if clipped_loss > unclipped else 0.0)
            kls.append((r - 1) - math.log(r))
            ratios.append(r)
    n = len(losses)
    assert loss.item() == pytest.approx(sum(losses) / n, abs=1e-12)
    assert clipfrac.item() == pytest.approx(sum(clipped) / n, abs=1e-12)
    assert 0 < clipfrac.item() < 1  # the test data exercises both branches
    assert approxkl.item() == pytest.approx(sum(kls) / n, abs=1e-12)
    assert ratio_mean.item() == pytest.approx(sum(ratios) / n, abs=1e-12)


def test_policy_loss_on_policy_is_exact_and_gradient_is_minus_advantage():
    logp = _rand(2, 3, seed=11).requires_grad_(True)
    adv = _rand(2, 3, seed=12)
    mask = torch.ones(2, 3)
    loss, clipfrac, approxkl, ratio_mean = L.policy_loss(logp, logp.detach(), adv, mask)
    # first minibatch of an update: ratio exactly 1, nothing clipped, approxkl exactly 0
    assert ratio_mean.item() == 1.0 and clipfrac.item() == 0.0 and approxkl.item() == 0.0
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 6)


def test_value_loss_matches_loop():
    B, T, clip = 2, 4, 0.3
    old = _rand(B, T, seed=13)
    new = old + _rand(B, T, seed=14)
    ret = _rand(B, T, seed=15)
    lengths = [4, 2]
    mask = _prefix_mask(lengths, T)
    loss, clipfrac = L.value_loss(new, old, ret, mask, clip)
    terms, clipped = [], []
    for b in range(B):
        for t in range(lengths[b]):
            v, vo, r = new[b, t].item(), old[b, t].item(), ret[b, t].item()
            vc = vo + min(max(v - vo, -clip), clip)
            terms.append(0.5 * max((v - r) ** 2, (vc - r) ** 2))
            clipped.append(1.0 if (vc - r) ** 2 > (v - r) ** 2 else 0.0)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-12)
    assert clipfrac.item() == pytest.approx(sum(clipped) / len(clipped), abs=1e-12)


# --- KL controllers ------------------------------------------------------------------------------


def test_fixed_kl_controller():
    ctl = L.kl_controller("fixed", 0.05)
    assert ctl.update(10.0, 64) == 0.05
    other = L.FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


def test_adaptive_kl_controller_by_hand_and_exact_resume():
    ctl = L.kl_controller("adaptive", 0.1, target=6.0, horizon=10000)
    # KL 9 vs target 6: error 0.5 clipped to 0.2; 100 episodes -> beta * (1 + 0.2 * 100 / 10000)
    assert ctl.update(9.0, 100) == pytest.approx(0.1 * 1.002)
    # KL 5.4: error -0.1
    assert ctl.update(5.4, 100) == pytest.approx(0.1 * 1.002 * (1 - 0.1 * 0.01))
    # resume: a fresh controller loaded from the state follows the exact same trajectory
    resumed = L.AdaptiveKLController(1.0, 1.0, 1.0)
    resumed.load_state_dict(ctl.state_dict())
    for kl in [3.0, 7.0, 6.5, 0.1]:
        assert resumed.update(kl, 64) == ctl.update(kl, 64)
    with pytest.raises(ValueError, match="target"):
        L.kl_controller("adaptive", 0.1)
    with pytest.raises(ValueError, match="unknown"):
        L.kl_controller("pid", 0.1)


# --- RLOO and GRPO ---------------------------------------------------------------------------------


def test_rloo_advantages_match_leave_one_out_loop_in_both_layouts():
    P, k = 3, 4
    scores = _rand(P * k, seed=20)
    got = L.rloo_advantages(scores, k)
    assert got.shape == (P * k,)
    for p in range(P):
        group = scores[p * k : (p + 1) * k].tolist()
        for i in range(k):
            others = [group[j] for j in range(k) if j != i]
            assert got[p * k + i].item() == pytest.approx(group[i] - sum(others) / (k - 1), abs=1e-12)
    torch.testing.assert_close(L.rloo_advantages(scores.view(P, k), k), got.view(P, k))
    assert (L.rloo_advantages(torch.full((6,), 0.7), 3) == 0).all()  # equal scores: no signal
    assert L.rloo_advantages(scores.to(torch.bfloat16), k).dtype == torch.float32


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_match_loop(scale):
    import statistics

    P, k, eps = 3, 5, 1e-4
    scores = _rand(P * k, seed=21)
    got = L.grpo_advantages(scores, k, scale=scale, eps=eps)
    batch_std = statistics.stdev(scores.tolist())  # Bessel-corrected, as TRL's nanstd
    for p in range(P):
        group = scores[p * k : (p + 1) * k].tolist()
        mean = sum(group) / k
        std = {"group": statistics.stdev(group), "batch": batch_std, "none": None}[scale]
        for i in range(k):
            want = (group[i] - mean) / (std + eps) if std is not None else group[i] - mean
            assert got[p * k + i].item() == pytest.approx(want, abs=1e-12)
    torch.testing.assert_close(L.grpo_advantages(scores.view(P, k), k, scale=scale), got.view(P, k))


def test_grpo_equal_scores_give_zero_and_none_is_rloo_times_k_minus_1_over_k():
    assert (L.grpo_advantages(torch.full((8,), 3.0), 4) == 0).all()
    scores, k = _rand(12, seed=22), 4
    torch.testing.assert_close(L.grpo_advantages(scores, k, scale="none"), L.rloo_advantages(scores, k) * (k - 1) / k)
    assert L.grpo_advantages(scores.to(torch.float16), k).dtype == torch.float32


def test_group_advantages_reject_bad_k_layouts_and_scales():
    for bad_k in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="k \\(samples per prompt\\) must be an integer >= 2"):
            L.rloo_advantages(torch.zeros(4), bad_k)
    with pytest.raises(ValueError, match="not P \\* k"):
        L.grpo_advantages(torch.zeros(7), 2)
    with pytest.raises(ValueError, match="do not hold k=3"):
        L.rloo_advantages(torch.zeros(2, 4), 3)
    with pytest.raises(ValueError, match="scale must be one of"):
        L.grpo_advantages(torch.zeros(4), 2, scale="std")


def test_kl_penalized_scores_and_token_broadcast_match_loop():
    B, T, beta = 3, 4, 0.2
    scores, logp, ref = _rand(B, seed=23), _rand(B, T, seed=24), _rand(B, T, seed=25)
    lengths = [4, 1, 2]
    mask = _prefix_mask(lengths, T)
    ref[1, 3] = math.inf  # padding is never read
    for est in ("k1", "k3"):
        got = L.kl_penalized_scores(scores, logp, ref, mask, beta, est)
        for b in range(B):
            kl = 0.0
            for t in range(lengths[b]):
                x = ref[b, t].item() - logp[b, t].item()
                kl += -x if est == "k1" else math.expm1(x) - x
            assert got[b].item() == pytest.approx(scores[b].item() - beta * kl, abs=1e-12)
    tokens = L.sequence_to_tokens(scores, mask)
    for b in range(B):
        assert tokens[b].tolist() == [scores[b].item() if t < lengths[b] else 0.0 for t in range(T)]


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
def test_group_policy_loss_matches_loop(aggregation):
    B, T, clip, coef, max_len = 3, 5, 0.2, 0.05, 8
    old = _rand(B, T, seed=26) - 2
    logp = old + 0.4 * _rand(B, T, seed=27)
    ref = old + 0.3 * _rand(B, T, seed=28)
    adv = _rand(B, seed=29)
    lengths = [5, 2, 3]
    mask = _prefix_mask(lengths, T)
    out = L.group_policy_loss(logp, old, adv, mask, clip, aggregation, max_len, ref_logprobs=ref, kl_coef=coef)
    n_tokens = sum(lengths)
    policy = kl = clipped = 0.0
    for b in range(B):
        for t in range(lengths[b]):
            w = {"sequence_mean": 1 / (B * lengths[b]), "token_mean": 1 / n_tokens, "constant": 1 / (B * max_len)}
            r = math.exp(logp[b, t].item() - old[b, t].item())
            a = adv[b].item()
            unclipped, clipped_loss = -a * r, -a * min(max(r, 1 - clip), 1 + clip)
            policy += w[aggregation] * max(unclipped, clipped_loss)
            clipped += w[aggregation] * (clipped_loss > unclipped)
            x = ref[b, t].item() - logp[b, t].item()
            kl += w[aggregation] * (math.expm1(x) - x)
    total_w = 1.0 if aggregation != "constant" else n_tokens / (B * max_len)
    assert out.policy.item() == pytest.approx(policy, abs=1e-12)
    assert out.kl.item() == pytest.approx(kl, abs=1e-12)
    assert out.loss.item() == pytest.approx(policy + coef * kl, abs=1e-12)
    assert out.clipfrac.item() == pytest.approx(clipped / total_w, abs=1e-12) and 0 < out.clipfrac.item() < 1
    # token-level advantages give the same as their sequence value broadcast; no reference: no KL term
    same = L.group_policy_loss(logp, old, L.sequence_to_tokens(adv, mask), mask, clip, aggregation, max_len)
    assert same.kl.item() == 0 and same.loss.item() == pytest.approx(policy, abs=1e-12)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        L.aggregation_weights(mask, "sum")
    # token_mean over an optimizer step split in two micro-batches: summed, they give the step's token mean
    if aggregation == "token_mean":
        halves = [
            L.group_policy_loss(logp[s], old[s], adv[s], mask[s], clip, aggregation, total_tokens=n_tokens).policy
            for s in (slice(0, 1), slice(1, 3))
        ]  # fmt: skip
        assert sum(h.item() for h in halves) == pytest.approx(policy, abs=1e-12)


def test_rloo_on_kl_penalized_scores_is_an_unbiased_gradient_of_the_kl_regularised_objective():
    """Exact expectation over every group of k samples of a 3-armed softmax policy: E[mean_i A_i grad log pi(y_i)]
    equals grad J for RLOO on the k1-penalised scores, and (k-1)/k of it for unscaled GRPO."""
    import itertools

    N, k, beta = 3, 3, 0.4
    theta = _rand(N, seed=30).requires_grad_(True)
    ref = torch.log_softmax(_rand(N, seed=31), -1)
    r = _rand(N, seed=32)
    logp = torch.log_softmax(theta, -1)
    J = (logp.exp() * (r - beta * (logp - ref))).sum()
    (grad_j,) = torch.autograd.grad(J, theta)
    expected = {"rloo": torch.zeros(N, dtype=torch.float64), "grpo": torch.zeros(N, dtype=torch.float64)}
    for group in itertools.product(range(N), repeat=k):
        idx = torch.tensor(group)
        lp = torch.log_softmax(theta, -1)
        prob = lp[idx].sum().exp().detach()
        # one-token sequences: the k1 penalty is log pi(y) - log pi_ref(y)
        pen = L.kl_penalized_scores(r[idx], lp[idx, None].detach(), ref[idx, None], torch.ones(k, 1), beta)
        for name, adv in (("rloo", L.rloo_advantages(pen, k)), ("grpo", L.grpo_advantages(pen, k, scale="none"))):
            (g,) = torch.autograd.grad((adv * lp[idx]).mean(), theta, retain_graph=True)
            expected[name] += prob * g
    torch.testing.assert_close(expected["rloo"], grad_j, atol=1e-12, rtol=0)
    torch.testing.assert_close(expected["grpo"], grad_j * (k - 1) / k, atol=1e-12, rtol=0)


def _table_policy_logprobs(theta, prompt_last, responses):
    """Per-token log-probs [N, L] of a policy whose logits are theta[position, previous token] (theta [L, V, V])."""
    prev = torch.cat([torch.full_like(responses[:, :1], prompt_last), responses[:, :-1]], 1)
    logits = theta[torch.arange(responses.shape[1]), prev]  # [N, L, V]
    return logprobs_from_logits(logits, responses)


def test_population_group_loss_gradient_is_the_exact_objective_gradient_only_with_constant_aggregation():
    """Over every response of a tiny task, weighted by pi: the k1-penalised, centred advantages with the `constant`
    aggregation give exactly -grad J / L; the per-sequence mean steps in another direction (length bias)."""
    from tests.oracles import exact as E

    V, Lr, EOS, beta = 3, 3, 2, 0.5
    responses = E.enumerate_responses(V, Lr, eos_token_id=EOS)
    mask = response_mask(responses, EOS).double()
    N = responses.shape[0]
    theta = (0.7 * _rand(Lr, V, V, seed=33)).requires_grad_(True)
    ref_tok = _table_policy_logprobs(0.7 * _rand(Lr, V, V, seed=34), 1, responses) * mask
    r = _rand(N, seed=35)
    tok = _table_policy_logprobs(theta, 1, responses) * mask
    logp, ref = tok.sum(-1), ref_tok.sum(-1)
    (grad_j,) = torch.autograd.grad(E.objective(logp[None], ref[None], r[None], beta).sum(), theta, retain_graph=True)

    pi = logp.detach().exp()
    pen = L.kl_penalized_scores(r, tok.detach(), ref_tok, mask, beta)
    adv = (pen - (pi * pen).sum()) * pi * N  # rows weighted by pi: a batch mean becomes an expectation
    grads = {}
    for aggregation in ("constant", "sequence_mean"):
        out = L.group_policy_loss(tok, tok.detach(), adv, mask, 0.2, aggregation, max_length=Lr)
        (grads[aggregation],) = torch.autograd.grad(out.loss, theta, retain_graph=True)
    torch.testing.assert_close(grads["constant"], -grad_j / Lr, atol=1e-12, rtol=0)
    g, s = grad_j.flatten(), grads["sequence_mean"].flatten()
    cosine = (g @ -s / (g.norm() * s.norm())).item()
    assert cosine < 0.99, cosine  # not a multiple of grad J


def test_at_the_gibbs_optimum_every_penalised_score_is_the_optimum_and_advantages_vanish():
    """r - beta * (log pi* - log pi_ref) = beta * log Z = J* for every response: whatever the scale or aggregation,
    RLOO and GRPO with the KL in the scores stop at pi* (the noise around it is then all the update has)."""
    from tests.oracles import exact as E

    N, k, beta = 8, 4, 0.7
    ref = torch.log_softmax(_rand(1, N, seed=38), -1)
    r = _rand(1, N, seed=39)
    best = E.optimal_logprobs(ref, r, beta)
    pen = L.kl_penalized_scores(r[0], best[0, :, None], ref[0, :, None], torch.ones(N, 1), beta)
    torch.testing.assert_close(pen, E.optimal_objective(ref, r, beta).expand(N), atol=1e-12, rtol=0)
    assert L.rloo_advantages(pen, k).abs().max() < 1e-12
    for scale in ("none", "batch"):
        assert L.grpo_advantages(pen, k, scale=scale).abs().max() < 1e-9


def test_k3_loss_term_follows_the_reverse_kl_per_state_on_policy():
    """On-policy, E[grad k3] = grad of sum_s d(s) KL(pi_ref(.|s) || pi(.|s)) (d held fixed): GRPO's KL term is not
    the gradient of KL(pi || pi_ref), which is why the exact-optimum tests put the KL in the reward (k1)."""
    from tests.oracles import exact as E

    V, Lr, EOS = 3, 3, 2
    responses = E.enumerate_responses(V, Lr, eos_token_id=EOS)
    mask = response_mask(responses, EOS).double()
    theta = (0.7 * _rand(Lr, V, V, seed=36)).requires_grad_(True)
    theta_ref = 0.7 * _rand(Lr, V, V, seed=37)
    tok = _table_policy_logprobs(theta, 1, responses)
    ref_tok = _table_policy_logprobs(theta_ref, 1, responses)
    pi = (tok.detach() * mask).sum(-1).exp()
    k3_term = (pi[:, None] * L.kl_k3(tok, ref_tok) * mask).sum()
    (g_k3,) = torch.autograd.grad(k3_term, theta, retain_graph=True)
    # the same states, their full next-token distributions: sum_s d(s) KL(ref(.|s) || pi(.|s))
    prev = torch.cat([torch.ones_like(responses[:, :1]), responses[:, :-1]], 1)
    steps = torch.arange(Lr)
    logpi, logref = torch.log_softmax(theta[steps, prev], -1), torch.log_softmax(theta_ref[steps, prev], -1)
    reverse = (logref.exp() * (logref - logpi)).sum(-1)
    forward = (logpi.exp() * (logpi - logref)).sum(-1)
    (g_rev,) = torch.autograd.grad((pi[:, None] * reverse * mask).sum(), theta, retain_graph=True)
    (g_fwd,) = torch.autograd.grad((pi[:, None] * forward * mask).sum(), theta)
    torch.testing.assert_close(g_k3, g_rev, atol=1e-12, rtol=0)
    assert (g_k3 - g_fwd).norm() > 0.1 * g_fwd.norm()


def test_penalize_subtracts_only_from_flagged_responses():
    from alignment.ppo.losses import penalize

    scores = torch.tensor([1.0, 2.0, -0.5])
    out = penalize(scores, torch.tensor([False, True, True]), 1.5)
    assert out.tolist() == [1.0, 0.5, -2.0]
