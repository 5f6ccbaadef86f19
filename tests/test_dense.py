"""DenseIndex: exact and HNSW paths agree, deletions and filters apply before ranking."""
from __future__ import annotations

import numpy as np

from ragtune.retrieve.dense import DenseIndex, top_k
from ragtune.retrieve.hybrid import rrf, weighted


def _unit(rows: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_orders_and_breaks_ties_by_position():
    assert top_k(np.array([0.1, 0.5, 0.5, 0.9], np.float32), 3).tolist() == [3, 1, 2]
    assert top_k(np.array([1.0], np.float32), 5).tolist() == [0]


def test_exact_search_matches_numpy_and_honours_deletes_and_filters():
    vectors = _unit(500)
    index = DenseIndex(vectors)
    query = vectors[7]
    assert index.search(query, 5).positions[0] == 7
    index.delete(np.array([7, 7, 8]))
    assert len(index) == 498
    assert 7 not in index.search(query, 50).positions
    allowed = np.zeros(500, bool)
    allowed[::10] = True
    result = index.search(query, 20, allowed)
    assert len(result.positions) == 20 and all(p % 10 == 0 for p in result.positions)
    expected = np.flatnonzero(allowed)[np.argsort(-(vectors[allowed] @ query))[:20]]
    assert result.positions.tolist() == expected.tolist()


def test_hnsw_path_recall_deletes_append_and_state_roundtrip():
    vectors = _unit(3000, seed=1)
    ann = DenseIndex(vectors, ann_threshold=1000, ef_search=128)
    exact = DenseIndex(vectors)
    assert ann.hnsw is not None and exact.hnsw is None
    queries = _unit(50, seed=2)
    recall = np.mean([len(set(ann.search(q, 10).positions) & set(exact.search(q, 10).positions)) / 10 for q in queries])
    assert recall >= 0.95
    ann.delete(np.arange(0, 3000, 2))
    assert all(p % 2 == 1 for q in queries for p in ann.search(q, 10).positions)
    ann.append(queries)
    assert ann.search(queries[3], 1).positions[0] == 3000 + 3
    again = DenseIndex.from_state(ann.state(), ann_threshold=1000)
    assert again.hnsw is not None and len(again) == len(ann) == 1500 + 50
    assert again.search(queries[3], 1).positions[0] == 3003


def test_fusion_functions():
    bm25 = [("a", 9.0), ("b", 5.0), ("c", 1.0)]
    dense = [("c", 0.9), ("a", 0.8)]
    fused = dict(rrf([bm25, dense], k=60))
    assert abs(fused["a"] - (1 / 61 + 1 / 62)) < 1e-12 and abs(fused["b"] - 1 / 62) < 1e-12
    assert [item for item, _ in weighted([bm25, dense], [0.5, 0.5])][:2] == ["a", "c"]
    assert [item for item, _ in weighted([bm25, dense], [1.0, 0.0])] == ["a", "b", "c"]
