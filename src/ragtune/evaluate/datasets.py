"""The data of a comparison, loaded and split so that every strategy is tested on the same held-out
examples and nothing a strategy trains on is in its test set.

- classify: labelled examples; the test set is `compare.eval` or a seeded, label-stratified share
  of `compare.train`; a share of the rest is validation (early stopping for fine-tuned models).
- qa: questions over a folder of documents, split **by source document**: the questions about a
  held-out document (and every unanswerable question) are the test set, the others train the
  strategies that learn (the reader). Retrieval-only strategies are scored on the same test set.

>>> data = load_classify(config.compare, project_folder)     # doctest: +SKIP
>>> len(data.train), len(data.validation), len(data.test)    # doctest: +SKIP
(378, 42, 180)
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.errors import ConfigError, InputError


@dataclass
class ClassifyData:
    labels: dict[str, str]
    """Label -> description (zero-shot reads these)."""
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    """Rows: {"id", "text", "label"}."""
    split: str
    files: dict[str, dict] = field(default_factory=dict)
    update_labels: dict[str, str] | None = None
    update_absorb: list[dict] = field(default_factory=list)
    """Update examples the strategies absorb (new label + more of the old ones)."""
    update_test: list[dict] = field(default_factory=list)
    """Update examples scored before and after absorbing."""


@dataclass
class QAData:
    documents: Path
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    """Rows: {"id", "question", "answer", "answerable", "source", "fact"}."""
    split: str
    files: dict[str, dict] = field(default_factory=dict)
    update_documents: Path | None = None
    update_questions: list[dict] = field(default_factory=list)


def fingerprint(path: Path, rows: int | None = None) -> dict:
    """sha256 and size of a file (or of a folder's files, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return {"path": str(path), "sha256": digest.hexdigest(), **({"rows": rows} if rows is not None else {}),
            **({"files": len(files)} if path.is_dir() else {})}


def _resolve(folder: Path, value: str | None, setting: str, *, required: bool = True, is_dir: bool = False) -> Path | None:
    if not value:
        if required:
            raise ConfigError(f"compare.{setting} is not set: name the {'folder' if is_dir else 'file'} in ragtune.yaml "
                              f"(relative to {folder})")
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if is_dir and not path.is_dir():
        raise ConfigError(f"compare.{setting}: {path} is not a folder")
    if not is_dir and not path.is_file():
        raise ConfigError(f"compare.{setting}: {path} does not exist")
    return path


def _labels_file(path: Path | None, seen: list[str], setting: str) -> dict[str, str]:
    if path is None:
        return {label: label for label in seen}
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON file of label descriptions ({exc}); expected "
                         '{"label": "one-sentence description", ...}') from None
    if not isinstance(labels, dict) or not all(isinstance(v, str) and v.strip() for v in labels.values()):
        raise InputError(f"{path}: expected a JSON object mapping each label to a non-empty description")
    missing = sorted(set(seen) - set(labels))
    if missing:
        raise InputError(f"{path}: no description for label(s) {', '.join(missing)} used in compare.{setting}; add them")
    return {str(k): v for k, v in labels.items()}


def _classify_rows(path: Path) -> list[dict]:
    from ragtune.train.data import load_examples

    examples = load_examples(path, "classification")
    rows = []
    for line, row in zip(examples.lines, examples.rows):
        rows.append({"id": str(row.get("meta", {}).get("id", f"{path.name}:{line}")), "text": row["text"],
                     "label": row["label"]})
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: ids are not unique; give each row its own `id` or remove the column")
    return rows


def stratified_split(rows: list[dict], share: float, seed: int, key: str = "label") -> tuple[list[dict], list[dict]]:
    """(rest, held_out): `share` of each label's rows held out, seeded; order kept."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row[key], []).append(i)
    held: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label][:]
        rng.shuffle(members)
        held.update(members[:round(len(members) * share)])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_classify(config, folder: Path) -> ClassifyData:
    """Train/validation/test of a classify comparison (and its update, when configured)."""
    train_path = _resolve(folder, config.train, "train")
    rows = _classify_rows(train_path)
    files = {"train": fingerprint(train_path, len(rows))}
    eval_path = _resolve(folder, config.eval, "eval", required=False)
    if eval_path is not None:
        test = _classify_rows(eval_path)
        files["eval"] = fingerprint(eval_path, len(test))
        split = f"test = {eval_path.name} ({len(test)}); "
    else:
        rows, test = stratified_split(rows, config.test_share, config.seed)
        split = f"test = {len(test)} of {train_path.name} (seeded, stratified by label); "
    train, validation = stratified_split(rows, config.validation_share, config.seed + 1)
    split += f"train {len(train)} / validation {len(validation)}"
    seen = sorted({r["label"] for r in train})
    if not train or not test:
        raise InputError(f"{train_path}: {len(train)} training and {len(test)} test examples after the split; a "
                         "comparison needs both: add examples or change compare.test_share")
    unknown = sorted({r["label"] for r in test} - set(seen))
    if unknown:
        where = "compare.eval" if eval_path is not None else f"{train_path}"
        raise InputError(f"{where}: label(s) {', '.join(unknown)} in the test set but not in the training data "
                         "(too few examples of them to split); add examples")
    labels_path = _resolve(folder, config.labels, "labels", required=False)
    labels = _labels_file(labels_path, seen, "train")
    labels = {label: labels[label] for label in seen}
    if labels_path:
        files["labels"] = fingerprint(labels_path)
    data = ClassifyData(labels, train, validation, test, split, files)
    update_path = _resolve(folder, config.update.eval, "update.eval", required=False)
    if update_path is not None:
        update = _classify_rows(update_path)
        clash = {r["id"] for r in update} & {r["id"] for r in train + validation + test}
        if clash:
            raise InputError(f"{update_path}: ids also in the main data ({', '.join(sorted(clash)[:3])}...): "
                             "give update examples their own ids")
        data.update_absorb, data.update_test = stratified_split(update, 0.5, config.seed + 2)
        if not data.update_absorb or not data.update_test:
            raise InputError(f"{update_path}: too few examples to absorb half and score half; add examples")
        update_labels_path = _resolve(folder, config.update.labels, "update.labels", required=False)
        all_seen = sorted(set(seen) | {r["label"] for r in update})
        data.update_labels = _labels_file(update_labels_path, all_seen, "update.eval") if update_labels_path else \
            {**labels, **{lab: lab for lab in all_seen if lab not in labels}}
        files["update"] = fingerprint(update_path, len(update))
    return data


_QA_FIELDS = ("id", "question", "answer")


def read_questions(path: Path) -> list[dict]:
    """Questions JSONL: id, question, answer, answerable (default true), source, fact (default id),
    optional answers (every correct answer, as SQuAD lists them: scores take the best match)."""
    rows, problems = [], []
    with open(path, encoding="utf-8") as fh:
        for line_number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                problems.append(f"{path}:{line_number}: not valid JSON")
                continue
            missing = [f for f in _QA_FIELDS if not isinstance(row, dict) or f not in row]
            if missing:
                problems.append(f"{path}:{line_number}: missing field(s) {', '.join(missing)}")
                continue
            answerable = bool(row.get("answerable", True))
            if answerable and not (str(row["answer"]).strip() and row.get("source")):
                problems.append(f"{path}:{line_number}: an answerable question needs a non-empty 'answer' and its "
                                "'source' document (or set \"answerable\": false)")
                continue
            answers = row.get("answers")
            if answers is not None and not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
                problems.append(f"{path}:{line_number}: 'answers' must be a list of strings (other correct answers)")
                continue
            rows.append({"id": str(row["id"]), "question": str(row["question"]), "answer": str(row["answer"] or ""),
                         "answers": [str(row["answer"] or "")] + [a for a in answers or [] if a != row["answer"]],
                         "answerable": answerable, "source": row.get("source"),
                         "fact": str(row.get("fact") or row["id"]), "before": row.get("before")})
    if problems:
        raise InputError("\n".join(problems[:10]) + (f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""))
    if not rows:
        raise InputError(f"{path}: no questions")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: question ids are not unique")
    return rows


def load_qa(config, folder: Path) -> QAData:
    """Questions split by source document: held-out documents' questions + unanswerables = test."""
    documents = _resolve(folder, config.documents, "documents", is_dir=True)
    questions_path = _resolve(folder, config.eval, "eval")
    questions = read_questions(questions_path)
    for row in questions:
        if row["answerable"] and not (documents / row["source"]).is_file():
            raise InputError(f"{questions_path}: question {row['id']}: source '{row['source']}' is not a file in "
                             f"{documents}")
    sources = sorted({r["source"] for r in questions if r["answerable"]})
    rng = random.Random(config.seed)
    shuffled = sources[:]
    rng.shuffle(shuffled)
    n_test = max(1, round(len(shuffled) * config.test_share))
    test_docs = set(shuffled[:n_test])
    rest = shuffled[n_test:]
    n_validation = round(len(rest) * config.validation_share) if len(rest) > 2 else 0
    validation_docs = set(rest[:n_validation])
    unanswerable = [r["id"] for r in questions if not r["answerable"]]
    rng.shuffle(unanswerable)
    # A fifth of the unanswerable questions validate too (when there is validation), so a threshold
    # for abstaining can be calibrated on held-out data; the rest are tested.
    validation_unanswerable = set(unanswerable[:round(len(unanswerable) * 0.2)] if validation_docs else [])
    test = [r for r in questions if (not r["answerable"] and r["id"] not in validation_unanswerable)
            or r["source"] in test_docs]
    validation = [r for r in questions if (r["answerable"] and r["source"] in validation_docs)
                  or r["id"] in validation_unanswerable]
    train = [r for r in questions if r["answerable"] and r["source"] not in test_docs | validation_docs]
    split = (f"by source document: test = questions about {len(test_docs)} held-out documents + "
             f"{sum(not r['answerable'] for r in test)} unanswerable ({len(test)}); training "
             f"{len(train)} questions on {len(rest) - n_validation} other documents; validation {len(validation)} "
             f"({len(validation_unanswerable)} unanswerable)")
    files = {"documents": fingerprint(documents), "eval": fingerprint(questions_path, len(questions))}
    data = QAData(documents, train, validation, test, split, files)
    update_docs = _resolve(folder, config.update.documents, "update.documents", required=False, is_dir=True)
    update_eval = _resolve(folder, config.update.eval, "update.eval", required=False)
    if (update_docs is None) != (update_eval is None):
        raise ConfigError("compare.update: set both `documents` (the changed files) and `eval` (questions about "
                          "them), or neither")
    if update_docs is not None:
        data.update_documents, data.update_questions = update_docs, read_questions(update_eval)
        files["update"] = fingerprint(update_docs)
    return data
