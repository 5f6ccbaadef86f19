"""Classifier fine-tuning benchmark: all-MiniLM-L6-v2 + a classification head, trained through
`ragtune.train.classifier.train_classifier` (the code path of `ragtune train classifier`), on SST-2
or TREC-6; quality (accuracy, macro-F1), training seconds, samples/s; and, with --side-by-side N,
training speed against a plain `transformers.Trainer` on the same model, data, batch size,
max_length and steps (N alternating runs, medians, ratio ours / plain; target >= 0.95).

Intended full runs (2 CPU cores, nothing else running; ~35 and ~25 minutes):

    python benchmarks/train_classifier.py --task sst2 --data ../shared/data/sst2 \
        --batch-size 32 --max-length 64 --learning-rate 5e-5 --time-budget 1800 --eval-steps 400
    python benchmarks/train_classifier.py --task trec --data ../shared/data/trec \
        --batch-size 32 --max-length 64 --learning-rate 1e-4 --epochs 3 --eval-steps 100
    python benchmarks/train_classifier.py --task sst2 --data ../shared/data/sst2 \
        --batch-size 32 --max-length 64 --side-by-side 3 --max-steps 60 --no-quality

Smoke run (seconds of training): add `--limit 64 --max-steps 3`.

Data:
- SST-2 (`train.tsv`, `dev.tsv`: columns sentence, label). `--val-size` rows of train.tsv (seeded)
  are held out for model selection and early stopping; dev.tsv is the reported evaluation set
  (GLUE's test labels are hidden). Target: dev accuracy >= 0.88 within 30 minutes of training.
- TREC-6 (`train_5500.label`, `TREC_10.label`: lines `COARSE:fine question`): the 6 coarse labels;
  `--val-size` training questions held out; TREC_10 is the test set. Reference: a logistic-regression
  head on frozen MiniLM embeddings reached 0.914 test accuracy (../shared/BENCHMARKS.md).

`--time-budget SECONDS` sets max_steps from a short throughput probe (`--probe-steps` steps through
the same code path): steps = 0.9 x budget x samples/s / (batch size x accumulation), at most
`--epochs` epochs; the other 10% is left for evaluations and checkpoints.

The result, `benchmarks/results/train-<task>.json`, holds settings, versions, machine, data
fingerprint, figures, and test predictions as (id, label) pairs, where id is the 1-based line of
the example in the original file: never dataset text.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fail, fingerprint, header, log, machine, median, write_result  # noqa: E402

TASKS = {"sst2": ("train.tsv", "dev.tsv"), "trec": ("train_5500.label", "TREC_10.label")}
TARGETS = {"sst2": {"test_accuracy": 0.88, "ours_over_plain_min": 0.95},
           "trec": {"frozen_head_reference_accuracy": 0.914, "ours_over_plain_min": 0.95}}


# --- data: original files -> JSONL rows {"text", "label", "id"} (id = line in the original file) ---
def read_sst2(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        head = next(reader)
        text_at, label_at = head.index("sentence"), head.index("label")
        for line, parts in enumerate(reader, start=2):
            rows.append({"text": parts[text_at].strip(), "label": parts[label_at].strip(), "id": line})
    return rows


def read_trec(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="latin-1") as fh:
        for line, raw in enumerate(fh, start=1):
            label, _, text = raw.rstrip("\n").partition(" ")
            if raw.strip():
                rows.append({"text": text.strip(), "label": label.split(":")[0], "id": line})
    return rows


def prepare_data(task: str, folder: Path, workdir: Path, val_size: int, limit: int | None, seed: int) -> dict:
    """Write train/validation/test JSONL into `workdir`; returns their paths and the data fingerprint."""
    files = [folder / name for name in TASKS[task]]
    read = read_sst2 if task == "sst2" else read_trec
    train, test = read(files[0]), read(files[1])
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:val_size])
    validation = [row for i, row in enumerate(train) if i in held_out]
    train = [row for i, row in enumerate(train) if i not in held_out]
    if limit:
        train, validation, test = train[:limit], validation[:limit], test[:limit]
    paths = {}
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        paths[name] = workdir / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return {"paths": paths, "ids": {"test": [row["id"] for row in test]},
            "rows": {"train": len(train), "validation": len(validation), "test": len(test)},
            "fingerprint": fingerprint(files, folder.parent)}


# --- runs ------------------------------------------------------------------------------------
def run_ours(paths: dict, model: str, options, quality: bool):
    from ragtune.train.classifier import train_classifier

    return train_classifier(paths["train"], paths["validation"] if quality else None,
                            paths["test"] if quality else None, model=model, options=options, progress=quality)


def run_plain(train_path: Path, model_path: Path, options, workdir: Path) -> dict:
    """What a user of transformers would write: tokenize, pad per batch, Trainer.train()."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              PrinterCallback, Trainer, TrainingArguments)

    from ragtune.train.common import quiet_transformers  # the same quiet logging as our side

    rows = [json.loads(line) for line in train_path.read_text(encoding="utf-8").splitlines()]
    labels = sorted({row["label"] for row in rows})
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=options.max_length)
    dataset = [{**{k: encoded[k][i] for k in encoded}, "labels": labels.index(row["label"])}
               for i, row in enumerate(rows)]
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(str(model_path), num_labels=len(labels))
    args = TrainingArguments(output_dir=str(workdir), per_device_train_batch_size=options.batch_size,
                             gradient_accumulation_steps=options.gradient_accumulation, max_steps=options.max_steps,
                             learning_rate=options.learning_rate, weight_decay=options.weight_decay,
                             warmup_steps=options.warmup_ratio, seed=options.seed, logging_steps=options.logging_steps,
                             save_strategy="steps", save_steps=options.max_steps, report_to="none", disable_tqdm=True,
                             dataloader_pin_memory=False)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.remove_callback(PrinterCallback)  # no progress output on either side
    with quiet_transformers():
        return trainer.train().metrics


def side_by_side(repetitions: int, paths: dict, model_path: Path, options, workdir: Path) -> dict:
    """Alternating runs (order flipped each repetition) of ours and plain Trainer: samples/s."""
    figures: dict[str, list[float]] = {"ours": [], "plain": []}
    for rep in range(repetitions):
        for side in (("ours", "plain") if rep % 2 == 0 else ("plain", "ours")):
            folder = workdir / f"sbs-{side}-{rep}"
            if side == "ours":
                run_options = options.model_copy(update={"output_dir": str(folder), "save_steps": options.max_steps})
                metrics = run_ours(paths, str(model_path), run_options, quality=False).metrics["train"]
            else:
                metrics = run_plain(paths["train"], model_path, options, folder)
            figures[side].append(metrics["train_samples_per_second"])
            log(f"side by side {rep + 1}/{repetitions} {side}: {metrics['train_samples_per_second']:.2f} samples/s "
                f"({metrics['train_runtime']:.1f} s)")
            shutil.rmtree(folder, ignore_errors=True)
    ours, plain = median(figures["ours"]), median(figures["plain"])
    return {"repetitions": repetitions, "steps": options.max_steps, "samples_per_second": figures,
            "median_ours": ours, "median_plain": plain, "ratio_ours_over_plain": ours / plain if plain else None}


def probe_max_steps(paths: dict, model: str, options, budget: float, probe_steps: int, workdir: Path,
                    train_rows: int) -> dict:
    probe = options.model_copy(update={"output_dir": str(workdir / "probe"), "max_steps": probe_steps,
                                       "save_steps": probe_steps})
    speed = run_ours(paths, model, probe, quality=False).metrics["train"]["train_samples_per_second"]
    shutil.rmtree(workdir / "probe", ignore_errors=True)
    per_step = options.batch_size * options.gradient_accumulation
    epoch_steps = -(-train_rows // per_step)
    steps = max(1, min(int(0.9 * budget * speed / per_step), int(options.epochs * epoch_steps)))
    log(f"probe: {speed:.2f} samples/s -> max_steps {steps} ({steps / epoch_steps:.2f} epochs) for a {budget:.0f} s budget")
    return {"probe_steps": probe_steps, "probe_samples_per_second": speed, "max_steps": steps,
            "epochs_covered": steps / epoch_steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--data", type=Path, required=True, help="Folder of the task's files.")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--mode", default="full", choices=("full", "lora", "probe"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gradient-accumulation", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--time-budget", type=float, default=None, help="Seconds of training: sets max_steps from a probe.")
    parser.add_argument("--probe-steps", type=int, default=20)
    parser.add_argument("--eval-steps", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--val-size", type=int, default=1000, help="Training rows held out for model selection.")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N rows of each split (smoke runs).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice).")
    parser.add_argument("--side-by-side", type=int, default=0, metavar="N", help="N alternating speed runs ours vs plain Trainer.")
    parser.add_argument("--no-quality", action="store_true", help="Skip the quality run (speed comparison only).")
    parser.add_argument("--out", type=Path, default=None, help="Keep the trained classifier here (default: a temp folder).")
    parser.add_argument("--result", type=Path, default=None,
                        help="Result file (default benchmarks/results/train-<task>.json; with --limit a temp file).")
    args = parser.parse_args(argv)
    if args.side_by_side and not args.max_steps:
        fail("--side-by-side needs --max-steps (both sides train exactly that many steps)")
    missing = [name for name in TASKS[args.task] if not (args.data / name).is_file()]
    if missing:
        fail(f"{args.data} lacks {', '.join(missing)} (see ../shared/data/INDEX.md). Nothing was measured.")

    import torch

    from ragtune.knowledge.embedders import resolve_model_path
    from ragtune.train.common import TrainOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model_path(args.model, setting="--model")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-train-{args.task}-"))
    data = prepare_data(args.task, args.data, workdir, args.val_size, args.limit, args.seed)
    log(f"data: {data['rows']} rows ({workdir})")
    options = TrainOptions(seed=args.seed, learning_rate=args.learning_rate, batch_size=args.batch_size,
                           gradient_accumulation=args.gradient_accumulation, epochs=args.epochs,
                           max_steps=args.max_steps, max_length=args.max_length, eval_steps=args.eval_steps,
                           patience=args.patience, logging_steps=10, output_dir=str(args.out or workdir / "model"))
    payload = header(settings={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    payload.update({"task": args.task, "model": args.model, "data": {"fingerprint": data["fingerprint"], "rows": data["rows"]},
                    "targets": TARGETS[args.task], "options": options.model_dump()})
    started = time.perf_counter()
    if not args.no_quality:
        if args.time_budget and not args.max_steps:
            payload["budget"] = probe_max_steps(data["paths"], str(model_path), options, args.time_budget,
                                                args.probe_steps, workdir, data["rows"]["train"])
            options = options.model_copy(update={"max_steps": payload["budget"]["max_steps"]})
            payload["options"] = options.model_dump()
        result = run_ours(data["paths"], str(model_path), options, quality=True)
        train = result.metrics["train"]
        payload["quality"] = {split: {k: result.metrics[split][k] for k in ("n", "accuracy", "macro_f1", "confusion_matrix", "per_label")}
                              for split in ("validation", "test")}
        payload["labels"] = result.labels
        payload["training"] = {"seconds": train["train_runtime"], "samples_per_second": train["train_samples_per_second"],
                               "steps": train["global_step"], "epochs": train.get("epoch"),
                               "best_checkpoint": Path(train["best_checkpoint"]).name if train["best_checkpoint"] else None}
        payload["predictions"] = {"test": [[i, label] for i, label in zip(data["ids"]["test"], result.predictions["test"])]}
        test = payload["quality"]["test"]
        log(f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}; training {train['train_runtime']:.1f} s, "
            f"{train['train_samples_per_second']:.2f} samples/s, {train['global_step']} steps")
    if args.side_by_side:
        payload["side_by_side"] = side_by_side(args.side_by_side, data["paths"], model_path, options, workdir)
        log(f"side by side: ours {payload['side_by_side']['median_ours']:.2f} vs plain "
            f"{payload['side_by_side']['median_plain']:.2f} samples/s, ratio {payload['side_by_side']['ratio_ours_over_plain']:.3f}")
    payload["seconds_total"] = time.perf_counter() - started
    payload["machine_at_end"] = {"loadavg_1_5_15": machine()["loadavg_1_5_15"]}
    result_path = args.result
    if result_path is None and args.limit:  # a smoke run never replaces the real result
        result_path = Path(tempfile.gettempdir()) / f"train-{args.task}-limit{args.limit}.json"
    path = write_result(f"train-{args.task}", payload, result_path)
    log(f"wrote {path}")
    shutil.rmtree(workdir, ignore_errors=True)  # the converted data (dataset text) and temp models


if __name__ == "__main__":
    main()
