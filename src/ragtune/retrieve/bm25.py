"""BM25 over chunk texts with bm25s (Lucene scoring by default; Snowball stemmer, stopwords).

>>> index = BM25Index(["the cat sat", "a dog barked"], BM25Config())
>>> index.search("cats", k=1).positions
array([0])
"""
from __future__ import annotations

import inspect
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


@lru_cache(maxsize=8)
def _query_analyzer(stopwords: str | None, stemmer: str | None):
    """bm25s.tokenize's analysis for one text, without its per-call set-up (three tqdm bars, a stopword
    set per text: ~0.15 ms, more than scoring a SciFact query). test_bm25_parity checks both agree."""
    import re

    from bm25s.tokenization import _infer_stopwords

    pattern = inspect.signature(_bm25s().tokenize).parameters["token_pattern"].default
    split = re.compile(pattern).findall
    stop = frozenset(_infer_stopwords(stopwords)) if stopwords else frozenset()
    stem = _stemmer(stemmer)

    def analyze(text: str) -> list[str]:
        tokens = [t for t in split(text.lower()) if t not in stop]
        return stem(tokens) if stem is not None and tokens else tokens

    return analyze


def analyze_query(text: str, config: BM25Config) -> list[str]:
    """The tokens of one query, as `tokenize` would give them."""
    return _query_analyzer(config.stopwords, config.stemmer)(text)


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
        vocab = self.retriever.vocab_dict
        tokens = [t for t in analyze_query(query, self.config) if t in vocab]
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> SparseResult:
        """Top-k positions among `allowed` (bool mask) that match at least one query term."""
        scores = self.scores(query)
        rows = np.flatnonzero(scores > 0) if allowed is None else np.flatnonzero((scores > 0) & allowed[: self.size])
        best = top_k(scores[rows], k)
        return SparseResult(rows[best], scores[rows][best])

    def idf(self, tokens: list[str]) -> dict[str, float]:
        """Inverse document frequency ln(1 + (N - df + 0.5) / (df + 0.5)) of analysed tokens (df 0 when
        a token is not in the index)."""
        vocab, indptr = self.retriever.vocab_dict if self.size else {}, None
        if self.size:
            indptr = self.retriever.scores["indptr"]
        out = {}
        for token in tokens:
            i = vocab.get(token)
            df = int(indptr[i + 1] - indptr[i]) if i is not None else 0
            out[token] = float(np.log1p((self.size - df + 0.5) / (df + 0.5)))
        return out

    def __setstate__(self, state: dict) -> None:
        # numpy 2.x unpickles arrays with a dtype instance that is equal to, but not, the canonical
        # np.dtype(np.float32); np.add.at (bm25s's scorer) then takes a generic path ~8x slower per
        # posting list (measured: 0.39 vs 0.05 ms a SciFact query). Re-view the score arrays.
        self.__dict__.update(state)
        scores = getattr(self.retriever, "scores", None)
        if isinstance(scores, dict):
            for key, value in scores.items():
                if isinstance(value, np.ndarray):
                    scores[key] = value.view(np.dtype(value.dtype.str))
