"""Exact KL-regularised objective on a task small enough to enumerate every response.

For a causal LM over a vocabulary of a few tokens and responses of L tokens, every response of every
prompt is enumerated and scored by batched teacher forcing, which gives exactly (no sampling):
KL(pi || pi_ref), E_pi[r], J(pi) = E_pi[r] - beta * KL(pi || pi_ref), and the best achievable
J* = max_pi J(pi) = beta * log E_ref[exp(r / beta)], reached by the Gibbs policy pi* ∝ pi_ref * exp(r / beta).

EOS is absorbing. A response is its tokens up to and including the first EOS, or all L tokens if
there is none (truncated, like the rollout). `enumerate_responses` lists each such response once,
with the positions after its EOS filled with padding, and `sequence_logprobs` sums log-probs over the
real tokens only. Summing over the 1 + (V-1) + ... continuations a full |V|^L enumeration would give
an early-ending response is then done analytically: they marginalise to exactly that prefix's
probability. With `eos_token_id=None` responses have a fixed length L and all |V|^L are listed.

Shapes: P = prompts, N = enumerated responses, L = response length. Log-probs are float64 [P, N].

Preference data with the same optimum (for DPO): the Bradley-Terry probability of every pair of
responses, P(y_a > y_b) = sigmoid(r_a - r_b) with the SAME r as J's, and rankings drawn from
Plackett-Luce with weights exp(r). DPO (soft labels) and listwise DPO trained on them at beta are
minimised where beta * log(pi / pi_ref) = r + c(x), that is at pi_ref * exp(r / beta) / Z: the Gibbs
optimum above, so `gain_fraction` measures every method against the same J*. (Labels sigmoid((r_a -
r_b) / beta) would aim DPO at pi_ref * exp(r / beta^2) / Z instead.)

RLOO and GRPO need nothing more: they optimise the same J (k samples per prompt are a rollout
detail), so their exact tests score the saved policy with `evaluate` exactly as PPO's does.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from alignment.dpo.losses import dpo_loss
from alignment.runtime.generation import has_eos, response_mask
from alignment.runtime.logprobs import logprobs_from_logits

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(input_ids [B, S], attention_mask [B, S]) -> logits [B, S, V] of a causal LM."""


def enumerate_responses(
    tokens: int | Sequence[int], length: int, eos_token_id: int | None = None, pad_token_id: int | None = None
) -> torch.Tensor:
    """Every distinct response of `length` tokens over `tokens` (a vocabulary size or a list of ids) -> [N, L].

    With an EOS id, responses stop at their first EOS and the rest is `pad_token_id` (default: EOS),
    so N = sum_{k<L} (V-1)^k + (V-1)^L; without, N = V^L.
    """
    vocab = list(range(tokens)) if isinstance(tokens, int) else list(tokens)
    if eos_token_id is not None and eos_token_id not in vocab:
        raise ValueError(f"eos_token_id {eos_token_id} is not among the enumerated tokens {vocab}")
    pad = eos_token_id if pad_token_id is None else pad_token_id
    rows = []
    for seq in itertools.product(vocab, repeat=length):
        if eos_token_id is not None and eos_token_id in seq:
            k = seq.index(eos_token_id)
            # keep one representative per early-ending response: the one padded after its EOS
            if k < length - 1 and any(tok != eos_token_id for tok in seq[k + 1 :]):
                continue
            seq = seq[: k + 1] + (pad,) * (length - k - 1)
        rows.append(seq)
    return torch.tensor(rows, dtype=torch.long)


def causal_lm_logits_fn(model: torch.nn.Module) -> LogitsFn:
    """Wrap a transformers causal LM (or anything taking input_ids/attention_mask and returning .logits)."""
    return lambda input_ids, attention_mask: model(input_ids=input_ids, attention_mask=attention_mask).logits


@torch.no_grad()
def sequence_logprobs(
    logits_fn: LogitsFn,
    prompts: Sequence[torch.Tensor],
    responses: torch.Tensor,
    eos_token_id: int | None = None,
    temperature: float = 1.0,
    batch_size: int = 512,
) -> torch.Tensor:
    """log pi(y | x) for every prompt x (1-D id tensors) and every response y [N, L] -> float64 [P, N].

    One forward pass per batch of (prompt + response) sequences; each prompt is scored on its own so no
    padding (and no position-id shift) enters the prompt. Tokens after the first EOS are not scored.
    """
    if eos_token_id is None:
        mask = torch.ones_like(responses, dtype=torch.bool)
    else:
        mask = response_mask(responses, eos_token_id)
    out = []
    for prompt in prompts:
        prompt = prompt.reshape(-1).long()
        n_prompt = prompt.numel()
        per_prompt = []
        for start in range(0, responses.shape[0], batch_size):
            chunk = responses[start : start + batch_size]
            ids = torch.cat([prompt.expand(chunk.shape[0], n_prompt), chunk], dim=1)
            logits = logits_fn(ids, torch.ones_like(ids))
            # logits at position s predict token s + 1: the response is predicted from the last prompt position on
            resp_logits = logits[:, n_prompt - 1 : -1]
            token_logp = logprobs_from_logits(resp_logits, chunk, temperature).double()
            per_prompt.append((token_logp * mask[start : start + batch_size]).sum(-1))
        out.append(torch.cat(per_prompt))
    return torch.stack(out)


def total_mass(logp: torch.Tensor) -> torch.Tensor:
    """sum_y pi(y | x) per prompt: [P, N] -> [P]. 1 when the enumeration covers everything pi can emit."""
    return torch.logsumexp(logp.double(), dim=-1).exp()


def check_mass(logp: torch.Tensor, atol: float = 1e-6) -> None:
    """Raise if the enumeration misses probability (a token the sampler can emit was not enumerated)."""
    mass = total_mass(logp)
    if (mass - 1).abs().max() > atol:
        raise ValueError(
            f"enumerated responses carry probability {mass.tolist()} instead of 1: enumerate every token "
            "the policy can emit, or the exact numbers are not the ones the sampler optimises"
        )


def exact_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) = sum_y pi(y) (log pi(y) - log pi_ref(y)) per prompt: [P, N] x [P, N] -> [P]."""
    logp, ref_logp = logp.double(), ref_logp.double()
    # xlogy-style guard: a response pi never emits contributes 0 even where ref_logp is -inf
    p = logp.exp()
    return torch.where(p > 0, p * (logp - ref_logp), torch.zeros_like(p)).sum(-1)


def expected_reward(logp: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """E_pi[r] per prompt: log-probs [P, N], rewards [P, N] -> [P]."""
    return (logp.double().exp() * rewards.double()).sum(-1)


def expected_length(logp: torch.Tensor, responses: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """E_pi[tokens before the first EOS] per prompt: log-probs [P, N], responses [N, L] -> [P]. Beside the gain it
    shows how a policy misses the optimum: one that ends too soon (all on the empty answer) or runs to the limit."""
    tokens = response_mask(responses, eos_token_id).sum(-1) - has_eos(responses, eos_token_id).long()
    return (logp.double().exp() * tokens.double()).sum(-1)


def objective(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """J(pi) = E_pi[r] - beta * KL(pi || pi_ref) per prompt: [P, N] each -> [P]."""
    return expected_reward(logp, rewards) - beta * exact_kl(logp, ref_logp)


def optimal_objective(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """J* = beta * log E_ref[exp(r / beta)] per prompt: [P, N] each -> [P] (logsumexp: safe for r / beta >> 1)."""
    return beta * torch.logsumexp(ref_logp.double() + rewards.double() / beta, dim=-1)


def optimal_logprobs(ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi*(y) of the Gibbs optimum pi* ∝ pi_ref * exp(r / beta): [P, N] each -> [P, N]."""
    unnorm = ref_logp.double() + rewards.double() / beta
    return unnorm - torch.logsumexp(unnorm, dim=-1, keepdim=True)


@dataclass
class ExactReport:
    """Exact quantities averaged over prompts (floats), for logs and assertions."""

    kl: float
    reward: float
    objective: float
    optimum: float


def evaluate(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float) -> ExactReport:
    """KL, E[r], J and J* averaged over prompts; checks both enumerations carry all the probability."""
    check_mass(logp)
    check_mass(ref_logp)
    return ExactReport(
        kl=exact_kl(logp, ref_logp).mean().item(),
        reward=expected_reward(logp, rewards).mean().item(),
        objective=objective(logp, ref_logp, rewards, beta).mean().item(),
        optimum=optimal_objective(ref_logp, rewards, beta).mean().item(),
    )


def evaluate_model(
    model,
    prompts: Sequence[torch.Tensor],
    responses: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    eos_token_id: int | None = None,
    temperature: float = 1.0,
) -> ExactReport:
    """`evaluate` for a PPOModel (alignment.ppo.model): its policy against its reference (adapters off).

    rewards [P, N] must be the reward PPO optimises for each enumerated response (after any
    normalisation or missing-EOS penalty), or J and J* measure a different objective.
    """
    policy = lambda ids, mask: model(ids, mask, role="policy")  # noqa: E731
    reference = lambda ids, mask: model(ids, mask, role="reference")  # noqa: E731
    logp = sequence_logprobs(policy, prompts, responses, eos_token_id, temperature)
    ref_logp = sequence_logprobs(reference, prompts, responses, eos_token_id, temperature)
    return evaluate(logp, ref_logp, rewards, beta)


def gain_fraction(j: float, j_start: float, j_star: float) -> float:
    """Share of the achievable gain reached: (J(pi) - J(pi_start)) / (J* - J(pi_start))."""
    if j_star - j_start <= 0:
        raise ValueError(f"no achievable gain: J* = {j_star} <= J(start) = {j_start}")
    return (j - j_start) / (j_star - j_start)


# ----------------------------------------------------------------------------------------------
# Preference data whose DPO optimum is the Gibbs optimum

PROBABILITY_COLUMN = "chosen_probability"
"""The soft label column of written pair datasets: P(chosen is better) = sigmoid(r_chosen - r_rejected), in [0.5, 1]."""


def bradley_terry_probabilities(rewards: torch.Tensor) -> torch.Tensor:
    """P(y_a beats y_b) = sigmoid(r_a - r_b) for every pair of responses of each prompt: [P, N] -> [P, N, N]."""
    r = rewards.double()
    return torch.sigmoid(r[:, :, None] - r[:, None, :])


@dataclass
class PreferencePairs:
    """Pairs of enumerated responses (indices into the N responses), chosen = the higher reward."""

    prompt: torch.Tensor  # [M] long
    chosen: torch.Tensor  # [M] long
    rejected: torch.Tensor  # [M] long
    probability: torch.Tensor  # [M] float64: P(chosen beats rejected) = sigmoid(r_chosen - r_rejected) >= 0.5


def _oriented(rewards: torch.Tensor, prompt, a, b) -> PreferencePairs:
    r = rewards.double()
    swap = r[prompt, b] > r[prompt, a]
    chosen, rejected = torch.where(swap, b, a), torch.where(swap, a, b)
    probability = torch.sigmoid(r[prompt, chosen] - r[prompt, rejected])
    return PreferencePairs(prompt, chosen, rejected, probability)


def all_pairs(rewards: torch.Tensor) -> PreferencePairs:
    """Every unordered pair of distinct responses of every prompt (P * N (N - 1) / 2 pairs): rewards [P, N]."""
    P, N = rewards.shape
    a, b = torch.triu_indices(N, N, offset=1)
    prompt = torch.arange(P).repeat_interleave(a.numel())
    return _oriented(rewards, prompt, a.repeat(P), b.repeat(P))


def sample_pairs(ref_logp: torch.Tensor, rewards: torch.Tensor, n_per_prompt: int, seed: int = 0) -> PreferencePairs:
    """n pairs per prompt, both responses drawn from pi_ref (redrawn until distinct): what a DPO data set from the
    reference policy looks like, labelled with the exact Bradley-Terry probability. ref_logp, rewards [P, N]."""
    g = torch.Generator().manual_seed(seed)
    P, _ = ref_logp.shape
    prompts, firsts, seconds = [], [], []
    for p in range(P):
        probs = ref_logp[p].double().exp()
        a = torch.empty(0, dtype=torch.long)
        b = torch.empty(0, dtype=torch.long)
        while a.numel() < n_per_prompt:
            x = torch.multinomial(probs, 2 * n_per_prompt, replacement=True, generator=g)
            y = torch.multinomial(probs, 2 * n_per_prompt, replacement=True, generator=g)
            keep = x != y
            a, b = torch.cat([a, x[keep]]), torch.cat([b, y[keep]])
        prompts.append(torch.full((n_per_prompt,), p))
        firsts.append(a[:n_per_prompt])
        seconds.append(b[:n_per_prompt])
    return _oriented(rewards, torch.cat(prompts), torch.cat(firsts), torch.cat(seconds))


def sampled_labels(pairs: PreferencePairs, seed: int = 0) -> PreferencePairs:
    """Each pair labelled by one draw instead of its exact probability: the pair is kept with probability p and
    reversed otherwise, and its label is certain (probability 1). What one annotator's choice gives, and the
    counterpart of `sample_rankings`, whose rankings are one Plackett-Luce draw each."""
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(pairs.probability.shape, generator=g, dtype=torch.float64) > pairs.probability
    chosen = torch.where(flip, pairs.rejected, pairs.chosen)
    rejected = torch.where(flip, pairs.chosen, pairs.rejected)
    return PreferencePairs(pairs.prompt, chosen, rejected, torch.ones_like(pairs.probability))


def pair_weights(ref_logp: torch.Tensor, pairs: PreferencePairs) -> torch.Tensor:
    """pi_ref(a) * pi_ref(b) per pair [M]: all_pairs weighted like sample_pairs in the limit of many draws."""
    ref = ref_logp.double()
    return (ref[pairs.prompt, pairs.chosen] + ref[pairs.prompt, pairs.rejected]).exp()


def population_dpo_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    pairs: PreferencePairs,
    beta: float,
    weights: torch.Tensor | None = None,
    loss_type: str = "sigmoid",
) -> torch.Tensor:
    """The (weighted) mean DPO loss with soft labels over `pairs`, from whole-response log-probs [P, N] -> scalar.

    Minimised, for any positive weights over pairs that connect all responses, exactly where
    beta * log(pi / pi_ref) = r + c(x), i.e. at `optimal_logprobs(ref_logp, rewards, beta)`.
    """
    p, c, r = pairs.prompt, pairs.chosen, pairs.rejected
    losses = dpo_loss(logp[p, c], logp[p, r], ref_logp[p, c], ref_logp[p, r], beta, loss_type, pairs.probability)
    losses = losses.losses
    if weights is None:
        return losses.mean()
    return (weights * losses).sum() / weights.sum()


def sample_rankings(
    ref_logp: torch.Tensor, rewards: torch.Tensor, k: int, n_per_prompt: int, seed: int = 0
) -> list[tuple[int, list[int], list[int]]]:
    """(prompt, k distinct response indices, ranks) per ranking: responses drawn from pi_ref without replacement,
    ranked by Plackett-Luce with weights exp(r) (sorting r + Gumbel noise), so listwise DPO at beta is minimised
    at the same Gibbs optimum. Strict ranks, 1 = best."""
    g = torch.Generator().manual_seed(seed)

    def gumbel(*shape):
        return -torch.log(-torch.log(torch.rand(*shape, generator=g, dtype=torch.float64)))

    out = []
    for p in range(ref_logp.shape[0]):
        # the top k of log q + Gumbel noise is a draw of k items without replacement from q (Gumbel-top-k)
        idx = torch.topk(ref_logp[p].double() + gumbel(n_per_prompt, ref_logp.shape[1]), k, dim=-1).indices
        # sorting r + Gumbel noise draws a Plackett-Luce order with weights exp(r)
        order = torch.argsort(rewards[p, idx].double() + gumbel(n_per_prompt, k), dim=-1, descending=True)
        ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(1, k + 1).expand(n_per_prompt, -1))
        out += [(p, i, r) for i, r in zip(idx.tolist(), ranks.tolist())]
    return out


def response_texts(tokenizer, responses: torch.Tensor, eos_token_id: int) -> list[str]:
    """Each enumerated response [N, L] as text up to and including its first EOS, the EOS written out.

    Tokenising a text gives back exactly the enumerated tokens, so a stage that appends EOS only to
    completions not already ending with it (TRL's rule) and cuts completions at L tokens trains on
    the very sequences `sequence_logprobs` scores: "a b </s>" stays, a truncated "a b c" (+ EOS) is cut
    back to "a b c". The EOS-only response is the text "</s>", not an empty (rejected) completion.
    """
    lengths = response_mask(responses, eos_token_id).sum(-1)
    return [tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=False) for row, n in zip(responses, lengths)]


def _completion(completions, p: int, i: int) -> str:
    return completions[p][i] if isinstance(completions[0], (list, tuple)) else completions[i]


def _write_jsonl(path: str, rows: list[dict]) -> str:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(tmp, path)
    return path


def write_pairwise_dataset(path: str, prompts: Sequence[str], completions, pairs: PreferencePairs) -> str:
    """TRL pairwise rows {prompt, chosen, rejected, chosen_probability} as JSON lines; returns `path`.

    completions: one list of N texts shared by every prompt, or one list per prompt.
    """
    rows = [
        {
            "prompt": prompts[p],
            "chosen": _completion(completions, p, c),
            "rejected": _completion(completions, p, r),
            PROBABILITY_COLUMN: q,
        }
        for p, c, r, q in zip(
            pairs.prompt.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist(), pairs.probability.tolist()
        )
    ]
    return _write_jsonl(path, rows)


def write_ranking_dataset(path: str, prompts: Sequence[str], completions, rankings, rewards=None) -> str:
    """K-wise rows {prompt, completions, ranks} (the export's schema) from `sample_rankings`; returns `path`.

    rewards [P, N]: write each row's `scores` instead of its ranks, the rewards of its completions: the exact soft
    label (the Plackett-Luce distribution the ranks were drawn from), as `chosen_probability` is a pair's."""
    rows = [
        {"prompt": prompts[p], "completions": [_completion(completions, p, i) for i in idx]}
        | ({"ranks": ranks} if rewards is None else {"scores": [float(rewards[p, i]) for i in idx]})
        for p, idx, ranks in rankings
    ]
    return _write_jsonl(path, rows)
