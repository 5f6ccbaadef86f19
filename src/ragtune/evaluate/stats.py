"""Bootstrap statistics for comparing strategies on the same examples.

Every quality figure ragtune reports comes with a 95% interval, and every "A beats B" with a paired
test, so a difference inside the noise is reported as a tie, not as a win.

- `interval(values)`: the mean of per-example scores (accuracy 0/1, F1, nDCG@10) with a percentile
  bootstrap interval.
- `interval_of(metric, n)`: the same for a metric that is not a mean of per-example scores
  (macro-F1): `metric(indices)` is recomputed on each resample of the example indices.
- `paired(a, b)`: the mean per-example difference a - b with its interval (examples resampled
  together, so per-example difficulty cancels), a two-sided bootstrap p-value, and `tie` when the
  interval holds 0.

>>> paired([1, 1, 1, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0, 0, 1]).tie
False
>>> round(interval([0.5, 0.7, 0.9]).mean, 3)
0.7
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95


class Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n}


class Paired(NamedTuple):
    difference: float
    """Mean of a - b over the examples."""
    low: float
    high: float
    p_value: float
    """Two-sided bootstrap p-value of "no difference" (smallest reportable: 1 / resamples)."""
    tie: bool
    """The interval holds 0: the data cannot tell the two apart."""
    n: int

    def as_dict(self) -> dict:
        return {"difference": self.difference, "ci95": [self.low, self.high], "p_value": self.p_value,
                "tie": self.tie, "n": self.n}


def _resampled_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _bounds(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def _as_scores(values: Sequence[float], name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError(f"{name}: no examples to compute an interval from")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name}: scores must be finite numbers")
    return scores


def interval(values: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
             seed: int = 0) -> Interval:
    """Mean of per-example scores with a percentile bootstrap interval."""
    scores = _as_scores(values, "interval")
    means = scores[_resampled_indices(len(scores), resamples, seed)].mean(axis=1)
    return Interval(float(scores.mean()), *_bounds(means, confidence), len(scores))


def interval_of(metric: Callable[[np.ndarray], float], n: int, *, confidence: float = CONFIDENCE,
                resamples: int = 2_000, seed: int = 0) -> Interval:
    """`metric(indices)` on all `n` examples with a bootstrap interval over resampled indices."""
    if n < 1:
        raise ValueError("interval_of: no examples to compute an interval from")
    estimates = np.array([metric(row) for row in _resampled_indices(n, resamples, seed)], dtype=np.float64)
    return Interval(float(metric(np.arange(n))), *_bounds(estimates, confidence), n)


def paired(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
           seed: int = 0) -> Paired:
    """Per-example scores of two systems on the same examples, in the same order."""
    first, second = _as_scores(a, "paired (a)"), _as_scores(b, "paired (b)")
    if first.shape != second.shape:
        raise ValueError(f"paired: the two systems were scored on {len(first)} and {len(second)} examples; "
                         "a paired comparison needs the same examples in the same order")
    deltas = first - second
    means = deltas[_resampled_indices(len(deltas), resamples, seed)].mean(axis=1)
    low, high = _bounds(means, confidence)
    observed = float(deltas.mean())
    if not deltas.any():
        p_value = 1.0
    else:  # share of resamples on the far side of 0, both tails; at least 1 / resamples
        p_value = min(1.0, 2 * max(float(np.mean(means <= 0) if observed > 0 else np.mean(means >= 0)),
                                   1 / resamples))
    return Paired(observed, low, high, p_value, bool(low <= 0 <= high), len(deltas))
