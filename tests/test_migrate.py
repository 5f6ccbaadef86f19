"""`ragtune migrate`: a knowledge base copied sqlite -> pgvector -> sqlite (and through Qdrant's
local mode) answers every search exactly as before, with nothing re-embedded."""
from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.config import EmbedderConfig, ProjectConfig, StoreConfig
from ragtune.errors import ConfigError, StoreError
from ragtune.knowledge.migrate import config_snippet, migrate, migrate_project, store_config_from_url
from ragtune.project import Project
from ragtune.registry import create
from tests.conftest import EXAMPLE_DOCS
from tests.test_store_contract import schema_for

QUERIES = ["What port does the sync daemon listen on?", "how are backups verified", "install on linux",
           "rotate api keys", "sync conflict resolution"]


def indexed_project(folder: Path, store: StoreConfig | None = None) -> Project:
    config = ProjectConfig(embedder=EmbedderConfig(backend="hashing", dimension=64), store=store or StoreConfig())
    project = Project(folder, config)
    project.index([str(EXAMPLE_DOCS)], groups=None, progress=False)
    project.index([str(EXAMPLE_DOCS / "guides")], groups=["eng"], metadata={"team": "docs"}, progress=False)
    return project


def results(project: Project) -> list:
    """Every search a user could run, as comparable values."""
    out = []
    for query in QUERIES:
        for mode in ("bm25", "dense", "hybrid"):
            for options in ({}, {"groups": []}, {"groups": ["eng"]}, {"where": {"team": "docs"}}):
                for unit in ("chunks", "documents"):
                    hits = project.search(query, mode=mode, k=8, unit=unit, **options)
                    out.append([(h.chunk_id, round(h.score, 5), h.text, h.metadata, h.section) for h in hits])
    return out


def snapshot_of(store) -> tuple:
    docs = store.list_documents()
    return ([(d.id, d.title, d.source, d.metadata, sorted(d.groups), d.content_hash, d.chunk_count) for d in docs],
            [store.get_document(d.id) for d in docs], store.file_hashes(), store.embedder_info())


def with_store(project: Project, config: StoreConfig) -> Project:
    return Project(project.folder, project.config.model_copy(update={"store": config}))


@pytest.mark.server
def test_sqlite_to_pgvector_and_back_gives_equal_results(postgres_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = indexed_project(tmp_path / "kb")
    want, want_records = results(source), snapshot_of(source.store())
    url = f"{postgres_server.dsn}?schema={schema_for(tmp_path)}"
    report, pg_config = migrate_project(source, url)
    assert (report.documents, report.chunks) == (source.store().count_documents(), source.store().count_chunks())
    assert pg_config.backend == "pgvector" and pg_config.schema_name == schema_for(tmp_path)
    on_pg = with_store(source, pg_config)
    assert results(on_pg) == want and snapshot_of(on_pg.store()) == want_records
    report_back, back_config = migrate_project(on_pg, "sqlite:///" + str(tmp_path / "back"))
    assert (report_back.documents, report_back.chunks) == (report.documents, report.chunks)
    back = with_store(source, back_config)
    assert results(back) == want and snapshot_of(back.store()) == want_records
    assert back.index([str(EXAMPLE_DOCS)], progress=False).files_unchanged > 0  # file hashes came along
    for project in (source, on_pg, back):
        project.close()


def test_sqlite_to_qdrant_local_and_back(tmp_path):
    pytest.importorskip("qdrant_client", reason="qdrant-client is not installed: pip install 'ragtune[qdrant]'")
    source = indexed_project(tmp_path / "kb")
    want, want_records = results(source), snapshot_of(source.store())
    _, q_config = migrate_project(source, f"qdrant://{tmp_path / 'q'}?collection=kb")
    assert (q_config.backend, q_config.collection, q_config.url) == ("qdrant", "kb", None)
    on_q = with_store(source, q_config)
    assert snapshot_of(on_q.store()) == want_records
    assert results(on_q) == want
    on_q.store().close()  # local mode: one client per folder
    on_q.__dict__.pop("_store")
    _, back_config = migrate_project(on_q, str(tmp_path / "back"))
    back = with_store(source, back_config)
    assert results(back) == want and snapshot_of(back.store()) == want_records
    for project in (source, back):
        project.close()


def test_refuses_a_full_target_the_same_store_and_bad_urls(tmp_path):
    source = indexed_project(tmp_path / "kb")
    with pytest.raises(StoreError, match="same store"):
        migrate(source.store(), source.store())
    other = indexed_project(tmp_path / "other")
    with pytest.raises(StoreError, match="already holds"):
        migrate(source.store(), other.store())
    with pytest.raises(ConfigError, match="not a store URL"):
        store_config_from_url("mysql://db/kb")
    source.close()
    other.close()


def test_store_urls(tmp_path):
    pg = store_config_from_url("postgresql://kb:pw@db:5432/kb?schema=second&sslmode=require")
    assert (pg.backend, pg.dsn, pg.schema_name) == ("pgvector", "postgresql://kb:pw@db:5432/kb?sslmode=require", "second")
    assert "pw" not in config_snippet(pg) and "schema: second" in config_snippet(pg)
    q = store_config_from_url("qdrant+https://qdrant.example:6333/docs")
    assert (q.backend, q.url, q.collection) == ("qdrant", "https://qdrant.example:6333", "docs")
    local = store_config_from_url("qdrant:rel/folder", cwd=tmp_path)
    assert (local.backend, local.path, local.url) == ("qdrant", str(tmp_path / "rel" / "folder"), None)
    assert store_config_from_url("copy", cwd=tmp_path).path == str(tmp_path / "copy")
    with pytest.raises(ConfigError, match="store.dsn"):
        create("store", "pgvector", StoreConfig.model_construct(backend="pgvector", dsn=None, path="s",
                                                                schema_name="ragtune"), tmp_path, None)


@pytest.mark.server
def test_cli_migrate_says_what_moved(postgres_server, tmp_path):
    from typer.testing import CliRunner

    from ragtune.cli import app

    source = indexed_project(tmp_path / "kb")
    (tmp_path / "kb" / "ragtune.yaml").write_text("embedder: {backend: hashing, dimension: 64}\n")
    counts = (source.store().count_documents(), source.store().count_chunks())
    source.close()
    url = f"{postgres_server.dsn}?schema={schema_for(tmp_path)}"
    result = CliRunner().invoke(app, ["-p", str(tmp_path / "kb"), "migrate", "--to", url, "-q"])
    assert result.exit_code == 0, result.output
    assert f"moved {counts[0]} documents and {counts[1]} chunks" in result.output
    assert "backend: pgvector" in result.output and f"schema: {schema_for(tmp_path)}" in result.output
