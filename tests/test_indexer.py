"""Incremental indexing: skip unchanged, replace changed, reuse vectors, prune, stdin, bad files."""
from __future__ import annotations

import io
import sys

import pytest

from ragtune.errors import EmbedderMismatchError, InputError
from tests.conftest import EXAMPLE_DOCS, write_docs


def test_second_run_skips_everything(project, tmp_path):
    folder = write_docs(tmp_path / "docs", {"a.md": "# A\n\nApples are red.", "b.txt": "Bananas are yellow."})
    first = project.index([str(folder)], progress=False)
    assert (first.documents_added, first.files_seen) == (2, 2)
    second = project.index([str(folder)], progress=False)
    assert (second.files_unchanged, second.documents_written, second.chunks_embedded) == (2, 0, 0)


def test_changed_file_replaces_its_chunks_and_reuses_vectors(project, tmp_path):
    body = "\n\n".join(f"Paragraph {i} talks about topic {i} at length." for i in range(30))
    folder = write_docs(tmp_path / "docs", {"a.md": f"# A\n\n{body}"})
    project.index([str(folder)], progress=False)
    store = project.store()
    chunks_before = store.count_chunks()
    (folder / "a.md").write_text(f"# A\n\n{body}\n\nA new closing paragraph mentions kiwis.")
    report = project.index([str(folder)], progress=False)
    assert report.documents_updated == 1
    assert report.chunks_reused >= 1 and report.chunks_embedded < chunks_before  # unchanged chunks not re-embedded
    hits = project.search("kiwis", mode="bm25", k=3)
    assert hits and hits[0].document_id == "docs/a.md"
    doc, chunks = store.get_document("docs/a.md")
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_prune_drops_documents_of_deleted_files(project, tmp_path):
    folder = write_docs(tmp_path / "docs", {"a.txt": "keep me", "b.txt": "delete me"})
    project.index([str(folder)], progress=False)
    (folder / "b.txt").unlink()
    assert project.index([str(folder)], progress=False).documents_deleted == 0  # without --prune nothing goes
    report = project.index([str(folder)], prune=True, progress=False)
    assert report.documents_deleted == 1
    assert [d.id for d in project.store().list_documents()] == ["docs/a.txt"]
    assert project.search("delete", mode="bm25") == []


def test_rows_removed_from_a_jsonl_file_are_deleted(project, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n')
    project.index([str(path)], progress=False)
    path.write_text('{"_id": "1", "text": "one"}\n')
    report = project.index([str(path)], progress=False)
    assert (report.documents_unchanged, report.documents_deleted) == (1, 1)
    assert [d.id for d in project.store().list_documents()] == ["1"]


def test_bad_files_are_listed_and_do_not_stop_the_run(project, tmp_path):
    folder = write_docs(tmp_path / "docs", {"good.md": "# Good\n\nFine text.", "empty.txt": "",
                                            "rows.jsonl": '{"_id": "r1", "text": "ok row"}\nnot json\n{"_id": "r3"}\n'})
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (folder / "image.png").write_bytes(b"\x89PNG....")
    report = project.index([str(folder)], progress=False)
    reasons = "\n".join(f"{w}: {r}" for w, r in report.skipped)
    assert "empty" in reasons and "binary" in reasons and "unsupported" in reasons
    assert "rows.jsonl:2" in reasons and "rows.jsonl:3" in reasons
    assert sorted(d.id for d in project.store().list_documents()) == ["docs/good.md", "r1"]


def test_missing_path_is_reported(project, tmp_path):
    folder = write_docs(tmp_path / "docs", {"a.txt": "text"})
    report = project.index([str(folder), str(tmp_path / "nope")], progress=False)
    assert report.skipped == [(str(tmp_path / "nope"), "no such file or folder")]
    with pytest.raises(InputError, match="no such file or folder"):
        project.index([str(tmp_path / "nope")], progress=False)


def test_same_row_id_in_two_files_is_refused(project, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"_id": "1", "text": "from a"}\n')
    (tmp_path / "b.jsonl").write_text('{"_id": "1", "text": "from b"}\n{"_id": "2", "text": "b two"}\n')
    report = project.index([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], progress=False)
    assert any("already comes from" in why for _, why in report.skipped)
    assert project.search("from", mode="bm25")[0].text == "from a"
    assert sorted(d.id for d in project.store().list_documents()) == ["1", "2"]


def test_stdin_document_with_groups_and_metadata(project, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Piped text about zebras."))
    project.index(["-"], stdin_id="notes/zebra", groups=["zoo"], metadata={"team": "wildlife"}, progress=False)
    doc, _ = project.store().get_document("notes/zebra")
    assert doc.groups == ["zoo"] and doc.metadata["team"] == "wildlife"
    assert project.search("zebras", mode="bm25", groups=["other"]) == []
    assert project.search("zebras", mode="bm25", groups=["zoo"])[0].document_id == "notes/zebra"


def test_reembed_after_model_change(project, tmp_path):
    folder = write_docs(tmp_path / "docs", {"a.txt": "alpha particles and helium nuclei",
                                            "b.txt": "beta testing of release candidates"})
    project.index([str(folder)], progress=False)
    project.config.embedder.dimension = 128
    project.__dict__.pop("embedder")
    with pytest.raises(EmbedderMismatchError):
        project.index([str(folder)], progress=False)
    with pytest.raises(EmbedderMismatchError):
        project.search("alpha", mode="dense")
    project.index([str(folder)], reembed=True, progress=False)
    assert project.store().embedder_info()["dimension"] == 128
    assert project.search("beta testing of release candidates", mode="dense", k=1)[0].document_id == "docs/b.txt"


def test_example_corpus_indexes_cleanly(project):
    report = project.index([str(EXAMPLE_DOCS)], progress=False)
    assert report.skipped == []
    assert report.documents_added >= 30
    hits = project.search("default port of the sync daemon", mode="bm25", k=5, unit="documents")
    assert len({h.document_id for h in hits}) == len(hits) == 5
