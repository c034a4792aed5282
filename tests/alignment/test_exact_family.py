"""The exact-optimum check over the family of instances: every method, run with its SHIPPED config, on every instance
shape at beta 0.1, 0.5 and 1.0 must reach 90% of the achievable gain J* - J(ref) (tests/oracles/exact_check.py).

The full grid (5 methods x 4 instances x 3 betas x 3 seeds) is `extended` (RLHF_EXTENDED_TESTS=1), and
`python benchmarks/exact_family.py` prints it as a table. Not every cell holds yet: SHORT names the cells measured
below the bar, or within 2 points of it on some seed or CPU (docs/worlds.md has the figures); they are expected
failures in the grid, reported, not hidden. CI runs a sample of the cells that hold, covering every instance shape,
every beta and every method, so a regression there fails CI.
"""

import pytest

from tests.oracles import exact_check
from tests.oracles.instances import SHAPES, instance

pytestmark = pytest.mark.slow

SHORT = {
    # GRPO (Dr. GRPO's undivided advantages) on the EOS instance at beta 0.1: 89.4% at seed 2 (a good answer that is
    # not the best takes half the mass), 98.9-99.6% elsewhere
    ("grpo", "eos", 0.1),
    # pairwise DPO from 2048 reference-drawn pairs: on the EOS instance the optimum sits on responses the reference
    # draws 0.01-0.3% of the time and DPO ends too soon (at beta 0.1 all on the empty answer, 62.6-63.0%, also from
    # 4x the pairs; 84.4% at 0.5); within 2 points of the bar: EOS at 1.0, length at 0.1 (4x the pairs: 97.8% each)
    ("dpo", "eos", 0.1), ("dpo", "eos", 0.5), ("dpo", "eos", 1.0), ("dpo", "length", 0.1),
    # K-wise DPO from 2048 reference-drawn rankings labelled exactly (`scores`, as the pairs' chosen_probability):
    # on the EOS instance at beta 0.1 it ends after one word where pi* says two (76.4-79.4%), as pairwise DPO ends
    # too soon there; 95.0-100% everywhere else
    ("dpo_kwise", "eos", 0.1),
}  # fmt: skip
IN_CI = {
    # where RLOO piled its mass on "<pad> </s>" with the settings of another instance (the issue that made the family)
    ("rloo", "eos", 0.1, 0),
    # where PPO and GRPO settled on the empty answer while their advantages were divided by the batch's std
    ("ppo", "sparse", 0.1, 0), ("grpo", "sparse", 0.1, 0),
    # where K-wise DPO overfit its sampled orders while the learning rate was tripled below beta 0.3, and where
    # it learned from one sampled order per ranking instead of its exact label (54.7% then)
    ("dpo_kwise", "dense", 0.1, 0), ("dpo_kwise", "sparse", 0.1, 0),
    # the rest of the cover: the length instance, beta 0.5 and 1.0, pairwise DPO
    ("dpo", "length", 0.5, 1), ("grpo", "sparse", 1.0, 0),
}  # fmt: skip
"""The cells a shipped setting was changed for, and with them every instance shape, every beta and every method that
holds somewhere at least once (CI's time is the limit: 7 runs, about 90 s on 2 cores)."""


def marks(method: str, shape: str, beta: float, seed: int) -> tuple:
    if (method, shape, beta, seed) in IN_CI:
        return ()
    if (method, shape, beta) in SHORT:
        return (pytest.mark.extended, pytest.mark.xfail(reason="measured below the bar (SHORT)", strict=False))
    return (pytest.mark.extended,)


CASES = [
    pytest.param(m, shape, b, s, marks=marks(m, shape, b, s))
    for m in exact_check.METHODS
    for shape in SHAPES
    for b in exact_check.BETAS
    for s in (0, 1, 2)
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("exact-family")


@pytest.mark.parametrize("method, shape, beta, seed", CASES)
def test_every_method_reaches_90_percent_of_the_exact_optimum(root, method, shape, beta, seed):
    result = exact_check.run(method, instance(shape), beta, seed, root)
    print("\n" + result.line())
    assert result.fraction >= 0.9, result.line()


def test_the_ci_sample_covers_every_instance_beta_and_method_that_holds_somewhere():
    holds = {m for m in exact_check.METHODS for s in SHAPES for b in exact_check.BETAS if (m, s, b) not in SHORT}
    assert {m for m, *_ in IN_CI} == holds == set(exact_check.METHODS)
    assert {s for _, s, *_ in IN_CI} == set(SHAPES)
    assert {b for _, _, b, _ in IN_CI} == set(exact_check.BETAS)
    assert not {(m, s, b) for m, s, b, _ in IN_CI} & SHORT
