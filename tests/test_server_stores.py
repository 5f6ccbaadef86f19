"""`index`, `search`, `ask` and `serve` run unchanged on the server stores: a project whose
ragtune.yaml says `store: {backend: pgvector, ...}` (a real PostgreSQL) or `{backend: qdrant}`
(qdrant-client's local mode) answers from examples/docs like the embedded store does, the server
on loopback HTTP (uvicorn) as in tests/test_serve.py."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ragtune.cli import app
from ragtune.project import Project
from ragtune.rag import RAG
from tests.conftest import EXAMPLE_DOCS
from tests.test_store_contract import BACKENDS, store_config

QUESTION = "What port does the sync daemon listen on by default?"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] != "sqlite"])
def test_index_search_ask_serve(backend, request, tmp_path):
    config = store_config(backend, request, tmp_path)
    lines = [f"  {k}: {v}" for k, v in config.model_dump(by_alias=True, exclude_defaults=True).items()]
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "ragtune.yaml").write_text("embedder: {backend: hashing, dimension: 64}\nstore:\n" + "\n".join(lines) + "\n")

    runner = CliRunner()
    indexed = runner.invoke(app, ["-p", str(folder), "index", str(EXAMPLE_DOCS), "-q"])
    assert indexed.exit_code == 0 and "documents:" in indexed.output, indexed.output
    found = runner.invoke(app, ["-p", str(folder), "search", "sync daemon port", "-k", "3", "--json"])
    assert found.exit_code == 0 and "docs/" in found.output, found.output

    project = Project.open(folder)
    assert project.config.store.backend == backend
    answer = RAG(project).ask(QUESTION)
    assert "7741" in answer.text and answer.citations
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import httpx

    from ragtune.serve.app import create_app
    from ragtune.serve.auth import KeyStore
    from tests.test_serve import live_server

    keys = KeyStore(folder, env="")
    secret, _ = keys.create([], write=True, name="admin")
    auth = {"Authorization": f"Bearer {secret}"}
    with live_server(create_app(project, keys=keys)) as url, httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        doc = {"id": "notes/kiwi", "title": "Kiwi", "text": "The kiwi protocol uses port 9931.", "groups": []}
        assert client.post("/documents", json={"documents": [doc]}).status_code == 200
        hits = client.post("/search", json={"query": "kiwi protocol port", "k": 1, "mode": "bm25"}).json()
        assert hits["hits"][0]["document_id"] == "notes/kiwi"
        assert client.delete("/documents/notes/kiwi").status_code == 200
        gone = client.post("/search", json={"query": "kiwi protocol port", "k": 1, "mode": "bm25"}).json()
        assert all(h["document_id"] != "notes/kiwi" for h in gone["hits"])
        reply = client.post("/v1/chat/completions", json={
            "model": "ragtune-rag", "messages": [{"role": "user", "content": QUESTION}]}).json()
        assert "7741" in reply["choices"][0]["message"]["content"]
    project.close()
