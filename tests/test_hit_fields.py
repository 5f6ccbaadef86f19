"""Hits come from the in-memory fields kept with the BM25 index (small stores) or from SQLite (large
ones); both paths must give the same hits, and the memory path must follow every write."""
from __future__ import annotations

import pytest

from ragtune.knowledge import store as store_module
from tests.conftest import EXAMPLE_DOCS, write_docs

QUERIES = ["sync daemon port", "restore a backup", "SAML single sign-on", "webhook signature header"]


def all_hits(project):
    return [project.search(q, mode=mode, k=8, unit=unit) for q in QUERIES
            for mode in ("bm25", "dense", "hybrid") for unit in ("chunks", "documents")]


def test_memory_and_sqlite_paths_give_the_same_hits(project, monkeypatch):
    project.index([str(EXAMPLE_DOCS)], progress=False)
    store = project.store()
    from_memory = all_hits(project)
    with store.snapshot() as snap:
        assert snap._fields is not None
    monkeypatch.setattr(store_module, "HIT_FIELDS_IN_MEMORY_MAX", 0)
    store._bm25 = None
    (store.path / "bm25.pkl").unlink()
    from_sqlite = all_hits(project)
    with store.snapshot() as snap:
        assert snap._fields is None
    assert from_memory == from_sqlite and any(from_memory)


def test_memory_fields_follow_updates(project, tmp_path):
    docs = tmp_path / "docs"
    write_docs(docs, {"a.md": "---\nteam: ops\n---\n# Alpha\n\nThe walrus sleeps on the ice floe.\n"})
    project.index([str(docs)], progress=False)
    assert project.search("walrus", mode="bm25", k=1)[0].metadata["team"] == "ops"
    write_docs(docs, {"a.md": "---\nteam: dev\n---\n# Beta\n\nThe walrus swims under the ice floe.\n"})
    project.index([str(docs)], progress=False)
    hit = project.search("walrus", mode="bm25", k=1)[0]
    assert (hit.metadata["team"], hit.title, "swims" in hit.text) == ("dev", "Beta", True)


@pytest.mark.parametrize("limit", [0, 10_000])
def test_hits_never_leave_the_callers_groups(project, tmp_path, monkeypatch, limit):
    monkeypatch.setattr(store_module, "HIT_FIELDS_IN_MEMORY_MAX", limit)
    write_docs(tmp_path / "hr", {"pay.md": "# Pay\n\nSalary bands are reviewed in April.\n"})
    write_docs(tmp_path / "pub", {"faq.md": "# FAQ\n\nSalary questions go to the HR desk.\n"})
    project.index([str(tmp_path / "hr")], groups=["hr"], progress=False)
    project.index([str(tmp_path / "pub")], progress=False)
    hits = project.search("salary", mode="bm25", k=5, groups=["eng"])
    assert [h.document_id for h in hits] == ["pub/faq.md"]
