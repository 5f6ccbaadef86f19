"""`ragtune compare`, `ragtune report` and `ragtune demo`: thin commands over ragtune.evaluate."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _print_comparison(comparison: dict, results: Path) -> None:
    from rich.console import Console

    from ragtune.evaluate.report import summary_table

    console = Console()
    if not console.is_terminal:  # a pipe or a log file: no wrapping inside the table's cells
        console = Console(width=120)
    console.print(summary_table(comparison))
    recommendation = comparison.get("recommendation") or {}
    if recommendation.get("text"):
        console.print(f"\n[bold]Recommendation[/bold] ({comparison['task']}): {recommendation['text']}", highlight=False)
    for item in recommendation.get("would_change") or []:
        console.print(f"  - {item}", highlight=False)
    console.print(f"\nreport: {results / 'report.html'}\nresults: {results}/*.json", highlight=False)


def compare_command(
    strategies: Optional[str] = typer.Option(None, "--strategies", "-s", help="Comma-separated strategies to run (default: compare.strategies, else all of the task's)."),
    adopt: bool = typer.Option(False, "--adopt", help="Write the recommended strategy into ragtune.yaml (ask, classify and serve then use it)."),
    list_only: bool = typer.Option(False, "--list", help="List the task's strategies and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run the strategies side by side on held-out data, write results/*.json and report.html, recommend one."""
    from ragtune.cli import _project
    from ragtune.evaluate.compare import results_folder, run_compare, strategies_of

    project = _project()
    if list_only:
        task = project.config.compare.task or "qa"
        for name, (family, description) in strategies_of(task, project.config.compare).items():
            typer.echo(f"{name:22} {family:13} {description}")
        return
    chosen = [s.strip() for s in strategies.split(",") if s.strip()] if strategies else None
    comparison = run_compare(project, chosen, progress=not quiet, echo=lambda m: typer.echo(m, err=True))
    _print_comparison(comparison, results_folder(project))
    if adopt:
        _adopt(project, comparison)


def _adopt(project, comparison: dict) -> None:
    from ragtune.config import CONFIG_NAME
    from ragtune.evaluate.adopt import adoption, set_yaml_values

    values = adoption(comparison, project.folder, rerank_configured=bool(project.config.rag.rerank.model))
    set_yaml_values(project.folder / CONFIG_NAME, values)
    typer.echo(f"adopted {comparison['best']}: " + ", ".join(f"{k}: {v}" for k, v in values.items()))


def report_command(
    adopt: bool = typer.Option(False, "--adopt", help="Also write the recommended strategy into ragtune.yaml."),
):
    """Rebuild comparison.json and report.html from results/*.json alone (no model runs)."""
    from ragtune.cli import _project
    from ragtune.evaluate.compare import rebuild_report, results_folder

    project = _project()
    comparison = rebuild_report(project)
    _print_comparison(comparison, results_folder(project))
    if adopt:
        _adopt(project, comparison)


def demo_command(
    out: Path = typer.Option(Path("ragtune-demo"), "--out", help="Folder for the two demo projects and their reports."),
    data: Optional[Path] = typer.Option(None, "--data", help="The examples folder of the ragtune source (default: found next to the package)."),
    task: str = typer.Option("both", "--task", help="qa, classify or both."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """The offline demo: compare every strategy available offline on Quillmate, a fictional product."""
    from ragtune.demo import run_demo

    run_demo(out, data, task, progress=not quiet, echo=lambda m: typer.echo(m, err=True), show=_print_comparison)
