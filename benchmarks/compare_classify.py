"""`ragtune compare` on a public classification dataset: SST-2 or TREC-6.

Writes a project in --workdir whose `compare:` section points at JSONL copies of the data (ids are
the original files' line numbers; the committed results hold ids and predictions only,
`store_text: false`), runs every classify strategy, and copies the result files, comparison.json
and report.html to benchmarks/results/compare-<task>[-fresh]/.

    python benchmarks/compare_classify.py --task trec --data ../shared/data/trec --workdir /tmp/bench/cmp-trec
    python benchmarks/compare_classify.py --task trec --data ../shared/data/trec --workdir /tmp/bench/cmp-trec-fresh --fresh NUM
    python benchmarks/compare_classify.py --task sst2 --data ../shared/data/sst2 --workdir /tmp/bench/cmp-sst2 --train-limit 8000

- TREC-6: train_5500.label trains (a seeded 10% is validation), TREC_10.label (500) is the test set.
  `--fresh NUM` holds the NUM class out of the first training and of the test set; the update is
  the NUM training questions (half absorbed, half scored), so the run shows how each strategy
  absorbs a new class: kNN and zero-shot in seconds, the classifier by retraining.
- SST-2: train.tsv (67,349 phrases; `--train-limit` takes a seeded sample to bound the CPU time),
  dev.tsv (872) is the test set.
Reference figures with frozen all-MiniLM-L6-v2 on this class of machine (../shared/BENCHMARKS.md):
SST-2 zero-shot 0.709, kNN-10 0.724, linear probe 0.812; TREC-6 zero-shot 0.508, kNN-10 0.746,
linear probe 0.914.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, fail, fingerprint, header, log  # noqa: E402
from train_classifier import TASKS, read_sst2, read_trec  # noqa: E402

# Label descriptions for zero-shot, written for this benchmark.
LABELS = {
    "sst2": {"0": "A negative movie review: the film is bad, boring or disappointing.",
             "1": "A positive movie review: the film is good, moving or entertaining."},
    "trec": {"ABBR": "The question asks what an abbreviation or acronym stands for.",
             "DESC": "The question asks for a description, definition, reason or manner: what is, why, how.",
             "ENTY": "The question asks for an entity: an animal, colour, food, product, term, event or other thing.",
             "HUM": "The question asks for a person or a group of people: who, which person or organisation.",
             "LOC": "The question asks for a location: a city, country, state, mountain or other place.",
             "NUM": "The question asks for a number: a count, date, year, amount, distance, speed or percentage."},
}


def _rows(rows: list[dict], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}:{r['id']}", "text": r["text"], "label": r["label"]} for r in rows]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prepare(task: str, data: Path, workdir: Path, train_limit: int | None, fresh: str | None, seed: int) -> dict:
    read = read_sst2 if task == "sst2" else read_trec
    train_file, test_file = (data / name for name in TASKS[task])
    if not train_file.is_file() or not test_file.is_file():
        fail(f"{data}: expected {train_file.name} and {test_file.name}")
    train, test = _rows(read(train_file), "train"), _rows(read(test_file), "test")
    if train_limit and len(train) > train_limit:
        train = sorted(random.Random(seed).sample(train, train_limit), key=lambda r: int(r["id"].split(":")[1]))
    labels = dict(LABELS[task])
    settings: dict = {"train": "train.jsonl", "eval": "test.jsonl", "labels": "labels.json"}
    if fresh:
        if fresh not in labels:
            fail(f"--fresh {fresh}: not a {task} label ({', '.join(labels)})")
        update = [r for r in train if r["label"] == fresh]
        train, test = [r for r in train if r["label"] != fresh], [r for r in test if r["label"] != fresh]
        _write(workdir / "update.jsonl", update)
        (workdir / "labels-update.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")
        labels.pop(fresh)
        settings["update"] = {"eval": "update.jsonl", "labels": "labels-update.json"}
    _write(workdir / "train.jsonl", train)
    _write(workdir / "test.jsonl", test)
    (workdir / "labels.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")
    return {"settings": settings, "rows": {"train": len(train), "test": len(test)},
            "fingerprint": fingerprint([train_file, test_file], data.parent)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--train-limit", type=int, default=None, help="Seeded sample of the training data.")
    parser.add_argument("--fresh", default=None, help="Hold this label out of the first training; the update adds it.")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--strategies", default="", help="Comma-separated (default: all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from ragtune.evaluate.compare import run_compare
    from ragtune.project import Project

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    prepared = prepare(args.task, args.data, args.workdir, args.train_limit, args.fresh, args.seed)
    compare = {"task": "classify", **prepared["settings"], "epochs": args.epochs, "learning_rate": args.learning_rate,
               "seed": args.seed, "store_text": False, "validation_share": 0.1,
               "strategies": [s for s in args.strategies.split(",") if s]}
    (args.workdir / "ragtune.yaml").write_text(json.dumps({"compare": compare}, indent=1), encoding="utf-8")
    project = Project.open(args.workdir)
    log(f"{args.task}: {prepared['rows']}")
    started = time.perf_counter()
    comparison = run_compare(project, progress=not args.quiet, echo=log)
    seconds = time.perf_counter() - started
    name = f"compare-{args.task}" + (f"-fresh-{args.fresh.lower()}" if args.fresh else "")
    out = RESULTS_DIR / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(args.workdir / "results", out, ignore=shutil.ignore_patterns("models", ".compare-work", "*.tmp"))
    (out / "run.json").write_text(json.dumps({**header(argv, vars(args)), "rows": prepared["rows"],
                                              "dataset": prepared["fingerprint"], "seconds": seconds}, indent=1,
                                             default=str), encoding="utf-8")
    for s in comparison["strategies"]:
        m = (s.get("metrics") or {}).get("accuracy")
        log(f"{s['name']:22} {'accuracy %.3f [%.3f, %.3f]' % (m['mean'], *m['ci95']) if m else s.get('reason')}")
    log(f"recommendation: {comparison['recommendation']['text']}")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
