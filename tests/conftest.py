"""Shared fixtures: projects on the deterministic hashing embedder (same registry as the real one)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragtune.config import EmbedderConfig, ProjectConfig
from ragtune.project import Project

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DOCS = ROOT / "examples" / "docs"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _cli_state(monkeypatch):
    """Commands run in a test set ragtune.cli's global --project and --verbose: each test starts
    with them unset, and what it sets is undone after it."""
    from ragtune import cli

    monkeypatch.setitem(cli._state, "project", None)
    monkeypatch.setitem(cli._state, "verbose", False)


def hashing_config(**retrieval) -> ProjectConfig:
    config = ProjectConfig(embedder=EmbedderConfig(backend="hashing", dimension=64))
    for key, value in retrieval.items():
        setattr(config.retrieval, key, value)
    return config


@pytest.fixture
def project(tmp_path) -> Project:
    """An empty project on the hashing embedder, in a temp folder."""
    folder = tmp_path / "kb"
    folder.mkdir()
    config = hashing_config()
    (folder / "ragtune.yaml").write_text("embedder: {backend: hashing, dimension: 64}\n")
    p = Project(folder, config)
    yield p
    p.close()


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (Debian's postgresql-15 + pgvector) on a loopback port for the whole session;
    skipped, with the reason, where the binaries, pgvector or psycopg are absent."""
    from tests.pgserver import local_postgres, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with local_postgres() as server:
        yield server
