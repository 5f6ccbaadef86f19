"""`ragtune train embedder | reranker | reader`: thin commands over ragtune.train.

`add_commands(train_app)` registers them on the `ragtune train` group; like the classifier command,
each gets every TrainOptions field as a flag. torch and transformers load inside the commands.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import typer

from ragtune.cli_train import _columns, with_training_flags
from ragtune.config import DEFAULT_EMBEDDER
from ragtune.train.common import TrainOptions, is_main_process

DEFAULT_MODEL = DEFAULT_EMBEDDER

_PAIRS_HELP = "Training data: .jsonl, .json, .csv or .tsv with query, positive and optional negative."


def _run(train: Callable[[], object]):
    """Call `train`; Ctrl-C ends the command with the message and the interrupted exit code."""
    from ragtune.train.common import TrainingInterrupted

    try:
        return train()
    except TrainingInterrupted as exc:
        if is_main_process():
            typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code)


def _echo_saved(what: str, result, next_step: str) -> None:
    if not is_main_process():
        return
    figures = result.metrics["train"]
    typer.echo(f"saved {what} to {result.output_dir}: {figures['global_step']} steps, "
               f"{figures.get('train_runtime', 0):.1f} s")
    for name in ("validation_before", "validation"):
        if name in result.metrics:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics[name].items() if isinstance(v, float))
            typer.echo(f"{name.replace('_', ' ')}: {shown}")
    typer.echo(f"next: {next_step}")


def embedder_command(
    train: Path = typer.Option(..., "--train", help=_PAIRS_HELP),
    validation: Optional[Path] = typer.Option(None, "--validation", help="Held-out pairs: nDCG@10 against their positives plus distractors picks the best step."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="Map a field to a file column, e.g. query=question (repeatable)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="sentence-transformers model to start from: HF id or local folder."),
    distractors: int = typer.Option(1000, "--distractors", min=0, help="Other texts the validation queries must rank their positive above."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    options: TrainOptions = None,
):
    """Fine-tune the embedding model on (query, positive[, negative]) pairs with in-batch negatives."""
    from ragtune.train.embedder import train_embedder

    result = _run(lambda: train_embedder(train, validation, model=model, options=options, columns=_columns(column),
                                         distractors=distractors, progress=not quiet))
    _echo_saved("embedder", result, f"set `embedder: {{model: {result.output_dir}}}` in ragtune.yaml, "
                                    f"then `ragtune index --reembed`")


def _project_miner(project: Path, k: int) -> Callable[[str], list[str]]:
    from ragtune.project import Project

    opened = Project.open(project)

    def mine(query: str) -> list[str]:
        return [hit.text for hit in opened.search(query, mode="hybrid", k=k)]

    return mine


def reranker_command(
    train: Path = typer.Option(..., "--train", help=_PAIRS_HELP),
    validation: Optional[Path] = typer.Option(None, "--validation", help="Held-out pairs: MRR@10 of the positive among negatives picks the best step."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="Map a field to a file column, e.g. query=question (repeatable)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Encoder or cross-encoder to start from: HF id or local folder."),
    negatives: int = typer.Option(4, "--negatives", min=1, help="Negatives per query (the data's own first, then mined, then random)."),
    project: Optional[Path] = typer.Option(None, "--project", help="Mine hard negatives with this knowledge base's hybrid search."),
    loss: str = typer.Option("listwise", "--loss", help="listwise (softmax of the positive against its negatives and 2 in-batch ones) or bce (binary cross-entropy per pair)."),
    head_learning_rate: float = typer.Option(1e-3, "--head-learning-rate", min=0.0, help="Learning rate of the new scoring head when starting from an embedding model (the encoder uses --learning-rate)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    options: TrainOptions = None,
):
    """Train a cross-encoder reranker on (query, positive) pairs and mined negatives."""
    from ragtune.train.reranker import rerank_setting, train_reranker

    miner = _project_miner(project, negatives + 1) if project is not None else None
    result = _run(lambda: train_reranker(train, validation, model=model, options=options, columns=_columns(column),
                                         negatives_per_query=negatives, mine_from=miner, loss=loss,
                                         head_learning_rate=head_learning_rate,
                                         progress=not quiet))
    why = (": a reranker trained from an embedding model on your data alone does better fused with the retrieval "
           "order; choose the weight on validation queries") if result.new_head else ""  # SciFact, README
    _echo_saved("reranker", result, f"set `{rerank_setting(result.output_dir, result.new_head)}` in ragtune.yaml{why}")


def reader_command(
    train: Path = typer.Option(..., "--train", help="Training data with question, answer, context and optional answer_start."),
    validation: Optional[Path] = typer.Option(None, "--validation", help="Held-out examples: SQuAD F1 picks the best step."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="Map a field to a file column, e.g. context=passage (repeatable)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Encoder to start from: HF id or local folder."),
    window: int = typer.Option(384, "--window", min=32, help="Tokens the reader reads at once (question + context window); replaces --max-length."),
    stride: int = typer.Option(128, "--stride", min=0, help="Tokens shared by neighbouring windows of a long context."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    options: TrainOptions = None,
):
    """Train an extractive reader (span head) on question/answer/context examples."""
    from ragtune.train.reader import train_reader

    result = _run(lambda: train_reader(train, validation, model=model, options=options, columns=_columns(column),
                                       max_length=window, stride=stride, progress=not quiet))
    _echo_saved("reader", result, f"set `generator: {{backend: reader, model: {result.output_dir}}}` in ragtune.yaml")


def add_commands(train_app: typer.Typer) -> None:
    """Register `embedder`, `reranker` and `reader` on the `ragtune train` group."""
    for name, command in (("embedder", embedder_command), ("reranker", reranker_command), ("reader", reader_command)):
        train_app.command(name)(with_training_flags()(command))
