"""SQuAD extractive reader: `ragtune train reader` on some articles, exact match / F1 on others.

    python benchmarks/train_reader.py --data ../shared/data/squad-v1.1-dev --workdir /tmp/bench-reader

The file holds SQuAD v1.1 dev articles 1-24. Split by article, so no paragraph is in two splits:
articles 1-16 train the reader, 17-18 pick its best checkpoint (F1), 19-24 are the test set
(`--test-limit N` scores an evenly spaced sample of N of its questions).
The reader (all-MiniLM-L6-v2 + a span head, through `ragtune.train.reader.train_reader`) is
compared with the untrained default, the extractive sentence generator, on the test questions:

- gold: the generator reads the question's own paragraph (the reading task alone);
- retrieved: `RAG.ask` over a knowledge base of all 1,048 paragraphs of the 24 articles (hybrid
  search, k=5), the reader used as the pipeline's generator (`generator: {backend: reader}`).

EM and F1 use the SQuAD rules (best over the reference answers), on the answer text without its
[n] markers. Every SQuAD v1.1 question has an answer, so neither generator may abstain here
(min_score 0, rag.min_relevance -1); the sentence generator answers with one sentence, its best
setting for these metrics. Writes benchmarks/results/train-reader-squad.json (ids and figures).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fail, header, latency_summary, log, write_result  # noqa: E402
from squad_rag import load_squad, open_project  # noqa: E402

TRAIN_ARTICLES, VALIDATION_ARTICLES = range(0, 16), range(16, 18)  # zero-based; the rest is the test set
CITE = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")


def article(paragraph_id: str) -> int:
    return int(paragraph_id[1:3])


def examples(questions: list[dict], contexts: dict[str, str]) -> list[dict]:
    """Training rows: the first reference answer, at its first occurrence in the paragraph."""
    rows = []
    for q in questions:
        context = contexts[q["paragraph"]]
        answer = q["answers"][0]
        rows.append({"question": q["question"], "context": context, "answer": answer,
                     "answer_start": context.find(answer)})
    return rows


def score(generation_text: str, abstained: bool, answers: list[str]) -> tuple[float, float]:
    from ragtune.evaluate.metrics import exact_match, f1_score

    prediction = "" if abstained else CITE.sub("", generation_text).strip()
    return max(exact_match(prediction, a) for a in answers), max(f1_score(prediction, a) for a in answers)


def evaluate(name: str, rag, questions: list[dict], paragraphs: dict[str, dict], setting: str) -> dict:
    """EM/F1 (0-100) of `rag`'s generator on `questions`, reading the gold paragraph or retrieving."""
    from ragtune.types import Hit

    em = f1 = 0.0
    seconds, per_question = [], []
    for i, q in enumerate(questions):
        t0 = time.perf_counter()
        if setting == "gold":
            p = paragraphs[q["paragraph"]]
            hit = Hit(f"{p['id']}#gold", p["id"], 1.0, p["text"], None, p["title"], None, None, {})
            generation = rag.generator.generate(rag.prompt(q["question"], [hit]))
            text, abstained = generation.text, generation.abstained
        else:
            answer = rag.ask(q["question"], mode="hybrid", k=5)
            text, abstained = answer.text, answer.abstained
        seconds.append(time.perf_counter() - t0)
        e, f = score(text, abstained, q["answers"])
        em, f1 = em + e, f1 + f
        per_question.append({"id": q["id"], "em": e, "f1": round(f, 4)})
        if (i + 1) % 250 == 0:
            log(f"  {name} ({setting}): {i + 1}/{len(questions)}, F1 so far {100 * f1 / (i + 1):.1f}")
    n = len(questions)
    result = {"exact_match": 100 * em / n, "f1": 100 * f1 / n, "n": n, "latency": latency_summary(seconds),
              "per_question": per_question}
    log(f"{name} ({setting}): EM {result['exact_match']:.1f}, F1 {result['f1']:.1f}, "
        f"p50 {result['latency']['p50_ms']:.0f} ms")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder holding the SQuAD v1.1 dev JSON (articles 1-24)")
    parser.add_argument("--workdir", required=True, type=Path, help="the knowledge base and the reader are kept here")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=int, default=384, help="tokens per reading window (question + context)")
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="smoke run: N questions per split")
    parser.add_argument("--test-limit", type=int, default=0,
                        help="score N test questions, evenly spaced over the test articles (default: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/train-reader-squad.json)")
    args = parser.parse_args(argv)

    from ragtune.config import GeneratorConfig, ProjectConfig
    from ragtune.project import Project
    from ragtune.rag import RAG
    from ragtune.registry import create
    from ragtune.train.common import TrainOptions
    from ragtune.train.reader import train_reader

    started = time.perf_counter()
    data = args.data.expanduser().resolve()
    files = sorted(data.glob("*.json")) if data.is_dir() else [data]
    if not files:
        fail(f"no SQuAD .json file in {data}")
    paragraphs, questions = load_squad(files[0])
    by_id = {p["id"]: p for p in paragraphs}
    splits = {"train": [q for q in questions if article(q["paragraph"]) in TRAIN_ARTICLES],
              "validation": [q for q in questions if article(q["paragraph"]) in VALIDATION_ARTICLES],
              "test": [q for q in questions if article(q["paragraph"]) >= VALIDATION_ARTICLES.stop]}
    if args.limit:
        splits = {name: rows[:: max(1, len(rows) // args.limit)][: args.limit] for name, rows in splits.items()}
    if args.test_limit and len(splits["test"]) > args.test_limit:
        step = len(splits["test"]) / args.test_limit
        splits["test"] = [splits["test"][int(i * step)] for i in range(args.test_limit)]
    articles = {name: sorted({article(q["paragraph"]) + 1 for q in rows}) for name, rows in splits.items()}
    log(", ".join(f"{name}: {len(rows)} questions (articles {a[0]}-{a[-1]})" for (name, rows), a
                  in zip(splits.items(), articles.values())))
    workdir = args.workdir.expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    contexts = {p["id"]: p["text"] for p in paragraphs}

    reader_dir = workdir / "reader"
    if reader_dir.exists():
        shutil.rmtree(reader_dir)
    n_train = len(splits["train"])
    eval_steps = max(1, -(-n_train // args.batch_size) // 2)
    options = TrainOptions(output_dir=str(reader_dir), seed=args.seed, learning_rate=args.learning_rate,
                           batch_size=args.batch_size, epochs=args.epochs, warmup_ratio=0.1,
                           eval_steps=eval_steps, logging_steps=max(1, eval_steps // 5))
    t0 = time.perf_counter()
    trained = train_reader(examples(splits["train"], contexts), examples(splits["validation"], contexts),
                           options=options, max_length=args.window, stride=args.stride)
    train_seconds = time.perf_counter() - t0
    log(f"reader trained in {train_seconds:.0f} s: validation {trained.metrics['validation']}")

    project, index_info = open_project(workdir, paragraphs, progress=True)
    config = project.config.model_copy(deep=True)
    config.rag.min_relevance = -1.0
    project.config = config
    generators = {
        "reader": create("generator", "reader", GeneratorConfig(backend="reader", model=str(reader_dir), min_score=0.0)),
        "sentences": create("generator", "extractive", GeneratorConfig(min_score=0.0, max_sentences=1),
                            embedder=project.embedder),
    }
    results = {}
    for name, generator in generators.items():
        rag = RAG(project, generator=generator)
        results[name] = {setting: evaluate(name, rag, splits["test"], by_id, setting) for setting in ("gold", "retrieved")}
    project.close()

    payload = {**header(argv, {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}),
               "data": {"file": str(files[0]), "splits": {name: {"questions": len(rows), "articles": articles[name],
                                                                  "ids": [q["id"] for q in rows] if name == "test" else None}
                                                          for name, rows in splits.items()}},
               "index": index_info,
               "reader": {"training_seconds": train_seconds, "metrics": trained.metrics},
               "test": results,
               "summary": {f"{name}_{setting}": {"exact_match": r["exact_match"], "f1": r["f1"]}
                           for name, by_setting in results.items() for setting, r in by_setting.items()},
               "seconds_total": time.perf_counter() - started, "loadavg_end": list(os.getloadavg())}
    out = args.out
    if out is None and args.limit:
        out = Path("/tmp") / f"train-reader-squad-limit{args.limit}.json"
    path = write_result("train-reader-squad", payload, out)
    log(f"wrote {path}")
    for key, row in payload["summary"].items():
        log(f"{key}: EM {row['exact_match']:.1f}, F1 {row['f1']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
