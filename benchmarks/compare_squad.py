"""`ragtune compare` on SQuAD v1.1 dev, articles 1-24: rag (bm25 / dense / hybrid, extractive
generator) vs rag+reader (retrieval + MiniLM fine-tuned as an extractive reader), split by article.

    python benchmarks/compare_squad.py --data ../shared/data/squad-v1.1-dev --workdir /tmp/bench/cmp-squad

Each article becomes one document (its paragraphs, in order); each question keeps every reference
answer (`answers`: scores take the best match, as the SQuAD script does). `--per-article` takes a
seeded sample of each article's questions to bound the CPU time. compare holds out 30% of the
articles: their questions are the test set, the reader trains on the others' (10% of those
articles validate). The committed results hold ids and predictions only (`store_text: false`);
they go to benchmarks/results/compare-squad/.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, fail, fingerprint, header, log  # noqa: E402


def prepare(data: Path, workdir: Path, articles: int, per_article: int, seed: int) -> dict:
    path = data / "dev-v1.1-a.json"
    if not path.is_file():
        fail(f"{path} not found: pass --data with the folder holding dev-v1.1-a.json")
    dataset = json.loads(path.read_text(encoding="utf-8"))["data"][:articles]
    docs, questions = workdir / "docs", []
    docs.mkdir(parents=True)
    rng = random.Random(seed)
    for number, article in enumerate(dataset, 1):
        name = f"{number:02d}-{re.sub(r'[^A-Za-z0-9]+', '_', article['title'])[:60]}.txt"
        (docs / name).write_text(article["title"].replace("_", " ") + "\n\n" +
                                 "\n\n".join(p["context"] for p in article["paragraphs"]) + "\n", encoding="utf-8")
        qas = [qa for p in article["paragraphs"] for qa in p["qas"]]
        for qa in (rng.sample(qas, per_article) if per_article and len(qas) > per_article else qas):
            answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
            questions.append({"id": qa["id"], "question": qa["question"], "answer": answers[0], "answers": answers,
                              "answerable": True, "source": name})
    (workdir / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    return {"articles": len(dataset), "questions": len(questions), "fingerprint": fingerprint([path], data.parent)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--articles", type=int, default=24)
    parser.add_argument("--per-article", type=int, default=60, help="Questions sampled per article (0 = all).")
    parser.add_argument("--epochs", type=float, default=2.0, help="Reader epochs.")
    parser.add_argument("--strategies", default="rag-bm25,rag-dense,rag-hybrid,rag+reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from ragtune.evaluate.compare import run_compare
    from ragtune.project import Project

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    prepared = prepare(args.data, args.workdir, args.articles, args.per_article, args.seed)
    compare = {"task": "qa", "documents": "docs", "eval": "questions.jsonl", "epochs": args.epochs, "seed": args.seed,
               "store_text": False, "strategies": [s for s in args.strategies.split(",") if s]}
    (args.workdir / "ragtune.yaml").write_text(json.dumps({"compare": compare}, indent=1), encoding="utf-8")
    project = Project.open(args.workdir)
    log(f"squad: {prepared['articles']} articles, {prepared['questions']} questions")
    started = time.perf_counter()
    comparison = run_compare(project, progress=not args.quiet, echo=log)
    seconds = time.perf_counter() - started
    out = RESULTS_DIR / "compare-squad"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(args.workdir / "results", out, ignore=shutil.ignore_patterns("models", ".compare-work", "*.tmp"))
    (out / "run.json").write_text(json.dumps({**header(argv, vars(args)), **prepared, "seconds": seconds}, indent=1,
                                             default=str), encoding="utf-8")
    for s in comparison["strategies"]:
        m = s.get("metrics") or {}
        if m:
            log(f"{s['name']:12} accuracy {m['accuracy']['mean']:.3f} EM {m['exact_match']['mean']:.3f} "
                f"F1 {m['f1']['mean']:.3f} recall@k {m.get('recall_at_5', {}).get('mean', float('nan')):.3f}")
    log(f"recommendation: {comparison['recommendation']['text']}")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
