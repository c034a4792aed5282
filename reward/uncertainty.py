"""How unsure the reward model is: a last-layer Laplace approximation of its score head.

The method. A reward is r(x) = w . phi(x) + b, where phi(x) is the hidden state the `score` head reads
(the last real token of prompt + completion + EOS) and w, b are the head. Keeping phi fixed, the
Bradley-Terry likelihood of the training comparisons is a logistic regression in w on the differences
x = phi(a) - phi(b). Its Laplace approximation around the trained head is a Gaussian posterior

    w ~ N(w_hat, Sigma),  Sigma = H^-1,  H = lambda I + sum over compared pairs p (1 - p) x x^T,

with p = sigmoid(w_hat . x) the model's own probability (for the logistic link the Fisher information
equals the Hessian of the loss, so there is no Fisher-vs-Hessian choice to make). Scores are linear in
w, so for any candidates the joint predictive distribution of their scores is exactly Gaussian:
mean phi . w_hat + b and covariance phi_i^T Sigma phi_j; the variance of a pair's score difference is
(phi_i - phi_j)^T Sigma (phi_i - phi_j). The bias cancels in every comparison and carries no uncertainty.
A K-wise ranking contributes its C(K, 2) strict pairs, as the training loss counts them; ties are dropped.

Why this one (over an ensemble of score heads, the other cheap option):
- Memory: one d x d float64 matrix, the Cholesky factor of H. That is 32 KB for the 64-wide tiny
  model, 6.4 MB at d = 896 (Qwen2.5-0.5B), 128 MB at d = 4096 (7-8B models), 512 MB at d = 8192 (70B):
  against 14 GB for one bf16 copy of a 7B model, and nothing else: no second model, no extra adapter.
  H is accumulated in place from chunks of pairs (1024 x d extra), and its factor replaces it (the two
  coexist while factorising: 256 MB at d = 4096; the D-optimal rule adds Sigma, d x d). float64 because
  H's eigenvalues run from lambda to ~ (comparisons x |phi|^2), a range float32's 7 digits cannot
  factorise reliably.
- Cost: the features come from the forward pass that scores a text anyway (:func:`features` reads them
  where the head does); building H costs P d^2 flops for P comparisons, the factorisation d^3 / 3
  (2e10 at d = 4096: seconds), each candidate one d^2 triangular solve.
- Calibration: it is the posterior of the head given the features, in closed form, with one knob
  (the prior precision lambda) and no sampling noise; last-layer Laplace is the standard cheap
  Bayesian approximation that calibrates well (Kristiadi et al. 2020; Daxberger et al. 2021, "Laplace
  Redux"), and Fisher information on the last layer is what active reward modelling selects with
  (Shen et al. 2025, "Reviving the Classics"). It ignores the features' own uncertainty, as heads on
  shared features would too.
- An ensemble of S heads on the same features, each fitted on a bootstrap of the comparisons,
  estimates this same covariance (for a logistic model the bootstrap spread converges to H^-1) at S
  times the fitting cost and with Monte-Carlo noise; an ensemble of adapters would see feature
  uncertainty, but costs S adapters and S forward passes per candidate. So "ensemble disagreement"
  uses draws of the head from this posterior (:func:`sample_heads`), and accepts any other
  ensemble's scores where a user has one (`reward.acquisition.disagreement`).

A surrogate on fixed features (`acquisition.features=tokens`): the same posterior, but of a linear
Bradley-Terry model on hashed bag-of-token counts (:func:`token_counts`) whose head is fitted here
(:func:`fit_map`, :func:`fit_surrogate`) rather than read from the reward model. The head's own
features are re-learnt by each round's training (LoRA, and in the tiny config the embeddings in full),
so its posterior describes features the next round's model no longer has; token counts do not move.

The math is in pure functions over tensors (shapes in their docstrings); :func:`features` and
:func:`fit_laplace` are the model side, on a model from `reward.model.load_reward_model`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import torch

from alignment.common import files
from alignment.common.errors import UserError
from alignment.runtime.generation import right_pad
from reward.model import encode_text, scores

FILE = "uncertainty.safetensors"
HEAD_NAMES = ("score", "classifier")


@dataclasses.dataclass(frozen=True)
class Laplace:
    """Gaussian posterior N(weight, (L L^T)^-1) over the score head's weight."""

    weight: torch.Tensor
    """[d] float64: the trained head's weight, the posterior mean."""
    bias: float
    """The head's bias (0 without one); it cancels in comparisons and is not uncertain."""
    cholesky: torch.Tensor
    """[d, d] float64 lower-triangular L with L L^T = H, the posterior precision."""
    prior_precision: float
    """lambda, the precision of the isotropic Gaussian prior on the weight."""
    comparisons: int
    """How many compared pairs H was built from."""


# ----------------------------------------------------------------------------------------------
# Pure functions


def pair_probabilities(
    features: torch.Tensor, pairs: torch.Tensor, weight: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """[P] float64 sigmoid(w . (phi_a - phi_b)) for pairs [P, 2] = (a, b) into features [N, d]."""
    w = weight.double().to(features.device)
    rewards = [features[start : start + chunk].double() @ w for start in range(0, len(features), chunk)]
    rewards = torch.cat(rewards) if rewards else w.new_zeros(0)
    return torch.sigmoid(rewards[pairs[:, 0]] - rewards[pairs[:, 1]])


def fisher(
    features: torch.Tensor,
    pairs: torch.Tensor,
    probabilities: torch.Tensor,
    prior_precision: float,
    weights: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """H [d, d] float64 = lambda I + sum_k weight_k p_k (1 - p_k) x_k x_k^T with x_k = phi_a - phi_b.

    features: [N, d]; pairs: [P, 2] long (a, b), either order (p (1 - p) is symmetric);
    probabilities: [P] p_k; weights: [P] per-pair weights (default 1). Chunked over pairs, so the
    extra memory is chunk x d whatever P is.
    """
    if prior_precision <= 0:
        raise ValueError(f"prior_precision must be > 0 (it keeps H invertible), got {prior_precision}")
    d = features.shape[1]
    h = torch.eye(d, dtype=torch.float64, device=features.device) * prior_precision
    curvature = probabilities.double() * (1 - probabilities.double())
    if weights is not None:
        curvature = curvature * weights.double()
    for start in range(0, pairs.shape[0], chunk):
        block = pairs[start : start + chunk]
        x = features[block[:, 0]].double()
        x -= features[block[:, 1]]
        x *= curvature[start : start + chunk, None].sqrt()
        h.addmm_(x.T, x)  # in place: H and one chunk are all the memory this takes
    return h


def laplace(
    features: torch.Tensor,
    pairs: torch.Tensor,
    weight: torch.Tensor,
    bias: float = 0.0,
    prior_precision: float = 1.0,
    weights: torch.Tensor | None = None,
) -> Laplace:
    """The posterior of the head (weight [d], bias) given the features [N, d] of compared texts and pairs [P, 2]."""
    probabilities = pair_probabilities(features, pairs, weight)
    h = fisher(features, pairs, probabilities, prior_precision, weights)
    cholesky, info = torch.linalg.cholesky_ex(h)
    if info.item() != 0:  # H is lambda I plus PSD terms: only non-finite features (or a lambda tiny for float64)
        raise ValueError("the Fisher matrix is not positive definite; are the features finite?")
    return Laplace(weight.double().clone(), float(bias), cholesky, float(prior_precision), int(pairs.shape[0]))


def whiten(posterior: Laplace, vectors: torch.Tensor) -> torch.Tensor:
    """z = L^-1 v for vectors [..., d], so that u^T Sigma v = z_u . z_v (float64, same leading shape)."""
    flat = vectors.reshape(-1, vectors.shape[-1]).double().to(posterior.cholesky.device)
    z = torch.linalg.solve_triangular(posterior.cholesky, flat.T, upper=False).T
    return z.reshape(vectors.shape)


def covariance(posterior: Laplace) -> torch.Tensor:
    """Sigma = H^-1 [d, d] float64 (d x d memory; the acquisition's batch-aware D-optimal rule needs it)."""
    return torch.cholesky_inverse(posterior.cholesky)


def predict(posterior: Laplace, features: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [T, M], covariance [T, M, M]) of the scores of T tasks' M candidates, features [T, M, d]; float64.

    Chunked over tasks, so only `chunk` tasks' features are ever held in float64.
    """
    t, m, _ = features.shape
    device = posterior.weight.device
    mean = torch.empty(t, m, dtype=torch.float64, device=device)
    cov = torch.empty(t, m, m, dtype=torch.float64, device=device)
    for start in range(0, t, chunk):
        phi = features[start : start + chunk].to(device, torch.float64)
        mean[start : start + chunk] = phi @ posterior.weight + posterior.bias
        z = whiten(posterior, phi)
        cov[start : start + chunk] = z @ z.transpose(-1, -2)
    return mean, cov


def pair_variances(cov: torch.Tensor) -> torch.Tensor:
    """[..., M, M] variance of r_i - r_j: C_ii + C_jj - 2 C_ij, from score covariances [..., M, M]."""
    diagonal = cov.diagonal(dim1=-2, dim2=-1)
    return diagonal[..., :, None] + diagonal[..., None, :] - cov - cov.transpose(-1, -2)


def sample_heads(posterior: Laplace, n: int, seed: int) -> torch.Tensor:
    """[n, d] float64 draws of the head weight from the posterior: w_hat + L^-T eps, eps ~ N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(posterior.weight.shape[0], n, generator=generator, dtype=torch.float64)
    noise = torch.linalg.solve_triangular(posterior.cholesky.T, eps.to(posterior.cholesky.device), upper=True)
    return posterior.weight[None, :] + noise.T


def sample_scores(posterior: Laplace, features: torch.Tensor, n: int, seed: int, chunk: int = 256) -> torch.Tensor:
    """[n, T, M] float64 scores of candidates features [T, M, d] under n posterior draws of the head."""
    heads = sample_heads(posterior, n, seed)
    blocks = [
        torch.einsum("tmd,sd->stm", features[start : start + chunk].to(heads.device, torch.float64), heads)
        for start in range(0, features.shape[0], chunk)
    ]
    out = torch.cat(blocks, 1) if blocks else heads.new_zeros((n, 0, features.shape[1]))
    return out + posterior.bias


def token_counts(token_ids: list[list[int]], dim: int) -> torch.Tensor:
    """[N, dim] float32 hashed bag of tokens: entry (n, t mod dim) counts token t in text n.

    The features of the `tokens` surrogate: a linear Bradley-Terry model on them is what a reward model
    that learns its embeddings can learn first (which tokens make a text better), and they do not move
    when the reward model is retrained. Hashing (t mod dim) bounds the d x d posterior whatever the vocabulary.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    out = torch.zeros(len(token_ids), dim)
    for n, ids in enumerate(token_ids):
        if ids:
            out[n].index_add_(0, torch.tensor(ids, dtype=torch.long) % dim, torch.ones(len(ids)))
    return out


def fit_map(
    x: torch.Tensor, prior_precision: float, weight: torch.Tensor | None = None, steps: int = 50
) -> torch.Tensor:
    """[d] float64 MAP head of Bradley-Terry on winner-minus-loser differences x [P, d] under N(0, 1/lambda I).

    Minimises sum_k softplus(-w . x_k) + lambda/2 |w|^2 by Newton's method with backtracking (a plain Newton
    step overshoots on separable, large-margin pairs), from `weight` (default 0).
    """
    x = x.double()
    w = x.new_zeros(x.shape[1]) if weight is None else weight.double().clone()

    def loss(v):
        return float(torch.nn.functional.softplus(-(x @ v)).sum() + prior_precision / 2 * v.square().sum())

    eye = torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
    current = loss(w)
    for _ in range(steps):
        p = torch.sigmoid(x @ w)
        grad = x.T @ (1 - p) - prior_precision * w
        hess = x.T @ (x * (p * (1 - p))[:, None]) + prior_precision * eye
        step, size = torch.linalg.solve(hess, grad), 1.0
        while loss(w + size * step) > current and size > 1e-6:
            size /= 2
        w = w + size * step
        previous, current = current, loss(w)
        if previous - current < 1e-10 * max(1.0, abs(current)):
            break
    return w


def fit_surrogate(features: torch.Tensor, pairs: torch.Tensor, prior_precision: float = 1.0) -> Laplace:
    """Laplace posterior of a linear Bradley-Terry model fitted (MAP) on features [N, d] and pairs [P, 2] = (better, worse).

    Unlike :func:`laplace`, whose mean is a trained head, this fits the head itself: the `tokens` surrogate.
    """
    weight = fit_map(features[pairs[:, 0]] - features[pairs[:, 1]], prior_precision)
    return laplace(features, pairs, weight, 0.0, prior_precision)


# ----------------------------------------------------------------------------------------------
# Saving beside the reward model


def save(posterior: Laplace, folder: str) -> str:
    """Write `uncertainty.safetensors` into `folder` atomically (temp file renamed into place); returns its path."""
    from safetensors.torch import save_file

    meta = {"bias": posterior.bias, "prior_precision": posterior.prior_precision, "comparisons": posterior.comparisons}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, FILE)
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE}.", dir=folder)
    os.close(fd)
    with files.writing(folder, tmp):  # a full disk leaves no temp file and names the folder
        tensors = {"weight": posterior.weight.cpu(), "cholesky": posterior.cholesky.cpu().contiguous()}
        save_file(tensors, tmp, metadata={"method": "laplace-last-layer", "meta": json.dumps(meta)})
        os.replace(tmp, path)
    return path


def load(folder: str) -> Laplace:
    """The posterior saved by :func:`save` in `folder` (a UserError naming the file if absent or unreadable)."""
    from safetensors import safe_open

    path = os.path.join(folder, FILE)
    if not os.path.isfile(path):
        raise UserError(f"reward model: '{folder}' has no {FILE}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["meta"])
            weight, cholesky = f.get_tensor("weight"), f.get_tensor("cholesky")
        posterior = Laplace(weight, meta["bias"], cholesky, meta["prior_precision"], meta["comparisons"])
    except Exception as e:  # a truncated or foreign file is the user's to fix, not a traceback
        raise UserError(f"{path}: not a readable uncertainty file ({type(e).__name__}: {e})") from None
    d = weight.shape[0]
    if weight.dim() != 1 or tuple(cholesky.shape) != (d, d):
        raise UserError(f"{path}: weight {tuple(weight.shape)} and cholesky {tuple(cholesky.shape)} do not match")
    return posterior


# ----------------------------------------------------------------------------------------------
# The model side: features where the score is read


def head_module(model) -> torch.nn.Module:
    """The scalar score head (PEFT's modules_to_save wrapper when the model is an adapter); its input is phi."""
    for name, module in model.named_modules():  # parents come first: the wrapper before its copies
        if name.rsplit(".", 1)[-1] in HEAD_NAMES and hasattr(module, "weight"):
            if module.weight.shape[0] != 1:
                raise ValueError(f"the head '{name}' has {module.weight.shape[0]} outputs; a reward has 1")
            return module
    raise ValueError(f"no score head ({' or '.join(HEAD_NAMES)}) in {type(model).__name__}")


def head_parameters(model) -> tuple[torch.Tensor, float]:
    """(weight [d] float64, bias) of the active score head."""
    head = head_module(model)
    bias = 0.0 if getattr(head, "bias", None) is None else float(head.bias.detach().float()[0])
    return head.weight.detach()[0].double().cpu(), bias


def read_positions(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """[N] index of the token the score is read at: the rightmost non-pad token (transformers' rule)."""
    if pad_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (positions * (input_ids != pad_id)).argmax(-1)


@torch.no_grad()
def features(
    model, tokenizer, prompts: list, completions: list, batch_size: int = 16, max_length: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi [N, d] float32, scores [N] float32) of each (prompt, completion), in one forward pass per batch.

    phi is what the score head reads: its input, captured by a hook on the head at the position the
    model pools (the last real token), so head(phi) is the score; texts are encoded as `score_texts` does.
    A hook rather than `output_hidden_states`: it is the head's input whatever the architecture puts
    between the last layer and the head, and it keeps one layer's states, not all of them.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    device = next(model.parameters()).device
    pad_id = model.config.pad_token_id
    captured: list[torch.Tensor] = []
    hook = head_module(model).register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    phis, rewards = [], []
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = [
                encode_text(tokenizer, p, c, max_length)[0]
                for p, c in zip(prompts[start : start + batch_size], completions[start : start + batch_size])
            ]
            ids, mask = right_pad(encoded, tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            captured.clear()
            rewards.append(scores(model, ids, mask).cpu())
            hidden = captured[-1]
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            phis.append(hidden[rows, read_positions(ids, pad_id)].float().cpu())
    finally:
        hook.remove()
    if not phis:
        d = head_module(model).weight.shape[1]
        return torch.zeros(0, d), torch.zeros(0)
    return torch.cat(phis), torch.cat(rewards)


def candidate_features(
    model, tokenizer, prompts: list, candidates: list[list], batch_size: int = 16, max_length: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi [T, M, d], scores [T, M]) for T prompts with M candidate completions each."""
    m = len(candidates[0]) if candidates else 0
    if len(candidates) != len(prompts) or any(len(c) != m for c in candidates):
        raise ValueError("candidates: one list of the same length M per prompt")
    flat_prompts = [p for p in prompts for _ in range(m)]
    flat = [c for row in candidates for c in row]
    phi, rewards = features(model, tokenizer, flat_prompts, flat, batch_size, max_length)
    return phi.reshape(len(prompts), m, -1), rewards.reshape(len(prompts), m)


def comparisons(rows: list[dict]) -> tuple[list, list, torch.Tensor]:
    """(prompts, completions, pairs [P, 2] = (better, worse) into them) from K-wise rows
    (`prompt`, `completions`, `ranks`: 1 = best, ties dropped) or pairwise rows (`prompt`, `chosen`, `rejected`)."""
    prompts, completions, pairs = [], [], []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"row {i + 1}: not an object")
        if isinstance(row.get("completions"), (list, tuple)) and isinstance(row.get("ranks"), (list, tuple)):
            texts, ranks = list(row["completions"]), list(row["ranks"])
        elif "chosen" in row and "rejected" in row:
            texts, ranks = [row["chosen"], row["rejected"]], [1, 2]
        else:
            raise UserError(f"row {i + 1}: needs prompt + completions + ranks, or prompt + chosen + rejected")
        if "prompt" not in row or len(texts) != len(ranks):
            raise UserError(f"row {i + 1}: needs a prompt and one rank per completion")
        if any(t is None for t in texts) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
            raise UserError(f"row {i + 1}: completions must be texts and ranks integers (1 = best)")
        first = len(completions)
        prompts += [row["prompt"]] * len(texts)
        completions += texts
        pairs += [(first + a, first + b) for a in range(len(texts)) for b in range(len(texts)) if ranks[a] < ranks[b]]
    return prompts, completions, torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def fit_laplace(
    model, tokenizer, rows: list[dict], prior_precision: float = 1.0, batch_size: int = 16, max_length: int = 1024
) -> Laplace:
    """The Laplace posterior of a trained reward model's head from the rankings it was trained on.

    One forward pass per completion (not per pair); pass the `max_length` the model was trained with.
    """
    prompts, completions, pairs = comparisons(rows)
    phi, _ = features(model, tokenizer, prompts, completions, batch_size, max_length)
    weight, bias = head_parameters(model)
    return laplace(phi, pairs, weight, bias, prior_precision)
