"""`ragtune train ...` and `ragtune classify`: thin commands over ragtune.train.

Every field of TrainOptions (and LoraOptions, as --lora-*) becomes a flag of each training command,
with the field's description as its help, so the library, the CLI and the docs cannot drift apart.
Heavy imports (torch, transformers) happen inside the commands.
"""
from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from ragtune.train.common import LoraOptions, TrainOptions, is_main_process

train_app = typer.Typer(no_args_is_help=True, help="Fine-tune models on your data.")

# Extra or shorter spellings of some generated flags.
_FLAGS = {"output_dir": ("--out", "--output-dir"), "learning_rate": ("--learning-rate", "--lr"),
          "lora_target_modules": ("--lora-target",)}


@train_app.callback()
def _train_group() -> None:
    """Fine-tune models on your data."""


def _flag_parameters(model: type, prefix: str = "") -> list[inspect.Parameter]:
    """One keyword parameter with a typer.Option per field of the pydantic `model`."""
    params = []
    for name, field in model.model_fields.items():
        key = prefix + name
        flags = _FLAGS.get(key, ("--" + key.replace("_", "-"),))
        if field.annotation is bool:
            flags = (f"{flags[0]}/--no-{flags[0][2:]}",)
        elif field.annotation == (bool | None):
            flags = (f"{flags[0]}/--lower-is-better",) if name == "greater_is_better" else flags
        default = typer.Option(field.default, *flags, help=field.description, show_default=field.default is not None)
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=field.annotation))
    return params


def with_training_flags(lora: bool = False) -> Callable:
    """Give a command the TrainOptions flags (and --lora-* ones); it receives `options` (and `lora`)."""
    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [p for name, p in signature.parameters.items() if name not in ("options", "lora")]
        extra = _flag_parameters(TrainOptions) + (_flag_parameters(LoraOptions, "lora_") if lora else [])

        @functools.wraps(command)
        def wrapper(**values):
            options = TrainOptions(**{name: values.pop(name) for name in TrainOptions.model_fields})
            if lora:
                values["lora"] = LoraOptions(**{name: values.pop("lora_" + name) for name in LoraOptions.model_fields})
            return command(options=options, **values)

        wrapper.__signature__ = signature.replace(parameters=own + extra)
        return wrapper
    return decorate


def _columns(pairs: list[str] | None) -> dict[str, str] | None:
    from ragtune.errors import InputError

    out = {}
    for pair in pairs or []:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise InputError(f"--column '{pair}': expected FIELD=COLUMN, e.g. --column text=sentence")
        out[field.strip()] = column.strip()
    return out or None


def _report(name: str, metrics: dict) -> str:
    return f"{name}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} (n={metrics['n']})"


@train_app.command("classifier")
@with_training_flags(lora=True)
def classifier_command(
    train: Path = typer.Option(..., "--train", help="Training data: .jsonl, .json, .csv or .tsv with text and label."),
    validation: Optional[Path] = typer.Option(None, "--validation", help="Validation data: picks the best step, drives early stopping."),
    test: Optional[Path] = typer.Option(None, "--test", help="Test data, scored once at the end."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="Map a field to a file column, e.g. text=sentence (repeatable)."),
    mode: str = typer.Option("full", "--mode", help="full (all weights) | lora (adapters + head) | probe (frozen encoder, head only)."),
    model: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--model", help="Encoder to start from: HF id or local folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    options: TrainOptions = None,
    lora: LoraOptions = None,
):
    """Fine-tune an encoder with a classification head; reports accuracy, macro-F1, confusion matrix."""
    from ragtune.train.classifier import train_classifier
    from ragtune.train.common import TrainingInterrupted

    try:
        result = train_classifier(train, validation, test, model=model, mode=mode, options=options,
                                  columns=_columns(column), lora=lora, progress=not quiet)
    except TrainingInterrupted as exc:
        if is_main_process():
            typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code)
    if not is_main_process():
        return
    figures = result.metrics["train"]
    typer.echo(f"saved {mode} classifier ({len(result.labels)} labels) to {result.output_dir}: "
               f"{figures['global_step']} steps, {figures.get('train_runtime', 0):.1f} s, "
               f"{figures.get('train_samples_per_second', 0):.1f} samples/s, {result.world_size} process(es)")
    for name in ("validation", "test"):
        if name in result.metrics:
            typer.echo(_report(name, result.metrics[name]))
    typer.echo(f"next: ragtune classify \"some text\" --model {result.output_dir}")


def _read_texts(file: Path) -> list[str]:
    from ragtune.errors import InputError

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{file}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{file}: not UTF-8 text: save it as UTF-8") from None
    return [line for line in text.splitlines() if line.strip()]


def _classify_model(model: Path | None):
    """The model `ragtune classify` uses: --model, else the project's adopted classify strategy."""
    from ragtune.errors import ConfigError
    from ragtune.evaluate.classify_models import load_classify_model, needs_embedder

    def project():
        from ragtune.cli import _state
        from ragtune.project import Project

        try:
            return Project.open(_state["project"])
        except ConfigError:
            raise ConfigError("no --model and no project: pass --model FOLDER, or run in a project where "
                              "`ragtune compare --adopt` chose a classify strategy") from None

    if model is None:
        opened = project()
        if not opened.config.classify.model:
            raise ConfigError(f"{opened.folder / 'ragtune.yaml'}: classify.model is not set: pass --model FOLDER, or "
                              "run `ragtune compare --adopt` on a classify comparison")
        model = opened.folder / opened.config.classify.model
        return load_classify_model(model, opened.embedder if needs_embedder(model) else None)
    return load_classify_model(model, project().embedder if needs_embedder(model) else None)


def classify_command(
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to classify."),
    model: Optional[Path] = typer.Option(None, "--model", help="Folder of a classifier trained with `ragtune train classifier`, or of a strategy saved by `ragtune compare` (default: the project's adopted classify.model)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Also classify each non-empty line of this file ('-' reads stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: text, label, probability of every label."),
):
    """Predict labels with a trained classifier or an adopted classify strategy: one `label<TAB>probability` line per text."""
    from ragtune.errors import InputError

    items = list(texts or []) + (_read_texts(file) if file is not None else [])
    if not items:
        raise InputError("nothing to classify: give texts as arguments or --file FILE")
    classifier = _classify_model(model)
    probabilities = classifier.probabilities(items)
    if as_json:
        typer.echo(json.dumps([{"text": text, "label": classifier.labels[int(p.argmax())], "probability": float(p.max()),
                                "probabilities": dict(zip(classifier.labels, map(float, p)))}
                               for text, p in zip(items, probabilities)], indent=2))
        return
    for p in probabilities:
        typer.echo(f"{classifier.labels[int(p.argmax())]}\t{float(p.max()):.4f}")
