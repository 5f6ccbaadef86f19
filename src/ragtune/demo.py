"""`ragtune demo`: the README's main job. Two comparisons on example data written for this project
(Quillmate, a fictional note-sync server, so no model knew the facts before), fully offline on the
embedded defaults:

- qa: 184 questions (25 unanswerable) over 34 documents, then a knowledge update (4 changed
  documents, 1 new one, 21 questions about the changes);
- classify: 600 product reviews in 5 labels, then an update that adds a 6th label (`mobile`).

Each writes a project folder with its ragtune.yaml, results/*.json and a report.html.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ragtune.errors import ConfigError

QA_CONFIG = """\
# The qa half of `ragtune demo`: questions over Quillmate's documentation.
compare:
  task: qa
  documents: {docs}
  eval: {qa}
  update:
    documents: {update_docs}
    eval: {update_qa}
  k_values: [3, 10]          # rag-hybrid with 3 and 10 sources, beside rag.k (5)
  constraints:
    latency_budget_ms: 1000
    updates_per_month: 4
"""

CLASSIFY_CONFIG = """\
# The classify half of `ragtune demo`: routing Quillmate customer feedback to a team.
compare:
  task: classify
  train: {reviews}
  labels: {labels}
  general: {general}
  update:
    eval: {reviews_update}
    labels: {labels_update}
  constraints:
    latency_budget_ms: 200
    updates_per_month: 4
"""


def examples_folder(data: Path | None) -> Path:
    """The `examples/` folder of the ragtune source: given, or next to an editable/source install."""
    if data is None:
        import ragtune

        data = Path(ragtune.__file__).resolve().parents[2] / "examples"
    if not (data / "demo" / "qa" / "questions.jsonl").is_file() or not (data / "docs").is_dir():
        raise ConfigError(f"{data}: not ragtune's examples folder (no demo/qa/questions.jsonl and docs/); run the demo "
                          "from a source checkout (`pip install -e .`) or pass --data path/to/ragtune/examples")
    return data.resolve()


def _paths(data: Path) -> dict[str, str]:
    """The demo files, quoted for YAML (JSON strings are valid YAML scalars, whatever the path holds)."""
    import json

    demo = data / "demo"
    files = {"docs": data / "docs", "qa": demo / "qa" / "questions.jsonl", "update_docs": demo / "update" / "docs",
             "update_qa": demo / "update" / "questions.jsonl", "reviews": demo / "reviews" / "reviews.jsonl",
             "labels": demo / "reviews" / "labels.json", "general": demo / "general" / "pairs.jsonl",
             "reviews_update": demo / "reviews" / "reviews-update.jsonl",
             "labels_update": demo / "reviews" / "labels-update.json"}
    return {name: json.dumps(path.as_posix()) for name, path in files.items()}


def _project(folder: Path, config: str):
    from ragtune.config import CONFIG_NAME
    from ragtune.project import Project

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(config, encoding="utf-8")
    return Project.open(folder)


def run_demo(out: Path, data: Path | None, task: str = "both", *, progress: bool = True,
             echo: Callable[[str], None] = print, show: Callable[[dict, Path], None] | None = None) -> dict[str, dict]:
    """Run the demo comparisons into `out`; returns {task: comparison}."""
    from ragtune.evaluate.compare import results_folder, run_compare

    if task not in ("qa", "classify", "both"):
        raise ConfigError(f"--task {task}: use qa, classify or both")
    data = examples_folder(data)
    started = time.perf_counter()
    comparisons = {}
    for name, template in (("qa", QA_CONFIG), ("classify", CLASSIFY_CONFIG)):
        if task not in (name, "both"):
            continue
        echo(f"\n== {name}: {'questions over the Quillmate docs' if name == 'qa' else 'Quillmate customer reviews'}")
        project = _project(out / name, template.format(**_paths(data)))
        try:
            comparisons[name] = run_compare(project, progress=progress, echo=echo)
        finally:
            project.close()
        if show:
            show(comparisons[name], results_folder(project))
    echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s; reports: "
         + ", ".join(str((out / name / "results" / "report.html").resolve()) for name in comparisons))
    return comparisons
