"""Text classifier: an encoder (default all-MiniLM-L6-v2) with a classification head, trained in
one of three modes, evaluated with accuracy, macro-F1 and a confusion matrix.

- `full`:  every weight is trained.
- `lora`:  low-rank adapters on the attention query/value projections; the head (pooler and
           classifier) is trained in full. Saved merged into the base, plus the adapter alone.
- `probe`: the encoder is frozen, only the head learns (a linear probe on the pooled output).

>>> result = train_classifier("train.jsonl", "dev.jsonl", options=TrainOptions(output_dir="clf"))  # doctest: +SKIP
>>> load_classifier("clf").classify(["what a lovely film"])                                        # doctest: +SKIP
[('positive', 0.97)]

The output folder loads with `AutoModelForSequenceClassification.from_pretrained(folder)`; it also
holds metrics.json, predictions_<split>.jsonl (line, gold, predicted, probability; no text),
train_log.jsonl, loss_curve.png, README.md (model card) and checkpoints/.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ragtune.config import DEFAULT_EMBEDDER
from ragtune.errors import InputError, require
from ragtune.train.common import (CHECKPOINTS, RUN_FILE, LoraOptions, TrainOptions, atomic_trainer, check_resumable,
                                  data_fingerprint, lora_target_modules, open_run_folder, run_training,
                                  train_summary, write_json_atomic, write_model_card)

log = logging.getLogger(__name__)

MODES = ("full", "lora", "probe")
DEFAULT_MODEL = DEFAULT_EMBEDDER
PRIMARY_METRIC = "macro_f1"
_HEAD_MODULES = ("pre_classifier", "classifier", "score", "pooler")


class ClassifierResult(NamedTuple):
    output_dir: Path
    labels: list[str]
    metrics: dict
    """{"validation": {...}, "test": {...}, "train": {...}}: see `classification_metrics`."""
    predictions: dict
    """Split name -> predicted label per example, in data order."""
    world_size: int
    """Processes that trained together (2 under `torchrun --nproc_per_node 2`)."""


def classification_metrics(gold: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 (over the labels seen in gold or predictions, as scikit-learn does),
    per-label precision/recall/F1/support and the confusion matrix (rows gold, columns predicted)."""
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    tp = np.diag(confusion).astype(float)
    support, guessed = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(tp, guessed, out=np.zeros(k), where=guessed > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    seen = (support > 0) | (guessed > 0)
    return {
        "n": len(gold),
        "accuracy": float(tp.sum() / max(len(gold), 1)),
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "per_label": {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                              "support": int(support[i])} for i, label in enumerate(labels)},
        "confusion_matrix": confusion.tolist(),
    }


def _encode(tokenizer, examples, label_ids: dict[str, int], max_length: int) -> list[dict]:
    """Token ids per example, unpadded (DataCollatorWithPadding pads each batch to its longest)."""
    encoded = tokenizer([row["text"] for row in examples.rows], truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    return [{**{key: encoded[key][i] for key in keys}, "labels": label_ids[row["label"]]}
            for i, row in enumerate(examples.rows)]


def _head_modules(model) -> list[str]:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [name for name in _HEAD_MODULES if name in names]


def _prepare_mode(model, mode: str, lora: LoraOptions):
    """Freeze or wrap `model` for `mode`; returns the model to train."""
    if mode == "probe":
        for name, parameter in model.base_model.named_parameters():
            parameter.requires_grad = "pooler" in name  # the pooler is part of the head
        return model
    if mode == "lora":
        peft = require("peft", "LoRA fine-tuning", "train")
        config = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha,
                                 lora_dropout=lora.dropout, target_modules=lora.target_modules or lora_target_modules(model),
                                 modules_to_save=_head_modules(model))
        return peft.get_peft_model(model, config)
    return model


def _load_split(source, columns, labels):
    from ragtune.train.data import load_examples

    if source is None:
        return None
    return load_examples(source, "classification", columns, labels=labels)


def train_classifier(train: Any, validation: Any = None, test: Any = None, *, model: str = DEFAULT_MODEL,
                     mode: str = "full", options: TrainOptions | None = None, columns: dict[str, str] | None = None,
                     text_column: str | None = None, label_column: str | None = None,
                     lora: LoraOptions | None = None, callbacks: list | None = None,
                     progress: bool = True) -> ClassifierResult:
    """Fine-tune `model` with a classification head on `train` (a file, datasets.Dataset or list
    of dicts with text and label); pick the best step on `validation`; report on `test`."""
    options = options or TrainOptions()
    lora = lora or LoraOptions()
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
    columns = {**(columns or {}), **({"text": text_column} if text_column else {}),
               **({"label": label_column} if label_column else {})} or None
    # Everything a user can get wrong is checked before the output folder is touched.
    train_examples = _load_split(train, columns, None)
    labels = train_examples.labels()
    if len(labels) < 2:
        raise InputError(f"{train_examples.source}: only one label ({', '.join(labels)}): a classifier needs two or more")
    splits = {"train": train_examples, "validation": _load_split(validation, columns, labels),
              "test": _load_split(test, columns, labels)}
    splits = {name: examples for name, examples in splits.items() if examples is not None}
    from ragtune.knowledge.embedders import resolve_model_path

    model_path = resolve_model_path(model, setting="--model")
    out = Path(options.output_dir)
    record = {"task": "classifier", "base_model": model, "mode": mode, "labels": labels,
              "options": options.model_dump(), "lora": lora.model_dump() if mode == "lora" else None,
              "data": {name: data_fingerprint(examples) for name, examples in splits.items()}}
    check_resumable(out / RUN_FILE, record, options)

    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              set_seed)

    from ragtune.train.common import quiet_transformers, training_arguments

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    label_ids = {label: i for i, label in enumerate(labels)}
    encoded = {name: _encode(tokenizer, examples, label_ids, options.max_length) for name, examples in splits.items()}
    set_seed(options.seed)  # the new head's initial weights
    with quiet_transformers():  # the new head is reported as missing weights, as intended
        network = AutoModelForSequenceClassification.from_pretrained(
            str(model_path), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_ids,
            problem_type="single_label_classification", ignore_mismatched_sizes=True)
    network = _prepare_mode(network, mode, lora)
    args = training_arguments(options, output_dir=out / CHECKPOINTS, has_validation="validation" in encoded,
                              primary_metric=PRIMARY_METRIC, progress=progress)
    open_run_folder(out, record)

    def compute_metrics(prediction) -> dict:
        scores = classification_metrics(prediction.label_ids, np.argmax(prediction.predictions, axis=-1), labels)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}

    trainer = atomic_trainer(Trainer)(
        model=network, args=args, train_dataset=encoded["train"], eval_dataset=encoded.get("validation"),
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics, callbacks=callbacks)
    hints = [] if mode == "lora" else ["--mode lora (trains ~1% of the weights: far less optimizer memory)"]
    output = run_training(trainer, options, out, oom_hints=hints, title=f"classifier ({mode}) loss")

    metrics: dict = {"labels": labels, "mode": mode, "world_size": trainer.args.world_size,
                     "train": train_summary(trainer, output)}
    predictions: dict[str, list[str]] = {}
    rows_out: dict[str, list[dict]] = {}
    for name in ("validation", "test"):
        if name not in encoded:
            continue
        result = trainer.predict(encoded[name], metric_key_prefix=name)
        probabilities = torch.softmax(torch.from_numpy(np.asarray(result.predictions, dtype=np.float32)), dim=-1).numpy()
        predicted = probabilities.argmax(axis=-1)
        metrics[name] = {**classification_metrics(result.label_ids, predicted, labels),
                         "loss": result.metrics.get(f"{name}_loss")}
        predictions[name] = [labels[i] for i in predicted]
        rows_out[name] = [{"line": line, "gold": row["label"], "predicted": labels[p], "probability": float(probabilities[i, p])}
                          for i, (line, row, p) in enumerate(zip(splits[name].lines, splits[name].rows, predicted))]

    if trainer.is_world_process_zero():
        with quiet_transformers():
            _save_final(trainer, tokenizer, out, mode, options)
        for name, rows in rows_out.items():
            with open(out / f"predictions_{name}.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in rows)
        write_json_atomic(out / "metrics.json", metrics)
        card_metrics = {name: {k: metrics[name][k] for k in ("n", "accuracy", "macro_f1")}
                        for name in ("validation", "test") if name in metrics}
        write_model_card(out, title=f"Text classifier ({mode}) on {model}", base_model=model, task="text classification",
                         data=record["data"], options=options, metrics=card_metrics, pipeline_tag="text-classification",
                         details={"Mode": mode, "Labels": ", ".join(labels), "Steps": output.global_step,
                                  "Processes": trainer.args.world_size})
    return ClassifierResult(out, labels, metrics, predictions, trainer.args.world_size)


def _save_final(trainer, tokenizer, out: Path, mode: str, options: TrainOptions) -> None:
    """The trained model as a plain transformers folder (LoRA: merged, with the adapter in adapter/)."""
    tokenizer.model_max_length = options.max_length  # inference truncates as training did
    tokenizer.save_pretrained(str(out))
    model = trainer.model
    if mode == "lora":
        model.save_pretrained(str(out / "adapter"))
        model = model.merge_and_unload()
    model.save_pretrained(str(out))


class Classifier:
    """A trained classifier folder, loaded for prediction."""

    def __init__(self, folder: str | Path, *, device: str = "auto", batch_size: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(folder)
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        if not config.get("id2label") or not any(a.endswith("ForSequenceClassification") for a in config.get("architectures", [])):
            raise InputError(f"{folder}: not a trained classifier (no config.json with a classification head); "
                             f"train one with `ragtune train classifier`")
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        from ragtune.train.common import quiet_transformers

        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(self.device).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.batch_size = batch_size

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(len(texts), labels) softmax probabilities, float32."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                inputs = self.tokenizer([texts[i] for i in batch], truncation=True, padding=True, return_tensors="pt")
                logits = self.model(**inputs.to(self.device)).logits
                out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(label, probability) of the most likely label for each text."""
        probabilities = self.probabilities(list(texts))
        best = probabilities.argmax(axis=-1)
        return [(self.labels[b], float(probabilities[i, b])) for i, b in enumerate(best)]


def load_classifier(folder: str | Path, *, device: str = "auto") -> Classifier:
    """A classifier trained by `train_classifier` (or any sequence-classification folder)."""
    return Classifier(folder, device=device)
