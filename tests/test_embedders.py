"""Embedders: the real default model (bundled weights, offline) and the hashing fake, one registry."""
from __future__ import annotations

import numpy as np
import pytest

from ragtune.config import EmbedderConfig
from ragtune.errors import ConfigError, ModelNotFoundError
from ragtune.knowledge.embedders import create_embedder, resolve_model_path
from ragtune.registry import names


def test_registry_lists_backends_and_rejects_unknown():
    assert {"auto", "hashing", "onnx", "sentence-transformers"} <= set(names("embedder"))
    with pytest.raises(ConfigError, match="choose one of: .*hashing"):
        create_embedder(EmbedderConfig(backend="nope"))


def test_hashing_is_deterministic_and_normalised():
    embedder = create_embedder(EmbedderConfig(backend="hashing", dimension=128))
    a = embedder.embed(["the same text", "other words entirely"])
    b = embedder.embed(["the same text", "other words entirely"])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert embedder.info()["dimension"] == 128


def test_default_model_resolves_offline_and_embeds(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = create_embedder(EmbedderConfig())
    vectors = embedder.embed(["How do I restore a backup?", "Restoring from a backup archive",
                              "The cat sat on the mat."])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2  # real semantics, not noise
    info = embedder.info()
    assert info["dimension"] == 384 and len(info["fingerprint"]) == 16
    assert create_embedder(EmbedderConfig()).info()["fingerprint"] == info["fingerprint"]
    assert embedder.max_tokens == 254


def test_missing_model_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="embedder.model"):
        resolve_model_path("someone/model-that-is-not-here")


def test_auto_backend_is_onnx_on_cpu_machines_and_torch_when_cuda_is_asked(monkeypatch):
    from ragtune.knowledge.embedders import auto_backend

    monkeypatch.setattr("ragtune.knowledge.embedders.nvidia_gpu_present", lambda: False)
    assert auto_backend(EmbedderConfig()) == "onnx"
    assert auto_backend(EmbedderConfig(device="cuda")) == "sentence-transformers"
    assert auto_backend(EmbedderConfig(device="cuda:1")) == "sentence-transformers"
    monkeypatch.setattr("ragtune.knowledge.embedders.nvidia_gpu_present", lambda: True)
    assert auto_backend(EmbedderConfig()) == "sentence-transformers"  # a GPU: torch
    assert auto_backend(EmbedderConfig(device="cpu")) == "onnx"  # unless the CPU is asked for
