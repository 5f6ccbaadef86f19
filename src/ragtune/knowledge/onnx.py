"""ONNX Runtime inference for encoder models: a sentence embedder and a cross-encoder scorer.

The first use exports the model with our own `torch.onnx.export` (pooling and normalisation are
inside the graph, so the output is the final embedding), optionally quantizes it to dynamic int8
**per channel** with onnxruntime, and caches it under `cache_dir()/onnx/<key>/`, keyed by a
fingerprint of the source weights. Later runs need only onnxruntime and tokenizers (no torch),
which also makes `ragtune search` start fast. A cached export whose checksum or metadata does not
match is rebuilt.

>>> emb = OnnxEmbedder(EmbedderConfig(backend="onnx", quantize="int8"))   # doctest: +SKIP
>>> emb.embed(["hello"]).shape
(1, 384)
"""
from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
import os
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from ragtune.config import EmbedderConfig
from ragtune.errors import require
from ragtune.knowledge.embedders import cache_dir, max_seq_length, resolve_model_path, weights_fingerprint
from ragtune.registry import register

log = logging.getLogger(__name__)
EXPORT_VERSION = 2  # bump when the exported graph changes
OPSET = 17
# Padded tokens per forward pass (SciFact documents, int8, 2 cores: 1024 -> 75, 2048 -> 77-81, 4096 -> 70,
# unlimited (32 x 256) -> 60 documents/s; short queries all fit in one pass either way).
TOKENS_PER_BATCH = 2048


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pooling(model_path: Path) -> str:
    """'mean' or 'cls', from the sentence-transformers pooling config (mean when absent)."""
    modules = model_path / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Pooling"):
                config = json.loads((model_path / module["path"] / "config.json").read_text())
                if config.get("pooling_mode_cls_token"):
                    return "cls"
                if config.get("pooling_mode_mean_tokens", True):
                    return "mean"
                raise ValueError(f"{model_path}: only mean or CLS pooling can be exported to ONNX")
    return "mean"


def export(model_path: Path, kind: str, quantize: str | None) -> Path:
    """Path of the cached ONNX file for (weights, kind, quantize), exporting it on first use."""
    fingerprint = weights_fingerprint(model_path)
    key = f"{fingerprint}-{kind}-{quantize or 'fp32'}-v{EXPORT_VERSION}"
    folder = cache_dir() / "onnx" / key
    onnx_file, meta_file = folder / "model.onnx", folder / "meta.json"
    if meta_file.exists() and onnx_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("key") == key and meta.get("sha256") == _sha256(onnx_file):
                return onnx_file
        except (OSError, ValueError):
            pass
        log.warning("cached ONNX export in %s is stale or damaged; rebuilding", folder)
        shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    sys.stderr.write(f"ragtune: exporting {model_path} to ONNX ({quantize or 'fp32'}) once, into {folder} ...\n")
    tmp = folder.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    try:
        fp32 = tmp / "fp32.onnx"
        _torch_export(model_path, kind, fp32)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root, level = logging.getLogger(), logging.getLogger().level
            root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing tip on the root logger
            try:
                quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.setLevel(level)
            fp32.unlink()
        else:
            fp32.rename(tmp / "model.onnx")
        (tmp / "meta.json").write_text(json.dumps({"key": key, "source": str(model_path), "kind": kind,
                                                   "quantize": quantize, "sha256": _sha256(tmp / "model.onnx")}))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        for older in folder.parent.glob(f"{fingerprint}-{kind}-{quantize or 'fp32'}-v*"):
            if older != folder and older.is_dir():  # the same weights in an earlier export format
                shutil.rmtree(older, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sys.stderr.write(f"ragtune: ONNX export done in {time.perf_counter() - started:.1f} s\n")
    return onnx_file


def _torch_export(model_path: Path, kind: str, target: Path) -> None:
    require("torch", "exporting a model to ONNX", "onnx")
    require("onnx", "exporting a model to ONNX", "onnx")
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    loader = AutoModelForSequenceClassification if kind == "cross-encoder" else AutoModel
    # Eager attention: the SDPA path exports a NaN guard (IsNaN + Where over every (batch, head,
    # token, token) score) that took 40-47% of the int8 graph's time on 256-token documents.
    model = loader.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager").eval()
    pooling = _pooling(model_path) if kind == "embedder" else None
    uses_types = getattr(model.config, "type_vocab_size", 0) > 1

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
            if kind == "cross-encoder":
                return out.logits  # (B, labels)
            hidden = out.last_hidden_state  # (B, T, H)
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_types else [])
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                  for n in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["output"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Graph(), dummy, str(target), input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


class _Session:
    """Tokenizer + onnxruntime session shared by the embedder and the cross-encoder."""

    def __init__(self, model_path: Path, kind: str, quantize: str | None, batch_size: int):
        ort = require("onnxruntime", "the ONNX backend", "onnx")
        from tokenizers import Tokenizer

        self.max_length = max_seq_length(model_path)
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("RAGTUNE_THREADS", 0)) or (os.cpu_count() or 1)
        options.log_severity_level = 3
        # No busy-waiting between ops: on a shared 2-core machine spinning threads made one-query
        # embedding 3x slower (178 vs 56 ms at load 4.8); on a quiet machine the cost is small.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Padding positions drive softmax scores to denormals, which the CPU handles slowly: a batch
        # of 256-token documents with half its rows padded ran at 49 instead of 60 documents/s.
        # onnxruntime flushes denormals to zero on its pool threads and on the thread that creates
        # the session, so the session is created on a thread of its own: the caller's floating-point
        # state (numpy, the user's code) stays IEEE.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        onnx_file = str(export(model_path, kind, quantize))
        with ThreadPoolExecutor(1, thread_name_prefix="ragtune-onnx-load") as loader:
            self.session = loader.submit(ort.InferenceSession, onnx_file, options,
                                         providers=["CPUExecutionProvider"]).result()
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Positions grouped into forward passes: longest first (little padding), at most
        `batch_size` texts and TOKENS_PER_BATCH padded tokens each, so that the attention scores,
        (texts x 12 heads x width x width) floats, stay in cache."""
        order = [int(i) for i in np.argsort([-n for n in lengths], kind="stable")]
        out: list[list[int]] = []
        for i in order:
            if out and len(out[-1]) < self.batch_size and (len(out[-1]) + 1) * lengths[out[-1][0]] <= TOKENS_PER_BATCH:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def run(self, encodings) -> np.ndarray:
        """Model output for tokenizer encodings, batched by length to limit padding."""
        out: list[np.ndarray] = [None] * len(encodings)  # type: ignore[list-item]
        for positions in self.batches([len(e.ids) for e in encodings]):
            batch = [encodings[i] for i in positions]
            width = len(batch[0].ids)
            ids = np.zeros((len(batch), width), dtype=np.int64)  # (B, T)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, e in enumerate(batch):
                ids[row, :len(e.ids)], mask[row, :len(e.ids)], types[row, :len(e.ids)] = e.ids, 1, e.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            result = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
            for row, index in enumerate(positions):
                out[index] = result[row]
        return np.stack(out).astype(np.float32)


class OnnxEmbedder:
    """Sentence embedder on ONNX Runtime; same pooling and normalisation as sentence-transformers."""

    def __init__(self, config: EmbedderConfig):
        self.config = config
        self._session: _Session | None = None
        self._dimension: int | None = None
        self._span_tokenizer = None

    @cached_property
    def path(self) -> Path:
        """Local folder of the configured model (resolved once)."""
        return resolve_model_path(self.config.model)

    @property
    def session(self) -> _Session:
        if self._session is None:
            self._session = _Session(self.path, "embedder", self.quantize, self.config.batch_size)
        return self._session

    @property
    def quantize(self) -> str | None:
        return None if self.config.quantize == "none" else self.config.quantize

    @property
    def max_tokens(self) -> int:
        return max_seq_length(self.path) - 2

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.embed(["dimension probe"]).shape[1])
        return self._dimension

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.session.run(self.session.tokenizer.encode_batch(list(texts)))

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        if self._span_tokenizer is None:
            from tokenizers import Tokenizer

            self._span_tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
            self._span_tokenizer.no_truncation()
            self._span_tokenizer.no_padding()
        encodings = self._span_tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.offsets) for e in encodings]

    @cached_property
    def fingerprint(self) -> str:
        """The weights' fingerprint, taken once: this instance serves the weights it loaded."""
        return weights_fingerprint(self.path)

    def info(self) -> dict:
        return {"backend": f"onnx-{self.quantize or 'fp32'}", "model": self.config.model,
                "fingerprint": self.fingerprint, "dimension": self.dimension}


class OnnxCrossEncoder:
    """Cross-encoder (sequence-pair classifier) on ONNX Runtime: `predict(pairs)` -> raw logits.

    For a single-label reranker the logit is the relevance score (apply a sigmoid for 0..1)."""

    def __init__(self, model: str, quantize: str | None = "int8", batch_size: int = 32):
        self.model, self.quantize, self.batch_size = model, quantize, batch_size
        self._session: _Session | None = None

    @property
    def session(self) -> _Session:
        if self._session is None:
            self._session = _Session(resolve_model_path(self.model, "rag.rerank.model"), "cross-encoder",
                                     self.quantize, self.batch_size)
        return self._session

    def predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        logits = self.session.run(self.session.tokenizer.encode_batch([tuple(p) for p in pairs]))  # (N, labels)
        return logits[:, 0] if logits.shape[1] == 1 else logits


register("embedder", "onnx", OnnxEmbedder)
