"""Fusion of ranked lists: reciprocal-rank fusion and weighted normalised-score fusion.

>>> rrf([[("a", 2.0), ("b", 1.0)], [("b", 0.9), ("c", 0.5)]], weights=[0.5, 0.5])[0][0]
'b'
"""
from __future__ import annotations

from typing import Hashable, Sequence

Ranking = Sequence[tuple[Hashable, float]]  # (id, score), best first


def rrf(rankings: Sequence[Ranking], weights: Sequence[float] | None = None, k: int = 60) -> list[tuple[Hashable, float]]:
    """Reciprocal-rank fusion: score(id) = sum_i 2 * w_i / (k + rank_i(id)), ranks from 1.

    With equal weights (0.5 each) this is exactly the plain RRF sum of 1 / (k + rank)."""
    weights = weights or [1.0 / len(rankings)] * len(rankings)
    fused: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, (item, _) in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + len(rankings) * weight / (k + rank)
    return sorted(fused.items(), key=lambda pair: (-pair[1], str(pair[0])))


def weighted(rankings: Sequence[Ranking], weights: Sequence[float]) -> list[tuple[Hashable, float]]:
    """Weighted sum of min-max normalised scores; an id missing from a list scores 0 there."""
    fused: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        scores = [s for _, s in ranking]
        low, high = min(scores), max(scores)
        span = (high - low) or 1.0
        for item, score in ranking:
            fused[item] = fused.get(item, 0.0) + weight * (score - low) / span
    return sorted(fused.items(), key=lambda pair: (-pair[1], str(pair[0])))


def best_per_group(ranking: Ranking, group_of: dict) -> list[tuple[Hashable, float]]:
    """Keep each group's (document's) best-ranked item, in ranking order."""
    seen, out = set(), []
    for item, score in ranking:
        group = group_of[item]
        if group not in seen:
            seen.add(group)
            out.append((item, score))
    return out
