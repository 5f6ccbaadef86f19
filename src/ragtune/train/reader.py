"""Extractive reader: an encoder (default all-MiniLM-L6-v2) with a span-extraction head, trained on
question / answer / context examples; scored with SQuAD exact match and F1.

Contexts longer than the window are read in overlapping windows (`max_length` tokens, `stride`
tokens shared by neighbours); a window that does not hold the whole answer is trained to point at
[CLS] ("no answer here"). A span's score is its probability in its window: softmax of the start
logits times softmax of the end logits, so scores are comparable across windows and sources.

>>> result = train_reader("qa.jsonl", "dev.jsonl", options=TrainOptions(output_dir="reader"))  # doctest: +SKIP
>>> result.metrics["validation"]                                                              # doctest: +SKIP
{'exact_match': 71.0, 'f1': 80.2, 'n': 100}

The output folder loads with `AutoModelForQuestionAnswering.from_pretrained(folder)`; in ragtune.yaml
`generator: {backend: reader, model: FOLDER}` answers with it (ragtune.generate.reader). It also
holds reader.json (window settings), metrics.json, train_log.jsonl, loss_curve.png, README.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ragtune.config import DEFAULT_EMBEDDER
from ragtune.errors import InputError
from ragtune.evaluate.metrics import squad_metrics
from ragtune.train.common import (CHECKPOINTS, RUN_FILE, TrainOptions, atomic_trainer, check_resumable,
                                  data_fingerprint, open_run_folder, run_training, train_summary, write_json_atomic,
                                  write_model_card)

DEFAULT_MODEL = DEFAULT_EMBEDDER
PRIMARY_METRIC = "f1"
SETTINGS_FILE = "reader.json"
MAX_ANSWER_TOKENS = 30


class ReaderResult(NamedTuple):
    output_dir: Path
    metrics: dict
    """{"train": {...}, "validation": {"exact_match", "f1", "n"}} (0-100, SQuAD style)."""


class Span(NamedTuple):
    context: int  # index of the context it was found in
    start: int  # character offsets into that context
    end: int
    probability: float  # p(start) * p(end) in its window, 0-1


# ---------------------------------------------------------------- windows and spans


def encode_windows(tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int,
                   padding: bool | str = "longest"):
    """Tokenized (question, context window) features of at most `max_length` tokens: the tokenizer's
    output plus `example` (feature -> example index) and `offsets` (character span per token,
    None outside the context). Training leaves padding to the collator (padding=False): each batch
    is padded only to its own longest window."""
    encoded = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True, padding=padding)
    example = encoded.pop("overflow_to_sample_mapping")
    offsets = []
    for i, window in enumerate(encoded.pop("offset_mapping")):
        sequence = encoded.sequence_ids(i)
        offsets.append([tuple(o) if sequence[t] == 1 else None for t, o in enumerate(window)])
    return encoded, example, offsets


def answer_positions(offsets: list, start_char: int, end_char: int) -> tuple[int, int]:
    """Token (start, end) of the answer in one window, or (0, 0) ([CLS]) when it is not all inside
    or there is none (an unanswerable example: empty answer, end_char == start_char)."""
    inside = [t for t, o in enumerate(offsets) if o is not None]
    if (end_char <= start_char or not inside or offsets[inside[0]][0] > start_char
            or offsets[inside[-1]][1] < end_char):
        return 0, 0
    start = next(t for t in inside if offsets[t][1] > start_char)
    end = next(t for t in reversed(inside) if offsets[t][0] < end_char)
    return start, end


def _softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    logits = np.where(mask, logits.astype(np.float64), -np.inf)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def best_window_span(start_logits, end_logits, offsets, attention_mask, max_answer_tokens: int = MAX_ANSWER_TOKENS,
                     top: int = 20) -> tuple[int, int, float] | None:
    """(start char, end char, probability) of the best span in one window; None without a valid one."""
    n = len(offsets)  # logits gathered from differently padded batches may be longer than the window
    mask = np.asarray(attention_mask, dtype=bool)[:n]
    p_start, p_end = _softmax(np.asarray(start_logits)[:n], mask), _softmax(np.asarray(end_logits)[:n], mask)
    best = None
    for s in np.argsort(-p_start)[:top]:
        for e in np.argsort(-p_end)[:top]:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_tokens:
                continue
            probability = float(p_start[s] * p_end[e])
            if best is None or probability > best[2]:
                best = (offsets[s][0], offsets[e][1], probability)
    return best


def _best_per_example(start_logits, end_logits, example, offsets, attention_mask, n_examples) -> list:
    best: list = [None] * n_examples
    for i in range(len(example)):
        found = best_window_span(start_logits[i], end_logits[i], offsets[i], attention_mask[i])
        if found and (best[example[i]] is None or found[2] > best[example[i]][2]):
            best[example[i]] = found
    return best


def read_spans(model, tokenizer, question: str, contexts: list[str], *, max_length: int = 384, stride: int = 128,
               batch_size: int = 16) -> list[Span]:
    """The best span of each context that has one, best first."""
    import torch

    if not contexts:
        return []
    encoded, example, offsets = encode_windows(tokenizer, [question] * len(contexts), contexts, max_length, stride)
    names = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    device = next(model.parameters()).device
    starts, ends = [], []
    with torch.inference_mode():
        for b in range(0, len(example), batch_size):
            batch = {k: torch.tensor(encoded[k][b:b + batch_size], device=device) for k in names}
            output = model(**batch)
            starts.append(output.start_logits.float().cpu().numpy())
            ends.append(output.end_logits.float().cpu().numpy())
    best = _best_per_example(np.concatenate(starts), np.concatenate(ends), example, offsets,
                             encoded["attention_mask"], len(contexts))
    spans = [Span(i, *found) for i, found in enumerate(best) if found is not None]
    return sorted(spans, key=lambda span: -span.probability)


# ---------------------------------------------------------------- training


def _qa_rows(examples) -> list[dict]:
    """Rows with a context and the answer's character offset (found when not given)."""
    missing = [line for line, row in zip(examples.lines, examples.rows) if not row.get("context")]
    if missing:
        lines = ", ".join(f"{examples.source}:{line}" for line in missing[:10])
        raise InputError(f"{lines}: field 'context' is missing: an extractive reader learns to find the answer "
                         f"inside its context; add a context to every row")
    rows = []
    for row in examples.rows:
        start = row.get("answer_start")
        rows.append({**row, "answer_start": row["context"].find(row["answer"]) if start is None else start})
    return rows


def _features(tokenizer, rows: list[dict], max_length: int, stride: int):
    encoded, example, offsets = encode_windows(tokenizer, [r["question"] for r in rows], [r["context"] for r in rows],
                                               max_length, stride, padding=False)
    names = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    features = []
    for i, e in enumerate(example):
        start_char = rows[e]["answer_start"]
        start, end = answer_positions(offsets[i], start_char, start_char + len(rows[e]["answer"]))
        features.append({**{k: encoded[k][i] for k in names}, "start_positions": start, "end_positions": end})
    return features, example, offsets


def train_reader(train: Any, validation: Any = None, *, model: str = DEFAULT_MODEL, options: TrainOptions | None = None,
                 columns: dict[str, str] | None = None, max_length: int = 384, stride: int = 128,
                 callbacks: list | None = None, progress: bool = True) -> ReaderResult:
    """Fine-tune `model` with a span head on `train` (question, answer, context[, answer_start]);
    pick the best step by F1 on `validation`. `max_length`/`stride` set the reading window
    (TrainOptions.max_length is not used: a reader needs windows longer than its default)."""
    from ragtune.train.data import load_examples

    options = options or TrainOptions()
    if not 0 <= stride < max_length // 2:
        raise InputError(f"stride {stride} must be under half the window ({max_length} tokens)")
    splits = {"train": load_examples(train, "qa", columns)}
    if validation is not None:
        splits["validation"] = load_examples(validation, "qa", columns)
    rows = {name: _qa_rows(examples) for name, examples in splits.items()}
    from ragtune.knowledge.embedders import resolve_model_path

    model_path = resolve_model_path(model, setting="--model")
    out = Path(options.output_dir)
    record = {"task": "reader", "base_model": model, "options": options.model_dump(), "max_length": max_length,
              "stride": stride, "data": {name: data_fingerprint(examples) for name, examples in splits.items()}}
    check_resumable(out / RUN_FILE, record, options)

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, Trainer, set_seed

    from ragtune.train.common import quiet_transformers, training_arguments

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    if not tokenizer.is_fast:
        raise InputError(f"{model}: the reader needs a fast tokenizer (character offsets); this model has none")
    features = {name: _features(tokenizer, split_rows, max_length, stride) for name, split_rows in rows.items()}
    set_seed(options.seed)  # the new head's initial weights
    with quiet_transformers():  # the span head is reported as missing weights, as intended
        network = AutoModelForQuestionAnswering.from_pretrained(str(model_path))
    args = training_arguments(options, output_dir=out / CHECKPOINTS, has_validation="validation" in features,
                              primary_metric=PRIMARY_METRIC, progress=progress)
    open_run_folder(out, record)

    def compute_metrics(prediction) -> dict:
        start_logits, end_logits = prediction.predictions[:2]
        valid, example, offsets = features["validation"]
        best = _best_per_example(start_logits, end_logits, example, offsets, [f["attention_mask"] for f in valid],
                                 len(rows["validation"]))
        answers = [r["context"][b[0]:b[1]] if b else "" for r, b in zip(rows["validation"], best)]
        scores = squad_metrics(answers, [r["answer"] for r in rows["validation"]])
        return {"exact_match": scores["exact_match"], "f1": scores["f1"]}

    trainer = atomic_trainer(Trainer)(
        model=network, args=args, train_dataset=features["train"][0], eval_dataset=features.get("validation", [None])[0],
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics if "validation" in features else None, callbacks=callbacks)
    output = run_training(trainer, options, out, title="reader loss (span start + end)")
    metrics: dict = {"train": train_summary(trainer, output, windows=len(features["train"][0]))}
    if "validation" in features:
        result = trainer.evaluate(metric_key_prefix="validation")
        metrics["validation"] = {"exact_match": result["validation_exact_match"], "f1": result["validation_f1"],
                                 "loss": result.get("validation_loss"), "n": len(rows["validation"])}

    if trainer.is_world_process_zero():
        with quiet_transformers():
            tokenizer.save_pretrained(str(out))
            trainer.model.save_pretrained(str(out))
        write_json_atomic(out / SETTINGS_FILE, {"max_length": max_length, "stride": stride})
        write_json_atomic(out / "metrics.json", metrics)
        write_model_card(out, title=f"Extractive reader fine-tuned from {model}", base_model=model,
                         task="extractive question answering", data=record["data"], options=options,
                         metrics={k: v for k, v in metrics.items() if k == "validation"}, pipeline_tag="question-answering",
                         details={"Window": f"{max_length} tokens, stride {stride}", "Steps": output.global_step,
                                  "Use": f"generator: {{backend: reader, model: {out}}} in ragtune.yaml"})
    return ReaderResult(out, metrics)


def reader_settings(folder: str | Path) -> dict:
    """The window settings a reader was trained with (defaults for other QA folders)."""
    path = Path(folder) / SETTINGS_FILE
    return {"max_length": 384, "stride": 128, **(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {})}
