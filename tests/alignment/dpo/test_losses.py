"""DPO, IPO and Plackett-Luce math against naive Python loops, hand computations and each other."""

import itertools
import math

import pytest
import torch

from alignment.dpo import losses as D
from reward.losses import pair_log_likelihoods


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


# --- sequence log-probs ---------------------------------------------------------------------------


def test_sequence_logps_sum_and_mean_match_loop_and_ignore_masked_values():
    x = _rand(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    x[0, 3] = -math.inf  # padding may hold anything
    x[2, 0] = math.nan
    total, mean = D.sequence_logps(x, mask), D.sequence_logps(x, mask, average=True)
    for b in range(3):
        vals = [x[b, t].item() for t in range(5) if mask[b, t]]
        assert total[b].item() == pytest.approx(sum(vals), abs=1e-12)
        assert mean[b].item() == pytest.approx(sum(vals) / len(vals) if vals else 0.0, abs=1e-12)
    half = D.sequence_logps(x[:2].to(torch.bfloat16), mask[:2])
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, D.sequence_logps(x[:2].to(torch.bfloat16).float(), mask[:2]))


# --- pairwise DPO and IPO ---------------------------------------------------------------------------


def test_dpo_sigmoid_and_ipo_match_hand_computation_with_soft_labels():
    c, r, rc, rr = _rand(6, seed=1), _rand(6, seed=2), _rand(6, seed=3), _rand(6, seed=4)
    p = torch.tensor([1.0, 0.0, 0.5, 0.9, 0.2, 1.0], dtype=torch.float64)
    beta = 0.3
    sig = D.dpo_loss(c, r, rc, rr, beta, "sigmoid", p)
    ipo = D.dpo_loss(c, r, rc, rr, beta, "ipo", p)
    for i in range(6):
        h = (c[i] - rc[i] - r[i] + rr[i]).item()
        pi = p[i].item()
        want = -(pi * _log_sigmoid(beta * h) + (1 - pi) * _log_sigmoid(-beta * h))
        assert sig.losses[i].item() == pytest.approx(want, abs=1e-12)
        tau = 1 / (2 * beta)
        assert ipo.losses[i].item() == pytest.approx(pi * (h - tau) ** 2 + (1 - pi) * (h + tau) ** 2, abs=1e-12)
        assert sig.chosen_rewards[i].item() == pytest.approx(beta * (c[i] - rc[i]).item(), abs=1e-12)
        assert sig.rejected_rewards[i].item() == pytest.approx(beta * (r[i] - rr[i]).item(), abs=1e-12)
    # p = 1 is standard DPO (Rafailov eq. 7) and TRL's IPO (h - 1/(2 beta))^2; a float target broadcasts
    hard = D.dpo_loss(c, r, rc, rr, beta)
    torch.testing.assert_close(hard.losses, -torch.nn.functional.logsigmoid(beta * (c - rc - r + rr)))
    torch.testing.assert_close(D.dpo_loss(c, r, rc, rr, beta, "ipo").losses, (c - rc - r + rr - 1 / (2 * beta)) ** 2)
    p09 = torch.full((6,), 0.9, dtype=torch.float64)
    torch.testing.assert_close(D.dpo_loss(c, r, rc, rr, beta, chosen_probability=0.9).losses, D.dpo_loss(c, r, rc, rr, beta, chosen_probability=p09).losses)  # fmt: skip
    assert not hard.chosen_rewards.requires_grad


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_soft_label_minimiser_is_the_bradley_terry_log_odds(loss_type):
    """With target p the loss is stationary at beta h = logit(p) (sigmoid) or h = (2p - 1) / (2 beta) (IPO)."""
    beta, p = 0.5, torch.tensor([0.1, 0.5, 0.73, 0.99], dtype=torch.float64)
    if loss_type == "sigmoid":
        h_star = torch.log(p / (1 - p)) / beta
    else:
        h_star = (2 * p - 1) / (2 * beta)
    h = h_star.clone().requires_grad_(True)
    zero = torch.zeros(4, dtype=torch.float64)
    D.dpo_loss(h, zero, zero, zero, beta, loss_type, p).losses.sum().backward()
    torch.testing.assert_close(h.grad, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    for shift in (-0.3, 0.3):  # and it is a minimum
        moved = D.dpo_loss(h_star + shift, zero, zero, zero, beta, loss_type, p).losses
        assert (moved > D.dpo_loss(h_star, zero, zero, zero, beta, loss_type, p).losses).all()


def test_dpo_rejects_bad_arguments_and_upcasts_half_precision():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        D.dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="loss_type"):
        D.dpo_loss(x, x, x, x, loss_type="hinge")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        D.dpo_loss(x, x, x, x, chosen_probability=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        D.dpo_loss(x, x, x, x, chosen_probability=torch.tensor([0.5, -0.1]))
    half = D.dpo_loss(*(_rand(3, seed=i).to(torch.float16) for i in range(4)), beta=0.1)
    assert half.losses.dtype == torch.float32 and half.chosen_rewards.dtype == torch.float32


# --- Plackett-Luce: naive references ------------------------------------------------------------------


def _pl_prob(order, s):
    """Plackett-Luce probability of a strict order (list of indices, best first) with scores s."""
    prob, rest = 1.0, list(order)
    for i in order[:-1]:
        prob *= math.exp(s[i]) / sum(math.exp(s[j]) for j in rest)
        rest.remove(i)
    return prob


def _naive_drop_nll(s, ranks, valid):
    """-log of the PL probability summed over every strict order consistent with the (weak) ranking."""
    items = [i for i in range(len(s)) if valid[i]]
    total = 0.0
    for order in itertools.permutations(items):
        if all(ranks[order[a]] <= ranks[order[a + 1]] for a in range(len(order) - 1)):
            total += _pl_prob(list(order), s)
    return -math.log(total)


def _naive_davidson_luce_nll(s, ranks, valid, nu):
    """Davidson-Luce, one stage per rank group, every nonempty subset of what remains in the normaliser."""
    items = [i for i in range(len(s)) if valid[i]]
    nll = 0.0
    for value in sorted({ranks[i] for i in items}):
        group = [i for i in items if ranks[i] == value]
        remaining = [i for i in items if ranks[i] >= value]

        def weight(u):
            return nu ** (len(u) - 1) * math.exp(sum(s[i] for i in u) / len(u))

        norm = sum(weight(u) for n in range(1, len(remaining) + 1) for u in itertools.combinations(remaining, n))
        nll -= math.log(weight(group) / norm)
    return nll


def _random_rankings(B, K, seed, ties=True, pad=True):
    g = torch.Generator().manual_seed(seed)
    ranks = torch.randint(1, (K // 2 + 1 if ties else K) + 1, (B, K), generator=g)
    if not ties:
        ranks = torch.stack([torch.randperm(K, generator=g) + 1 for _ in range(B)])
    valid = torch.ones(B, K, dtype=torch.bool)
    if pad:
        for b in range(B):
            valid[b, K - int(torch.randint(0, K - 1, (1,), generator=g)) :] = False
    return ranks, valid


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_plackett_luce_drop_matches_sum_over_consistent_permutations(K):
    beta = 0.7
    logps, ref = _rand(6, K, seed=K), _rand(6, K, seed=10 + K)
    ranks, valid = _random_rankings(6, K, seed=K)
    ranks[0], valid[0] = torch.arange(1, K + 1), True  # one strict, unpadded ranking in every case
    logps = torch.where(valid, logps, torch.nan)  # padding holds garbage
    out = D.plackett_luce_loss(logps, ref, ranks, valid, beta)
    for b in range(6):
        s = [beta * (logps[b, i] - ref[b, i]).item() if valid[b, i] else 0.0 for i in range(K)]
        n, n_groups = int(valid[b].sum()), len({ranks[b, i].item() for i in range(K) if valid[b, i]})
        informative = n_groups >= 2
        assert bool(out.informative[b]) == informative
        want = _naive_drop_nll(s, ranks[b].tolist(), valid[b].tolist()) / (n - 1) if informative else 0.0
        assert out.losses[b].item() == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_davidson_luce_matches_loop_and_is_a_distribution_over_weak_orders(K):
    beta, nu = 0.5, 0.8
    logps, ref = _rand(5, K, seed=20 + K), _rand(5, K, seed=30 + K)
    ranks, valid = _random_rankings(5, K, seed=40 + K)
    out = D.plackett_luce_loss(logps, ref, ranks, valid, beta, ties="davidson", tie_param=nu)
    for b in range(5):
        s = [beta * (logps[b, i] - ref[b, i]).item() for i in range(K)]
        n = int(valid[b].sum())
        want = _naive_davidson_luce_nll(s, ranks[b].tolist(), valid[b].tolist(), nu) / (n - 1)
        assert out.losses[b].item() == pytest.approx(want, abs=1e-10)
    # every weak order of K items (ordered set partitions: 3, 13, 75): probabilities sum to 1
    weak = sorted({tuple(sorted(set(r)).index(x) + 1 for x in r) for r in itertools.product(range(K), repeat=K)})
    ranks_all = torch.tensor(weak)
    rep = lambda x: x[:1].expand(len(weak), -1)  # noqa: E731
    all_out = D.plackett_luce_loss(rep(logps), rep(ref), ranks_all, beta=beta, ties="davidson", tie_param=nu)
    assert torch.exp(-all_out.losses * (K - 1)).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_strict_orders_of_plackett_luce_sum_to_one():
    K, beta = 4, 1.3
    logps, ref = _rand(1, K, seed=5), _rand(1, K, seed=6)
    perms = list(itertools.permutations(range(K)))
    ranks = torch.tensor([[p.index(i) + 1 for i in range(K)] for p in perms])
    out = D.plackett_luce_loss(logps.expand(len(perms), -1), ref.expand(len(perms), -1), ranks, beta=beta)
    assert torch.exp(-out.losses * (K - 1)).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_plackett_luce_at_k2_is_dpo():
    B, beta = 8, 0.2
    c, r, rc, rr = (_rand(B, seed=50 + i) for i in range(4))
    dpo = D.dpo_loss(c, r, rc, rr, beta)
    # chosen in either column: ranks say which
    pl = D.plackett_luce_loss(torch.stack([c, r], 1), torch.stack([rc, rr], 1), torch.tensor([[1, 2]] * B), beta=beta)
    pl_swapped = D.plackett_luce_loss(
        torch.stack([r, c], 1), torch.stack([rr, rc], 1), torch.tensor([[5, 3]] * B), beta=beta
    )
    torch.testing.assert_close(pl.losses, dpo.losses, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(pl_swapped.losses, dpo.losses, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(pl.rewards, torch.stack([dpo.chosen_rewards, dpo.rejected_rewards], 1))
    torch.testing.assert_close(D.mean_over_prompts(pl), dpo.losses.mean())
    # the all-pairs form too, and a K = 2 tie carries nothing under `drop` (as in the reward stage)
    pairs = D.ranking_pair_loss(torch.stack([c, r], 1), torch.stack([rc, rr], 1), torch.tensor([[1, 2]] * B), beta=beta)
    torch.testing.assert_close(pairs.losses, dpo.losses, rtol=1e-13, atol=1e-13)
    tie = D.plackett_luce_loss(torch.stack([c, r], 1), torch.stack([rc, rr], 1), torch.tensor([[1, 1]] * B), beta=beta)
    assert not tie.informative.any() and (tie.losses == 0).all() and D.mean_over_prompts(tie).item() == 0


def test_davidson_luce_at_k2_is_the_reward_stage_davidson_model():
    beta, nu = 0.4, 1.5
    lp, ref = _rand(4, 2, seed=60), _rand(4, 2, seed=61)
    d = beta * ((lp[:, 0] - ref[:, 0]) - (lp[:, 1] - ref[:, 1]))
    win, tie = pair_log_likelihoods(d, "davidson", nu)
    strict = D.plackett_luce_loss(lp, ref, torch.tensor([[1, 2]] * 4), beta=beta, ties="davidson", tie_param=nu)
    tied = D.plackett_luce_loss(lp, ref, torch.tensor([[1, 1]] * 4), beta=beta, ties="davidson", tie_param=nu)
    torch.testing.assert_close(strict.losses, -win)
    torch.testing.assert_close(tied.losses, -tie)
    assert tied.informative.all()


def test_expected_plackett_luce_loss_is_stationary_at_the_true_scores():
    """Rankings drawn from PL(exp(r)): the expected listwise DPO loss has zero gradient where beta * log-ratio = r + c."""
    K, beta = 4, 0.5
    r = _rand(K, seed=70)
    perms = list(itertools.permutations(range(K)))
    ranks = torch.tensor([[p.index(i) + 1 for i in range(K)] for p in perms])
    probs = torch.tensor([_pl_prob(list(p), r.tolist()) for p in perms], dtype=torch.float64)
    logratio = (r / beta + 3.0).requires_grad_(True)  # any constant shift: the same implied order model
    out = D.plackett_luce_loss(logratio.expand(len(perms), -1), torch.zeros(len(perms), K, dtype=torch.float64), ranks, beta=beta)  # fmt: skip
    (probs * out.losses).sum().backward()
    torch.testing.assert_close(logratio.grad, torch.zeros(K, dtype=torch.float64), atol=1e-12, rtol=0)


def test_plackett_luce_gradient_is_finite_and_zero_on_padding():
    K, beta = 5, 0.3
    ranks, valid = _random_rankings(4, K, seed=80)
    valid[1, 2:] = False
    logps = torch.where(valid, _rand(4, K, seed=81), torch.nan).requires_grad_(True)
    ref = torch.where(valid, _rand(4, K, seed=82), torch.inf)
    for ties in ("drop", "davidson"):
        logps.grad = None
        D.mean_over_prompts(D.plackett_luce_loss(logps, ref, ranks, valid, beta, ties=ties)).backward()
        assert torch.isfinite(logps.grad).all()
        assert (logps.grad[~valid] == 0).all() and (logps.grad[valid] != 0).any()


def test_plackett_luce_normalises_per_prompt_and_upcasts():
    beta = 1.0
    s = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    out = D.plackett_luce_loss(s, torch.zeros_like(s), torch.tensor([[1, 2, 3]]), beta=beta)
    nll = -math.log(_pl_prob([0, 1, 2], [2.0, 1.0, 0.0]))
    assert out.losses.item() == pytest.approx(nll / 2, abs=1e-12)  # K - 1 = 2 choices
    half = D.plackett_luce_loss(
        s.to(torch.bfloat16), torch.zeros(1, 3, dtype=torch.bfloat16), torch.tensor([[1, 2, 3]])
    )
    assert half.losses.dtype == torch.float32
    # a prompt with one valid completion carries nothing
    one = D.plackett_luce_loss(s, s, torch.tensor([[1, 2, 3]]), torch.tensor([[True, False, False]]))
    assert not one.informative.item() and one.losses.item() == 0


def test_plackett_luce_rejects_unsupported_ties_and_sizes():
    x = torch.zeros(1, 3)
    ranks = torch.tensor([[1, 2, 2]])
    with pytest.raises(ValueError, match="no Plackett-Luce form"):
        D.plackett_luce_loss(x, x, ranks, ties="rao_kupper")
    with pytest.raises(ValueError, match="ties must be one of"):
        D.plackett_luce_loss(x, x, ranks, ties="efron")
    with pytest.raises(ValueError, match="nu > 0"):
        D.plackett_luce_loss(x, x, ranks, ties="davidson", tie_param=0.0)
    big = torch.zeros(1, 14)
    with pytest.raises(ValueError, match="at most 12 tied"):
        D.plackett_luce_loss(big, big, torch.ones(1, 14, dtype=torch.long) + torch.eye(14, dtype=torch.long)[0])
    with pytest.raises(ValueError, match="K <= 12"):
        D.plackett_luce_loss(big, big, torch.arange(1, 15)[None], ties="davidson")
    # a long strict ranking is fine under `drop`: the tie groups are single completions
    out = D.plackett_luce_loss(_rand(1, 14), _rand(1, 14, seed=1), torch.arange(1, 15)[None])
    assert torch.isfinite(out.losses).all()


# --- soft labels: scores --------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_soft_plackett_luce_is_the_hard_loss_averaged_over_orders_drawn_from_the_scores(K):
    beta = 0.6
    logps, ref, scores = _rand(5, K, seed=K), _rand(5, K, seed=20 + K), 2 * _rand(5, K, seed=40 + K)
    _, valid = _random_rankings(5, K, seed=K)
    logps = torch.where(valid, logps, torch.nan)  # padding holds garbage
    out = D.plackett_luce_soft_loss(logps, ref, scores, valid, beta)
    for b in range(5):
        idx = [i for i in range(K) if valid[b, i]]
        want = 0.0
        for order in itertools.permutations(idx):
            ranks = torch.tensor([[order.index(i) + 1 for i in idx]])
            hard = D.plackett_luce_loss(logps[b : b + 1, idx], ref[b : b + 1, idx], ranks, beta=beta).losses.item()
            want += _pl_prob(list(range(len(idx))), [scores[b, order[t]].item() for t in range(len(idx))]) * hard
        assert bool(out.informative[b]) == (len(idx) >= 2)
        assert out.losses[b].item() == pytest.approx(want, abs=1e-10)


def test_soft_plackett_luce_at_k2_and_its_pair_expansion_are_dpo_with_the_bradley_terry_label():
    beta = 0.4
    logps, ref, scores = _rand(6, 2, seed=1), _rand(6, 2, seed=2), _rand(6, 2, seed=3)
    want = D.dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta, "sigmoid", torch.sigmoid(scores[:, 0] - scores[:, 1]))  # fmt: skip
    torch.testing.assert_close(D.plackett_luce_soft_loss(logps, ref, scores, beta=beta).losses, want.losses)
    torch.testing.assert_close(D.ranking_pair_soft_loss(logps, ref, scores, beta=beta).losses, want.losses)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_soft_pair_expansion_matches_a_loop_over_pairs(loss_type):
    K, beta = 4, 0.3
    logps, ref, scores = _rand(4, K, seed=5), _rand(4, K, seed=6), _rand(4, K, seed=7)
    _, valid = _random_rankings(4, K, seed=8)
    out = D.ranking_pair_soft_loss(logps, ref, scores, valid, beta, loss_type)
    for b in range(4):
        idx = [i for i in range(K) if valid[b, i]]
        terms = [
            D.dpo_loss(logps[b, i], logps[b, j], ref[b, i], ref[b, j], beta, loss_type, torch.sigmoid(scores[b, i] - scores[b, j])).losses.item()
            for i, j in itertools.combinations(idx, 2)
        ]  # fmt: skip
        assert out.losses[b].item() == pytest.approx(sum(terms) / len(terms), abs=1e-10)


@pytest.mark.parametrize("soft", [D.plackett_luce_soft_loss, D.ranking_pair_soft_loss])
def test_soft_losses_are_minimal_where_the_implicit_rewards_are_the_scores(soft):
    """The optimum of DPO on the true reward's soft labels is pi_ref e^(r / beta) / Z: zero gradient at
    beta * log-ratio = scores + c, a higher loss anywhere else; padding gets no gradient."""
    K, beta = 5, 0.5
    scores = _rand(3, K, seed=9)
    valid = torch.ones(3, K, dtype=torch.bool)
    valid[2, 3:] = False
    logratio = (scores / beta + 2.0).requires_grad_(True)
    zeros = torch.zeros(3, K, dtype=torch.float64)
    best = soft(logratio, zeros, scores, valid, beta).losses.sum()
    best.backward()
    torch.testing.assert_close(logratio.grad, torch.zeros_like(logratio), atol=1e-12, rtol=0)
    for seed in range(3):
        moved = logratio.detach() + 0.3 * _rand(3, K, seed=100 + seed)
        assert soft(moved, zeros, scores, valid, beta).losses.sum().item() > best.item()


def test_soft_plackett_luce_refuses_more_completions_than_it_can_sum_over():
    big = torch.zeros(1, 13)
    with pytest.raises(ValueError, match="at most 12 completions"):
        D.plackett_luce_soft_loss(big, big, big)


# --- the all-pairs expansion and metrics ----------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_ranking_pair_loss_matches_the_pair_expansion(loss_type):
    K, beta = 4, 0.25
    logps, ref = _rand(5, K, seed=90), _rand(5, K, seed=91)
    ranks, valid = _random_rankings(5, K, seed=92)
    out = D.ranking_pair_loss(logps, ref, ranks, valid, beta, loss_type)
    for b in range(5):
        pairs = [
            (i, j) for i in range(K) for j in range(K) if valid[b, i] and valid[b, j] and ranks[b, i] < ranks[b, j]
        ]  # fmt: skip
        assert bool(out.informative[b]) == bool(pairs)
        if pairs:
            i, j = torch.tensor(pairs).T
            expanded = D.dpo_loss(logps[b, i], logps[b, j], ref[b, i], ref[b, j], beta, loss_type).losses
            assert out.losses[b].item() == pytest.approx(expanded.mean().item(), abs=1e-12)


def test_ranking_metrics_match_loop_and_trl_definitions_for_pairs():
    K, beta = 4, 0.5
    logps, ref = _rand(5, K, seed=100), _rand(5, K, seed=101)
    ranks, valid = _random_rankings(5, K, seed=102)
    sums = D.ranking_metric_sums(logps, ref, ranks, valid, beta)
    keys = ("comparisons",) + D.METRICS
    want = {k: 0.0 for k in keys}
    for b in range(5):
        for i in range(K):
            for j in range(K):
                if valid[b, i] and valid[b, j] and ranks[b, i] < ranks[b, j]:
                    ri, rj = beta * (logps[b, i] - ref[b, i]).item(), beta * (logps[b, j] - ref[b, j]).item()
                    for k, v in zip(keys, (1, ri, rj, float(ri > rj), ri - rj, logps[b, i].item(), logps[b, j].item())):
                        want[k] += v
    for k in keys:
        assert sums[k].sum().item() == pytest.approx(want[k], abs=1e-10)
    means = D.metric_means(sums)
    assert means["rewards/margins"] == pytest.approx(means["rewards/chosen"] - means["rewards/rejected"], abs=1e-12)
    # pairs as K = 2 rankings give exactly TRL's per-pair means
    c, r, rc, rr = (_rand(6, seed=110 + i) for i in range(4))
    pair = D.dpo_loss(c, r, rc, rr, beta)
    m = D.metric_means(D.ranking_metric_sums(torch.stack([c, r], 1), torch.stack([rc, rr], 1), torch.tensor([[1, 2]] * 6), beta=beta))  # fmt: skip
    assert m["rewards/chosen"] == pytest.approx(pair.chosen_rewards.mean().item())
    assert m["rewards/rejected"] == pytest.approx(pair.rejected_rewards.mean().item())
    assert m["rewards/accuracies"] == pytest.approx(
        (pair.chosen_rewards > pair.rejected_rewards).double().mean().item()
    )
    assert m["logps/chosen"] == pytest.approx(c.mean().item()) and m["logps/rejected"] == pytest.approx(r.mean().item())
    empty = D.metric_means(D.ranking_metric_sums(c[:1, None].expand(1, 2), c[:1, None].expand(1, 2), torch.tensor([[1, 1]])))  # fmt: skip
    assert math.isnan(empty["rewards/accuracies"])


def test_best_completion_nll_is_the_mean_token_nll_of_the_top_ranked():
    from alignment.dpo.losses import best_completion_nll

    logps = torch.tensor([[-6.0, -2.0, -9.0], [-4.0, -8.0, 0.0], [-3.0, -3.0, 0.0]], requires_grad=True)
    tokens = torch.tensor([[3.0, 2.0, 3.0], [4.0, 2.0, 1.0], [1.0, 3.0, 1.0]])
    ranks = torch.tensor([[1, 2, 3], [2, 1, 9], [1, 1, 9]])  # row 2: a tie for first; padding holds anything
    valid = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])
    got = best_completion_nll(logps, tokens, ranks, valid)
    naive = []
    for b in range(3):
        best = min(r for r, v in zip(ranks[b].tolist(), valid[b].tolist()) if v)
        picks = [i for i in range(3) if valid[b, i] and ranks[b, i] == best]
        naive.append(sum(-logps[b, i].item() / tokens[b, i].item() for i in picks) / len(picks))
    assert got.tolist() == pytest.approx(naive)
    got.sum().backward()
    assert logps.grad[0, 1] == pytest.approx(0.0) and logps.grad[0, 0] == pytest.approx(-1 / 3)
