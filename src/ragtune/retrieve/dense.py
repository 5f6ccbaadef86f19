"""Dense vector index: exact inner-product search, HNSW (faiss) above a size threshold.

Rows are addressed by position; the store maps positions to its chunk row ids. Deleted rows are
masked, not removed, until the owner rebuilds. Filters are a boolean mask over positions applied
*before* ranking, in both paths, so a filtered query returns k hits when k permitted rows exist.

>>> index = DenseIndex(np.eye(3, dtype=np.float32))
>>> index.search(np.array([0, 1, 0], np.float32), k=2).positions
array([1, 0])
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

_BLAS = None


def single_threaded_blas():
    """A context that runs BLAS on one thread. A one-query scan is memory-bound; a multi-threaded
    BLAS pool gains nothing there and its spinning threads then slow the next embedding call (torch
    or ONNX Runtime) on a small machine: measured 8.1 ms -> 1.3 ms for 12.9k x 384 on 2 cores."""
    global _BLAS
    try:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        return _BLAS.limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()


class DenseResult(NamedTuple):
    positions: np.ndarray  # (k,) int64, best first
    scores: np.ndarray  # (k,) float32 inner products (cosine for unit vectors)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties by lower index)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    return part[np.lexsort((part, -scores[part]))].astype(np.int64)


class DenseIndex:
    """Unit vectors (N, D) float32 with an alive mask and, past `ann_threshold` rows, an HNSW graph."""

    def __init__(self, vectors: np.ndarray, ann_threshold: int = 100_000, hnsw_m: int = 32,
                 ef_search: int = 256, ef_construction: int = 80):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
        self.alive = np.ones(len(self.vectors), dtype=bool)  # (N,)
        self.n_alive = len(self.vectors)
        self.ann_threshold, self.hnsw_m = ann_threshold, hnsw_m
        self.ef_search, self.ef_construction = ef_search, ef_construction
        self.hnsw = None
        self._maybe_build_ann()

    def __len__(self) -> int:
        return self.n_alive

    @property
    def dimension(self) -> int:
        return self.vectors.shape[1] if self.vectors.ndim == 2 else 0

    def append(self, vectors: np.ndarray) -> None:
        """Add rows at the end (positions len..len+n-1)."""
        if len(vectors) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.vectors = np.concatenate([self.vectors, vectors]) if len(self.vectors) else vectors
        self.alive = np.concatenate([self.alive, np.ones(len(vectors), dtype=bool)])
        self.n_alive += len(vectors)
        if self.hnsw is not None:
            self.hnsw.add(vectors)
        else:
            self._maybe_build_ann()

    def delete(self, positions: np.ndarray) -> None:
        positions = np.unique(positions)
        self.n_alive -= int(self.alive[positions].sum())
        self.alive[positions] = False

    @property
    def dead_fraction(self) -> float:
        return 1.0 - len(self) / max(1, len(self.alive))

    def _maybe_build_ann(self) -> None:
        if self.hnsw is None and len(self.vectors) > self.ann_threshold:
            import faiss

            self.hnsw = faiss.IndexHNSWFlat(self.vectors.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.hnsw.hnsw.efConstruction = self.ef_construction
            self.hnsw.add(self.vectors)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> DenseResult:
        """Top-k rows by inner product among alive (and `allowed`, a bool mask) rows."""
        mask = self.alive if allowed is None else (self.alive & allowed)
        permitted = self.n_alive if allowed is None else int(mask.sum())
        k = min(k, permitted)
        if k == 0:
            return DenseResult(np.zeros(0, np.int64), np.zeros(0, np.float32))
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        # HNSW pays off on large, mostly-permitted sets; a narrow filter is cheaper (and exact) as a scan.
        if self.hnsw is not None and permitted > max(20 * k, self.ann_threshold // 10):
            result = self._search_hnsw(query, k, mask, permitted == len(mask))
            if len(result.positions) == k:
                return result
        with single_threaded_blas():
            if permitted == len(mask):
                scores = self.vectors @ query  # (N,)
                best = top_k(scores, k)
                return DenseResult(best, scores[best])
            rows = np.flatnonzero(mask)
            scores = self.vectors[rows] @ query  # (P,)
            best = top_k(scores, k)
            return DenseResult(rows[best], scores[best])

    def _search_hnsw(self, query: np.ndarray, k: int, mask: np.ndarray, everything: bool) -> DenseResult:
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        if not everything:
            bits = np.packbits(mask, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        scores, ids = self.hnsw.search(query[None, :], k, params=params)
        keep = ids[0] >= 0
        return DenseResult(ids[0][keep].astype(np.int64), scores[0][keep])

    # --- persistence (the owner adds its own metadata) --------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        state = {"vectors": self.vectors, "alive": self.alive}
        if self.hnsw is not None:
            import faiss

            state["hnsw"] = faiss.serialize_index(self.hnsw)
        return state

    @classmethod
    def from_state(cls, state, **options) -> "DenseIndex":
        index = cls.__new__(cls)
        index.vectors = np.ascontiguousarray(state["vectors"], dtype=np.float32)
        index.alive = np.asarray(state["alive"], dtype=bool).copy()
        index.n_alive = int(index.alive.sum())
        index.ann_threshold = options.get("ann_threshold", 100_000)
        index.hnsw_m = options.get("hnsw_m", 32)
        index.ef_search = options.get("ef_search", 256)
        index.ef_construction = options.get("ef_construction", 80)
        index.hnsw = None
        if "hnsw" in state:
            import faiss

            index.hnsw = faiss.deserialize_index(np.asarray(state["hnsw"]))
        else:
            index._maybe_build_ann()
        return index
