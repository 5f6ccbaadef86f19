"""BM25 over chunk texts with bm25s (Lucene scoring by default; Snowball stemmer, stopwords).

>>> index = BM25Index(["the cat sat", "a dog barked"], BM25Config())
>>> index.search("cats", k=1).positions
array([0])
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ragtune.config import BM25Config
from ragtune.retrieve.dense import top_k


def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its logger to DEBUG on import
    return bm25s


class SparseResult(NamedTuple):
    positions: np.ndarray  # (k,) int64, best first
    scores: np.ndarray  # (k,) float32 BM25 scores


@lru_cache(maxsize=8)
def _stemmer(language: str | None):
    if not language:
        return None
    import Stemmer

    return Stemmer.Stemmer(language).stemWords


def tokenize(texts: list[str], config: BM25Config) -> list[list[str]]:
    """Lowercased word tokens, stopwords removed, stemmed: the same analysis for corpus and queries."""
    return _bm25s().tokenize(texts, stopwords=config.stopwords or [], stemmer=_stemmer(config.stemmer),
                          return_ids=False, show_progress=False)


class BM25Index:
    """A bm25s index over `texts` (position i = texts[i]). Rebuilt, not updated, on change."""

    def __init__(self, texts: list[str], config: BM25Config, method: str = "lucene"):
        self.config = config
        self.size = len(texts)
        self.retriever = _bm25s().BM25(k1=config.k1, b=config.b, method=method)
        if texts:
            self.retriever.index(tokenize(texts, config), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every position for `query` (N,)."""
        if self.size == 0:
            return np.zeros(0, dtype=np.float32)
        tokens = [t for t in tokenize([query], self.config)[0] if t in self.retriever.vocab_dict]
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> SparseResult:
        """Top-k positions among `allowed` (bool mask) that match at least one query term."""
        scores = self.scores(query)
        rows = np.flatnonzero(scores > 0) if allowed is None else np.flatnonzero((scores > 0) & allowed[: self.size])
        best = top_k(scores[rows], k)
        return SparseResult(rows[best], scores[rows][best])
