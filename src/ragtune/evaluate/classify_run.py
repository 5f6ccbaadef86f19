"""Run the classify strategies on one split and write results/<strategy>.json for each.

Every strategy is scored on the same test examples (paired comparisons need that), with per-query
latency measured one text at a time (the serving path, not a batch), the update absorbed the way
the strategy really would (`classify_models`), and forgetting measured where an encoder was
fine-tuned: retrieval MRR@10 on a general query/positive set, base encoder vs fine-tuned encoder.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ragtune.evaluate.classify_models import ClassifyModel, mean_pooled
from ragtune.evaluate.datasets import ClassifyData
from ragtune.evaluate.records import base_record, latency_by_stage, metric, skipped
from ragtune.evaluate.stats import interval_of


STRATEGIES = {
    "zero-shot": ("zero-shot", "cosine similarity of the text to each label's description (no training)"),
    "knn": ("rag", "retrieval over the labelled training examples, similarity-weighted vote of the 10 nearest"),
    "linear-probe": ("linear-probe", "logistic regression on the frozen embedder's vectors"),
    "finetune": ("finetune", "the encoder fine-tuned with a classification head"),
    "finetune+knn-encoder": ("hybrid", "kNN vote over examples embedded by the fine-tuned encoder"),
    "finetune+knn-vote": ("hybrid", "mean of the fine-tuned classifier's probabilities and the kNN vote"),
}
LATENCY_SAMPLE = 40


class ClassifyRun:
    """State shared by the strategies of one comparison: the embedder cache and the fine-tuned classifier."""

    def __init__(self, data: ClassifyData, compare, embedder, embedder_config, work: Path, progress: bool = True,
                 echo: Callable[[str], None] = print):
        self.data, self.compare, self.embedder, self.embedder_config = data, compare, embedder, embedder_config
        self.work, self.progress, self.echo = work, progress, echo
        self.labels = sorted(data.labels)
        self._cache: dict[str, np.ndarray] = {}
        self._classifiers: dict[str, tuple[object, float, Path]] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """The project embedder, with a cache so shared texts are embedded once per run."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, self.embedder.embed(missing)))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, self.embedder.dimension), dtype=np.float32)

    def embed_uncached(self, texts: list[str]) -> np.ndarray:
        """Embedded now (what a timed step really costs); the vectors then join the cache."""
        vectors = self.embedder.embed(list(texts)) if texts else np.zeros((0, self.embedder.dimension), dtype=np.float32)
        self._cache.update(zip(texts, vectors))
        return vectors

    # --- the fine-tuned classifier (trained once, shared by three strategies) --------------------
    def classifier(self, key: str, rows: list[dict]):
        """(Classifier, training seconds, folder) for training rows `rows`, trained on first use."""
        if key not in self._classifiers:
            from ragtune.train.classifier import load_classifier, train_classifier
            from ragtune.train.common import TrainOptions

            out = self.work / "models" / f"classifier-{key}"
            shutil.rmtree(out, ignore_errors=True)  # a new comparison trains from scratch, never resumes an old run
            options = TrainOptions(output_dir=str(out), epochs=self.compare.epochs, learning_rate=self.compare.learning_rate,
                                   seed=self.compare.seed, batch_size=16, logging_steps=5, save_total_limit=1)
            self.echo(f"  training the classifier ({key}: {len(rows)} examples, {self.compare.epochs:g} epochs)")
            started = time.perf_counter()
            train_classifier([{"text": r["text"], "label": r["label"]} for r in rows],
                             [{"text": r["text"], "label": r["label"]} for r in self.data.validation] or None,
                             model=self.embedder_config.model, mode="full", options=options, progress=self.progress)
            seconds = time.perf_counter() - started
            self._classifiers[key] = (load_classifier(out, device="cpu"), seconds, out)
        return self._classifiers[key]

    # --- building each strategy ------------------------------------------------------------------
    def build(self, strategy: str, rows: list[dict], labels: dict[str, str], key: str) -> tuple[ClassifyModel, float]:
        """The strategy's model trained/indexed on `rows`; returns it with its one-time seconds."""
        started = time.perf_counter()
        texts, golds = [r["text"] for r in rows], [r["label"] for r in rows]
        if strategy == "zero-shot":
            return ClassifyModel(strategy, list(labels), embed=self.embed, label_descriptions=labels), 0.0
        if strategy == "knn":
            model = ClassifyModel(strategy, sorted(set(golds)), embed=self.embed, k=self.compare.knn_k, knn_encoder="base")
            model.add_examples(texts, golds, self.embed_uncached(texts))
            return model, time.perf_counter() - started
        if strategy == "linear-probe":
            model = ClassifyModel(strategy, sorted(set(golds)), embed=self.embed,
                                  probe=self._fit_probe(texts, golds, self.embed_uncached(texts)))
            return model, time.perf_counter() - started
        classifier, seconds, _ = self.classifier(key, rows)
        knn = {"finetune": None, "finetune+knn-encoder": "classifier", "finetune+knn-vote": "base"}[strategy]
        model = ClassifyModel(strategy, classifier.labels, embed=self.embed, k=self.compare.knn_k, classifier=classifier,
                              knn_encoder=knn)
        started = time.perf_counter()
        if knn:
            model.add_examples(texts, golds, None if knn == "classifier" else self.embed_uncached(texts))
        return model, seconds + time.perf_counter() - started

    def _fit_probe(self, texts: list[str], golds: list[str], x: np.ndarray):
        """Logistic regression on the vectors `x` of `texts`; C picked on the validation split
        (accuracy), then refit."""
        from ragtune.errors import require

        linear_model = require("sklearn.linear_model", "the linear-probe strategy", "train")
        valid = self.data.validation
        best_c = 10.0
        if valid:
            xv, yv = self.embed([r["text"] for r in valid]), [r["label"] for r in valid]
            scores = {c: linear_model.LogisticRegression(C=c, max_iter=2000).fit(x, golds).score(xv, yv)
                      for c in (1.0, 10.0, 100.0)}
            best_c = max(scores, key=scores.get)
        return linear_model.LogisticRegression(C=best_c, max_iter=2000).fit(x, golds)

    def absorb(self, strategy: str, model: ClassifyModel, rows: list[dict], labels: dict[str, str]) -> tuple[ClassifyModel, str]:
        """Apply the update as the strategy would: returns the updated model and how it absorbed it."""
        texts, golds = [r["text"] for r in rows], [r["label"] for r in rows]
        if strategy == "zero-shot":
            model.set_labels(labels)
            return model, "embed the new label's description"
        if strategy in ("knn", "finetune+knn-encoder", "finetune+knn-vote"):
            vectors = None if model.knn_encoder == "classifier" else self.embed_uncached(texts)
            model.add_examples(texts, golds, vectors)
            return model, "embed the new examples" + (" (no retraining)" if strategy == "finetune+knn-vote" else "")
        if strategy == "linear-probe":
            all_rows = self.data.train + rows
            x = np.vstack([self.embed([r["text"] for r in self.data.train]), self.embed_uncached(texts)])
            return ClassifyModel(strategy, sorted({r["label"] for r in all_rows}), embed=self.embed,
                                 probe=self._fit_probe([r["text"] for r in all_rows], [r["label"] for r in all_rows], x)), \
                "refit the regression"
        classifier, _, _ = self.classifier("update", self.data.train + rows)
        return ClassifyModel(strategy, classifier.labels, classifier=classifier), "retrain on old + new examples"


def _latencies(model: ClassifyModel, texts: list[str], embed: Callable[[list[str]], np.ndarray]) -> list[dict]:
    """Per-text timings, one text at a time (the serving path: the text is embedded, never taken
    from the run's cache), on a sample of the test texts: `embed` (the project embedder), `score`
    (everything else: the classifier's forward pass, the kNN vote, the regression) and `total`."""
    spent = {"embed": 0.0}

    def timed_embed(batch: list[str]) -> np.ndarray:
        started = time.perf_counter()
        try:
            return embed(batch)
        finally:
            spent["embed"] += time.perf_counter() - started

    cached, model.embed = model.embed, timed_embed
    try:
        model.predict(texts[:2])  # warm-up: first calls load weights and allocate
        out = []
        for text in texts[:LATENCY_SAMPLE]:
            spent["embed"] = 0.0
            started = time.perf_counter()
            model.predict([text])
            total = time.perf_counter() - started
            out.append({"embed": spent["embed"], "score": total - spent["embed"], "total": total})
    finally:
        model.embed = cached
    return out


def _scored(model: ClassifyModel, rows: list[dict], store_text: bool) -> list[dict]:
    predictions = model.predict([r["text"] for r in rows])
    return [{"id": r["id"], "gold": r["label"], "prediction": label, "probability": round(p, 4),
             "score": float(label == r["label"]), **({"input": r["text"]} if store_text else {})}
            for r, (label, p) in zip(rows, predictions)]


def quality(examples: list[dict], labels: list[str], seed: int) -> dict:
    """accuracy and macro-F1 with 95% bootstrap intervals, plus per-label F1."""
    from ragtune.train.classifier import classification_metrics

    index = {label: i for i, label in enumerate(sorted(set(labels) | {e["gold"] for e in examples} |
                                                       {e["prediction"] for e in examples}))}
    names = list(index)
    gold = np.array([index[e["gold"]] for e in examples])
    predicted = np.array([index[e["prediction"]] for e in examples])
    full = classification_metrics(gold, predicted, names)
    macro = interval_of(lambda rows: classification_metrics(gold[rows], predicted[rows], names)["macro_f1"],
                        len(examples), seed=seed)
    return {"accuracy": metric([e["score"] for e in examples], seed), "macro_f1": macro.as_dict(),
            "per_label_f1": {label: v["f1"] for label, v in full["per_label"].items() if v["support"]}}


def general_mrr(encode: Callable[[list[str]], np.ndarray], pairs: list[dict], seed: int) -> dict:
    """MRR@10 of each query's own positive among all the set's positives."""
    queries, positives = encode([p["query"] for p in pairs]), encode([p["positive"] for p in pairs])
    similarity = queries @ positives.T
    ranks = (similarity > np.diag(similarity)[:, None]).sum(axis=1) + 1
    return metric([1.0 / r if r <= 10 else 0.0 for r in ranks], seed)


def _general_pairs(path: Path) -> list[dict]:
    from ragtune.train.data import load_examples

    return [{"query": r["query"], "positive": r["positive"]} for r in load_examples(path, "pairs").rows]


def skip_reason(strategy: str, embedder_config) -> str | None:
    if strategy.startswith("finetune") and embedder_config.backend == "hashing":
        return "needs an encoder to fine-tune; the hashing embedder has no weights (set embedder.backend and model)"
    return None


def run_classify(data: ClassifyData, compare, embedder, embedder_config, results: Path, strategies: list[str],
                 *, progress: bool = True, echo: Callable[[str], None] = print,
                 general: Path | None = None) -> list[dict]:
    """Run each strategy and return its record; a strategy that cannot run (a missing extra, a
    model that will not load) is recorded as failed with the reason, and the others go on."""
    from ragtune.errors import RagtuneError

    run = ClassifyRun(data, compare, embedder, embedder_config, results, progress, echo)
    run.general_pairs = _general_pairs(general) if general else None
    run.general = general
    records = []
    for strategy in strategies:
        family, description = STRATEGIES[strategy]
        reason = skip_reason(strategy, embedder_config)
        if reason:
            records.append(skipped(strategy, family, "classify", reason, description))
            continue
        echo(f"- {strategy}: {description}")
        try:
            records.append(_run_one(run, strategy, family, description))
        except RagtuneError as exc:
            echo(f"  {strategy} failed: {exc}")
            records.append({**skipped(strategy, family, "classify", str(exc), description), "status": "failed"})
    return records


def _run_one(run: ClassifyRun, strategy: str, family: str, description: str) -> dict:
    data, compare, embedder_config, results = run.data, run.compare, run.embedder_config, run.work
    model, one_time = run.build(strategy, data.train, data.labels, "main")
    examples = _scored(model, data.test, compare.store_text)
    timings = _latencies(model, [r["text"] for r in data.test], run.embed_uncached)
    config = {"strategy": strategy, "embedder": embedder_config.model_dump(), "knn_k": compare.knn_k,
              **({"epochs": compare.epochs, "learning_rate": compare.learning_rate, "batch_size": 16}
                 if strategy.startswith("finetune") else {})}
    record = base_record(strategy, family, "classify", description, split=data.split, config=config,
                         seed=compare.seed, data=data.files, models={"embedder": embedder_config.model})
    record.update(primary_metric="accuracy", examples=examples, metrics=quality(examples, run.labels, compare.seed),
                  latency_ms=latency_by_stage(timings), tokens=None,
                  cost_per_1k_queries=1000 * float(np.mean([t["total"] for t in timings])) / 3600
                  * compare.constraints.price_per_gpu_hour,
                  one_time={"training_seconds" if strategy not in ("zero-shot", "knn") else "index_seconds": one_time})
    folder = results / "models" / strategy
    shutil.rmtree(folder, ignore_errors=True)
    model.save(folder, run.classifier("main", data.train)[2] if strategy.startswith("finetune") else None,
               embedder=run.embedder.info())
    record["model_folder"] = str(folder)
    if data.update_absorb:
        record["freshness"] = _freshness(run, strategy, model, data, compare)
    if run.general_pairs and strategy.startswith("finetune"):
        if getattr(run, "base_general", None) is None:
            run.echo("  forgetting: the general set with the base encoder")
            run.base_general = general_mrr(_base_encoder(embedder_config), run.general_pairs, compare.seed)
        classifier = run.classifier("main", data.train)[0]
        after = general_mrr(lambda texts: mean_pooled(classifier.model.base_model, classifier.tokenizer, texts),
                            run.general_pairs, compare.seed)
        record["forgetting"] = {"set": str(run.general), "metric": "mrr@10", "before": run.base_general, "after": after,
                                "note": "the base encoder vs the encoder fine-tuned inside the classifier"}
    return record


def _freshness(run: ClassifyRun, strategy: str, model: ClassifyModel, data: ClassifyData, compare) -> dict:
    before = _scored(model, data.update_test, False)
    started = time.perf_counter()
    updated, how = run.absorb(strategy, model, data.update_absorb, data.update_labels or data.labels)
    seconds = time.perf_counter() - started
    after = _scored(updated, data.update_test, False)
    new_labels = sorted({r["label"] for r in data.update_absorb} - set(data.labels))
    return {"update": f"{len(data.update_absorb)} examples absorbed" + (f", new label(s) {', '.join(new_labels)}" if new_labels else ""),
            "absorb": how, "absorb_seconds": seconds, "metric": "accuracy",
            "before": metric([e["score"] for e in before], compare.seed),
            "after": metric([e["score"] for e in after], compare.seed),
            "examples": [{"id": b["id"], "gold": b["gold"], "before": b["prediction"], "after": a["prediction"]}
                         for b, a in zip(before, after)]}


def _base_encoder(embedder_config) -> Callable[[list[str]], np.ndarray]:
    """The base model's encoder with the same mean pooling as the fine-tuned one (a fair before/after)."""
    from transformers import AutoModel, AutoTokenizer

    from ragtune.knowledge.embedders import resolve_model_path

    path = str(resolve_model_path(embedder_config.model, setting="embedder.model"))
    encoder, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    return lambda texts: mean_pooled(encoder, tokenizer, texts)


