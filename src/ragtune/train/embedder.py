"""Embedding model: a sentence-transformers encoder (default all-MiniLM-L6-v2) fine-tuned on
(query, positive[, negative]) pairs with in-batch negatives (MultipleNegativesRankingLoss).

Validation is cheap: the held-out queries search a small corpus made of their own positives plus
up to `distractors` other texts (the other pairs' positives and negatives, and chunks of `corpus`
when given), scored with nDCG@10; the whole knowledge base is never re-embedded during training.

>>> result = train_embedder("pairs.jsonl", "dev.jsonl", options=TrainOptions(output_dir="emb"))  # doctest: +SKIP
>>> result.metrics["validation"]["ndcg@10"]                                                        # doctest: +SKIP
0.81

The output folder is a sentence-transformers model: point `embedder.model` at it in ragtune.yaml
and run `ragtune index --reembed`. It also holds metrics.json, train_log.jsonl, loss_curve.png,
README.md (model card) and checkpoints/.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, NamedTuple

from ragtune.config import DEFAULT_EMBEDDER
from ragtune.train.common import (CHECKPOINTS, RUN_FILE, TrainOptions, arguments_as, atomic_trainer, check_resumable,
                                  data_fingerprint, open_run_folder, run_training, train_summary, write_json_atomic,
                                  write_model_card)
from ragtune.train.data import row_negatives

log = logging.getLogger(__name__)

DEFAULT_MODEL = DEFAULT_EMBEDDER
EVALUATOR_NAME = "validation"
PRIMARY_METRIC = f"{EVALUATOR_NAME}_cosine_ndcg@10"
_REPORTED = ("ndcg@10", "mrr@10", "accuracy@1", "accuracy@10")


class EmbedderResult(NamedTuple):
    output_dir: Path
    metrics: dict
    """{"train": {...}, "validation_before": {...}, "validation": {...}} (validation: ndcg@10, mrr@10, ...)."""


def _pair_columns(rows: list[dict]) -> dict[str, list[str]]:
    """Columns anchor, positive[, negative_1..n]: as many explicit negatives as every row has."""
    shared = min(len(row_negatives(row)) for row in rows)
    columns = {"anchor": [row["query"] for row in rows], "positive": [row["positive"] for row in rows]}
    for i in range(shared):
        columns[f"negative_{i + 1}"] = [row_negatives(row)[i] for row in rows]
    if shared == 0 and any(row_negatives(row) for row in rows):
        log.warning("some pairs have no negative: explicit negatives are not used (in-batch negatives only)")
    return columns


def validation_evaluator(validation_rows: list[dict], other_texts: list[str], *, distractors: int = 1000,
                         seed: int = 42, batch_size: int = 32):
    """InformationRetrievalEvaluator: each validation query against its positive among the
    validation positives plus up to `distractors` of `other_texts` (sampled, deduplicated)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    corpus: dict[str, str] = {}
    ids: dict[str, str] = {}

    def add(text: str) -> str:
        if text not in ids:
            ids[text] = f"d{len(ids)}"
            corpus[ids[text]] = text
        return ids[text]

    queries, relevant = {}, {}
    for i, row in enumerate(validation_rows):
        queries[f"q{i}"] = row["query"]
        relevant.setdefault(f"q{i}", set()).add(add(row["positive"]))
    pool = sorted({t for t in other_texts if t and t not in ids})
    random.Random(seed).shuffle(pool)
    for text in pool[:distractors]:
        add(text)
    return InformationRetrievalEvaluator(queries, corpus, relevant, name=EVALUATOR_NAME, batch_size=batch_size,
                                         show_progress_bar=False, write_csv=False)


def _scores(evaluator, model) -> dict:
    raw = evaluator(model)
    prefix = f"{EVALUATOR_NAME}_cosine_"
    return {key[len(prefix):]: float(value) for key, value in raw.items() if key.startswith(prefix)
            and key[len(prefix):] in _REPORTED}


def sentence_transformer_arguments(args):
    """`args` as SentenceTransformerTrainingArguments, with a batch sampler that never puts two
    equal texts in one batch (a duplicate would be a false in-batch negative)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    return arguments_as(SentenceTransformerTrainingArguments, args, batch_sampler="no_duplicates")


def train_embedder(train: Any, validation: Any = None, *, model: str = DEFAULT_MODEL, options: TrainOptions | None = None,
                   columns: dict[str, str] | None = None, corpus: list[str] | None = None, distractors: int = 1000,
                   callbacks: list | None = None, progress: bool = True) -> EmbedderResult:
    """Fine-tune the sentence-transformers `model` on `train` pairs (a file, datasets.Dataset or
    list of dicts with query, positive, optional negative); pick the best step on `validation`."""
    from ragtune.train.data import load_examples

    options = options or TrainOptions()
    # Everything a user can get wrong is checked before the output folder is touched.
    train_examples = load_examples(train, "pairs", columns)
    splits = {"train": train_examples}
    if validation is not None:
        splits["validation"] = load_examples(validation, "pairs", columns)
    from ragtune.knowledge.embedders import resolve_model_path

    model_path = resolve_model_path(model, setting="--model")
    out = Path(options.output_dir)
    record = {"task": "embedder", "base_model": model, "options": options.model_dump(), "distractors": distractors,
              "data": {name: data_fingerprint(examples) for name, examples in splits.items()}}
    check_resumable(out / RUN_FILE, record, options)

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    from ragtune.train.common import quiet_transformers, training_arguments

    set_seed(options.seed)
    with quiet_transformers():
        network = SentenceTransformer(str(model_path), local_files_only=True)
    network.max_seq_length = min(options.max_length, network.max_seq_length or options.max_length)
    train_dataset = Dataset.from_dict(_pair_columns(train_examples.rows))
    evaluator = eval_dataset = None
    if "validation" in splits:
        rows = splits["validation"].rows
        others = [t for r in train_examples.rows for t in (r["positive"], *row_negatives(r))]
        others += [t for r in rows for t in row_negatives(r)] + list(corpus or [])
        evaluator = validation_evaluator(rows, others, distractors=distractors, seed=options.seed,
                                         batch_size=options.batch_size)
        eval_dataset = Dataset.from_dict(_pair_columns(rows))
    args = sentence_transformer_arguments(training_arguments(
        options, output_dir=out / CHECKPOINTS, has_validation=evaluator is not None,
        primary_metric=PRIMARY_METRIC, progress=progress))
    open_run_folder(out, record)

    metrics: dict = {}
    if evaluator is not None:
        metrics["validation_before"] = _scores(evaluator, network)
    trainer = atomic_trainer(SentenceTransformerTrainer)(
        model=network, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        loss=MultipleNegativesRankingLoss(network), evaluator=evaluator, callbacks=callbacks)
    output = run_training(trainer, options, out, title="embedder loss (in-batch negatives)",
                          texts_per_example=len(train_dataset.column_names))
    metrics["train"] = train_summary(trainer, output)
    if evaluator is not None:
        metrics["validation"] = _scores(evaluator, trainer.model)
        metrics["validation"]["n"] = len(evaluator.queries)
        metrics["validation"]["corpus"] = len(evaluator.corpus)

    if trainer.is_world_process_zero():
        with quiet_transformers():
            trainer.model.save(str(out))
        write_json_atomic(out / "metrics.json", metrics)
        card_metrics = {k: metrics[k] for k in ("validation_before", "validation") if k in metrics}
        write_model_card(out, title=f"Embedding model fine-tuned from {model}", base_model=model,
                         task="sentence similarity (query -> passage retrieval)", data=record["data"], options=options,
                         metrics=card_metrics, pipeline_tag="sentence-similarity",
                         details={"Loss": "MultipleNegativesRankingLoss (in-batch negatives)",
                                  "Steps": output.global_step,
                                  "Use": f"embedder: {{model: {out}}} in ragtune.yaml, then `ragtune index --reembed`"})
    return EmbedderResult(out, metrics)
