"""SQuAD v1.1 as a RAG benchmark: the paragraphs are the knowledge base, the questions the queries.

    python benchmarks/squad_rag.py --data ../shared/data/squad-v1.1-dev [--workdir /tmp/bench-squad]

Per retrieval mode (bm25, dense, hybrid), through ragtune's own pipeline (`RAG.ask`, extractive
generator, k=5 sources):
- Recall@1 and Recall@5: the paragraph the question was written on is among the first 1 / 5
  distinct documents of `project.search(..., unit="documents")`.
- Extractive answer EM / F1 against the reference answers, with the official SQuAD normalisation
  (lowercase, drop punctuation and the articles a/an/the, collapse whitespace); the answer is the
  generator's text without its [n] markers (whole sentences, so EM is expected to be near 0).
- cited_contains_answer: share of questions whose FIRST cited sentence contains a reference answer
  (normalised); an abstention counts as a miss.
- Latency p50/p95 per stage (embed, search, prompt, generate) and of the retrieval + prompt-building
  overhead (embed + search + rerank + prompt, generation excluded), one question at a time.
Writes benchmarks/results/squad-rag.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, fingerprint, header, latency_summary, log, peak_rss_mib, write_result  # noqa: E402

from ragtune.evaluate.metrics import f1_score, normalize_answer  # noqa: E402

MODES = ("bm25", "dense", "hybrid")
TARGETS = {"hybrid_recall@5": 0.90, "cited_contains_answer@k5": 0.70, "overhead_p95_ms": 50.0}


def load_squad(path: Path) -> tuple[list[dict], list[dict]]:
    """(paragraphs as ragtune JSONL records, questions with their paragraph id and answers)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs, questions = [], []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            pid = f"a{a:02d}-p{p:03d}"
            paragraphs.append({"id": pid, "title": article["title"].replace("_", " "), "text": paragraph["context"]})
            for qa in paragraph["qas"]:
                questions.append({"id": qa["id"], "question": qa["question"], "paragraph": pid,
                                  "answers": [x["text"] for x in qa["answers"]]})
    return paragraphs, questions


def open_project(workdir: Path, paragraphs: list[dict], progress: bool):
    from ragtune.config import ProjectConfig
    from ragtune.project import Project

    corpus = workdir / "paragraphs.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in paragraphs), encoding="utf-8")
    project = Project(workdir / "project", ProjectConfig())
    report = project.index([str(corpus)], progress=progress)
    store = project.store()
    info = {"documents": store.count_documents(), "chunks": store.count_chunks(), "seconds_this_run": report.seconds,
            "embedder": project.embedder.info(),
            "chunks_embedded_this_run": report.chunks_embedded}
    log(f"index: {info['documents']} paragraphs, {info['chunks']} chunks ({report.seconds:.1f} s this run)")
    return project, info


def run_mode(rag, project, questions: list[dict], mode: str) -> dict:
    from ragtune.rag import RAG  # noqa: F401  (the pipeline under test)

    stages = {s: [] for s in ("embed", "search", "rerank", "prompt", "generate", "overhead", "total")}
    recall1 = recall5 = em = f1 = cited = abstained = 0
    per_question = []
    t0 = time.perf_counter()
    for i, q in enumerate(questions):
        docs = [h.document_id for h in project.search(q["question"], mode=mode, k=5, unit="documents")]
        r1, r5 = docs[:1] == [q["paragraph"]], q["paragraph"] in docs
        answer = rag.ask(q["question"], mode=mode, k=5)
        prediction = re.sub(r"\s*\[\d+(?:,\s*\d+)*\]", "", answer.text) if not answer.abstained else ""
        best_em = max(float(normalize_answer(prediction) == normalize_answer(a)) for a in q["answers"])
        best_f1 = max(f1_score(prediction, a) for a in q["answers"])
        first = answer.citations[0].quote if answer.citations and not answer.abstained else None
        contains = bool(first) and any(normalize_answer(a) in normalize_answer(first) for a in q["answers"])
        recall1 += r1
        recall5 += r5
        em += best_em
        f1 += best_f1
        cited += contains
        abstained += answer.abstained
        t = answer.timings
        for s in ("embed", "search", "rerank", "prompt", "generate", "total"):
            stages[s].append(t.get(s, 0.0))
        stages["overhead"].append(sum(t.get(s, 0.0) for s in ("embed", "search", "rerank", "prompt")))
        per_question.append({"id": q["id"], "r5": r5, "cited_contains": contains, "f1": round(best_f1, 4)})
        if (i + 1) % 500 == 0:
            log(f"  {mode}: {i + 1}/{len(questions)} ({(time.perf_counter() - t0) / (i + 1) * 1e3:.1f} ms/question)")
    n = len(questions)
    return {"recall@1": recall1 / n, "recall@5": recall5 / n, "exact_match": em / n, "f1": f1 / n,
            "cited_contains_answer": cited / n, "abstained": abstained / n,
            "latency": {s: latency_summary(v) for s, v in stages.items()}, "per_question": per_question}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder holding a SQuAD v1.1 JSON file")
    parser.add_argument("--workdir", type=Path, help="keep/reuse the ragtune project here (default: a temp dir)")
    parser.add_argument("--modes", default="bm25,dense,hybrid", help="comma-separated subset of bm25,dense,hybrid")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions (quick runs)")
    parser.add_argument("--no-progress", action="store_true", help="no indexing progress bar")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/squad-rag.json)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        fail(f"--modes must be a comma-separated subset of {','.join(MODES)}")
    data = args.data.expanduser().resolve()
    files = sorted(data.glob("*.json")) if data.is_dir() else [data]
    if not files:
        fail(f"no SQuAD .json file in {data}")
    paragraphs, questions = load_squad(files[0])
    if args.limit:
        questions = questions[: args.limit]
    log(f"{files[0].name}: {len(paragraphs)} paragraphs, {len(questions)} questions")

    started, loadavg_start = time.perf_counter(), list(os.getloadavg())
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ragtune-squad-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        from ragtune.rag import RAG

        project, index_info = open_project(workdir, paragraphs, progress=not args.no_progress)
        rag = RAG(project)
        results = {}
        for mode in modes:
            log(f"mode {mode}")
            results[mode] = run_mode(rag, project, questions, mode)
            r = results[mode]
            log(f"{mode}: R@1 {r['recall@1']:.4f} R@5 {r['recall@5']:.4f} EM {r['exact_match']:.4f} F1 {r['f1']:.4f} "
                f"cited-contains {r['cited_contains_answer']:.4f} abstained {r['abstained']:.4f} "
                f"overhead p95 {r['latency']['overhead']['p95_ms']:.1f} ms")
        config = project.config.model_dump()
        project.close()
    finally:
        if tmp is not None:
            tmp.cleanup()

    targets = {}
    if "hybrid" in results:
        h = results["hybrid"]
        targets = {
            "hybrid_recall@5": {"target": ">= 0.90", "value": h["recall@5"], "met": h["recall@5"] >= 0.90},
            "hybrid_cited_contains_answer@k5": {"target": ">= 0.70", "value": h["cited_contains_answer"],
                                                "met": h["cited_contains_answer"] >= 0.70},
            "hybrid_overhead_p95_ms": {"target": "<= 50", "value": h["latency"]["overhead"]["p95_ms"],
                                       "met": h["latency"]["overhead"]["p95_ms"] <= 50.0},
        }
    payload = header(sys.argv if argv is None else ["benchmarks/squad_rag.py", *argv], settings={
        "data": str(files[0]), "modes": modes, "k": 5, "limit": args.limit or None, "ragtune_config": config,
        "workdir": str(workdir) if args.workdir else "(temporary)",
        "notes": "Each question runs one at a time: project.search(unit=documents, k=5) for recall, then "
                 "RAG.ask(mode, k=5) for the answer (extractive generator, its own embed/search/prompt/generate "
                 "timings). Overhead = embed + search + rerank + prompt.",
    })
    payload.update({
        "benchmark": "squad-rag",
        "dataset": {"name": data.name, "paragraphs": len(paragraphs), "questions": len(questions),
                    "fingerprint": fingerprint(files, root=files[0].parent)},
        "index": index_info,
        "results": {m: {k: v for k, v in r.items() if k != "per_question"} for m, r in results.items()},
        "targets": targets,
        "per_question": {m: r["per_question"] for m, r in results.items()},
        "peak_rss_mib": peak_rss_mib(),
        "loadavg_1_5_15": {"start": loadavg_start, "end": list(os.getloadavg())},
        "wall_seconds": time.perf_counter() - started,
    })
    path = write_result("squad-rag" if not args.limit else f"squad-rag-limit{args.limit}", payload, args.out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
