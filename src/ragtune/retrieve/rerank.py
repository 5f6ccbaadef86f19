"""Rerankers: a cross-encoder reads (question, passage) pairs and reorders the top hits.

Backends register under kind "reranker": `cross-encoder` (sentence-transformers CrossEncoder on
torch) and `onnx` (the same model on ONNX Runtime, int8). `scores` returns the model's raw scores
(logits for single-label rerankers: higher is more relevant).

>>> reranker = create("reranker", "cross-encoder", RerankConfig(model="path/to/ms-marco-MiniLM-L-6"))  # doctest: +SKIP
>>> [h.chunk_id for h in reranker.rerank("default sync port", hits, k=3)]                             # doctest: +SKIP
['reference/config.md#2', 'guides/sync.md#0', 'faq.md#4']
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from ragtune.config import RerankConfig
from ragtune.errors import ConfigError, ModelNotFoundError
from ragtune.knowledge.embedders import resolve_model_path
from ragtune.registry import register
from ragtune.types import Hit


def rerank(reranker, question: str, hits: list[Hit], k: int) -> list[Hit]:
    """The best `k` of `hits` (given in first-stage order), each hit's score replaced by its
    reranker score; the order is the reranker's, or its fusion with the first stage when
    rag.rerank.first_stage_weight > 0."""
    if not hits:
        return []
    scores = reranker.scores(question, [h.text for h in hits])
    order = fused_order(scores, reranker.config.first_stage_weight)[:k]
    return [hits[i]._replace(score=float(scores[i])) for i in order]


def fused_order(scores: np.ndarray, first_stage_weight: float = 0.0, rrf_k: int = 60) -> list[int]:
    """Positions of the hits, best first: by reranker score alone (weight 0), or by reciprocal-rank
    fusion of the first-stage order (position i has rank i + 1) with the reranker's ranking:
    w / (rrf_k + first rank) + (1 - w) / (rrf_k + reranker rank). Ties keep the first-stage order.

    >>> fused_order(np.array([0.1, 0.9, 0.5]))
    [1, 2, 0]
    >>> fused_order(np.array([0.1, 0.9, 0.5]), first_stage_weight=0.9)
    [0, 1, 2]
    """
    by_score = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if first_stage_weight <= 0:
        return [int(i) for i in by_score]
    rerank_rank = np.empty(len(by_score), dtype=np.float64)
    rerank_rank[by_score] = np.arange(1, len(by_score) + 1)
    first_rank = np.arange(1, len(by_score) + 1, dtype=np.float64)
    fused = first_stage_weight / (rrf_k + first_rank) + (1 - first_stage_weight) / (rrf_k + rerank_rank)
    return [int(i) for i in np.argsort(-fused, kind="stable")]


class CrossEncoderReranker:
    name = "cross-encoder"

    def __init__(self, config: RerankConfig):
        if not config.model:
            raise ConfigError("rag.rerank.model is not set: give a cross-encoder's HF id or local folder")
        self.config = config

    @cached_property
    def model(self):
        from sentence_transformers import CrossEncoder

        path = resolve_model_path(self.config.model, "rag.rerank.model")
        try:
            return CrossEncoder(str(path), local_files_only=True)  # device: CUDA when available
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"rag.rerank.model '{self.config.model}' ({path}) is not a cross-encoder "
                                     f"that sentence-transformers can load: {exc}") from None

    def scores(self, question: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        out = self.model.predict([(question, t) for t in texts], convert_to_numpy=True, show_progress_bar=False,
                                 activation_fn=_identity())
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)[:, 0]

    def rerank(self, question: str, hits: list[Hit], k: int) -> list[Hit]:
        return rerank(self, question, hits, k)


class OnnxReranker:
    name = "onnx"

    def __init__(self, config: RerankConfig):
        if not config.model:
            raise ConfigError("rag.rerank.model is not set: give a cross-encoder's HF id or local folder")
        from ragtune.knowledge.onnx import OnnxCrossEncoder

        self.config = config
        self.model = OnnxCrossEncoder(config.model)

    def scores(self, question: str, texts: list[str]) -> np.ndarray:
        out = self.model.predict([(question, t) for t in texts])
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)[:, 0] if len(texts) else out

    def rerank(self, question: str, hits: list[Hit], k: int) -> list[Hit]:
        return rerank(self, question, hits, k)


def _identity():
    import torch

    return torch.nn.Identity()


register("reranker", "cross-encoder", CrossEncoderReranker)
register("reranker", "onnx", OnnxReranker)
