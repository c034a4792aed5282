"""DPO math as pure torch functions: sequence log-probs, pairwise DPO / IPO, Plackett-Luce over a whole ranking, metrics.

Shapes: B = pairs or ranked prompts, K = completions per prompt (prompts with fewer are padded to the
largest K and carry a `valid` mask [B, K], as in reward/losses.py), N = sequences, T = completion tokens.
Every loss is a function of the log-ratios logp - ref_logp of whole completions; the implicit reward of
a completion is r = beta * (logp - ref_logp) (Rafailov et al. 2023), the quantity TRL logs as
`rewards/chosen` and `rewards/rejected`. How a sequence log-prob is reduced from its tokens is the
caller's choice (`sequence_logps`: the sum, or the mean per token for the length-normalised variant).
Half-precision inputs are upcast to float32 first (float64 stays float64, for exact tests).

Ranks: 1 = best, ties share a value; the values need not be dense ([1, 1, 3] is a tie for first).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from reward.losses import pair_masks, valid_pairs

LOSS_TYPES = ("sigmoid", "ipo")
TIES = ("drop", "davidson")
METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
MAX_TIE_SUBSET = 12  # 2^12 subsets: the sums over orders / tie sets below enumerate subsets of at most this many items

# A finite stand-in for log 0: -inf would turn an all-masked logsumexp into NaN gradients (exp(-inf + inf)).
_LOG_ZERO = -1e30


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ----------------------------------------------------------------------------------------------
# Sequence log-probs and implicit rewards


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Sum over completion tokens of per-token log-probs, or with `average` their mean: [N, T], mask [N, T] -> [N].

    The mean is TRL's length-normalised form (`sigmoid_norm`; TRL's IPO uses it too). Masked positions
    never enter, whatever they hold (even -inf); a row with no token gives 0.
    """
    mask = mask.bool()
    x = torch.where(mask, _fp32(token_logps), 0.0)
    total = x.sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def implicit_rewards(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * (logp - ref_logp), any shape: the reward a DPO policy implies for each completion (with gradient)."""
    return beta * (_fp32(logps) - _fp32(ref_logps))


# ----------------------------------------------------------------------------------------------
# Pairwise: DPO (sigmoid) and IPO, with a soft target


class PairLoss(NamedTuple):
    losses: torch.Tensor  # [B] per-pair loss, with gradient
    chosen_rewards: torch.Tensor  # [B] beta * (logp - ref_logp) of the chosen completions, detached
    rejected_rewards: torch.Tensor  # [B] the same for the rejected ones


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _pair_losses(h: torch.Tensor, beta: float, loss_type: str, p: torch.Tensor | float) -> torch.Tensor:
    """Loss of pairs with log-ratio difference h = (logp - ref)_chosen - (logp - ref)_rejected and target P(chosen > rejected) = p.

    sigmoid: -p log sigmoid(beta h) - (1 - p) log sigmoid(-beta h), minimised at beta h = logit(p)
      (p = 1: DPO; p = 1 - eps: TRL's `label_smoothing` eps, cDPO).
    ipo: p (h - tau)^2 + (1 - p) (h + tau)^2 with tau = 1 / (2 beta) (Azar et al. 2023, eq. 17 as in TRL),
      the expected square loss when the pair's order is drawn with probability p; minimised at h = (2p - 1) tau.
    """
    if loss_type == "sigmoid":
        return -(p * F.logsigmoid(beta * h) + (1 - p) * F.logsigmoid(-beta * h))
    if loss_type == "ipo":
        tau = 1 / (2 * beta)
        return p * (h - tau) ** 2 + (1 - p) * (h + tau) ** 2
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got '{loss_type}'")


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    chosen_probability: torch.Tensor | float = 1.0,
) -> PairLoss:
    """Per-pair DPO (`sigmoid`) or IPO (`ipo`) loss and the implicit rewards. All inputs [B] sequence log-probs.

    chosen_probability [B] or a float in [0, 1]: the probability that `chosen` is really the better one
    (1 = a hard label, standard DPO/IPO; a Bradley-Terry probability sigmoid(r_c - r_r) trains the policy
    towards pi_ref * exp(r / beta) / Z). The formulas are in `_pair_losses`. TRL's IPO uses log-probs
    averaged per token: pass `sequence_logps(..., average=True)` for that.
    """
    _check_beta(beta)
    p = chosen_probability
    if isinstance(p, torch.Tensor):
        p = _fp32(p)
        if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):
            raise ValueError("chosen_probability must lie in [0, 1]")
    elif not 0 <= p <= 1:
        raise ValueError(f"chosen_probability must lie in [0, 1], got {p}")
    chosen = _fp32(chosen_logps) - _fp32(ref_chosen_logps)
    rejected = _fp32(rejected_logps) - _fp32(ref_rejected_logps)
    losses = _pair_losses(chosen - rejected, beta, loss_type, p)
    return PairLoss(losses, beta * chosen.detach(), beta * rejected.detach())


# ----------------------------------------------------------------------------------------------
# K-wise: Plackett-Luce over a whole ranking (DPO paper, appendix A.3), and the all-pairs expansion


class RankingLoss(NamedTuple):
    losses: torch.Tensor  # [B] per-prompt loss (0 for a prompt that carries no preference), with gradient
    informative: torch.Tensor  # [B] bool: the prompt carries a preference (average the loss over these)
    rewards: torch.Tensor  # [B, K] implicit rewards beta * (logp - ref_logp), detached, 0 at padding


def mean_over_prompts(result: RankingLoss) -> torch.Tensor:
    """The batch loss: mean of the per-prompt losses over informative prompts (0 when there is none)."""
    weight = result.informative.to(result.losses.dtype)
    return (result.losses * weight).sum() / weight.sum().clamp(min=1)


class TieGroups(NamedTuple):
    members: torch.Tensor  # [B, G, M] long: the completions of each rank group, best group first (0 = filler)
    member_mask: torch.Tensor  # [B, G, M] bool: real members
    below: torch.Tensor  # [B, G, K] bool: valid completions ranked strictly below the group
    remaining: torch.Tensor  # [B, G, K] bool: valid completions not ranked above the group (the group + below)
    exists: torch.Tensor  # [B, G] bool


def tie_groups(ranks: torch.Tensor, valid: torch.Tensor) -> TieGroups:
    """The rank groups of each prompt (completions that share a rank), best first: ranks, valid [B, K] -> TieGroups."""
    B, K = ranks.shape
    groups, values = [], []
    for row, ok in zip(ranks.tolist(), valid.tolist()):
        values.append(sorted({r for r, v in zip(row, ok) if v}))
        groups.append([[i for i in range(K) if ok[i] and row[i] == value] for value in values[-1]])
    G = max(1, max(len(g) for g in groups))
    M = max(1, max((len(m) for g in groups for m in g), default=1))
    members = torch.zeros(B, G, M, dtype=torch.long)
    member_mask = torch.zeros(B, G, M, dtype=torch.bool)
    group_rank = torch.zeros(B, G, dtype=torch.long)
    exists = torch.zeros(B, G, dtype=torch.bool)
    for b, prompt_groups in enumerate(groups):
        for g, m in enumerate(prompt_groups):
            members[b, g, : len(m)] = torch.tensor(m)
            member_mask[b, g, : len(m)] = True
            group_rank[b, g] = values[b][g]
            exists[b, g] = True
    ranks_cpu, valid_cpu = ranks.cpu(), valid.cpu().bool()
    lower = ranks_cpu[:, None, :] > group_rank[:, :, None]
    below = valid_cpu[:, None, :] & lower & exists[:, :, None]
    remaining = valid_cpu[:, None, :] & (ranks_cpu[:, None, :] >= group_rank[:, :, None]) & exists[:, :, None]
    device = ranks.device
    return TieGroups(
        members.to(device), member_mask.to(device), below.to(device), remaining.to(device), exists.to(device)
    )


def _subset_bits(n: int, device) -> torch.Tensor:
    """[2^n, n] bool: row s is the subset of {0..n-1} whose bits are set in s."""
    return ((torch.arange(2**n, device=device)[:, None] >> torch.arange(n, device=device)) & 1).bool()


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.logsumexp(torch.where(mask, x, _LOG_ZERO), dim)


def _log_prob_group_first(s_members: torch.Tensor, member_mask: torch.Tensor, log_rest: torch.Tensor) -> torch.Tensor:
    """log P(a group's members are the next |G| Plackett-Luce picks, in any order), summed over those orders.

    s_members [..., M] scores of the members (member_mask [..., M] marks the real ones, packed first);
    log_rest [...]: log of the summed exp(score) of the other completions still to be placed.
    Exact, by a recursion over subsets S of the group: h(S) = P(S drawn before the rest, any order, among
    S + rest) = sum_{i in S} e^(s_i) h(S \\ i) / (e^rest + sum_{j in S} e^(s_j)), h({}) = 1.
    Cost 2^M * M per group (M = the largest tie group).
    """
    M = s_members.shape[-1]
    bits = _subset_bits(M, s_members.device)  # [S, M]
    s = torch.where(member_mask, s_members, _LOG_ZERO)
    log_denominator = torch.logaddexp(log_rest[..., None], _masked_logsumexp(s[..., None, :], bits))  # [..., S]
    index = torch.arange(2**M, device=s.device)
    log_h = torch.full((*s.shape[:-1], 2**M), _LOG_ZERO, dtype=s.dtype, device=s.device)
    log_h[..., 0] = 0.0  # h({}) = 1
    size = bits.sum(-1)
    for level in range(1, M + 1):
        subsets = index[size == level]  # computed from their subsets with one member fewer (level - 1)
        smaller = subsets[:, None] ^ (1 << torch.arange(M, device=s.device))  # [n, M]; only used where the bit is set
        terms = log_h[..., smaller] + s[..., None, :]
        value = _masked_logsumexp(terms, bits[subsets]) - log_denominator[..., subsets]
        log_h = log_h.index_copy(-1, subsets, value)
    full = (1 << member_mask.sum(-1)) - 1
    return log_h.gather(-1, full[..., None]).squeeze(-1)


def _drop_log_likelihood(s: torch.Tensor, groups: TieGroups) -> torch.Tensor:
    """log P(the ranking's weak order) under Plackett-Luce, tied orders summed: s [B, K] -> [B]."""
    if groups.members.shape[-1] > MAX_TIE_SUBSET:
        raise ValueError(
            f"ties='drop' sums over the orders of a tie group: at most {MAX_TIE_SUBSET} tied completions, "
            f"got {groups.members.shape[-1]}"
        )
    s_members = s[:, None, :].expand(-1, groups.members.shape[1], -1).gather(-1, groups.members)
    log_rest = _masked_logsumexp(s[:, None, :], groups.below)
    per_group = _log_prob_group_first(s_members, groups.member_mask, log_rest)
    # the last group (nothing below it) is placed with probability 1: exactly 0, not a rounding of it
    return torch.where(groups.below.any(-1), per_group, 0.0).sum(-1)


def _davidson_luce_log_likelihood(s: torch.Tensor, groups: TieGroups, nu: float) -> torch.Tensor:
    """log P(weak order) under Davidson-Luce with delta_n = nu^(n-1): s [B, K] -> [B] (see plackett_luce_loss)."""
    K = s.shape[1]
    if K > MAX_TIE_SUBSET:
        raise ValueError(f"ties='davidson' sums over every subset of a prompt's completions: K <= {MAX_TIE_SUBSET}")
    bits = _subset_bits(K, s.device)  # [S, K]
    size = bits.sum(-1)
    # log weight of each subset U as a tie: log delta_|U| + mean of its scores (log of the geometric mean of e^s)
    log_delta = (size - 1).clamp(min=0).to(s.dtype) * math.log(nu)
    log_w = (s @ bits.to(s.dtype).T) / size.clamp(min=1) + log_delta  # [B, S]
    inside = ~(bits[None, None] & ~groups.remaining[:, :, None, :]).any(-1)  # [B, G, S]: U within what remains
    inside = inside & (size > 0)
    log_norm = _masked_logsumexp(log_w[:, None, :], inside)
    powers = 1 << torch.arange(K, device=s.device)
    member_bits = torch.where(groups.member_mask, powers[groups.members], 0).sum(-1)  # [B, G]: the group as a subset
    log_group = log_w.gather(-1, member_bits)
    return torch.where(groups.exists, log_group - log_norm, 0.0).sum(-1)


def plackett_luce_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    ranks: torch.Tensor,
    valid: torch.Tensor | None = None,
    beta: float = 0.1,
    ties: str = "drop",
    tie_param: float = 1.5,
) -> RankingLoss:
    """Listwise DPO: the negative Plackett-Luce log-likelihood of each prompt's ranking under the implicit rewards.

    logps, ref_logps: [B, K] sequence log-probs; ranks: [B, K] ints (1 = best, ties share a value);
    valid: [B, K] bool (False for padding; its log-probs may hold anything, even NaN). With s_i =
    beta * (logp_i - ref_logp_i) and no ties, -log P(ranking) = -sum_{t=1}^{K-1} [s_(t) - log sum_{u >= t}
    exp(s_(u))] over the completions in rank order (DPO appendix A.3); at K = 2 it is DPO's
    -log sigmoid(s_chosen - s_rejected) exactly.
    Ties (as the reward stage's `ties`):
    - `drop`: a tie group is an unordered block, nothing is learned about the order inside it. The
      likelihood of the ranking is the Plackett-Luce probability summed over every order of each tie
      group: prod over groups G (best first) of P(G's members are the next |G| picks, any order), with
      the group-first probability from `_log_prob_group_first`. A tie of the last group, and a K = 2 tie,
      contribute exactly 0 (the reward stage also drops such pairs). Not Breslow's approximation
      (sum_{i in G} [s_i - log sum_{u remaining} exp(s_u)]), which puts tied members in each other's
      denominators and so pulls their rewards together: at K = 2 a tie would cost -log sigmoid(d) -
      log sigmoid(-d) >= 2 log 2, which is a tie likelihood, not a dropped comparison.
    - `davidson`: Davidson-Luce (Firth, Kosmidis & Turner 2019), the multi-item Davidson model: at each
      stage the next rank group G is drawn from the remaining set R with probability
      delta_|G| g(G) / sum_{U subset of R, U nonempty} delta_|U| g(U), where g(U) = exp(mean_{i in U} s_i)
      and delta_n = nu^(n-1) (tie_param = nu > 0). At K = 2 this is reward/losses.py's Davidson pair
      model exactly; with no ties observed it still differs from PL (ties were possible). K <= 12.
    Rao-Kupper has no Plackett-Luce form: its tie is a threshold on one pairwise difference, and for
    three or more items the analogous threshold event has no product-of-stages probability.
    Normalisation: each prompt's negative log-likelihood is divided by (its number of completions - 1),
    the number of choices a strict ranking makes, so prompts weigh alike whatever their K (the reward
    stage divides by its comparisons) and K = 2 is DPO unscaled. A prompt with fewer than 2 valid
    completions, or (with `drop`) with every completion tied, carries no preference: loss 0, not informative.
    """
    _check_beta(beta)
    if ties == "rao_kupper":
        raise ValueError(
            "ties='rao_kupper' has no Plackett-Luce form (see plackett_luce_loss); use 'drop' or 'davidson'"
        )
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)} for Plackett-Luce, got '{ties}'")
    if ties == "davidson" and not tie_param > 0:
        raise ValueError(f"Davidson-Luce needs nu > 0, got {tie_param}")
    valid = torch.ones_like(ranks, dtype=torch.bool) if valid is None else valid.bool()
    s = torch.where(valid, implicit_rewards(logps, ref_logps, beta), 0.0)
    groups = tie_groups(ranks, valid)
    if ties == "drop":
        log_likelihood = _drop_log_likelihood(s, groups)
        informative = groups.exists.sum(-1) >= 2
    else:
        log_likelihood = _davidson_luce_log_likelihood(s, groups, tie_param)
        informative = valid.sum(-1) >= 2
    choices = (valid.sum(-1) - 1).clamp(min=1).to(s.dtype)
    losses = torch.where(informative, -log_likelihood / choices, 0.0)
    return RankingLoss(losses, informative, s.detach())


def plackett_luce_soft_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor | None = None,
    beta: float = 0.1,
) -> RankingLoss:
    """Listwise DPO on a soft label: the expected `plackett_luce_loss` of a ranking drawn by Plackett-Luce with
    weights exp(scores), i.e. the cross-entropy between PL(scores) and PL(implicit rewards) over the K! orders.

    scores [B, K]: Bradley-Terry scores in nats (P(i before j) = sigmoid(score_i - score_j)), e.g. a judge's or the
    true reward; other shapes as plackett_luce_loss. Minimised where the implicit rewards equal the scores up to a
    constant per prompt, so with the true reward as scores the optimum is pi_ref e^(r / beta) / Z, as DPO on soft
    pair labels (at K = 2 it is `dpo_loss` with chosen_probability sigmoid(score_1 - score_2) exactly).
    Exact, by a recursion over the set R still to place: P(full) = 1, P(R - i) += P(R) w_i / w(R), and each R of
    two or more costs P(R) [logsumexp_{u in R} s_u - sum_{i in R} w_i s_i / w(R)], w = exp(scores). Cost 2^K * K per
    prompt (K <= MAX_TIE_SUBSET); divided by K - 1 as the hard loss.
    """
    _check_beta(beta)
    K = logps.shape[-1]
    if K > MAX_TIE_SUBSET:
        raise ValueError(f"a soft Plackett-Luce label sums over orders: at most {MAX_TIE_SUBSET} completions, got {K}")
    valid = torch.ones_like(logps, dtype=torch.bool) if valid is None else valid.bool()
    s = torch.where(valid, implicit_rewards(logps, ref_logps, beta), 0.0)
    q = torch.where(valid, _fp32(scores).to(s.dtype), 0.0)
    bits = _subset_bits(K, s.device)  # [S, K]
    members = bits[None] & valid[:, None, :]  # [B, S, K]: only subsets of the valid completions are ever reached
    log_w = torch.log_softmax(torch.where(members, q[:, None, :], _LOG_ZERO), -1)
    pick = torch.where(members, log_w.exp(), 0.0)  # [B, S, K]: P(i is picked first from R); 0 outside R
    stage = _masked_logsumexp(s[:, None, :], members) - (pick * torch.where(members, s[:, None, :], 0.0)).sum(-1)
    powers = 1 << torch.arange(K, device=s.device)
    full = torch.where(valid, powers, 0).sum(-1)  # [B]
    reach = torch.zeros(s.shape[0], 2**K, dtype=s.dtype, device=s.device)
    reach[torch.arange(s.shape[0]), full] = 1.0
    size = bits.sum(-1)
    index = torch.arange(2**K, device=s.device)
    for level in range(K, 1, -1):  # a set's children have one member fewer: every parent is done before them
        subsets = index[size == level]
        child = subsets[:, None] ^ powers  # [n, K]; only used where the bit is set
        flow = reach[:, subsets, None] * pick[:, subsets]
        reach = reach.index_add(1, child.flatten(), flow.flatten(1))
    several = size >= 2
    expected = (reach[:, several] * stage[:, several]).sum(-1)
    informative = valid.sum(-1) >= 2
    choices = (valid.sum(-1) - 1).clamp(min=1).to(s.dtype)
    return RankingLoss(torch.where(informative, expected / choices, 0.0), informative, s.detach())


def ranking_pair_soft_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor | None = None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
) -> RankingLoss:
    """A ranking's every pair with its soft label sigmoid(score_i - score_j) (`_pair_losses` with that p), averaged
    per prompt over its C(K, 2) pairs: the pair expansion of `plackett_luce_soft_loss`. Shapes as that."""
    _check_beta(beta)
    valid = torch.ones_like(logps, dtype=torch.bool) if valid is None else valid.bool()
    x = torch.where(valid, _fp32(logps) - _fp32(ref_logps), 0.0)
    q = torch.where(valid, _fp32(scores).to(x.dtype), 0.0)
    return _mean_pair_loss(x, valid_pairs(valid), torch.sigmoid(q[:, :, None] - q[:, None, :]), beta, loss_type)


def _mean_pair_loss(x: torch.Tensor, pairs: torch.Tensor, p, beta: float, loss_type: str) -> RankingLoss:
    """Per prompt, the mean pair loss over `pairs` [B, K, K] (i against j), from log-ratios x [B, K], target p."""
    per_pair = _pair_losses(x[:, :, None] - x[:, None, :], beta, loss_type, p)
    count = pairs.sum((1, 2))
    losses = torch.where(pairs, per_pair, 0.0).sum((1, 2)) / count.clamp(min=1)
    return RankingLoss(losses, count > 0, beta * x.detach())


def ranking_pair_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    ranks: torch.Tensor,
    valid: torch.Tensor | None = None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
) -> RankingLoss:
    """A ranking expanded into all its strict pairs (i ranked above j), pair DPO / IPO losses averaged per prompt.

    Shapes as plackett_luce_loss. Tied pairs are dropped; per prompt the mean over its C(K, 2) - ties
    comparisons (the reward stage's K-wise Bradley-Terry form), so its value equals the pair expansion's
    mean loss over that prompt's pairs. The only K-wise form IPO has.
    """
    _check_beta(beta)
    valid = torch.ones_like(ranks, dtype=torch.bool) if valid is None else valid.bool()
    s = torch.where(valid, _fp32(logps) - _fp32(ref_logps), 0.0)
    better, _ = pair_masks(ranks, valid)
    return _mean_pair_loss(s, better, 1.0, beta, loss_type)


def best_completion_nll(
    logps: torch.Tensor, tokens: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean negative log-likelihood per token of each prompt's best-ranked completions (all of a tie for first):
    RPO's NLL term (Pang et al. 2024; TRL's `rpo_alpha`), which keeps the preferred answers likely while the
    preference loss pushes the others down. logps [B, K] summed sequence log-probs (with gradient), tokens [B, K]
    their completion token counts, ranks / valid [B, K] -> [B] (0 for a prompt with no valid completion)."""
    valid = valid.bool()
    best = ranks.masked_fill(~valid, torch.iinfo(ranks.dtype).max).min(-1, keepdim=True).values
    chosen = valid & (ranks == best)
    per_token = -_fp32(logps) / tokens.clamp(min=1).to(_fp32(logps).dtype)
    return torch.where(chosen, per_token, 0.0).sum(-1) / chosen.sum(-1).clamp(min=1)


def off_support_rise(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per completion, the mean over its tokens of how far the policy's log-mass on tokens no training completion
    contains rises above the reference's (0 where it does not): policy, reference, mask [N, T] -> [N].

    DPO only constrains the probability of the completions it sees; pushing the rejected ones down frees probability
    that a network shares out through its hidden states, and on a real vocabulary much of it lands on tokens nobody
    ranked (likelihood displacement): broken bytes, words from nowhere. The term keeps that mass at most where the
    reference had it, and is exactly 0 on data whose completions use every token the policy can emit."""
    rise = torch.relu(policy - reference.detach()) * mask
    return rise.sum(-1) / mask.sum(-1).clamp(min=1)


def mean_over_completions(per_completion: torch.Tensor, slot: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per prompt, the mean of a per-completion value over its completions: [N] (flat rows), slot [N] (its place in
    the [B * K] grid), valid [B, K] -> [B]."""
    grid = per_completion.new_zeros(valid.numel()).index_put((slot,), per_completion).view(valid.shape)
    return torch.where(valid, grid, 0.0).sum(-1) / valid.sum(-1).clamp(min=1)


# ----------------------------------------------------------------------------------------------
# Metrics under TRL's names, over strict comparisons (sums per prompt, so callers reduce over processes)


def ranking_metric_sums(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    ranks: torch.Tensor,
    valid: torch.Tensor | None = None,
    beta: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Per prompt, sums over its strict comparisons (better i, worse j) of TRL's DPO metrics: each [B].

    `comparisons` counts them; `rewards/chosen` sums beta * (logp - ref_logp) of the better completion,
    `rewards/rejected` of the worse, `rewards/accuracies` counts better > worse strictly (as TRL),
    `rewards/margins` sums the differences, `logps/chosen|rejected` the policy log-probs. For a pair
    (K = 2, ranks [1, 2]) these are TRL's per-pair values; `metric_means` divides by the comparisons.
    """
    valid = torch.ones_like(ranks, dtype=torch.bool) if valid is None else valid.bool()
    with torch.no_grad():
        logps = torch.where(valid, _fp32(logps), 0.0)
        rewards = torch.where(valid, implicit_rewards(logps, ref_logps, beta), 0.0)
        better, _ = pair_masks(ranks, valid)
        wins, losses = better.sum(2).to(rewards.dtype), better.sum(1).to(rewards.dtype)  # [B, K]
        # reward/losses.pairwise_accuracy counts the same comparisons, in float32; these keep float64 exact
        diff = rewards[:, :, None] - rewards[:, None, :]
        return {
            "comparisons": better.sum((1, 2)).to(rewards.dtype),
            "rewards/chosen": (rewards * wins).sum(-1),
            "rewards/rejected": (rewards * losses).sum(-1),
            "rewards/accuracies": ((diff > 0) & better).sum((1, 2)).to(rewards.dtype),
            "rewards/margins": torch.where(better, diff, 0.0).sum((1, 2)),
            "logps/chosen": (logps * wins).sum(-1),
            "logps/rejected": (logps * losses).sum(-1),
        }


def metric_means(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means per comparison of `ranking_metric_sums` (summed over prompts, and processes, by the caller)."""
    count = float(sums["comparisons"].sum())
    return {name: float(sums[name].sum()) / count if count else float("nan") for name in METRICS}
