"""K-wise Bradley-Terry loss and metrics against naive Python loops over pairs."""

import itertools
import math
import random

import pytest
import torch

from reward import losses as L


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def naive_pair_ll(d: float, ties: str, param: float) -> tuple[float, float]:
    """(log P(win), log P(tie)) straight from the models' probability definitions."""
    if ties == "drop":
        return math.log(sigmoid(d)), float("nan")
    if ties == "rao_kupper":
        theta = param
        pi, pj = math.exp(d), 1.0
        win = pi / (pi + theta * pj)
        tie = (theta**2 - 1) * pi * pj / ((pi + theta * pj) * (theta * pi + pj))
        return math.log(win), math.log(tie)
    nu = param
    pi, pj = math.exp(d), 1.0
    z = pi + pj + nu * math.sqrt(pi * pj)
    return math.log(pi / z), math.log(nu * math.sqrt(pi * pj) / z)


def naive_loss(scores, ranks, valid, margins, ties, param, center):
    """Loop over prompts and pairs: mean over prompts of the mean NLL of that prompt's comparisons."""
    per_prompt, centers = [], []
    for b in range(len(scores)):
        idx = [k for k in range(len(scores[b])) if valid[b][k]]
        terms, sq = [], []
        for i, j in itertools.combinations(idx, 2):
            sq.append((scores[b][i] + scores[b][j]) ** 2)
            if ranks[b][i] == ranks[b][j]:
                if ties != "drop":
                    terms.append(-naive_pair_ll(scores[b][i] - scores[b][j], ties, param)[1])
                continue
            w, l_ = (i, j) if ranks[b][i] < ranks[b][j] else (j, i)
            m = margins[b][w][l_] if margins is not None else 0.0
            terms.append(-naive_pair_ll(scores[b][w] - scores[b][l_] - m, ties, param)[0])
        if terms:
            per_prompt.append(sum(terms) / len(terms))
        if sq:
            centers.append(sum(sq) / len(sq))
    loss = sum(per_prompt) / max(len(per_prompt), 1)
    if center:
        loss += center * sum(centers) / max(len(centers), 1)
    return loss


def random_batch(seed: int, b: int = 5, k: int = 5, tie_rate: float = 0.3, variable_k: bool = True):
    rng = random.Random(seed)
    scores = [[rng.gauss(0, 2) for _ in range(k)] for _ in range(b)]
    ranks, valid = [], []
    for _ in range(b):
        n = rng.randint(2, k) if variable_k else k
        r, level = [], 1
        for pos in range(k):
            if pos and rng.random() >= tie_rate:
                level += 1
            r.append(level)
        rng.shuffle(r)
        ranks.append(r)
        valid.append([pos < n for pos in range(k)])
    margins = [[[rng.uniform(0, 1) for _ in range(k)] for _ in range(k)] for _ in range(b)]
    return scores, ranks, valid, margins


@pytest.mark.parametrize("ties,param", [("drop", 1.5), ("rao_kupper", 1.5), ("rao_kupper", 3.0), ("davidson", 0.7)])
@pytest.mark.parametrize("use_margin", [False, True])
@pytest.mark.parametrize("center", [0.0, 0.01])
def test_kwise_loss_matches_naive_pairs(ties, param, use_margin, center):
    for seed in range(3):
        scores, ranks, valid, margins = random_batch(seed)
        got = L.kwise_loss(
            torch.tensor(scores),
            torch.tensor(ranks),
            torch.tensor(valid),
            torch.tensor(margins) if use_margin else None,
            ties=ties,
            tie_param=param,
            center_coef=center,
        )
        want = naive_loss(scores, ranks, valid, margins if use_margin else None, ties, param, center)
        assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_pairwise_data_is_the_k2_case_and_equals_trl_loss():
    # TRL's RewardTrainer loss: -logsigmoid(r_chosen - r_rejected - margin).mean() + c * mean((r_c + r_r)^2)
    g = torch.Generator().manual_seed(0)
    chosen, rejected, margin = torch.randn(7, generator=g), torch.randn(7, generator=g), torch.rand(7, generator=g)
    trl = -torch.nn.functional.logsigmoid(chosen - rejected - margin).mean() + 0.05 * ((chosen + rejected) ** 2).mean()
    scores = torch.stack([chosen, rejected], 1)
    ranks = torch.tensor([[1, 2]] * 7)
    margins = torch.zeros(7, 2, 2)
    margins[:, 0, 1] = margin
    ours = L.kwise_loss(scores, ranks, margins=margins, center_coef=0.05)
    assert ours.item() == pytest.approx(trl.item(), rel=1e-6)


def test_kwise_equals_mean_of_expanded_pairs_for_equal_k():
    # With every prompt at the same K and no ties, the K-wise loss is the plain mean over all C(K,2) pairs.
    scores, ranks, _, _ = random_batch(3, b=4, k=4, tie_rate=0.0, variable_k=False)
    pairs = []
    for b in range(4):
        for i, j in itertools.permutations(range(4), 2):
            if ranks[b][i] < ranks[b][j]:
                pairs.append(-math.log(sigmoid(scores[b][i] - scores[b][j])))
    got = L.kwise_loss(torch.tensor(scores), torch.tensor(ranks)).item()
    assert got == pytest.approx(sum(pairs) / len(pairs), rel=1e-6)


def test_tie_models_are_distributions_and_reduce_to_bradley_terry():
    d = torch.linspace(-6, 6, 25)
    for ties, param in [("rao_kupper", 2.0), ("davidson", 0.5)]:
        win, tie = L.pair_log_likelihoods(d, ties, param)
        lose, _ = L.pair_log_likelihoods(-d, ties, param)
        total = win.exp() + lose.exp() + tie.exp()
        torch.testing.assert_close(total, torch.ones_like(total), rtol=1e-6, atol=1e-6)
    near_bt, _ = L.pair_log_likelihoods(d, "rao_kupper", 1.0 + 1e-6)
    torch.testing.assert_close(near_bt, torch.nn.functional.logsigmoid(d), rtol=1e-4, atol=1e-5)
    near_bt, _ = L.pair_log_likelihoods(d, "davidson", 1e-9)
    torch.testing.assert_close(near_bt, torch.nn.functional.logsigmoid(d), rtol=1e-4, atol=1e-5)


def test_all_tied_prompt_contributes_nothing_when_ties_dropped():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]])
    ranks = torch.tensor([[1, 1, 1], [1, 2, 3]])
    both = L.kwise_loss(scores, ranks)
    second = L.kwise_loss(scores[1:], ranks[1:])
    assert both.item() == pytest.approx(second.item())


def test_gradient_flows_only_through_valid_completions():
    scores = torch.randn(2, 4, requires_grad=True)
    ranks = torch.tensor([[1, 2, 3, 9], [2, 1, 9, 9]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    L.kwise_loss(scores, ranks, valid, ties="davidson", center_coef=0.1).backward()
    assert (scores.grad[~valid] == 0).all()
    assert (scores.grad[valid] != 0).all()


def test_soft_pair_losses_match_a_loop_over_pairs_with_padding():
    torch.manual_seed(0)
    scores, prob = torch.randn(3, 4), torch.rand(3, 4, 4)
    valid = torch.tensor([[True] * 4, [True, True, True, False], [True, False, False, False]])
    losses, has = L.soft_pair_losses(scores, prob, valid)
    for b in range(3):
        k = int(valid[b].sum())
        terms = [-(float(prob[b, i, j]) * math.log(sigmoid(d)) + (1 - float(prob[b, i, j])) * math.log(sigmoid(-d)))
                 for i, j in itertools.combinations(range(k), 2) for d in [float(scores[b, i] - scores[b, j])]]  # fmt: skip
        assert bool(has[b]) == bool(terms)
        assert losses[b].item() == pytest.approx(sum(terms) / len(terms) if terms else 0.0, rel=1e-5)


def test_soft_labels_of_certainty_are_the_hard_loss_and_are_learned_up_to_a_constant():
    """p = 1 for every "i ranked above j" is the Bradley-Terry NLL; labels sigmoid(s_i - s_j) have zero gradient at
    r = s + c and a higher loss anywhere off it; hard rows in the same batch keep their hard loss."""
    scores, ranks = torch.tensor([[0.3, -1.2, 2.0]]), torch.tensor([[2, 3, 1]])
    certain = (ranks[:, :, None] < ranks[:, None, :]).float()
    soft = torch.tensor([True])
    hard = L.kwise_loss(scores, ranks)
    assert L.kwise_loss(scores, ranks, soft=soft, soft_prob=certain).item() == pytest.approx(hard.item(), rel=1e-6)
    target = torch.tensor([[0.5, 2.0, -1.0]])
    prob = torch.sigmoid(target[:, :, None] - target[:, None, :])
    at = (target + 3.0).requires_grad_()
    best = L.kwise_loss(at, ranks, soft=soft, soft_prob=prob)
    best.backward()
    assert at.grad.abs().max() < 1e-6
    assert L.kwise_loss(target + torch.tensor([[0.0, 0.3, 0.0]]), ranks, soft=soft, soft_prob=prob) > best
    mixed = L.kwise_loss(torch.cat([scores, target]), torch.cat([ranks, ranks]), soft=torch.tensor([False, True]),
                         soft_prob=torch.cat([prob, prob]))  # fmt: skip
    assert mixed.item() == pytest.approx((hard.item() + best.item()) / 2, rel=1e-6)


def test_rank_gap_margins():
    ranks = torch.tensor([[2, 1, 4, 2]])
    m = L.rank_gap_margins(ranks, 0.5)
    for i, j in itertools.product(range(4), repeat=2):
        assert m[0, i, j].item() == pytest.approx(max(0, ranks[0, j] - ranks[0, i]) * 0.5)


def test_pairwise_accuracy_counts_strict_pairs():
    scores, ranks, valid, _ = random_batch(7, b=6, k=5)
    correct, total, margin = L.pairwise_accuracy(torch.tensor(scores), torch.tensor(ranks), torch.tensor(valid))
    for b in range(6):
        c = t = 0
        m = 0.0
        for i, j in itertools.permutations(range(5), 2):
            if valid[b][i] and valid[b][j] and ranks[b][i] < ranks[b][j]:
                t += 1
                c += scores[b][i] > scores[b][j]
                m += scores[b][i] - scores[b][j]
        assert (correct[b].item(), total[b].item()) == (c, t)
        assert margin[b].item() == pytest.approx(m, rel=1e-5, abs=1e-5)


def test_expected_calibration_error_by_hand():
    # Two bins used: 0.6-0.7 holds p=0.65 (right), 1-0.65=0.35 -> conf 0.65 (wrong); 0.9-1.0 holds 0.95 (right).
    p = torch.tensor([0.65, 0.35, 0.95])
    conf_bin1 = abs(0.5 - 0.65) * 2 / 3
    conf_bin2 = abs(1.0 - 0.95) * 1 / 3
    assert L.expected_calibration_error(p) == pytest.approx(conf_bin1 + conf_bin2)
    assert math.isnan(L.expected_calibration_error(torch.tensor([])))


def test_pearson_by_loop():
    rng = random.Random(1)
    x = [rng.random() for _ in range(20)]
    y = [2 * v + rng.random() for v in x]
    mx, my = sum(x) / 20, sum(y) / 20
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    want = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert L.pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(want)
    assert math.isnan(L.pearson(torch.ones(5), torch.arange(5.0)))
