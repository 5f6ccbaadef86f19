"""One result file per strategy: `results/<strategy>.json`, the only input of compare and reports.

A record holds the strategy's config, the package and model versions, the seed, data fingerprints,
one entry per test example (id, gold, prediction, scores, latency; the input text only when
`compare.store_text` allows), and the figures: each quality metric as a mean with a 95% bootstrap
interval, latency p50/p95 per stage, tokens, cost, one-time seconds, freshness and forgetting.
"""
from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.evaluate.stats import interval

SCHEMA = "ragtune.result/1"


def versions(**models: str | None) -> dict:
    """Versions of Python, ragtune and the libraries that shape results, plus the models used."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("ragtune", "torch", "transformers", "sentence-transformers", "onnxruntime", "scikit-learn"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    out.update({k: v for k, v in models.items() if v})
    return out


def file_name(strategy: str) -> str:
    """results/<this>.json for a strategy name ('finetune+knn-vote' -> 'finetune+knn-vote.json')."""
    return re.sub(r"[^A-Za-z0-9+._-]", "_", strategy) + ".json"


def percentiles(values: list[float]) -> dict | None:
    """p50/p95 of latencies in seconds, reported in ms."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64) * 1000
    return {"p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)), "n": len(values)}


def latency_by_stage(timings: list[dict[str, float]]) -> dict:
    stages = sorted({stage for t in timings for stage in t})
    return {stage: percentiles([t[stage] for t in timings if stage in t]) for stage in stages}


def metric(values: list[float], seed: int) -> dict | None:
    return interval(values, seed=seed).as_dict() if values else None


def skipped(strategy: str, family: str, task: str, reason: str, description: str = "") -> dict:
    return {"schema": SCHEMA, "strategy": strategy, "family": family, "task": task, "status": "skipped",
            "reason": reason, "description": description}


def base_record(strategy: str, family: str, task: str, description: str, *, split: str, config: dict, seed: int,
                data: dict, models: dict) -> dict:
    return {"schema": SCHEMA, "strategy": strategy, "family": family, "task": task, "status": "ok", "reason": None,
            "description": description, "split": split, "config": config, "seed": seed, "data": data,
            "versions": versions(**models), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_result(folder: Path, record: dict) -> Path:
    """Write results/<strategy>.json atomically (a crash never leaves half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    from ragtune.train.common import write_json_atomic

    return write_json_atomic(folder / file_name(record["strategy"]), record, indent=1, default=_jsonable)


def _jsonable(value: Any):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_results(folder: Path) -> list[dict]:
    """Every results/*.json of the current schema, in name order (other JSON files are ignored)."""
    from ragtune.errors import InputError

    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({exc}); delete it and run `ragtune compare` again") from None
        if isinstance(record, dict) and record.get("schema") == SCHEMA:
            record["result_file"] = str(path)
            records.append(record)
    return records
