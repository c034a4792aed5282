"""Which examples each rank reads at each micro-step, as a pure function of (seed, position).

Data order is a fresh seeded permutation per epoch, laid end to end into one stream. Micro-batch m
takes the next `batch * world` indices; rank r gets its own contiguous slice. Because the
position alone decides the batch, resuming needs only the micro-step counter, and no sampler or
dataloader state can drift between an interrupted and an uninterrupted run.
"""

from __future__ import annotations

import math

import torch


class IndexStream:
    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
            self._perms.pop(epoch - 2, None)  # only the current and previous epoch are ever read
        return self._perms[epoch]

    def at(self, position: int) -> int:
        return self._perm(position // self.n)[position % self.n]

    def batch(self, micro_step: int, batch_size: int, rank: int, world: int) -> list[int]:
        """Indices of rank `rank`'s micro-batch number `micro_step`."""
        start = (micro_step * world + rank) * batch_size
        return [self.at(p) for p in range(start, start + batch_size)]

    def epoch(self, micro_step: int, batch_size: int, world: int) -> float:
        return micro_step * batch_size * world / self.n


def total_steps(n: int, epochs: float, max_steps: int, batch_size: int, world: int, accumulation: int) -> int:
    """Optimizer steps for the run: `max_steps` if set, else enough for `epochs` passes over n examples."""
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * n / (batch_size * world * accumulation)))


def eval_batches(n: int, batch_size: int, rank: int, world: int) -> list[tuple[list[int], list[float]]]:
    """Every example exactly once over all ranks, with the same number of batches on each rank.

    Ranks run the same number of forward passes (ZeRO-3 gathers weights collectively), so short
    batches are filled with example 0 at weight 0.
    """
    per_rank = math.ceil(n / world)
    steps = math.ceil(per_rank / batch_size) if n else 0
    mine = list(range(rank, n, world))
    out = []
    for s in range(steps):
        chunk = mine[s * batch_size : (s + 1) * batch_size]
        weights = [1.0] * len(chunk) + [0.0] * (batch_size - len(chunk))
        out.append((chunk + [0] * (batch_size - len(chunk)), weights))
    return out
