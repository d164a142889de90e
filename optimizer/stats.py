"""Scores with bootstrap confidence intervals: one score, a paired difference, or any statistic of per-example
score columns (a curve's slope), resampling examples with a fixed seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A statistic and its bootstrap percentile interval over `n` examples."""

    value: float
    low: float
    high: float
    n: int

    def text(self, points: bool = False) -> str:
        """`0.62 [0.55, 0.69]`, or in points of score with a sign: `+7.0 [+2.5, +11.0] pts`."""
        if points:
            return f"{100 * self.value:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}] pts"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def bootstrap(columns: Sequence[Sequence[float]], statistic: Callable[[np.ndarray], np.ndarray],
              seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """`statistic` maps an (r, n, c) array of resampled score columns to r values; rows (examples) are resampled
    together, so columns measured on the same examples are compared pairwise."""
    scores = np.asarray(columns, dtype=np.float64).T  # (n, c)
    n = scores.shape[0]
    if n == 0:
        raise ValueError("no scores to bootstrap")
    value = float(statistic(scores[None])[0])
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = statistic(scores[rows])
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Estimate(value, float(low), float(high), n)


def mean(scores: Sequence[float], seed: int = 0) -> Estimate:
    return bootstrap([scores], lambda s: s[..., 0].mean(axis=1), seed)


def difference(after: Sequence[float], before: Sequence[float], seed: int = 0) -> Estimate:
    """Mean of `after - before` on the same examples."""
    return bootstrap([after, before], lambda s: (s[..., 0] - s[..., 1]).mean(axis=1), seed)


def slope_per_doubling(columns: Sequence[Sequence[float]], sizes: Sequence[int], seed: int = 0) -> Estimate:
    """Least-squares slope of mean score against log2(size): the gain per doubling of `size`."""
    x = np.log2(np.asarray(sizes, dtype=np.float64))
    x = x - x.mean()

    def slope(s: np.ndarray) -> np.ndarray:
        return (s.mean(axis=1) @ x) / (x @ x)

    return bootstrap(columns, slope, seed)
