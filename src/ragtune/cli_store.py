"""`ragtune migrate`: copy the knowledge base to another store backend (thin command over
ragtune.knowledge.migrate; nothing heavy is imported until it runs).

    ragtune migrate --to postgresql://kb@db.internal:5432/kb
    ragtune migrate --to qdrant+http://qdrant.internal:6333/kb
    ragtune migrate --to ./store-copy                     # back to an embedded (sqlite) folder
"""
from __future__ import annotations

import typer


def migrate_command(to: str = typer.Option(..., "--to", help="Target store URL: postgresql://user@host:5432/db"
                                                                "[?schema=s], qdrant+http://host:6333/collection, "
                                                                "qdrant:///folder, or a folder (embedded sqlite)."),
                    batch_size: int = typer.Option(256, min=1, help="Documents per write."),
                    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")):
    """Copy the knowledge base to another store (PostgreSQL + pgvector, Qdrant, SQLite) without
    re-embedding: stored vectors, metadata, access groups and file hashes move as they are."""
    from ragtune.cli import _project
    from ragtune.knowledge.migrate import config_snippet, migrate_project

    project = _project()
    report, config = migrate_project(project, to, batch_size=batch_size, progress=not quiet)
    typer.echo(f"moved {report.documents} documents and {report.chunks} chunks ({report.files} file records) "
               f"from {report.source} to {report.target} in {report.seconds:.1f} s; vectors copied, none re-embedded")
    typer.echo(f"the project still uses its old store; to switch, put this in {project.folder / 'ragtune.yaml'}:")
    typer.echo(config_snippet(config))
