"""The classify strategies as models: each predicts label probabilities for texts, absorbs new
labelled examples (and labels) the way it really would, and saves to a folder that
`load_classify_model` reloads for `ragtune classify` and the server.

| strategy               | what it is                                                          | absorbing an update      |
|------------------------|---------------------------------------------------------------------|--------------------------|
| `zero-shot`            | cosine similarity of the text to each label's description           | embed the new label text |
| `knn`                  | retrieval over the labelled examples, similarity-weighted vote      | embed the new examples   |
| `linear-probe`         | logistic regression on the frozen encoder's embeddings              | refit the regression     |
| `finetune`             | the encoder fine-tuned with a classification head                   | retrain                  |
| `finetune+knn-encoder` | kNN over examples embedded by the fine-tuned encoder                | embed the new examples   |
| `finetune+knn-vote`    | mean of the classifier's probabilities and the kNN vote             | embed (kNN side only)    |

>>> model = load_classify_model("results/models/knn", embedder)   # doctest: +SKIP
>>> model.predict(["the app crashes on my phone"])               # doctest: +SKIP
[('mobile', 0.71)]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ragtune.errors import InputError

Embed = Callable[[list[str]], np.ndarray]
MANIFEST = "strategy.json"
NEEDS_EMBEDDER = ("zero-shot", "knn", "linear-probe", "finetune+knn-vote")  # the rest run on the classifier alone


def knn_vote(queries: np.ndarray, vectors: np.ndarray, labels_of: list[str], labels: list[str], k: int) -> np.ndarray:
    """(n, len(labels)) vote shares of the k most similar examples, weighted by cosine similarity."""
    if len(vectors) == 0:
        return np.full((len(queries), len(labels)), 1 / len(labels), dtype=np.float32)
    with _blas_for(len(queries)):
        similarity = queries @ vectors.T  # (n, m)
    k = min(k, len(vectors))
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    column = {label: i for i, label in enumerate(labels)}
    votes = np.zeros((len(queries), len(labels)), dtype=np.float64)
    for row, neighbours in enumerate(top):
        for j in neighbours:
            votes[row, column[labels_of[j]]] += max(float(similarity[row, j]), 1e-6)
    return (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)


class ClassifyModel:
    """One strategy's model. `parts` decide what it is: label vectors (zero-shot), an example
    index (knn), a logistic regression (probe), a fine-tuned classifier, or two of them."""

    def __init__(self, strategy: str, labels: list[str], *, embed: Embed | None = None,
                 label_descriptions: dict[str, str] | None = None, k: int = 10, classifier=None,
                 knn_encoder: str | None = None, probe=None):
        self.strategy, self.labels, self.k = strategy, list(labels), k
        self.embed, self.classifier, self.knn_encoder, self.probe = embed, classifier, knn_encoder, probe
        self.label_descriptions = dict(label_descriptions or {})
        self.label_vectors = None
        self.vectors = np.zeros((0, 1), dtype=np.float32)
        self.example_labels: list[str] = []
        if label_descriptions:
            self.label_vectors = embed([label_descriptions[label] for label in self.labels])

    # --- encoders -------------------------------------------------------------------------------
    def _knn_embed(self, texts: list[str]) -> np.ndarray:
        return self.classifier_embed(texts) if self.knn_encoder == "classifier" else self.embed(texts)

    def classifier_embed(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled, unit-norm embeddings from the fine-tuned classifier's encoder."""
        return mean_pooled(self.classifier.model.base_model, self.classifier.tokenizer, texts, self.classifier.device)

    # --- building and absorbing -----------------------------------------------------------------
    def add_examples(self, texts: list[str], labels: list[str], vectors: np.ndarray | None = None) -> None:
        """Index labelled examples for the kNN vote (new labels join the label set)."""
        for label in labels:
            if label not in self.labels:
                self.labels.append(label)
        vectors = self._knn_embed(texts) if vectors is None else vectors
        self.vectors = vectors if len(self.example_labels) == 0 else np.vstack([self.vectors, vectors])
        self.example_labels += list(labels)

    def set_labels(self, descriptions: dict[str, str]) -> None:
        """zero-shot: the labels and their descriptions (embeds only the ones that changed)."""
        old = dict(zip(self.labels, self.label_vectors)) if self.label_vectors is not None else {}
        new = [label for label in descriptions if label not in old or descriptions[label] != self.label_descriptions.get(label)]
        fresh = dict(zip(new, self.embed([descriptions[label] for label in new]))) if new else {}
        self.labels, self.label_descriptions = list(descriptions), dict(descriptions)
        self.label_vectors = np.stack([fresh.get(label, old.get(label)) for label in self.labels])

    # --- prediction -----------------------------------------------------------------------------
    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(len(texts), len(self.labels)) scores that sum to 1 per row."""
        texts = list(texts)
        if self.strategy == "zero-shot":
            with _blas_for(len(texts)):
                similarity = self.embed(texts) @ self.label_vectors.T
            return _softmax(similarity / 0.05)  # cosine gaps are small; a low temperature keeps argmax and spreads scores
        if self.strategy == "linear-probe":
            vectors = self.embed(texts)
            with _blas_for(len(texts)):
                return self._align(self.probe.predict_proba(vectors), [str(c) for c in self.probe.classes_])
        parts = []
        if self.classifier is not None and self.strategy != "finetune+knn-encoder":
            parts.append(self._align(self.classifier.probabilities(texts), self.classifier.labels))
        if self.knn_encoder is not None:
            parts.append(knn_vote(self._knn_embed(texts), self.vectors, self.example_labels, self.labels, self.k))
        return np.mean(parts, axis=0)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        probabilities = self.probabilities(texts)
        best = probabilities.argmax(axis=1)
        return [(self.labels[b], float(probabilities[i, b])) for i, b in enumerate(best)]

    def _align(self, probabilities: np.ndarray, their_labels: list[str]) -> np.ndarray:
        """Columns reordered to self.labels; labels the part does not know get 0."""
        out = np.zeros((len(probabilities), len(self.labels)), dtype=np.float32)
        for j, label in enumerate(their_labels):
            out[:, self.labels.index(label)] = probabilities[:, j]
        return out

    # --- saving ---------------------------------------------------------------------------------
    def save(self, folder: Path, classifier_folder: Path | None = None, embedder: dict | None = None) -> Path:
        """Write the strategy to `folder` (the classifier is referenced by a path relative to it;
        `embedder` is the project embedder's info(), checked again when the folder is loaded)."""
        import os

        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"strategy": self.strategy, "labels": self.labels, "k": self.k, "knn_encoder": self.knn_encoder,
                    "label_descriptions": self.label_descriptions or None,
                    "classifier": os.path.relpath(classifier_folder, folder) if classifier_folder else None,
                    "embedder": embedder if self.strategy in NEEDS_EMBEDDER else None}
        if self.knn_encoder is not None:
            np.save(folder / "vectors.npy", self.vectors)
            (folder / "example_labels.json").write_text(json.dumps(self.example_labels), encoding="utf-8")
        if self.probe is not None:
            np.savez(folder / "probe.npz", coef=self.probe.coef_, intercept=self.probe.intercept_,
                     classes=np.array([str(c) for c in self.probe.classes_]))
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return folder


def _blas_for(n_queries: int):
    """One BLAS thread for a few queries (the serving path): a multi-threaded pool gains nothing on
    a 1 x m product and its spinning threads slow the next torch call; measured on TREC-6's 4.9k
    examples, 2 cores: finetune+knn-encoder 37 -> 12 ms per query (p50)."""
    import contextlib

    from ragtune.retrieve.dense import single_threaded_blas

    return single_threaded_blas() if n_queries <= 16 else contextlib.nullcontext()


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def mean_pooled(encoder, tokenizer, texts: list[str], device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Unit-norm mean of the last hidden states over real tokens (how MiniLM sentence embeddings are made)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[start:start + batch_size], truncation=True, max_length=256, padding=True,
                               return_tensors="pt").to(device)
            hidden = encoder(**inputs).last_hidden_state  # (B, T, H)
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


class _Probe:
    """A saved logistic regression: enough of scikit-learn's interface to predict."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray):
        self.coef_, self.intercept_, self.classes_ = coef, intercept, classes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.coef_.T + self.intercept_
        if logits.shape[1] == 1:  # binary: one column of log-odds
            p = 1 / (1 + np.exp(-logits[:, 0]))
            return np.stack([1 - p, p], axis=1)
        return _softmax(logits)


def load_classify_model(folder: str | Path, embedder=None) -> ClassifyModel:
    """A classify strategy saved by `ragtune compare` (or a plain classifier folder from
    `ragtune train classifier`). `embedder` (the project's) is needed by the strategies that embed
    texts, and must be the one the strategy was built with."""
    from ragtune.train.classifier import load_classifier

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        classifier = load_classifier(folder)
        return ClassifyModel("finetune", classifier.labels, classifier=classifier)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    strategy, labels = manifest["strategy"], manifest["labels"]
    classifier = load_classifier(folder / manifest["classifier"]) if manifest.get("classifier") else None
    probe = None
    if (folder / "probe.npz").is_file():
        saved = np.load(folder / "probe.npz")
        probe = _Probe(saved["coef"], saved["intercept"], saved["classes"])
    if strategy in NEEDS_EMBEDDER:
        if embedder is None:
            raise InputError(f"{folder}: the {strategy} strategy embeds texts: run it inside its project (-p FOLDER)")
        built, now = manifest.get("embedder") or {}, embedder.info()
        if built and (built.get("model"), built.get("fingerprint")) != (now.get("model"), now.get("fingerprint")):
            raise InputError(f"{folder}: the {strategy} strategy was built with the embedder {built.get('model')} "
                             f"({built.get('fingerprint')}); the project now uses {now.get('model')} "
                             f"({now.get('fingerprint')}). Run `ragtune compare --adopt` again.")
    embed = embedder.embed if embedder is not None else None
    model = ClassifyModel(strategy, labels, embed=embed, k=manifest.get("k", 10), classifier=classifier,
                          knn_encoder=manifest.get("knn_encoder"), probe=probe,
                          label_descriptions=manifest.get("label_descriptions") if strategy == "zero-shot" else None)
    if model.knn_encoder is not None:
        model.vectors = np.load(folder / "vectors.npy")
        model.example_labels = json.loads((folder / "example_labels.json").read_text(encoding="utf-8"))
    return model


def needs_embedder(folder: str | Path) -> bool:
    """Whether the saved strategy in `folder` embeds texts with the project's embedder."""
    path = Path(folder) / MANIFEST
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("strategy") in NEEDS_EMBEDDER
