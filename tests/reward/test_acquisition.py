"""Each acquisition rule against a hand computation; subset choice, tie-breaking, seeds; D-optimal against a
naive log-det loop that refactorises H at every step."""

import itertools
import math

import pytest
import torch

from reward import acquisition as A
from reward import uncertainty as U


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_greedy_subsets_by_hand_and_ties_to_the_lowest_index():
    utility = torch.tensor(
        [[0, 1, 5, 2],
         [1, 0, 3, 4],
         [5, 3, 0, 1],
         [2, 4, 1, 0]], dtype=torch.float64)[None]  # fmt: skip
    # K = 2: the best pair is (0, 2) = 5. K = 3: adding 1 gives 1 + 3 = 4, adding 3 gives 2 + 1 = 3.
    chosen, value = A.greedy_subsets(utility, 2)
    assert chosen.tolist() == [[0, 2]] and value.tolist() == [5.0]
    chosen, value = A.greedy_subsets(utility, 3)
    assert chosen.tolist() == [[0, 1, 2]] and value.tolist() == [9.0]
    chosen, value = A.greedy_subsets(utility, 4)
    assert chosen.tolist() == [[0, 1, 2, 3]] and value.tolist() == [16.0]
    flat = torch.ones(1, 5, 5, dtype=torch.float64)
    assert A.greedy_subsets(flat, 2)[0].tolist() == [[0, 1]] and A.greedy_subsets(flat, 3)[0].tolist() == [[0, 1, 2]]
    for bad in (1, 5):
        with pytest.raises(ValueError, match="K must be between 2"):
            A.greedy_subsets(utility, bad)


def test_greedy_pairs_are_exact_and_greedy_subsets_add_up():
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(6, 7, 7, generator=g, dtype=torch.float64)
    utility = raw + raw.transpose(1, 2)
    chosen, value = A.greedy_subsets(utility, 2)
    for t in range(6):
        best = max(itertools.combinations(range(7), 2), key=lambda p: utility[t, p[0], p[1]].item())
        assert chosen[t].tolist() == list(best) and value[t].item() == utility[t, best[0], best[1]].item()
    chosen, value = A.greedy_subsets(utility, 4)
    for t in range(6):
        total = sum(utility[t, i, j].item() for i, j in itertools.combinations(chosen[t].tolist(), 2))
        assert value[t].item() == pytest.approx(total) and len(set(chosen[t].tolist())) == 4


def test_random_is_seeded_and_uniform_over_candidates():
    a, b, c = (
        A.random_selection(50, 8, 3, seed=1),
        A.random_selection(50, 8, 3, seed=1),
        A.random_selection(50, 8, 3, 2),
    )
    assert torch.equal(a.chosen, b.chosen) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.chosen, c.chosen)
    assert a.chosen.shape == (50, 3) and (a.chosen.diff(dim=1) > 0).all() and a.chosen.max() < 8
    assert a.scores.dtype == torch.float64 and ((a.scores >= 0) & (a.scores < 1)).all()
    counts = torch.bincount(A.random_selection(4000, 8, 3, seed=0).chosen.flatten(), minlength=8)
    assert counts.min() > 1300 and counts.max() < 1700  # 1500 expected per candidate


def test_uncertainty_by_hand():
    # Var r = (1, 2, 3), Cov(r0, r1) = 1, others 0: Var(r0 - r1) = 1, Var(r0 - r2) = 4, Var(r1 - r2) = 5.
    cov = torch.tensor([[[1.0, 1, 0], [1, 2, 0], [0, 0, 3]]])
    sel = A.uncertainty(cov, 2)
    assert sel.chosen.tolist() == [[1, 2]] and sel.scores.tolist() == [5.0]
    assert A.uncertainty(cov, 3).scores.tolist() == [10.0]


def test_disagreement_by_hand_and_ties():
    # Two draws: scores (0, 0, 0) and (0, 2, 0). sigmoid(r_0 - r_1) is 1/2 or sigmoid(-2): variance (Δ/2)^2.
    samples = torch.tensor([[[0.0, 0, 0]], [[0.0, 2, 0]]])
    sel = A.disagreement(samples, 2)
    expected = ((0.5 - sigmoid(-2)) / 2) ** 2
    assert sel.chosen.tolist() == [[0, 1]]  # (0, 1) and (1, 2) tie: the lower index wins
    assert sel.scores.item() == pytest.approx(expected)
    # A large gap both draws agree on saturates: no disagreement, unlike the variance of the gap.
    sure = torch.tensor([[[0.0, 30, 0]], [[0.0, 40, 0]]])
    assert A.disagreement(sure, 2).chosen.tolist() == [[0, 1]] and A.disagreement(sure, 2).scores.item() < 1e-12


def test_delta_ucb_by_hand_and_equal_to_the_ordered_pair_rule():
    mean, std = torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.5]])
    # |gap| + beta (sigma_i + sigma_j): (0, 1) 1 + 1 = 2; (0, 2) 3 + 1.5 = 4.5; (1, 2) 2 + 0.5 = 2.5.
    sel = A.delta_ucb(mean, std, 2, beta=1.0)
    assert sel.chosen.tolist() == [[0, 2]] and sel.scores.tolist() == [4.5]
    # beta = 4: (0, 1) 1 + 4 = 5; (0, 2) 3 + 6 = 9; (1, 2) 2 + 2 = 4.
    assert A.delta_ucb(mean, std, 3, beta=4.0).scores.tolist() == [18.0]
    # K = 2 is ActiveUltraFeedback's rule: argmax over ordered i != j of (mu_i + b s_i) - (mu_j - b s_j).
    g = torch.Generator().manual_seed(3)
    mean, std = torch.randn(20, 6, generator=g), torch.rand(20, 6, generator=g)
    ucb = (mean + 0.7 * std)[:, :, None] - (mean - 0.7 * std)[:, None, :]
    ucb = ucb.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf")).reshape(20, -1).argmax(-1)
    ordered = torch.stack([ucb // 6, ucb % 6], 1).sort(1).values
    assert torch.equal(A.delta_ucb(mean, std, 2, beta=0.7).chosen, ordered)


def pair_tasks(directions):
    """Tasks of two candidates whose difference is each direction (the second candidate at the origin)."""
    x = torch.tensor(directions, dtype=torch.float64)
    return torch.stack([x, torch.zeros_like(x)], 1)


def test_d_optimal_by_hand_is_batch_aware():
    # Prior Sigma = I, means 0 so every pair weighs 1/4; a task's gain is log(1 + x^T Sigma x / 4).
    # Task 3 repeats task 2: once 2 is chosen the repeat is worth less than task 1, which it was not before.
    features = pair_tasks([[1, 0], [0, 1.5], [2, 0], [2, 0]])
    sel = A.d_optimal(features, torch.zeros(4, 2), torch.eye(2), k=2)
    # Chosen in order: 2 (log 2), then H = diag(2, 1): 1 (log 1.5625) over 3 (log 1.5); then H = diag(2, 1.5625):
    # 3 (log 1.5), then H = diag(3, 1.5625): 0 (log(1 + 1/12)).
    expected = [math.log(1 + 1 / 12), math.log(1.5625), math.log(2), math.log(1.5)]
    torch.testing.assert_close(sel.scores, torch.tensor(expected, dtype=torch.float64))
    assert A.serving_order(sel.scores).tolist() == [2, 1, 3, 0] and sel.chosen.tolist() == [[0, 1]] * 4
    # A budget of one: the others score their gain after it, below it.
    sel = A.d_optimal(features, torch.zeros(4, 2), torch.eye(2), k=2, budget=1)
    torch.testing.assert_close(sel.scores, torch.tensor([math.log(1.125), math.log(1.5625), math.log(2), math.log(1.5)],
                                                        dtype=torch.float64))  # fmt: skip


def naive_gain(h, phi, weights, subset):
    """log det(H + Fisher of ranking `subset`) - log det H, with the Fisher built pair by pair."""
    added = torch.zeros_like(h)
    for a, b in itertools.combinations(subset, 2):
        x = phi[a] - phi[b]
        added += weights[a, b] * torch.outer(x, x)
    return (torch.logdet(h + added) - torch.logdet(h)).item(), added


def naive_d_optimal(features, mean, sigma, k, budget):
    """The same greedy, refactorising H each time: tasks by gain, each task's subset grown item by item."""
    h, weights = torch.linalg.inv(sigma), A.pair_weights(mean)
    order, gains, subsets = [], [], {}
    for _ in range(budget):
        best = None
        for t in [t for t in range(features.shape[0]) if t not in order]:
            subset = max(itertools.combinations(range(features.shape[1]), 2),
                         key=lambda s: naive_gain(h, features[t], weights[t], s)[0])  # fmt: skip
            subset = list(subset)
            while len(subset) < k:
                rest = [m for m in range(features.shape[1]) if m not in subset]
                subset.append(max(rest, key=lambda m: naive_gain(h, features[t], weights[t], subset + [m])[0]))
            gain = naive_gain(h, features[t], weights[t], subset)[0]
            if best is None or gain > best[0] + 1e-12:
                best = (gain, t, sorted(subset))
        gain, t, subset = best
        order.append(t), gains.append(gain)
        subsets[t] = subset
        h = h + naive_gain(h, features[t], weights[t], subset)[1]
    return order, gains, subsets


@pytest.mark.parametrize("k", [2, 3])
def test_d_optimal_matches_a_naive_log_det_greedy(k):
    g = torch.Generator().manual_seed(7)
    features = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    mean = torch.randn(5, 4, generator=g, dtype=torch.float64)
    root = torch.randn(3, 3, generator=g, dtype=torch.float64)
    sigma = root @ root.T + 0.5 * torch.eye(3, dtype=torch.float64)
    sel = A.d_optimal(features, mean, sigma, k, budget=3)
    copy = sigma.clone()
    in_place = A.d_optimal(features, mean, copy, k, budget=3, inplace=True)
    assert torch.equal(in_place.chosen, sel.chosen) and not torch.equal(copy, sigma)  # the copy was updated
    order, gains, subsets = naive_d_optimal(features, mean, sigma, k, 3)
    assert A.serving_order(sel.scores)[:3].tolist() == order
    assert sel.scores[order].tolist() == pytest.approx(gains, rel=1e-9)  # gains already non-increasing here
    assert all(sel.chosen[t].tolist() == subsets[t] for t in order)
    # A subset's gain is the Sylvester form of the naive log-det difference.
    h, weights = torch.linalg.inv(sigma), A.pair_weights(mean)
    cov = features @ sigma @ features.transpose(1, 2)
    got = A.subset_gains(cov[0], weights[0], torch.tensor([0, 2, 3]))
    assert got.item() == pytest.approx(naive_gain(h, features[0], weights[0], [0, 2, 3])[0], rel=1e-9)


def test_select_runs_every_rule_on_a_posterior_and_is_deterministic():
    g = torch.Generator().manual_seed(4)
    post = U.laplace(torch.randn(30, 6, generator=g), torch.randint(0, 30, (40, 2), generator=g),
                     torch.randn(6, generator=g))  # fmt: skip
    features = torch.randn(7, 5, 6, generator=g)
    for method in A.METHODS:
        sel = A.select(method, post, features, k=3, seed=1, budget=4)
        again = A.select(method, post, features, k=3, seed=1, budget=4)
        assert sel.chosen.shape == (7, 3) and sel.scores.shape == (7,)
        assert torch.equal(sel.chosen, again.chosen) and torch.equal(sel.scores, again.scores)
        assert (sel.chosen.diff(dim=1) > 0).all() and sel.chosen.max() < 5, method
    mean, cov = U.predict(post, features)
    assert torch.equal(A.select("uncertainty", post, features, 3).chosen, A.uncertainty(cov, 3).chosen)
    with pytest.raises(ValueError, match="acquisition method must be one of"):
        A.select("entropy", post, features, k=3)
    with pytest.raises(ValueError, match="not all finite"):
        A.select("uncertainty", post, features.index_fill(0, torch.tensor([2]), float("nan")), k=3)
    # Chunking over tasks changes nothing.
    samples = U.sample_scores(post, features, 8, seed=0)
    assert torch.equal(A.disagreement(samples, 3, chunk=2).chosen, A.disagreement(samples, 3).chosen)
    sigma = U.covariance(post)
    torch.testing.assert_close(A.task_covariances(features, sigma, chunk=3), A.task_covariances(features, sigma))
    torch.testing.assert_close(A.task_covariances(features, sigma), cov)


def test_serving_order_breaks_ties_by_task_index():
    assert A.serving_order(torch.tensor([0.5, 2.0, 0.5, 2.0, 1.0])).tolist() == [1, 3, 4, 0, 2]


def test_lazy_d_optimal_equals_re_evaluating_every_task():
    g = torch.Generator().manual_seed(11)
    features = torch.randn(12, 5, 4, generator=g, dtype=torch.float64)
    mean = torch.randn(12, 5, generator=g, dtype=torch.float64)
    lazy = A.d_optimal(features, mean, torch.eye(4, dtype=torch.float64), k=3, budget=8, refresh=1)
    full = A.d_optimal(features, mean, torch.eye(4, dtype=torch.float64), k=3, budget=8, refresh=10**6)
    assert torch.equal(lazy.chosen, full.chosen)
    torch.testing.assert_close(lazy.scores, full.scores, rtol=1e-12, atol=0)
    order = A.serving_order(lazy.scores)
    assert (lazy.scores[order].diff() <= 0).all()  # chosen first, in choice order; the rest below


def test_invalid_candidates_are_never_chosen_and_valid_ones_choose_as_if_alone():
    """A repeated or empty text (valid = False) never goes to people; masking equals dropping it."""
    g = torch.Generator().manual_seed(5)
    post = U.laplace(torch.randn(30, 6, generator=g), torch.randint(0, 30, (40, 2), generator=g),
                     torch.randn(6, generator=g))  # fmt: skip
    features = torch.randn(6, 5, 6, generator=g)
    valid = torch.ones(6, 5, dtype=torch.bool)
    valid[:, 1] = False  # candidate 1 of every task
    valid[2, 3] = False  # and one more in task 2: exactly K = 3 left
    for method in A.METHODS:
        sel = A.select(method, post, features, k=3, seed=2, budget=3, valid=valid)
        assert valid.gather(1, sel.chosen).all(), method
        assert sel.chosen[2].tolist() == [0, 2, 4], method
    # Without candidate 1 at all, the deterministic rules choose the same candidates (renumbered).
    keep = torch.tensor([0, 2, 3, 4])
    rows = torch.tensor([0, 1, 3, 4, 5])  # task 2 lost two candidates: compare the others
    for method in ("uncertainty", "delta_ucb"):
        masked = A.select(method, post, features[rows], k=3, valid=valid[rows])
        alone = A.select(method, post, features[rows][:, keep], k=3)
        assert torch.equal(keep[alone.chosen], masked.chosen), method
        torch.testing.assert_close(alone.scores, masked.scores)
    with pytest.raises(ValueError, match="at least K = 3 valid candidates"):
        A.select("uncertainty", post, features, k=3, valid=valid.index_fill(1, torch.tensor([0]), False))
    # random with no mask keeps its draw (the same random numbers as before masks existed)
    assert torch.equal(
        A.random_selection(6, 5, 3, 9).chosen, A.random_selection(6, 5, 3, 9, torch.ones(6, 5) > 0).chosen
    )
