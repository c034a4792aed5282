"""The last-layer Laplace posterior against hand computations and a naive inverse; the model-side features
against the reward model's own scores on a tiny model saved and loaded back."""

import math

import pytest
import torch

from alignment.common.errors import UserError
from alignment.config.shared import AdapterConfig, ModelConfig
from alignment.runtime import models
from alignment.runtime.generation import right_pad
from reward import model as R
from reward import uncertainty as U


def test_two_dimensional_example_by_hand():
    # phi0 = (1, 0), phi1 = (0, 1), phi2 = (1, 1); one comparison 0 vs 1; head w = (log 3, 0): p = 3/4.
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    post = U.laplace(phi, torch.tensor([[0, 1]]), torch.tensor([math.log(3), 0.0]), bias=0.5, prior_precision=1.0)
    # H = I + 3/16 (1, -1)(1, -1)^T; Sigma = H^-1 = [[1 + c, c], [c, 1 + c]] / (1 + 2c) with c = 3/16.
    c = 3 / 16
    sigma = torch.tensor([[1 + c, c], [c, 1 + c]], dtype=torch.float64) / (1 + 2 * c)
    torch.testing.assert_close(U.covariance(post), sigma)
    assert post.comparisons == 1 and post.bias == 0.5
    mean, cov = U.predict(post, phi[None])
    torch.testing.assert_close(mean[0], torch.tensor([math.log(3) + 0.5, 0.5, math.log(3) + 0.5], dtype=torch.float64))
    # Var r0 = Sigma_00, Var r2 = sum of Sigma, Cov(r0, r1) = Sigma_01; Var(r0 - r1) = 2 (Sigma_00 - Sigma_01).
    assert cov[0, 0, 0].item() == pytest.approx((1 + c) / (1 + 2 * c))
    assert cov[0, 2, 2].item() == pytest.approx(2 * (1 + 2 * c) / (1 + 2 * c))
    assert cov[0, 0, 1].item() == pytest.approx(c / (1 + 2 * c))
    assert U.pair_variances(cov)[0, 0, 1].item() == pytest.approx(2 / (1 + 2 * c))
    assert U.pair_variances(cov)[0, 1, 1].item() == pytest.approx(0.0, abs=1e-12)


def test_token_counts_by_hand():
    # dim 4: token 1 and token 5 share bucket 1 (5 mod 4), token 7 is bucket 3; an empty text is all zeros.
    counts = U.token_counts([[1, 5, 1], [], [7, 0]], 4)
    assert counts.tolist() == [[0, 3, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    assert U.token_counts([], 3).shape == (0, 3)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        U.token_counts([[1]], 0)


def test_fit_map_by_hand_and_at_a_stationary_point():
    # One pair, x = 1, lambda = 1: the MAP solves w = sigmoid(-w) (the gradient of softplus(-w) + w^2 / 2 is 0);
    # by bisection on that equation w = 0.4013...
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid < 1 / (1 + math.exp(mid)) else (lo, mid)
    assert U.fit_map(torch.tensor([[1.0]]), 1.0).item() == pytest.approx(lo, abs=1e-9)
    # Separable, large-margin data: backtracking keeps Newton stable; the gradient vanishes at the optimum.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    x = x * torch.sign(x @ torch.tensor([3.0, -2.0, 0.0, 1.0], dtype=torch.float64))[:, None] * 5
    w = U.fit_map(x, 0.5)
    grad = x.T @ torch.sigmoid(-(x @ w)) - 0.5 * w
    assert grad.abs().max().item() < 1e-6


def test_fit_surrogate_is_the_laplace_posterior_at_the_map_head():
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pairs = torch.tensor([[0, 1], [2, 1], [0, 1]])
    post = U.fit_surrogate(phi, pairs, 2.0)
    w = U.fit_map((phi[pairs[:, 0]] - phi[pairs[:, 1]]).double(), 2.0)
    torch.testing.assert_close(post.weight, w)
    assert post.bias == 0.0 and post.comparisons == 3 and post.prior_precision == 2.0
    naive = naive_fisher(phi, pairs, w, 2.0, torch.ones(3))
    torch.testing.assert_close(U.covariance(post), torch.linalg.inv(naive))


def naive_fisher(phi, pairs, weight, prior, pair_weights):
    h = torch.eye(phi.shape[1], dtype=torch.float64) * prior
    for (a, b), w in zip(pairs.tolist(), pair_weights.tolist()):
        x = (phi[a] - phi[b]).double()
        p = 1 / (1 + math.exp(-float(x @ weight.double())))
        h += w * p * (1 - p) * torch.outer(x, x)
    return h


def test_fisher_and_posterior_match_a_naive_loop_and_inverse():
    g = torch.Generator().manual_seed(0)
    phi, weight = torch.randn(20, 5, generator=g), torch.randn(5, generator=g)
    pairs = torch.randint(0, 20, (40, 2), generator=g)
    pair_weights = torch.rand(40, generator=g, dtype=torch.float64)
    expected = naive_fisher(phi, pairs, weight, 0.3, pair_weights)
    probabilities = U.pair_probabilities(phi, pairs, weight)
    torch.testing.assert_close(U.fisher(phi, pairs, probabilities, 0.3, pair_weights, chunk=7), expected)
    post = U.laplace(phi, pairs, weight, prior_precision=0.3, weights=pair_weights)
    sigma = torch.linalg.inv(expected)
    torch.testing.assert_close(U.covariance(post), sigma)
    candidates = torch.randn(3, 4, 5, generator=g)
    _, cov = U.predict(post, candidates, chunk=2)
    for t in range(3):
        for i in range(4):
            for j in range(4):
                naive = candidates[t, i].double() @ sigma @ candidates[t, j].double()
                assert cov[t, i, j].item() == pytest.approx(naive.item(), rel=1e-7, abs=1e-12)
    with pytest.raises(ValueError, match="prior_precision"):
        U.fisher(phi, pairs, probabilities, 0.0)


def test_invariances():
    g = torch.Generator().manual_seed(1)
    phi, weight = torch.randn(10, 4, generator=g), torch.randn(4, generator=g)
    pairs = torch.randint(0, 10, (15, 2), generator=g)
    post = U.laplace(phi, pairs, weight)
    # A comparison's direction does not matter (p (1 - p) is symmetric) ...
    torch.testing.assert_close(U.laplace(phi, pairs.flip(1), weight).cholesky, post.cholesky)
    # ... nor a shift shared by every text (a prompt's own component cancels in differences) ...
    torch.testing.assert_close(U.laplace(phi + torch.randn(4, generator=g), pairs, weight).cholesky, post.cholesky)
    # ... and a pair counted twice is a pair of weight 2.
    doubled = U.laplace(phi, torch.cat([pairs, pairs[:1]]), weight)
    weights = torch.ones(15, dtype=torch.float64)
    weights[0] = 2
    torch.testing.assert_close(doubled.cholesky, U.laplace(phi, pairs, weight, weights=weights).cholesky)
    # Within a task, shifting every candidate by one vector leaves the pair variances alone.
    candidates = torch.randn(2, 3, 4, generator=g)
    _, cov = U.predict(post, candidates)
    _, shifted = U.predict(post, candidates + torch.randn(4, generator=g))
    torch.testing.assert_close(U.pair_variances(shifted), U.pair_variances(cov))
    # More comparisons never make the model less sure.
    more = U.laplace(phi, torch.cat([pairs, torch.randint(0, 10, (5, 2), generator=g)]), weight)
    assert (U.predict(more, candidates)[1].diagonal(dim1=-2, dim2=-1) <= cov.diagonal(dim1=-2, dim2=-1) + 1e-12).all()


def test_posterior_draws_have_the_posterior_covariance_and_follow_the_seed():
    g = torch.Generator().manual_seed(2)
    phi, weight = torch.randn(8, 3, generator=g), torch.randn(3, generator=g)
    post = U.laplace(phi, torch.randint(0, 8, (6, 2), generator=g), weight, prior_precision=2.0)
    heads = U.sample_heads(post, 20000, seed=5)
    torch.testing.assert_close(heads.mean(0), post.weight, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(heads.T), U.covariance(post), atol=0.01, rtol=0.05)
    assert torch.equal(U.sample_heads(post, 4, seed=5), U.sample_heads(post, 4, seed=5))
    assert not torch.equal(U.sample_heads(post, 4, seed=5), U.sample_heads(post, 4, seed=6))
    candidates = torch.randn(2, 3, 3, generator=g)
    samples = U.sample_scores(post, candidates, 4, seed=5)
    expected = torch.einsum("tmd,sd->stm", candidates.double(), U.sample_heads(post, 4, seed=5)) + post.bias
    torch.testing.assert_close(samples, expected)


def test_save_and_load_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    post = U.laplace(torch.randn(6, 3, generator=g), torch.tensor([[0, 1], [2, 3]]), torch.randn(3, generator=g), 0.1)
    U.save(post, str(tmp_path))
    back = U.load(str(tmp_path))
    assert torch.equal(back.weight, post.weight) and torch.equal(back.cholesky, post.cholesky)
    assert (back.bias, back.prior_precision, back.comparisons) == (post.bias, post.prior_precision, 2)
    assert [p.name for p in tmp_path.iterdir()] == [U.FILE]  # no temp file left behind
    with pytest.raises(UserError, match="has no uncertainty.safetensors"):
        U.load(str(tmp_path / "missing"))
    (tmp_path / U.FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable uncertainty file"):
        U.load(str(tmp_path))


def test_comparisons_from_kwise_and_pairwise_rows():
    rows = [
        {"prompt": "p", "completions": ["a", "b", "c"], "ranks": [2, 1, 2]},  # b beats a and c; a ties c
        {"prompt": "q", "chosen": "x", "rejected": "y"},
    ]
    prompts, completions, pairs = U.comparisons(rows)
    assert prompts == ["p", "p", "p", "q", "q"] and completions == ["a", "b", "c", "x", "y"]
    assert pairs.tolist() == [[1, 0], [1, 2], [3, 4]]
    with pytest.raises(UserError, match="row 2"):
        U.comparisons([rows[0], {"prompt": "p", "completion": "a"}])
    with pytest.raises(UserError, match="row 1: needs a prompt and one rank per completion"):
        U.comparisons([{"prompt": "p", "completions": ["a", "b"], "ranks": [1]}])
    bad_rows = [
        {"prompt": "p", "completions": "ab", "ranks": [1, 2]},  # a string is not a list of completions
        {"prompt": "p", "completions": ["a", "b"], "ranks": ["1", "2"]},
        {"prompt": "p", "completions": ["a", None], "ranks": [1, 2]},
        {"prompt": "p", "chosen": "a", "rejected": None},
        ["p", "a", "b"],
    ]
    for bad in bad_rows:
        with pytest.raises(UserError, match="row 2: "):
            U.comparisons([rows[1], bad])
    assert U.comparisons([])[2].shape == (0, 2)


# ----------------------------------------------------------------------------------------------
# The model side, on the builtin tiny Llama wrapped as a LoRA reward model and saved


@pytest.fixture(scope="module")
def reward_folders(builtin_model, tmp_path_factory):
    """A LoRA reward adapter (non-zero LoRA, random head, embeddings in full) and a full reward model, saved."""
    tokenizer = models.load_base_tokenizer(ModelConfig(name_or_path=builtin_model))
    torch.manual_seed(0)
    model = R.build(
        ModelConfig(name_or_path=builtin_model),
        AdapterConfig(method="lora", r=4, alpha=8, modules_to_save=["embed_tokens"]),
        tokenizer,
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.normal_(0, 0.2)  # B starts at zero: make the adapter change the features
    adapter = tmp_path_factory.mktemp("reward-adapter")
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    full = tmp_path_factory.mktemp("reward-full")
    merged = model.merge_and_unload()
    merged.save_pretrained(full)
    tokenizer.save_pretrained(full)
    return {"adapter": str(adapter), "full": str(full)}


PROMPTS = ["Review of the cafe food:", "Review of the hotel room:", "Review of the gym music:"]
COMPLETIONS = [" the food was great and the staff were friendly.", " awful.", " the music was loud but fun, really"]


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_the_head_on_the_features_is_the_score(reward_folders, kind):
    model, tokenizer = R.load_reward_model(reward_folders[kind])
    phi, rewards = U.features(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=2)
    expected = torch.tensor(R.score_texts(model, tokenizer, PROMPTS, COMPLETIONS))
    assert phi.shape == (3, model.config.hidden_size) and torch.equal(rewards, expected)
    head = U.head_module(model)
    # phi is bit for bit the head's input (checked against hidden_states below); the head's matmul on [N, d]
    # instead of the model's [N, T, d] may round a few float32 ulps apart, hence the tolerance.
    torch.testing.assert_close(head(phi)[:, 0].detach(), expected, rtol=1e-6, atol=1e-6)
    weight, bias = U.head_parameters(model)
    torch.testing.assert_close(phi.double() @ weight + bias, expected.double(), rtol=1e-6, atol=1e-6)
    # The same vector as the final hidden state of the last real token (one Llama forward, for comparison).
    ids, mask = right_pad([R.encode_text(tokenizer, p, c, 1024)[0] for p, c in zip(PROMPTS, COMPLETIONS)],
                     tokenizer.pad_token_id)  # fmt: skip
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    last = mask.sum(1) - 1
    torch.testing.assert_close(phi, hidden[torch.arange(3), last], rtol=0, atol=0)


def test_candidate_features_and_laplace_from_rankings(reward_folders):
    model, tokenizer = R.load_reward_model(reward_folders["adapter"])
    candidates = [COMPLETIONS, COMPLETIONS[::-1]]
    phi, rewards = U.candidate_features(model, tokenizer, PROMPTS[:2], candidates)
    assert phi.shape == (2, 3, model.config.hidden_size) and rewards.shape == (2, 3)
    flat, _ = U.features(model, tokenizer, [PROMPTS[1]] * 3, COMPLETIONS[::-1])
    torch.testing.assert_close(phi[1], flat)
    rows = [{"prompt": PROMPTS[0], "completions": COMPLETIONS, "ranks": [1, 3, 2]},
            {"prompt": PROMPTS[1], "chosen": COMPLETIONS[1], "rejected": COMPLETIONS[0]}]  # fmt: skip
    post = U.fit_laplace(model, tokenizer, rows, prior_precision=0.5)
    texts, _ = U.features(model, tokenizer, [PROMPTS[0]] * 3 + [PROMPTS[1]] * 2, COMPLETIONS + COMPLETIONS[1::-1])
    weight, bias = U.head_parameters(model)
    expected = U.laplace(texts, torch.tensor([[0, 1], [0, 2], [2, 1], [3, 4]]), weight, bias, 0.5)
    torch.testing.assert_close(post.cholesky, expected.cholesky)
    assert post.comparisons == 4 and post.weight.shape == (model.config.hidden_size,)
    prior_only = U.fit_laplace(model, tokenizer, [], prior_precision=4.0)  # no rankings yet: the prior alone
    assert prior_only.comparisons == 0 and torch.equal(
        prior_only.cholesky, 2 * torch.eye(model.config.hidden_size).double()
    )
    with pytest.raises(ValueError, match="one list of the same length"):
        U.candidate_features(model, tokenizer, PROMPTS[:2], [COMPLETIONS, COMPLETIONS[:2]])
