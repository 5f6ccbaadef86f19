"""Search: query in, ranked Hits out, in bm25, dense or hybrid mode, over one store snapshot.

Filters (metadata equality, access groups) restrict the candidate set before any ranking. With
`unit="documents"`, a document is ranked by its best chunk and search widens its candidate pool
until it has k distinct documents (or the permitted set is exhausted).

>>> search(store, embedder, "default sync port", mode="hybrid", k=3)        # doctest: +SKIP
[Hit(chunk_id='reference/config.md#2', document_id='reference/config.md', score=0.03, ...), ...]
"""
from __future__ import annotations

import time
from typing import Literal

import numpy as np

from ragtune.config import RetrievalConfig
from ragtune.errors import InputError
from ragtune.retrieve.hybrid import best_per_group, rrf, weighted
from ragtune.types import Hit

Mode = Literal["bm25", "dense", "hybrid"]
MODES = ("bm25", "dense", "hybrid")


def search(store, embedder, query: str, mode: Mode = "hybrid", k: int = 10, where: dict | None = None,
           groups: list[str] | None = None, unit: Literal["chunks", "documents"] = "chunks",
           config: RetrievalConfig | None = None, query_vector: np.ndarray | None = None,
           trace: dict | None = None) -> list[Hit]:
    """Top-k hits for `query`; `trace`, if given, receives per-stage seconds (embed, search, fetch)."""
    config = config or RetrievalConfig()
    if mode not in MODES:
        raise InputError(f"unknown search mode '{mode}'; choose one of: {', '.join(MODES)}")
    if not query or not query.strip():
        raise InputError("empty query: give some words to search for")
    if k < 1:
        raise InputError(f"k must be at least 1 (got {k})")
    trace = trace if trace is not None else {}
    started = time.perf_counter()
    if mode != "bm25" and query_vector is None:
        query_vector = embedder.embed([query])[0]
    trace["embed"] = time.perf_counter() - started
    started = time.perf_counter()
    with store.snapshot() as snap:
        allowed = snap.allowed_rowids(where, groups)
        available = None  # permitted chunks, counted only when documents run short (a server store pays a query)
        pool = max(k, config.candidates if mode == "hybrid" else k)
        if unit == "documents":
            pool = max(pool, 2 * k)
        while True:
            ranked, group_of = _rank(snap, query, query_vector, mode, pool, allowed, config, unit)
            if unit == "chunks" or len(ranked) >= k:
                break
            available = snap.count(allowed) if available is None else available
            if pool >= available:
                break
            pool *= 4
        ranked = ranked[:k]
        trace["search"] = time.perf_counter() - started
        started = time.perf_counter()
        hits = snap.hits(ranked)
    trace["fetch"] = time.perf_counter() - started
    return hits


def _fuse(lists, mode, config: RetrievalConfig):
    if mode != "hybrid":
        return list(lists[0])
    weights = [1.0 - config.dense_weight, config.dense_weight]
    return rrf(lists, weights, k=config.rrf_k) if config.fusion == "rrf" else weighted(lists, weights)


def _rank(snap, query, vector, mode, pool, allowed, config: RetrievalConfig, unit):
    """[(chunk rowid, score)] best first; for documents, one (best) chunk per document."""
    lists = []
    if mode in ("bm25", "hybrid"):
        lists.append(snap.sparse(query, pool, allowed))
    if mode in ("dense", "hybrid"):
        lists.append(snap.dense(vector, pool, allowed))
    chunks = _fuse(lists, mode, config)
    if unit == "chunks":
        return chunks, {}
    # Documents: each list ranks documents by their best chunk, the lists are fused per document,
    # and each document is shown with its best chunk in the chunk-level fusion.
    group_of = snap.chunk_documents([r for r, _ in chunks])
    doc_lists = [[(group_of[r], s) for r, s in best_per_group(ranking, group_of)] for ranking in lists]
    representative = {group_of[r]: r for r, _ in reversed(chunks)}
    return [(representative[d], s) for d, s in _fuse(doc_lists, mode, config)], group_of
