"""PPO math against naive Python loops and hand computations."""

import math

import pytest
import torch

from alignment.ppo import losses as L


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
