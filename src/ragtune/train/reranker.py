"""Reranker: a cross-encoder (default all-MiniLM-L6-v2 with a 1-logit head) trained to score a
query's positive above its negatives.

Two losses (`loss=`):
- `listwise` (default): for each query, a softmax over the logits of the positive, its negatives
  and `IN_BATCH_NEGATIVES` positives of other queries in the batch (sentence-transformers'
  cross-encoder MultipleNegativesRankingLoss on raw logits). Only the order within a query counts.
- `bce`: (query, positive) = 1 and (query, negative) = 0 pairs with binary cross-entropy. On small
  data (SciFact's 835 training pairs) it learned only the label prior (loss stayed at the
  entropy of 1 positive in 4, the ranking stayed near random); see benchmarks/README.md.

Each query gets up to `negatives_per_query` negatives: first the row's own `negative`(s), then
texts found by `mine_from(query)` (the CLI passes the project's hybrid search over the knowledge
base, so the negatives are the near misses our own retrieval returns), then, to fill up, random
positives of other queries. Validation reranks each held-out query's positive among its negatives
(MRR@10, nDCG@10, MAP).

>>> result = train_reranker("pairs.jsonl", "dev.jsonl", options=TrainOptions(output_dir="rr"))  # doctest: +SKIP
>>> result.metrics["validation"]["mrr@10"]                                                       # doctest: +SKIP
0.92

The output folder loads with `sentence_transformers.CrossEncoder(folder)`: set `rag.rerank.model`
to it. It also holds metrics.json, train_log.jsonl, loss_curve.png, README.md and checkpoints/.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, NamedTuple

from ragtune.config import DEFAULT_EMBEDDER
from ragtune.train.common import (CHECKPOINTS, RUN_FILE, TrainOptions, arguments_as, atomic_trainer, check_resumable,
                                  data_fingerprint, open_run_folder, run_training, train_summary, write_json_atomic,
                                  write_model_card)
from ragtune.train.data import row_negatives

log = logging.getLogger(__name__)

DEFAULT_MODEL = DEFAULT_EMBEDDER
EVALUATOR_NAME = "validation"
PRIMARY_METRIC = f"{EVALUATOR_NAME}_mrr@10"
LOSSES = ("listwise", "bce")
IN_BATCH_NEGATIVES = 2
HEAD_LEARNING_RATE = 1e-3
"""Learning rate of a new scoring head. Started from an embedding model, the cross-encoder's
1-logit head is random and a small dataset gives ~100 steps; at the encoder's rate (3e-5, with
binary cross-entropy) the SciFact run stayed at chance. Listwise with this head rate learned (see
benchmarks/README.md); the head rate's own share of that was not measured separately."""

SUGGESTED_FIRST_STAGE_WEIGHT = 0.6
"""`rag.rerank.first_stage_weight` suggested for a reranker whose head was learned from the user's
data alone. In the eight SciFact runs (835 training queries; benchmarks/README.md) such a reranker
alone ranked below its first stage every time (top 20: -0.06 to -0.13 nDCG@10, each interval below
zero), while fused with the first-stage order it tied it (-0.020 to +0.012, each interval holding
zero); the weights chosen on validation for top 20 ranged 0.4-0.8, median 0.6."""


def rerank_setting(model_dir: Path | str, new_head: bool) -> str:
    """The ragtune.yaml line that uses a trained reranker: fused with the first stage when its head
    was learned from the user's data alone (see SUGGESTED_FIRST_STAGE_WEIGHT).

    >>> rerank_setting("models/rr", new_head=True)
    'rag: {rerank: {model: models/rr, first_stage_weight: 0.6}}'
    """
    fused = f", first_stage_weight: {SUGGESTED_FIRST_STAGE_WEIGHT}" if new_head else ""
    return f"rag: {{rerank: {{model: {model_dir}{fused}}}}}"


class RerankerResult(NamedTuple):
    output_dir: Path
    metrics: dict
    """{"train": {...}, "validation_before": {...}, "validation": {"mrr@10", "ndcg@10", "map", "n"}}."""
    new_head: bool = False
    """Started from an embedding model, so the scoring head was learned from this data alone."""


def query_groups(rows: list[dict], *, negatives_per_query: int, mine_from: Callable[[str], list[str]] | None,
                 fill_from: list[str], seed: int) -> list[dict]:
    """One {"query", "positive": [text], "negative": [texts]} per row, negatives as the module says."""
    rng = random.Random(seed)
    pool = sorted(set(fill_from))
    groups = []
    for row in rows:
        positive = row["positive"]
        negatives: list[str] = []
        candidates = row_negatives(row) + (list(mine_from(row["query"])) if mine_from else [])
        for text in candidates:
            if len(negatives) >= negatives_per_query:
                break
            if text and text != positive and text not in negatives:
                negatives.append(text)
        tries = 0
        while len(negatives) < negatives_per_query and tries < 4 * negatives_per_query and len(pool) > 1:
            text = rng.choice(pool)
            tries += 1
            if text != positive and text not in negatives:
                negatives.append(text)
        groups.append({"query": row["query"], "positive": [positive], "negative": negatives})
    return groups


def _labelled_pairs(groups: list[dict]) -> dict[str, list]:
    queries, texts, labels = [], [], []
    for group in groups:
        for text, label in [(t, 1.0) for t in group["positive"]] + [(t, 0.0) for t in group["negative"]]:
            queries.append(group["query"])
            texts.append(text)
            labels.append(label)
    return {"query": queries, "text": texts, "label": labels}


def _listwise_columns(groups: list[dict]) -> dict[str, list]:
    """query, positive, negative_1..negative_n with n the smallest negative count of any group."""
    n = min(len(g["negative"]) for g in groups)
    columns = {"query": [g["query"] for g in groups], "positive": [g["positive"][0] for g in groups]}
    for i in range(n):
        columns[f"negative_{i + 1}"] = [g["negative"][i] for g in groups]
    return columns


def _has_scoring_head(model_path: Path) -> bool:
    import json

    config = model_path / "config.json"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def _optimizer(network, options, head_learning_rate: float):
    """AdamW with the scoring head at `head_learning_rate`, the encoder at the options' rate, and
    no weight decay on biases and LayerNorm weights (as transformers' Trainer does)."""
    import torch

    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            head = ".classifier." in f".{name}"
            decay = parameter.ndim > 1
            groups.setdefault((head, decay), []).append(parameter)
    return torch.optim.AdamW([
        {"params": params, "lr": head_learning_rate if head else options.learning_rate,
         "weight_decay": options.weight_decay if decay else 0.0}
        for (head, decay), params in sorted(groups.items())], lr=options.learning_rate)


def _identity():
    import torch

    return torch.nn.Identity()


def _scores(evaluator, model) -> dict:
    raw = evaluator(model)
    prefix = f"{EVALUATOR_NAME}_"
    return {key[len(prefix):]: float(value) for key, value in raw.items() if key.startswith(prefix)}


def train_reranker(train: Any, validation: Any = None, *, model: str = DEFAULT_MODEL, options: TrainOptions | None = None,
                   columns: dict[str, str] | None = None, negatives_per_query: int = 4,
                   mine_from: Callable[[str], list[str]] | None = None, loss: str = "listwise",
                   head_learning_rate: float | None = HEAD_LEARNING_RATE, callbacks: list | None = None,
                   progress: bool = True) -> RerankerResult:
    """Train a cross-encoder from `model` on `train` pairs (query, positive, optional negative);
    `mine_from(query) -> [texts]` supplies hard negatives (the positive is skipped).
    `head_learning_rate` applies to a new scoring head (`model` is an embedding model) when it is
    above the options' rate; a model that is already a cross-encoder, or None, trains every weight
    at the options' rate."""
    from ragtune.errors import InputError
    from ragtune.train.data import load_examples

    options = options or TrainOptions()
    if negatives_per_query < 1:
        raise InputError(f"negatives per query must be 1 or more (got {negatives_per_query})")
    if loss not in LOSSES:
        raise InputError(f"unknown reranker loss '{loss}': choose one of {', '.join(LOSSES)}")
    train_examples = load_examples(train, "pairs", columns)
    splits = {"train": train_examples}
    if validation is not None:
        splits["validation"] = load_examples(validation, "pairs", columns)
    from ragtune.knowledge.embedders import resolve_model_path

    model_path = resolve_model_path(model, setting="--model")
    new_head = not _has_scoring_head(model_path)
    if head_learning_rate is None or not new_head:
        head_learning_rate = options.learning_rate
    head_learning_rate = max(head_learning_rate, options.learning_rate)
    out = Path(options.output_dir)
    record = {"task": "reranker", "base_model": model, "options": options.model_dump(),
              "negatives_per_query": negatives_per_query, "mined": mine_from is not None, "loss": loss,
              "head_learning_rate": head_learning_rate,
              "data": {name: data_fingerprint(examples) for name, examples in splits.items()}}
    check_resumable(out / RUN_FILE, record, options)

    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MultipleNegativesRankingLoss
    from transformers import set_seed

    from ragtune.train.common import quiet_transformers, training_arguments

    every_positive = [row["positive"] for examples in splits.values() for row in examples.rows]
    groups = {name: query_groups(examples.rows, negatives_per_query=negatives_per_query, mine_from=mine_from,
                                 fill_from=every_positive, seed=options.seed + i)
              for i, (name, examples) in enumerate(splits.items())}
    set_seed(options.seed)  # the new head's initial weights
    with quiet_transformers():
        network = CrossEncoder(str(model_path), num_labels=1, max_length=options.max_length, local_files_only=True)
    evaluator = None
    if "validation" in groups:
        evaluator = CrossEncoderRerankingEvaluator(groups["validation"], at_k=10, name=EVALUATOR_NAME,
                                                   batch_size=options.batch_size, write_csv=False)
    args = arguments_as(CrossEncoderTrainingArguments, training_arguments(
        options, output_dir=out / CHECKPOINTS, has_validation=evaluator is not None,
        primary_metric=PRIMARY_METRIC, progress=progress))
    open_run_folder(out, record)

    metrics: dict = {}
    if evaluator is not None:
        metrics["validation_before"] = _scores(evaluator, network)
    if loss == "bce":
        train_dataset, objective = Dataset.from_dict(_labelled_pairs(groups["train"])), BinaryCrossEntropyLoss(network)
        loss_name, texts = "binary cross-entropy", 1  # texts a step reads per example
    else:
        in_batch = min(IN_BATCH_NEGATIVES, options.batch_size - 1) or None
        train_dataset = Dataset.from_dict(_listwise_columns(groups["train"]))
        # Softmax over raw logits (as in localized contrastive estimation, Gao et al. 2021): the
        # library's default sigmoid x 10 saturates, and once every logit is large nothing is learned.
        objective = MultipleNegativesRankingLoss(network, num_negatives=in_batch, scale=1.0,
                                                 activation_fn=_identity())
        negatives = len(train_dataset.column_names) - 2  # the columns: query, positive, negative_1..n
        loss_name = f"listwise softmax, {negatives} negatives + {in_batch or 0} in-batch"
        texts = 1 + negatives + (in_batch or 0)  # each query with its positive, negatives and in-batch ones
    trainer = atomic_trainer(CrossEncoderTrainer)(
        model=network, args=args, train_dataset=train_dataset, loss=objective, evaluator=evaluator,
        callbacks=callbacks, optimizers=(_optimizer(network, options, head_learning_rate), None))
    output = run_training(trainer, options, out, title=f"reranker loss ({loss_name})", texts_per_example=texts)
    metrics["train"] = train_summary(trainer, output, queries=len(groups["train"]),
                                     pairs=sum(1 + len(g["negative"]) for g in groups["train"]))
    if evaluator is not None:
        metrics["validation"] = {**_scores(evaluator, trainer.model), "n": len(groups["validation"])}

    if trainer.is_world_process_zero():
        with quiet_transformers():
            trainer.model.save(str(out))
        write_json_atomic(out / "metrics.json", metrics)
        card_metrics = {k: metrics[k] for k in ("validation_before", "validation") if k in metrics}
        write_model_card(out, title=f"Reranker (cross-encoder) fine-tuned from {model}", base_model=model,
                         task="passage reranking", data=record["data"], options=options, metrics=card_metrics,
                         pipeline_tag="text-ranking",
                         details={"Loss": f"{loss_name}, 1 logit", "Head learning rate": head_learning_rate, "Negatives per query": negatives_per_query,
                                  "Mined negatives": "yes" if mine_from else "no", "Steps": output.global_step,
                                  "Use": f"{rerank_setting(out, new_head)} in ragtune.yaml"})
    return RerankerResult(out, metrics, new_head)
