"""`ragtune compare`: run the task's strategies on the same held-out data, write one result file per
strategy, then build the comparison (summaries, paired test, recommendation, disagreements) from
those files alone, write `comparison.json` and the self-contained `report.html`.

>>> comparison = run_compare(Project.open("reviews"))         # doctest: +SKIP
>>> comparison["recommendation"]["text"]                       # doctest: +SKIP
'Use finetune. It scores accuracy 0.906 vs 0.861 for linear-probe, a significant difference ...'
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ragtune.errors import ConfigError
from ragtune.evaluate.records import file_name, read_results, write_result
from ragtune.evaluate.recommend import paired_test, recommend

SCHEMA = "ragtune.comparison/1"
MAX_DISAGREEMENTS = 60


def strategies_of(task: str, compare=None) -> dict[str, tuple[str, str]]:
    """Strategy name -> (family, description) for the task (qa: with compare.k_values' variants)."""
    if task == "classify":
        from ragtune.evaluate.classify_run import STRATEGIES

        return STRATEGIES
    from ragtune.evaluate.qa_run import qa_strategies

    return qa_strategies(compare)


def _chosen(task: str, requested: list[str], compare=None) -> list[str]:
    known = strategies_of(task, compare)
    unknown = [s for s in requested if s not in known]
    if unknown:
        raise ConfigError(f"compare.strategies: unknown {task} strateg{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(unknown)}; choose from {', '.join(known)}")
    return list(dict.fromkeys(requested)) or list(known)


def results_folder(project) -> Path:
    return (project.folder / project.config.compare.results).resolve()


def run_compare(project, strategies: list[str] | None = None, *, progress: bool = True,
                echo: Callable[[str], None] = print) -> dict:
    """Run, write results/<strategy>.json, comparison.json and report.html; return the comparison."""
    compare = project.config.compare
    if compare.task is None:
        raise ConfigError(f"{project.folder / 'ragtune.yaml'}: compare.task is not set: add a `compare:` section "
                          "with task: qa (and documents, eval) or task: classify (and train); see `ragtune compare --help`")
    names = _chosen(compare.task, strategies or compare.strategies, compare)
    results = results_folder(project)
    general = (project.folder / Path(compare.general).expanduser()) if compare.general else None
    if general is not None and not general.is_file():
        raise ConfigError(f"compare.general: {general} does not exist")
    if general is not None and compare.task == "qa":
        from ragtune.evaluate.qa_run import general_questions

        general_questions(general)  # a bad row fails now, not after the training
    started = time.perf_counter()
    if compare.task == "classify":
        from ragtune.evaluate.classify_run import run_classify
        from ragtune.evaluate.datasets import load_classify

        data = load_classify(compare, project.folder)
        echo(f"classify: {data.split}")
        records = run_classify(data, compare, project.embedder, project.config.embedder, results, names,
                               progress=progress, echo=echo, general=general)
    else:
        from ragtune.evaluate.datasets import load_qa
        from ragtune.evaluate.qa_run import run_qa

        data = load_qa(compare, project.folder)
        echo(f"qa: {data.split}")
        records = run_qa(data, project, compare, results, names, progress=progress, echo=echo, general=general)
    key = run_key(project, data)
    _clear_stale(results, {file_name(r["strategy"]) for r in records}, key)
    for record in records:
        record["run_key"] = key
        write_result(results, record)
    echo(f"compare finished in {time.perf_counter() - started:.0f} s")
    comparison = build_comparison(read_results(results), project.config.compare.constraints.model_dump(),
                                  project=str(project.folder))
    write_outputs(comparison, results)
    return comparison


def run_key(project, data) -> str:
    """What makes two runs' results comparable: the task, the data, the split, the seed and the
    embedder. Results of another key are removed, so a report never mixes two splits."""
    import hashlib

    compare = project.config.compare
    settings = {"task": compare.task, "data": data.files, "seed": compare.seed, "test_share": compare.test_share,
                "validation_share": compare.validation_share, "embedder": project.config.embedder.model_dump(),
                "chunking": project.config.chunking.model_dump(), "split": data.split}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _clear_stale(results: Path, keep: set[str], key: str) -> None:
    """Remove result files of another task, other data or another split (the files of this run's
    strategies are rewritten anyway)."""
    for record in read_results(results):
        path = Path(record["result_file"])
        if path.name not in keep and record.get("run_key") != key:
            path.unlink(missing_ok=True)


def _summary(record: dict) -> dict:
    keys = ("family", "status", "reason", "description", "split", "metrics", "latency_ms", "tokens",
            "cost_per_1k_queries", "one_time", "forgetting", "config", "versions", "data", "result_file",
            "answer_kind", "model_folder")
    summary = {"name": record["strategy"], **{k: record.get(k) for k in keys}}
    if record.get("freshness"):
        summary["freshness"] = {k: v for k, v in record["freshness"].items() if k != "examples"}
    return summary


def build_comparison(records: list[dict], constraints: dict, *, project: str = "") -> dict:
    """The comparison from result records alone (what `ragtune report` rebuilds)."""
    if not records:
        raise ConfigError("no results to compare: run `ragtune compare` first")
    tasks = {r["task"] for r in records}
    if len(tasks) > 1:
        raise ConfigError(f"the results folder mixes tasks ({', '.join(sorted(tasks))}); run `ragtune compare` again")
    task = tasks.pop()
    ok = [r for r in records if r["status"] == "ok"]
    primary = ok[0]["primary_metric"] if ok else "accuracy"
    summaries = [_summary(r) for r in records]
    by_name = {r["strategy"]: r for r in records}
    verdict = recommend(summaries, by_name, constraints, primary)
    ranking = [s["name"] for s in sorted((s for s in summaries if s["status"] == "ok" and (s["metrics"] or {}).get(primary)),
                                         key=lambda s: -s["metrics"][primary]["mean"])]
    shown = ["accuracy", "macro_f1"] if task == "classify" else \
        ["accuracy", "f1", "exact_match", "abstention_recall", "citation_correct", "mrr"]
    best = verdict.get("best")
    pairwise = [paired_test(by_name[best], by_name[name], primary) for name in ranking if best and name != best]
    from importlib import metadata

    has_forgetting = any(s.get("forgetting") for s in summaries)
    return {"schema": SCHEMA, "task": task, "project": project, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ragtune_version": metadata.version("ragtune"), "primary_metric": primary, "metrics_shown": shown,
            "constraints": constraints, "strategies": summaries, "ranking": ranking, **verdict,
            "pairwise": [test for test in pairwise if test],
            "forgetting_note": None if has_forgetting else _forgetting_note(task, summaries),
            "disagreements": disagreements(ok, verdict.get("best"))}


def _forgetting_note(task: str, summaries: list[dict]) -> str:
    if task == "qa":
        return ("Forgetting applies to the strategies that fine-tune the generator (finetune, "
                "finetune+rag, raft, with generator.backend hf) and needs compare.general (question/answer rows); the "
                "reader's span head is new, so it had no ability to lose.")
    return "Set compare.general to a query/positive set to measure what fine-tuning the encoder costs."


def disagreements(records: list[dict], best: str | None, limit: int = MAX_DISAGREEMENTS) -> list[dict]:
    """Examples where the strategies do not all get the same verdict (score >= 0.5 counts as right)."""
    by_id: dict[str, dict] = {}
    for record in records:
        for e in record.get("examples", []):
            row = by_id.setdefault(e["id"], {"id": e["id"], "gold": e.get("gold"), "predictions": {}, "correct": {}})
            if e.get("input") is not None:
                row["input"] = e["input"]
            row["predictions"][record["strategy"]] = e.get("prediction")
            row["correct"][record["strategy"]] = e.get("score", 0) >= 0.5
    split = [row for row in by_id.values() if len(set(row["correct"].values())) > 1]
    split.sort(key=lambda row: (row["correct"].get(best, True), row["id"]))  # where the recommended one fails first
    return split[:limit]


def write_outputs(comparison: dict, results: Path) -> tuple[Path, Path]:
    """comparison.json and report.html in the results folder (both atomically)."""
    from ragtune.evaluate.report import write_report

    from ragtune.train.common import write_json_atomic

    results.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(results / "comparison.json", comparison, indent=1), write_report(comparison, results / "report.html")


def rebuild_report(project) -> dict:
    """`ragtune report`: the comparison and report.html rebuilt from results/*.json alone."""
    results = results_folder(project)
    comparison = build_comparison(read_results(results), project.config.compare.constraints.model_dump(),
                                  project=str(project.folder))
    write_outputs(comparison, results)
    return comparison
