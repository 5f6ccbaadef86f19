"""Training data: five formats read into one canonical row shape, checked with line numbers, split.

>>> examples = load_examples([{"sentence": "great phone", "label": 1}])
>>> examples.format, examples.rows[0]
('classification', {'text': 'great phone', 'label': '1', 'meta': {}})

Files are JSONL (.jsonl, .jsonl.gz), a JSON list (.json), CSV or TSV with a header row; a
`datasets.Dataset` or a list of dicts works too. A bad row never becomes a half-read dataset:
loading raises one InputError listing `file:line: field ...: what to do` for the first problems.
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import math
import numbers
import os
import random
import re
import secrets
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ragtune.errors import InputError

FORMATS = ("messages", "prompt_completion", "qa", "classification", "pairs")

# Canonical fields of each format: (required, optional).
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "messages": (("messages",), ()),
    "prompt_completion": (("prompt", "completion"), ()),
    "qa": (("question", "answer"), ("context", "answer_start")),
    "classification": (("text", "label"), ()),
    "pairs": (("query", "positive"), ("negative",)),
}
# File columns read for a canonical field when `columns` does not name one, first match wins.
# `answers` is the SQuAD layout ({"text": [...], "answer_start": [...]}); `instruction` is Alpaca's,
# whose optional `input` column is appended to the prompt.
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "instruction", "input"),
    "completion": ("completion", "output"),
    "answer": ("answer", "answers"),
    "text": ("text", "sentence"),
    "query": ("query", "anchor"),
    "negative": ("negative", "negatives"),
}
ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "validation", "test")
MAX_REPORTED = 10  # problems listed in one InputError; `ragtune data check` lists them all
_FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


@dataclass
class Examples:
    """Validated rows of one format, with the file line each came from.

    >>> ex = load_examples([{"query": "q", "positive": "p"}]); (len(ex), ex.lines)
    (1, [1])
    """

    format: str
    """One of FORMATS."""
    rows: list[dict]
    """Canonical rows: the format's fields plus `meta` (every other column of the file)."""
    lines: list[int]
    """1-based file line where row i starts (row number for datasets and lists)."""
    source: str
    """The file path, or `<dataset>` / `<list>`."""

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self) -> list[str]:
        """Sorted distinct labels (classification; empty for other formats)."""
        return sorted({row["label"] for row in self.rows if "label" in row})


@dataclass
class CheckReport:
    """Everything `check` found. `errors` and `warnings` are (line, message); line 0 = whole file."""

    format: str
    rows: int
    errors: list[tuple[int, str]]
    warnings: list[tuple[int, str]]
    stats: dict
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class SplitReport:
    """What `split` wrote: rows and groups per split, file paths, inputs found in two splits."""

    counts: dict[str, int]
    paths: dict[str, Path]
    duplicates_across_splits: list[dict]
    """One entry per input seen in more than one split: {"text": ..., "lines": {split: [line, ...]}}."""
    groups: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    format: str = ""
    seed: int = 0


# ---------------------------------------------------------------- format detection


def _column(name: str, available: Iterable[str], columns: Mapping[str, str] | None) -> str | None:
    """The file column holding canonical field `name`: the mapped one, else the first alias present."""
    if columns and name in columns:
        return columns[name]
    return next((c for c in ALIASES.get(name, (name,)) if c in available), None)


def _describe_formats() -> str:
    parts = []
    for fmt, (required, optional) in FIELDS.items():
        names = "+".join("/".join(ALIASES.get(f, (f,))) for f in required)
        parts.append(f"{fmt}: {names}" + (f" [+{', '.join(optional)}]" if optional else ""))
    return "; ".join(parts)


def detect_format(fields: Iterable[str], columns: Mapping[str, str] | None = None) -> str:
    """The format whose required columns are all among `fields` (aliases and `columns` mapping apply).

    >>> detect_format(["sentence", "label", "source"]), detect_format(["instruction", "input", "output"])
    ('classification', 'prompt_completion')
    """
    available = set(fields)
    matches = [f for f in FORMATS if all(_column(c, available, columns) in available for c in FIELDS[f][0])]
    if len(matches) > 1 and columns:  # prefer the format the mapping talks about
        matches = [f for f in matches if set(FIELDS[f][0]) & set(columns)] or matches
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(f"columns ({', '.join(sorted(available))}) fit more than one format "
                         f"({', '.join(matches)}): name one with --format")
    raise InputError(f"no known format fits the columns ({', '.join(sorted(available)) or 'none'}). "
                     f"Accepted columns: {_describe_formats()}. Name the format with --format and map your "
                     f"columns with --column FIELD=COLUMN (e.g. --column text=review)")


def _check_columns(fmt: str | None, columns: Mapping[str, str] | None) -> None:
    known = [name for f in FORMATS if fmt in (None, f) for name in FIELDS[f][0] + FIELDS[f][1]]
    for name, col in (columns or {}).items():
        if name not in known:
            raise InputError(f"column mapping '{name}={col}': '{name}' is not a field of "
                             f"{fmt or 'any format'}; use one of {', '.join(dict.fromkeys(known))}")
        if not isinstance(col, str) or not col:
            raise InputError(f"column mapping '{name}': give the file column that holds it, e.g. {name}=my_column")


# ---------------------------------------------------------------- reading records (line, dict | problem)

Record = tuple[int, "dict | str"]  # (line, raw fields) or (line, why the record is unreadable)


def _kind(value: Any) -> str:
    return {str: "text", bool: "true/false", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _open_text(path: Path) -> io.TextIOWrapper:
    try:
        raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
        head = raw.peek(8192)[:8192]
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if b"\x00" in head:
        raw.close()
        raise InputError(f"{path}: binary file, not text: give a UTF-8 JSONL, JSON, CSV or TSV file")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _not_utf8(path: Path, line: int | None = None) -> InputError:
    where = f" after line {line}" if line else ""
    return InputError(f"{path}: not UTF-8 text{where}: re-save the file as UTF-8")


def _jsonl_records(path: Path) -> Iterator[Record]:
    number = 0
    with _open_text(path) as fh:
        try:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, f"not valid JSON ({exc.msg}, column {exc.colno}): fix or remove the line"
                    continue
                yield number, value if isinstance(value, dict) else f"a JSON object is needed, not {_kind(value)}"
        except UnicodeDecodeError:
            raise _not_utf8(path, number) from None


_SPACE = re.compile(r"\s*")


def _json_records(path: Path) -> Iterator[Record]:
    """Elements of a JSON list with the line each starts on (the file is read whole, not streamed)."""
    with _open_text(path) as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    decoder, pos = json.JSONDecoder(), _SPACE.match(text).end()
    if text[pos:pos + 1] != "[":
        raise InputError(f"{path}: a .json file must hold a list of objects; for one object per line name it .jsonl")
    line, counted = 1, 0
    pos = _SPACE.match(text, pos + 1).end()
    while text[pos:pos + 1] != "]":
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}): fix the file") from None
        line, counted = line + text.count("\n", counted, pos), pos
        yield line, value if isinstance(value, dict) else f"a JSON object is needed, not {_kind(value)}"
        pos = _SPACE.match(text, end).end()
        if text[pos:pos + 1] == ",":
            pos = _SPACE.match(text, pos + 1).end()
        elif text[pos:pos + 1] != "]":
            raise InputError(f"{path}:{line + text.count(chr(10), counted, pos)}: expected ',' or ']' "
                             f"after a list element: fix the file")


def _csv_reader(fh, delimiter: str):
    csv.field_size_limit(1 << 24)  # long contexts; the default 128 KiB cell limit is too small
    if delimiter == "\t":  # TSV: no quoting, a quote is just a character
        return csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(fh, delimiter=delimiter, strict=True)


def _csv_header(path: Path, delimiter: str) -> list[str]:
    with _open_text(path) as fh:
        try:
            header = next(_csv_reader(fh, delimiter), None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}:1: unreadable header row ({exc})") from None
    header = [h.strip() for h in header or []]
    if not any(header):
        raise InputError(f"{path}: empty file or empty first line: the first line must name the columns")
    repeated = sorted(h for h, n in Counter(header).items() if n > 1)
    if repeated:
        raise InputError(f"{path}:1: column {', '.join(repeated)} appears twice in the header: rename one")
    return header


def _csv_records(path: Path, delimiter: str, header: list[str]) -> Iterator[Record]:
    """Rows as dicts, each with the physical line its record starts on (quoted cells may span lines)."""
    with _open_text(path) as fh:
        reader = _csv_reader(fh, delimiter)
        try:
            next(reader)
            while True:
                start = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield start, f"not valid CSV ({exc}): check the quotes that start on this line"
                    continue
                if not values:  # blank line
                    continue
                if len(values) != len(header):
                    fix = "quote cells that contain a comma" if delimiter == "," else "a cell may not contain a tab"
                    yield start, f"has {len(values)} values but the header names {len(header)} columns: {fix}"
                    continue
                yield start, dict(zip(header, values))
        except UnicodeDecodeError:
            raise _not_utf8(path, reader.line_num) from None


def _file_kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    kind = _FILE_KINDS.get(os.path.splitext(name)[1])
    if kind is None:
        raise InputError(f"{path}: unsupported file type; use one of {', '.join(_FILE_KINDS)} (gzipped allowed)")
    return kind


def _open_source(source: Any) -> tuple[str, list[str] | None, Iterator[Record]]:
    """(name, header or None, records) for a path, a `datasets.Dataset` or a list of dicts."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        kind = _file_kind(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: is a folder, not a file")
        if kind in ("csv", "tsv"):
            delimiter = "\t" if kind == "tsv" else ","
            header = _csv_header(path, delimiter)
            return str(path), header, _csv_records(path, delimiter, header)
        return str(path), None, (_json_records if kind == "json" else _jsonl_records)(path)
    if hasattr(source, "column_names"):  # a datasets.Dataset, duck-typed
        return "<dataset>", list(source.column_names), _dict_records(source)
    if isinstance(source, (list, tuple)):
        return "<list>", None, _dict_records(source)
    raise InputError(f"cannot read training data from a {type(source).__name__}: "
                     f"give a file path, a datasets.Dataset or a list of dicts")


def _dict_records(items: Iterable) -> Iterator[Record]:
    for number, item in enumerate(items, start=1):
        yield number, dict(item) if isinstance(item, Mapping) else f"a dict of fields is needed, not {_kind(item)}"


# ---------------------------------------------------------------- one record -> canonical row


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not (value.strip() if isinstance(value, str) else value))


def _as_text(value: Any) -> tuple[Any, list[str]]:
    return (value, []) if isinstance(value, str) else (None, [f"must be text, not {_kind(value)}: quote it"])


def _as_label(value: Any) -> tuple[Any, list[str]]:
    if isinstance(value, str) or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return str(value).strip(), []
    return None, [f"must be a string or integer label, not {_kind(value)}"]


def _as_offset(value: Any) -> tuple[Any, list[str]]:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value), []
    return None, [f"must be a character offset (an integer >= 0), not {value!r}"]


def _as_answer(value: Any) -> tuple[Any, list[str]]:
    """A string; from SQuAD's {"text": [...], "answer_start": [...]} the first answer ("" = unanswerable)."""
    if isinstance(value, dict) and isinstance(value.get("text"), list):
        texts, starts = value["text"], value.get("answer_start") or []
        if not texts:
            return ("", None), []
        start, problems = _as_offset(starts[0]) if starts else (None, [])
        return (texts[0], start), problems + ([] if isinstance(texts[0], str) else ["must hold text answers"])
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return (value[0], None), []
    text, problems = _as_text(value)
    return (text, None), problems


def _as_negative(value: Any) -> tuple[Any, list[str]]:
    if isinstance(value, str) and value.startswith("["):  # a JSON list in a CSV cell
        try:
            parsed = json.loads(value)
            value = parsed if isinstance(parsed, list) else value
        except json.JSONDecodeError:
            pass
    if isinstance(value, str):
        return value, []
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return value, []
    return None, ["must be text or a list of non-empty texts"]


def _as_messages(value: Any) -> tuple[Any, list[str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, ["must be a JSON list of {role, content} messages"]
    if not isinstance(value, list):
        return None, [f"must be a list of {{role, content}} messages, not {_kind(value)}"]
    problems = []
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict):
            problems.append(f"has {_kind(message)} as message {i}: each message is an object with role and content")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(f"has role {role!r} in message {i}: use one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"has no text in message {i} ({role}): give it a non-empty 'content'")
    if not problems and not any(m.get("role") == "assistant" for m in value):
        problems.append("has no assistant message: nothing to learn from; add the reply to train on")
    return [dict(m) for m in value] if not problems else None, problems


_CONVERTERS: dict[str, Callable[[Any], tuple[Any, list[str]]]] = {
    "messages": _as_messages, "label": _as_label, "answer_start": _as_offset, "answer": _as_answer,
    "negative": _as_negative,
}


def _field_name(name: str, column: str | None) -> str:
    return f"field '{name}'" if column in (None, name) else f"field '{column}' ({name})"


def _normalize(raw: dict, fmt: str, columns: Mapping[str, str] | None,
               labels: set[str] | None) -> tuple[dict, list[str]]:
    """(canonical row, problems) for one record; the row is only usable when problems is empty."""
    required, optional = FIELDS[fmt]
    row: dict[str, Any] = {}
    used: set[str] = set()
    problems: list[str] = []
    for name in required + optional:
        column = _column(name, raw, columns)
        used.add(column)
        value, where = raw.get(column) if column else None, _field_name(name, column)
        if column is None or column not in raw:
            if name in required:
                problems.append(f"{where} is missing: add it, or map a column with --column {name}=COLUMN")
            continue
        if _blank(value):
            if name in required:
                problems.append(f"{where} is empty: fill it in or remove the row")
            continue
        value, found = _CONVERTERS.get(name, _as_text)(value)
        if found:
            problems += [f"{where} {p}" for p in found]
            continue
        if name == "answer":  # SQuAD layout: the span start comes with the answer
            value, start = value
            if start is not None:
                row["answer_start"] = start
        row[name] = value
    if fmt == "prompt_completion" and "prompt" in row:
        _append_alpaca_input(raw, row, used, columns)
    if fmt == "qa" and not problems:
        problems += _check_answer_span(row)
    if fmt == "classification" and labels is not None and row.get("label") not in (None, *labels):
        problems.append(f"field 'label' has unknown label '{row['label']}': use one of "
                        f"{', '.join(sorted(labels))}, or add it to the label list")
    meta = dict(raw["meta"]) if isinstance(raw.get("meta"), dict) and "meta" not in used else {}
    meta.update({k: v for k, v in raw.items() if k not in used and k != "meta" and v is not None})
    return {**{k: row[k] for k in required + optional if k in row}, "meta": meta}, problems


def _append_alpaca_input(raw: dict, row: dict, used: set[str], columns: Mapping[str, str] | None) -> None:
    """Alpaca rows: the prompt is `instruction`, plus `input` when that is non-empty."""
    extra = raw.get("input")
    if _column("prompt", raw, columns) == "instruction" and "input" not in used and isinstance(extra, str):
        used.add("input")
        if extra.strip():
            row["prompt"] = f"{row['prompt']}\n\n{extra}"


def _check_answer_span(row: dict) -> list[str]:
    context, answer, start = row.get("context"), row["answer"], row.get("answer_start")
    if start is not None and context is None:
        return ["field 'answer_start' needs a context: add the context or drop answer_start"]
    if not answer or context is None:
        return []
    if start is not None and not context.startswith(answer, start):
        found = context.find(answer)
        hint = f"the answer starts at {found}" if found >= 0 else "the answer is not in the context at all"
        return [f"field 'answer_start' ({start}) does not point at the answer (context there reads "
                f"{context[start:start + 30]!r}; {hint}): fix the offset"]
    if start is None and answer not in context:
        return ["field 'answer' is not found in 'context': fix the answer or the context (an extractive "
                "answer must be a span of its context)"]
    return []


# ---------------------------------------------------------------- loading


def _scan(source: Any, format: str | None, columns: Mapping[str, str] | None,
          labels: Iterable | None) -> tuple[str, str, Iterator[tuple[int, dict | None, list[str]]]]:
    """(source name, format, iterator of (line, row or None, problems)) - one pass over the records."""
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format '{format}': use one of {', '.join(FORMATS)}")
    _check_columns(format, columns)
    name, header, records = _open_source(source)
    head: list[Record] = []
    if header is None:  # JSON rows: the keys of the first readable rows name the columns
        for item in records:
            head.append(item)
            if sum(isinstance(record, dict) for _, record in head) == 20:
                break
        if not head:
            raise InputError(f"{name}: no rows: the file is empty")
    fields = header if header is not None else list(dict.fromkeys(k for _, r in head if isinstance(r, dict) for k in r))
    if format is None:
        if header is None and not any(isinstance(record, dict) for _, record in head):
            raise _problems_error(name, head, len(head))
        try:
            format = detect_format(fields, columns)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    if header is not None:
        _check_header(name, header, format, columns)
    label_set = None if labels is None else {str(label).strip() for label in labels}

    def rows() -> Iterator[tuple[int, dict | None, list[str]]]:
        for line, record in itertools.chain(head, records):
            if isinstance(record, str):
                yield line, None, [record]
                continue
            row, problems = _normalize(record, format, columns, label_set)
            yield line, None if problems else row, problems

    return name, format, rows()


def _check_header(name: str, header: list[str], fmt: str, columns: Mapping[str, str] | None) -> None:
    for needed in FIELDS[fmt][0]:
        if _column(needed, header, columns) not in header:
            looked = (columns or {}).get(needed) or "/".join(ALIASES.get(needed, (needed,)))
            raise InputError(f"{name}: no column '{looked}' for field '{needed}' of format {fmt} "
                             f"(columns: {', '.join(header)}): map one with --column {needed}=COLUMN")


def _problems_error(name: str, problems: list[tuple[int, str]], total: int, bad_rows: int | None = None,
                    hint: bool = True) -> InputError:
    shown = "\n".join(f"  {name}:{line}: {message}" for line, message in problems[:MAX_REPORTED])
    more = f"\n  ... and {total - MAX_REPORTED} more" if total > MAX_REPORTED else ""
    rows = f"{bad_rows} bad rows, " if bad_rows is not None else ""
    more_help = f" (`ragtune data check {name}` lists every problem)" if hint and not name.startswith("<") else ""
    return InputError(f"{name}: {rows}{total} problems; fix them and try again{more_help}:\n{shown}{more}")


def load_examples(source: Any, format: str | None = None, columns: dict[str, str] | None = None, *,
                  labels: list[str] | None = None) -> Examples:
    """Every row of `source` in canonical form, or one InputError naming the bad rows by line.

    >>> load_examples([{"input": "2+2?", "output": "4", "source": "quiz"}]).rows
    [{'prompt': '2+2?', 'completion': '4', 'meta': {'source': 'quiz'}}]
    """
    name, fmt, scanned = _scan(source, format, columns, labels)
    rows, lines, problems, total, bad_rows = [], [], [], 0, 0
    for line, row, found in scanned:
        if found:
            bad_rows += 1
            total += len(found)
            problems += [(line, p) for p in found][:MAX_REPORTED - len(problems)]
        elif not problems:  # past the first bad row only problems are kept
            rows.append(row)
            lines.append(line)
    if total:
        raise _problems_error(name, problems, total, bad_rows)
    if not rows:
        raise InputError(f"{name}: no rows: the file holds no examples")
    return Examples(format=fmt, rows=rows, lines=lines, source=name)


# ---------------------------------------------------------------- checking


def _example_texts(row: dict, fmt: str) -> list[str]:
    """The texts a model reads for this example; its length is the longest (pairs encode each alone)."""
    if fmt == "messages":
        return ["\n".join(m["content"] for m in row["messages"])]
    if fmt == "pairs":
        negative = row.get("negative", [])
        return [row["query"], row["positive"], *([negative] if isinstance(negative, str) else negative)]
    keys = {"prompt_completion": ("prompt", "completion"), "qa": ("question", "context", "answer"),
            "classification": ("text",)}[fmt]
    return ["\n".join(row[k] for k in keys if row.get(k))]


def _input_key(row: dict, fmt: str) -> str:
    """What the model is given (not what it must answer): the same input in two splits is a leak."""
    if fmt == "messages":
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return json.dumps([(m["role"], m["content"]) for m in messages[:last]], ensure_ascii=False)
    keys = {"prompt_completion": ("prompt",), "qa": ("question", "context"), "classification": ("text",),
            "pairs": ("query",)}[fmt]
    return "\n".join(str(row.get(k, "")) for k in keys)


def _content_key(row: dict) -> str:
    return json.dumps({k: v for k, v in row.items() if k != "meta"}, sort_keys=True, ensure_ascii=False)


def _token_counter(tokenizer: Any) -> tuple[Callable[[list[str]], list[int]], str]:
    """(count texts, unit name): a Hugging Face tokenizer (batched), any callable text -> list (or an
    object with `encode`, like tiktoken's), or whitespace-separated words when None."""
    if tokenizer is None:
        return (lambda texts: [len(t.split()) for t in texts]), "whitespace tokens"
    if hasattr(tokenizer, "model_max_length"):  # Hugging Face: batch it, no truncation, no length warnings
        def count(texts: list[str]) -> list[int]:
            out: list[int] = []
            for i in range(0, len(texts), 1000):
                encoded = tokenizer(texts[i:i + 1000], truncation=False, verbose=False)["input_ids"]
                out += [len(ids) for ids in encoded]
            return out
        return count, "tokens"
    encode = tokenizer if callable(tokenizer) else tokenizer.encode
    return (lambda texts: [len(encode(t)) for t in texts]), "tokens"


def _summary(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered),
            "p95": ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], "max": ordered[-1]}


def _duplicates(rows: list[dict], lines: list[int], fmt: str) -> tuple[list, list, int, int]:
    """(warnings for exact duplicates, errors for same text with another label, counts of each)."""
    warnings, errors, first, labelled = [], [], {}, {}
    for row, line in zip(rows, lines):
        key = _content_key(row)
        if key in first:
            warnings.append((line, f"duplicate of line {first[key]}: drop one copy"))
            continue
        first[key] = line
        if fmt == "classification":
            seen_line, seen_label = labelled.setdefault(row["text"], (line, row["label"]))
            if seen_label != row["label"]:
                errors.append((line, f"same text as line {seen_line} but label '{row['label']}' "
                                     f"(line {seen_line} has '{seen_label}'): keep the right label, drop the other"))
    return warnings, errors, len(warnings), len(errors)


def _label_warnings(counts: Counter, labels: Iterable | None) -> list[tuple[int, str]]:
    warnings = [(0, f"label '{label}' has no examples") for label in labels or [] if str(label) not in counts]
    warnings += [(0, f"label '{label}' has only 1 example: too few to be in both the training and test split")
                 for label, n in sorted(counts.items()) if n == 1]
    if len(counts) > 1 and max(counts.values()) >= 10 * min(counts.values()):
        (big, many), (small, few) = counts.most_common()[0], counts.most_common()[-1]
        warnings.append((0, f"labels are imbalanced: '{big}' has {many} examples, '{small}' only {few}"))
    return warnings


def check(source: Any, format: str | None = None, columns: dict[str, str] | None = None, *,
          labels: list[str] | None = None, tokenizer: Any = None, max_tokens: int | None = None) -> CheckReport:
    """Every problem in `source` (not just the first), with lines, and stats. Raises only for a file
    that cannot be read at all.

    >>> report = check([{"text": "fine", "label": "pos"}, {"text": "", "label": "neg"}])
    >>> report.ok, report.errors
    (False, [(2, "field 'text' is empty: fill it in or remove the row")])
    """
    name, fmt, scanned = _scan(source, format, columns, labels)
    errors, rows, lines, total = [], [], [], 0
    for line, row, found in scanned:
        total += 1
        errors += [(line, p) for p in found]
        if row is not None:
            rows.append(row)
            lines.append(line)
    count, unit = _token_counter(tokenizer)
    texts = [_example_texts(row, fmt) for row in rows]
    flat = count([t for group in texts for t in group])
    tokens, at = [], 0
    for group in texts:
        tokens.append(max(flat[at:at + len(group)]))
        at += len(group)
    over = [(line, n) for line, n in zip(lines, tokens) if max_tokens is not None and n > max_tokens]
    errors += [(line, f"example has {n} {unit}, over the limit of {max_tokens}: shorten it or drop the row")
               for line, n in over]
    warnings, conflicts, duplicates, conflicting = _duplicates(rows, lines, fmt)
    errors += conflicts
    stats: dict[str, Any] = {"rows": total, "valid_rows": len(rows), "rows_with_errors": len({line for line, _ in errors}),
                             "duplicates": duplicates, "tokens": {"unit": unit, **_summary(tokens)},
                             "chars": _summary([max(len(t) for t in group) for group in texts])}
    if max_tokens is not None:
        stats["over_max_tokens"] = len(over)
    stats.update(_format_stats(rows, fmt))
    if fmt == "classification":
        stats["conflicting_duplicates"] = conflicting
        warnings += _label_warnings(Counter(stats["labels"]), labels)
    errors.sort(key=lambda item: item[0])
    warnings.sort(key=lambda item: item[0])
    return CheckReport(format=fmt, rows=total, errors=errors, warnings=warnings, stats=stats, source=name)


def _format_stats(rows: list[dict], fmt: str) -> dict:
    if fmt == "classification":
        return {"labels": dict(sorted(Counter(row["label"] for row in rows).items()))}
    if fmt == "qa":
        return {"with_context": sum("context" in r for r in rows), "unanswerable": sum(r["answer"] == "" for r in rows)}
    if fmt == "pairs":
        return {"with_negative": sum("negative" in r for r in rows)}
    if fmt == "messages":
        return {"messages_per_example": _summary([len(r["messages"]) for r in rows])}
    return {}


# ---------------------------------------------------------------- writing and splitting


def _write_temp(rows: Iterable[dict], path: Path) -> Path:
    """`rows` as JSONL in a hidden temp file next to `path` (same filesystem, so os.replace is atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:  # not mkstemp: that would make the file owner-only
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _write_all(files: dict[Path, list[dict]]) -> None:
    """Write every file or none: all go to temp files first, then each is renamed over its target."""
    temps: list[tuple[Path, Path]] = []
    replaced = 0
    try:
        for path, rows in files.items():
            temps.append((_write_temp(rows, path), path))
        for tmp, path in temps:
            os.replace(tmp, path)
            replaced += 1
    except OSError as exc:
        outcome = "nothing was written" if not replaced else f"only {replaced} of {len(files)} files were replaced"
        raise InputError(f"cannot write {exc.filename or 'the output'} ({exc.strerror or exc}); {outcome}") from None
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def write_jsonl_atomic(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write `rows` to `path` as JSONL; readers see the old file or the whole new one, never a part.

    >>> write_jsonl_atomic([{"text": "hi", "label": "greeting"}], "out/train.jsonl")  # doctest: +SKIP
    PosixPath('out/train.jsonl')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_all({path: list(rows)})
    return path


def _group_keys(examples: Examples, group_key: str | None) -> list[str]:
    if group_key is None:
        return [str(i) for i in range(len(examples))]
    keys, missing = [], []
    for row, line in zip(examples.rows, examples.lines):
        value = row[group_key] if group_key in row else row["meta"].get(group_key)
        if _blank(value):
            missing.append((line, f"no value for group key '{group_key}': fill it in or pick another --group-key"))
        keys.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))
    if missing:
        raise _problems_error(examples.source, missing, len(missing), hint=False)
    return keys


def _assign_groups(keys: list[str], ratios: tuple[float, ...], seed: int) -> list[int]:
    """Split index of each row. Groups go in a seeded shuffle, largest first, each to the split furthest
    below its target size; then a split left empty takes a small group from the fullest split that has
    two or more. Same keys, ratios and seed -> same assignment.

    >>> _assign_groups(["a", "a", "b", "c", "c", "d"], (0.5, 0.5), seed=0)
    [1, 1, 0, 0, 0, 1]
    """
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    order.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
    targets, sizes = [r * len(keys) for r in ratios], [0] * len(ratios)
    chosen: list[list[list[int]]] = [[] for _ in ratios]  # per split, its groups
    for members in order:
        j = max(range(len(ratios)), key=lambda j: targets[j] - sizes[j])
        chosen[j].append(members)
        sizes[j] += len(members)
    for j in [j for j, r in enumerate(ratios) if r > 0 and not chosen[j]]:
        donors = [k for k in range(len(ratios)) if len(chosen[k]) > 1]
        if donors:
            donor = max(donors, key=lambda k: sizes[k] - targets[k])
            smallest = chosen[donor].pop()  # added last, so among the smallest
            chosen[j].append(smallest)
            sizes[donor], sizes[j] = sizes[donor] - len(smallest), len(smallest)
    assignment = [0] * len(keys)
    for j, split_groups in enumerate(chosen):
        for i in (i for members in split_groups for i in members):
            assignment[i] = j
    return assignment


def _check_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise InputError(f"ratios {', '.join(f'{r:g}' for r in ratios)}: give 2 or 3 non-negative numbers "
                         f"(train, validation[, test]) that sum to 1, e.g. 0.8,0.1,0.1")
    return ratios


def split(source: Any, out_dir: str | os.PathLike, *, ratios: Iterable[float] = (0.8, 0.1, 0.1), seed: int = 0,
          group_key: str | None = None, format: str | None = None, columns: dict[str, str] | None = None) -> SplitReport:
    """Write train/validation[/test].jsonl into `out_dir`, all or nothing; with `group_key` no group
    spans two splits.

    >>> split("reviews.csv", "splits", group_key="product").counts  # doctest: +SKIP
    {'train': 80, 'validation': 10, 'test': 10}
    """
    ratios = _check_ratios(ratios)
    examples = load_examples(source, format, columns)
    keys = _group_keys(examples, group_key)
    assignment = _assign_groups(keys, ratios, seed)
    names = SPLITS[:len(ratios)]
    out = Path(out_dir)
    paths = {name: out / f"{name}.jsonl" for name in names}
    buckets: dict[str, list[dict]] = {name: [] for name in names}
    for row, split_index in zip(examples.rows, assignment):
        buckets[names[split_index]].append(row)
    duplicates = _cross_split_duplicates(examples, assignment, names)
    report = SplitReport(counts={n: len(buckets[n]) for n in names}, paths=paths, duplicates_across_splits=duplicates,
                         format=examples.format, seed=seed)
    report.groups = {n: len({k for k, s in zip(keys, assignment) if names[s] == n}) for n in names}
    report.warnings = _split_warnings(report, ratios, out, group_key)
    out.mkdir(parents=True, exist_ok=True)
    _write_all({paths[n]: buckets[n] for n in names})
    return report


def _cross_split_duplicates(examples: Examples, assignment: list[int], names: tuple[str, ...]) -> list[dict]:
    seen: dict[str, dict[str, list[int]]] = {}
    for row, line, split_index in zip(examples.rows, examples.lines, assignment):
        seen.setdefault(_input_key(row, examples.format), {}).setdefault(names[split_index], []).append(line)
    return [{"text": text, "lines": by_split} for text, by_split in seen.items() if len(by_split) > 1]


def _split_warnings(report: SplitReport, ratios: tuple[float, ...], out: Path, group_key: str | None) -> list[str]:
    warnings = [f"the {name} split is empty: add data{' or use a finer --group-key' if group_key else ''}"
                for name, ratio in zip(report.counts, ratios) if ratio > 0 and report.counts[name] == 0]
    for item in report.duplicates_across_splits:
        where = "; ".join(f"{name} line {', '.join(map(str, lines))}" for name, lines in item["lines"].items())
        warnings.append(f"same input in two splits ({where}): {item['text'][:60]!r}")
    for name in SPLITS[len(ratios):]:
        if (out / f"{name}.jsonl").exists():
            warnings.append(f"{out / name}.jsonl is left over from an earlier split: remove it")
    return warnings


def row_negatives(row: dict) -> list[str]:
    """The non-empty negatives of a pairs row (`negative` may be one text or a list)."""
    negative = row.get("negative")
    if not negative:
        return []
    return [negative] if isinstance(negative, str) else [n for n in negative if n]
