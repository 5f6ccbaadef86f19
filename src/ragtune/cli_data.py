"""`ragtune data check|split|synth`: thin commands over ragtune.train.data and ragtune.train.synth.
No heavy imports at module level.

    $ ragtune data check reviews.csv --labels pos,neg --max-tokens 256
    $ ragtune data split reviews.csv --out splits --group-key product --seed 1
    $ ragtune data synth docs/ --out qa.jsonl --per-fact 3
    $ ragtune data synth docs/ --kind pairs --out pairs.jsonl
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, List, Optional

import typer

from ragtune.errors import InputError
from ragtune.train.data import FIELDS, FORMATS, CheckReport, check, split, write_jsonl_atomic
from ragtune.train.synth import (CLOZE_PHRASINGS, METHODS, PAIR_SENTENCES, inverse_cloze_pairs, project_setup,
                                 synthesize)

data_app = typer.Typer(no_args_is_help=True, help="Check, split and synthesize training data.")

FormatOpt = typer.Option(None, "--format", "-f", help=f"Data format: {' | '.join(FORMATS)} (default: detected).")
ColumnOpt = typer.Option(None, "--column", "-c", help="Map a field to a file column, FIELD=COLUMN, e.g. text=review "
                                                      "(repeatable).")
SHOWN = 20  # errors and warnings printed before "... and N more"


def parse_columns(pairs: list[str] | None) -> dict[str, str] | None:
    """{"text": "review"} from ["text=review"]; None when no pair is given."""
    known = sorted({name for required, optional in FIELDS.values() for name in required + optional})
    columns = {}
    for pair in pairs or []:
        name, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not name or not column:
            raise InputError(f"--column '{pair}': expected FIELD=COLUMN, e.g. --column text=review "
                             f"(fields: {', '.join(known)})")
        columns[name] = column
    return columns or None


def parse_numbers(value: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{flag} '{value}': expected comma-separated numbers, e.g. 0.8,0.1,0.1") from None


def load_tokenizer(name: str) -> Any:
    """A Hugging Face tokenizer from a local folder or model id ('default' = the default embedder's)."""
    from ragtune.config import DEFAULT_EMBEDDER
    from ragtune.knowledge.embedders import resolve_model_path

    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise InputError(f"--tokenizer {name}: no such folder; give a model folder with tokenizer files, "
                         f"a model id in the Hugging Face cache, or 'default'")
    path = resolve_model_path(DEFAULT_EMBEDDER if name == "default" else name, setting="--tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"--tokenizer {name}: no usable tokenizer in {path} ({exc}); give a model folder "
                         f"with tokenizer files") from None


def _echo_problems(kind: str, items: list[tuple[int, str]], source: str, limit: int) -> None:
    for line, message in items[:limit]:
        typer.echo(f"{kind}{source}:{line}: {message}" if line else f"{kind}{source}: {message}")
    if len(items) > limit:
        typer.echo(f"... and {len(items) - limit} more {'warnings' if kind else 'errors'}")


def _stats_table(report: CheckReport) -> Any:
    from rich.table import Table

    stats = report.stats
    table = Table(title=f"{report.source} ({report.format})", show_header=False, title_justify="left")
    table.add_column("stat")
    table.add_column("value", justify="right")
    table.add_row("rows", f"{stats['rows']} ({stats['valid_rows']} valid, {stats['rows_with_errors']} with errors)")
    for label, n in stats.get("labels", {}).items():
        table.add_row(f"label {label}", f"{n} ({100 * n / max(stats['valid_rows'], 1):.0f}%)")
    for key, title in (("tokens", stats["tokens"]["unit"]), ("chars", "characters")):
        if "max" in stats[key]:
            s = stats[key]
            table.add_row(f"{title} min/median/p95/max", f"{s['min']} / {s['median']:g} / {s['p95']} / {s['max']}")
    for key in ("over_max_tokens", "duplicates", "conflicting_duplicates", "with_context", "unanswerable",
                "with_negative"):
        if key in stats:
            table.add_row(key.replace("_", " "), str(stats[key]))
    return table


@data_app.command("check")
def check_command(file: Path = typer.Argument(..., help="Training data: .jsonl, .jsonl.gz, .json, .csv or .tsv."),
                  format: Optional[str] = FormatOpt, column: Optional[List[str]] = ColumnOpt,
                  labels: Optional[str] = typer.Option(None, "--labels", help="Allowed labels, comma-separated."),
                  max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Flag examples longer than this."),
                  tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Count tokens with this model's "
                                                          "tokenizer (path or id; 'default' = the default embedder). "
                                                          "Without it, whitespace-separated words are counted."),
                  limit: int = typer.Option(SHOWN, "--show", help="Errors and warnings printed at most."),
                  as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON.")):
    """Validate every row (line-numbered errors), then print stats. Exit 1 if any row is bad."""
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    report = check(file, format, parse_columns(column), labels=label_list, max_tokens=max_tokens,
                   tokenizer=load_tokenizer(tokenizer) if tokenizer else None)
    if as_json:
        typer.echo(json.dumps({"source": report.source, "format": report.format, "ok": report.ok, "rows": report.rows,
                               "errors": [{"line": n, "message": m} for n, m in report.errors],
                               "warnings": [{"line": n, "message": m} for n, m in report.warnings],
                               "stats": report.stats}, indent=2))
    else:
        _echo_problems("", report.errors, report.source, limit)
        _echo_problems("warning: ", report.warnings, report.source, limit)
        from rich.console import Console

        Console().print(_stats_table(report))
        verdict = "ok" if report.ok else f"{len(report.errors)} errors in {report.stats['rows_with_errors']} rows"
        typer.echo(f"{verdict}: {report.rows} rows, {len(report.warnings)} warnings")
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("split")
def split_command(file: Path = typer.Argument(..., help="Training data: .jsonl, .jsonl.gz, .json, .csv or .tsv."),
                  out: Path = typer.Option(..., "--out", "-o", help="Folder for train/validation/test.jsonl."),
                  ratios: str = typer.Option("0.8,0.1,0.1", "--ratios", help="train,validation[,test]; sums to 1."),
                  seed: int = typer.Option(0, "--seed", help="Same seed, same split."),
                  group_key: Optional[str] = typer.Option(None, "--group-key", help="Keep rows sharing this field "
                                                          "(e.g. source) in one split."),
                  format: Optional[str] = FormatOpt, column: Optional[List[str]] = ColumnOpt):
    """Deterministic train/validation/test split; written all at once or not at all."""
    report = split(file, out, ratios=parse_numbers(ratios, "--ratios"), seed=seed, group_key=group_key,
                   format=format, columns=parse_columns(column))
    for name, count in report.counts.items():
        groups = f", {report.groups[name]} groups" if group_key else ""
        typer.echo(f"{name:<10} {count:>7} rows{groups}  {report.paths[name]}")
    for warning in report.warnings[:SHOWN]:
        typer.echo(f"warning: {warning}", err=True)
    if len(report.warnings) > SHOWN:
        typer.echo(f"... and {len(report.warnings) - SHOWN} more warnings", err=True)


@data_app.command("synth")
def synth_command(paths: List[Path] = typer.Argument(..., help="Files and folders of documents (read as `ragtune "
                                                    "index` reads them)."),
                  out: Path = typer.Option(..., "--out", "-o", help="JSONL file for the rows."),
                  kind: str = typer.Option("qa", "--kind", help="qa: question/answer rows (eval sets, `train reader`). "
                                           "pairs: query/positive rows by the inverse cloze task, one sentence of a "
                                           "passage against the rest of it (`train embedder`, `train reranker`; "
                                           "offline, no model)."),
                  sentence: str = typer.Option("random", "--sentence", help=f"pairs: which sentence is the query, "
                                               f"{' | '.join(PAIR_SENTENCES)} (last: a passage's conclusion, e.g. of "
                                               f"an abstract)."),
                  max_pairs: Optional[int] = typer.Option(None, "--max-pairs", min=1, help="pairs: keep at most this "
                                                          "many, sampled with --seed."),
                  method: str = typer.Option("auto", "--method", help=f"{' | '.join(METHODS)}. auto: the project's "
                                             "generator when it writes text (hf, openai), else cloze (offline)."),
                  per_fact: int = typer.Option(1, "--per-fact", min=1, help="Phrasings of each fact, same answer "
                                               f"(several help fine-tuning absorb a fact; cloze makes at most "
                                               f"{CLOZE_PHRASINGS})."),
                  max_facts: Optional[int] = typer.Option(None, "--max-facts", min=1, help="Keep at most this many "
                                                          "facts, sampled with --seed."),
                  seed: int = typer.Option(0, "--seed", help="Same seed, same cloze rows and sample.")):
    """QA rows (question, answer, context, answer_start) for an eval set or `train reader`, or with
    --kind pairs (query, positive) rows for `train embedder` and `train reranker`, from documents."""
    from ragtune.cli import _state  # the global --project; imported here, as ragtune.cli imports this module

    if kind not in ("qa", "pairs"):
        raise InputError(f"--kind '{kind}': use qa or pairs")
    misplaced = ([name for name, given in (("--method", method != "auto"), ("--per-fact", per_fact != 1),
                                           ("--max-facts", max_facts is not None)) if given] if kind == "pairs" else
                 [name for name, given in (("--sentence", sentence != "random"), ("--max-pairs", max_pairs is not None))
                  if given])
    if misplaced:
        other = "qa" if kind == "pairs" else "pairs"
        raise InputError(f"{', '.join(misplaced)} applies to --kind {other}, not --kind {kind}")
    if kind == "pairs":
        ingest, _ = project_setup(_state["project"], "cloze", 1)  # the project's ingest settings; no generator
        rows = inverse_cloze_pairs([str(p) for p in paths], sentence=sentence, max_pairs=max_pairs, seed=seed,
                                   ingest=ingest)
    else:
        ingest, generator = project_setup(_state["project"], method, per_fact)
        rows = synthesize([str(p) for p in paths], method=method, generator=generator, per_fact=per_fact,
                          max_facts=max_facts, seed=seed, ingest=ingest)
    for skipped in rows.skipped[:SHOWN]:
        typer.echo(f"warning: skipped {skipped}", err=True)
    path = write_jsonl_atomic(rows, out)
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in rows.dropped.items())
    if kind == "pairs":
        typer.echo(f"pairs      {len(rows):>7}  (inverse-cloze, {sentence} sentence)")
        typer.echo(f"passages left out {sum(rows.dropped.values())}" + (f"  ({dropped})" if dropped else ""))
    else:
        methods = ", ".join(f"{name} {n}" for name, n in Counter(row["method"] for row in rows).items())
        typer.echo(f"facts      {rows.facts:>7}\nquestions  {len(rows):>7}  ({methods})")
        typer.echo(f"dropped    {sum(rows.dropped.values()):>7}" + (f"  ({dropped})" if dropped else ""))
    typer.echo(f"wrote {path}")
