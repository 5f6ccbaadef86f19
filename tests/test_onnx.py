"""ONNX Runtime backends: parity with torch on tiny models, caching, and rebuild of a bad export."""
from __future__ import annotations

import numpy as np
import pytest

from ragtune.config import EmbedderConfig
from ragtune.knowledge.embedders import SentenceTransformerEmbedder, create_embedder
from ragtune.knowledge.onnx import OnnxCrossEncoder, OnnxEmbedder
from tests.tiny_models import tiny_cross_encoder, tiny_sentence_model

TEXTS = ["the sync daemon listens on port 7741", "restore a backup archive", "dogs bark",
         "webhooks are signed with a secret and rate limits apply per token per minute " * 3]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory):
    return tiny_sentence_model(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture(autouse=True)
def isolated_cache(cache, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(cache))


def test_fp32_matches_torch(sentence_model):
    torch_vectors = SentenceTransformerEmbedder(EmbedderConfig(model=str(sentence_model))).embed(TEXTS)
    onnx = create_embedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="none"))
    assert isinstance(onnx, OnnxEmbedder)
    onnx_vectors = onnx.embed(TEXTS)
    assert onnx_vectors.shape == torch_vectors.shape
    cosine = (onnx_vectors * torch_vectors).sum(1)
    assert cosine.min() >= 1 - 1e-4, cosine
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, rtol=1e-5)


def test_int8_stays_close_and_records_backend(sentence_model):
    torch_vectors = SentenceTransformerEmbedder(EmbedderConfig(model=str(sentence_model))).embed(TEXTS)
    int8 = OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="int8"))
    assert (int8.embed(TEXTS) * torch_vectors).sum(1).min() > 0.9
    info = int8.info()
    assert info["backend"] == "onnx-int8"
    assert info["fingerprint"] == SentenceTransformerEmbedder(EmbedderConfig(model=str(sentence_model))).info()["fingerprint"]


def test_token_spans_match_the_torch_tokenizer(sentence_model):
    torch_side = SentenceTransformerEmbedder(EmbedderConfig(model=str(sentence_model)))
    onnx_side = OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="none"))
    assert onnx_side.token_spans(TEXTS) == torch_side.token_spans(TEXTS)
    assert onnx_side.max_tokens == torch_side.max_tokens


def test_damaged_export_is_rebuilt(sentence_model, cache, capfd):
    first = OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="none")).embed(TEXTS)
    exported = list((cache / "onnx").glob("*-embedder-fp32-*/model.onnx"))
    assert len(exported) == 1
    exported[0].write_bytes(b"not an onnx model")
    capfd.readouterr()
    again = OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="none")).embed(TEXTS)
    assert "exporting" in capfd.readouterr().err
    np.testing.assert_allclose(again, first, atol=1e-6)


def test_cross_encoder_matches_torch(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tiny_cross_encoder(tmp_path / "ce")
    pairs = [("where does the daemon listen", "the sync daemon listens on port 7741"),
             ("how to restore", "dogs bark at night"), ("backup", "restore a backup archive " * 10)]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = BertForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        expected = model(**tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True,
                                     return_tensors="pt")).logits[:, 0].numpy()
    got = OnnxCrossEncoder(str(folder), quantize=None).predict(pairs)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert OnnxCrossEncoder(str(folder), quantize="int8").predict(pairs).shape == (3,)


def test_batches_bound_texts_and_padded_tokens(sentence_model, monkeypatch):
    """Forward passes hold at most batch_size texts and TOKENS_PER_BATCH padded tokens (a single
    longer text goes alone), longest first; every text is embedded once, as it would be alone."""
    import ragtune.knowledge.onnx as onnx_module

    embedder = OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="none", batch_size=4))
    session = embedder.session
    lengths = [3, 50, 7, 7, 120, 2, 9, 64, 1, 30, 30, 30]
    monkeypatch.setattr(onnx_module, "TOKENS_PER_BATCH", 128)
    batches = session.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        widths = [lengths[i] for i in batch]
        assert widths == sorted(widths, reverse=True) and len(batch) <= 4
        assert len(batch) == 1 or len(batch) * widths[0] <= 128
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    texts = [" ".join(["word"] * n) for n in (1, 40, 3, 12, 25, 2, 70)]
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_loading_a_session_leaves_the_callers_floating_point_state_alone(sentence_model):
    """onnxruntime's denormal flush (set for speed) must not leak into the calling thread: numpy
    and the user's code keep IEEE subnormals (hypothesis, for one, refuses to run without them)."""
    def subnormals_work() -> bool:
        return float(np.float64(5e-324) * np.float64(1.0)) != 0.0

    assert subnormals_work()
    embedder = OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="int8"))
    embedder.embed(TEXTS)
    assert subnormals_work()


def test_a_new_export_format_removes_the_old_exports_of_the_same_weights(sentence_model, tmp_path, monkeypatch):
    from ragtune.knowledge.embedders import weights_fingerprint
    from ragtune.knowledge.onnx import EXPORT_VERSION

    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "fresh-cache"))
    fingerprint = weights_fingerprint(sentence_model)
    onnx_dir = tmp_path / "fresh-cache" / "onnx"
    stale = onnx_dir / f"{fingerprint}-embedder-int8-v{EXPORT_VERSION - 1}"
    other = onnx_dir / f"0123456789abcdef-embedder-int8-v{EXPORT_VERSION - 1}"  # other weights: kept
    for folder in (stale, other):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"old")
    OnnxEmbedder(EmbedderConfig(backend="onnx", model=str(sentence_model), quantize="int8")).embed(TEXTS)
    assert (onnx_dir / f"{fingerprint}-embedder-int8-v{EXPORT_VERSION}" / "model.onnx").is_file()
    assert not stale.exists() and other.exists()
