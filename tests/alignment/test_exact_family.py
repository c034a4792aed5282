"""The exact-optimum check over the family of instances: every method, run with its SHIPPED config, on every instance
shape at beta 0.1, 0.5 and 1.0 must reach 90% of the achievable gain J* - J(ref) (tests/oracles/exact_check.py).

CI runs a sample covering every method, every instance and every beta; the full grid (5 methods x 4 instances x 3
betas x 3 seeds) is `extended` (RLHF_EXTENDED_TESTS=1), and `python benchmarks/exact_family.py` prints it as a table.
"""

import pytest

from tests.oracles import exact_check
from tests.oracles.instances import SHAPES, instance

pytestmark = pytest.mark.slow

IN_CI = {
    ("ppo", "dense", 1.0, 0), ("rloo", "sparse", 0.1, 1), ("grpo", "length", 0.5, 2), ("dpo", "eos", 1.0, 0),
    ("dpo_kwise", "dense", 0.1, 1), ("ppo", "eos", 0.5, 2), ("rloo", "length", 1.0, 0), ("grpo", "sparse", 0.5, 1),
}  # fmt: skip
"""Every method, instance shape and beta at least once (and each method on two shapes)."""
CASES = [
    pytest.param(m, shape, b, s, marks=() if (m, shape, b, s) in IN_CI else pytest.mark.extended)
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


def test_the_ci_sample_covers_every_method_instance_and_beta():
    assert {m for m, *_ in IN_CI} == set(exact_check.METHODS)
    assert {s for _, s, *_ in IN_CI} == set(SHAPES)
    assert {b for _, _, b, _ in IN_CI} == set(exact_check.BETAS)
