"""The store contract: every backend passes this suite (add, update, delete, prune, filters,
access groups, reopen, embedder record). New backends add a factory to STORE_FACTORIES."""
from __future__ import annotations

import numpy as np
import pytest

from ragtune.config import EmbedderConfig, RetrievalConfig, StoreConfig
from ragtune.errors import EmbedderMismatchError, StoreError
from ragtune.knowledge.chunk import chunk_document
from ragtune.knowledge.embedders import create_embedder
from ragtune.knowledge.indexer import document_hash
from ragtune.knowledge.store import IndexedDocument
from ragtune.registry import create
from ragtune.retrieve.search import search
from ragtune.types import Document, Section

EMBEDDER = create_embedder(EmbedderConfig(backend="hashing", dimension=64))


def _sqlite(tmp_path, retrieval=None):
    return create("store", "sqlite", StoreConfig(path=str(tmp_path / "store")), tmp_path, retrieval or RetrievalConfig())


STORE_FACTORIES = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def open_store(request, tmp_path):
    opened = []

    def factory(retrieval=None):
        store = STORE_FACTORIES[request.param](tmp_path, retrieval)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def make_doc(doc_id: str, text: str, groups=(), **metadata) -> IndexedDocument:
    doc = Document(id=doc_id, title=doc_id, sections=[Section(text)], metadata={"source": doc_id, **metadata},
                   groups=list(groups))
    doc.content_hash = document_hash(doc)
    chunks = chunk_document(doc, EMBEDDER, size=16, overlap=0)
    return IndexedDocument(doc, chunks, EMBEDDER.embed([c.index_text for c in chunks]), file=f"/files/{doc_id}")


def ids(hits):
    return [h.document_id for h in hits]


def test_add_and_search_every_mode(open_store):
    store = open_store()
    store.upsert([make_doc("cats", "Cats purr and sleep all day."), make_doc("dogs", "Dogs bark at the mail carrier.")],
                 embedder=EMBEDDER.info())
    assert store.count_documents() == 2
    for mode in ("bm25", "dense", "hybrid"):
        assert ids(search(store, EMBEDDER, "dogs bark", mode=mode, k=1)) == ["dogs"], mode


def test_update_replaces_chunks(open_store):
    store = open_store()
    store.upsert([make_doc("a", "The answer is apples. " * 20)], embedder=EMBEDDER.info())
    before = store.count_chunks()
    store.upsert([make_doc("a", "Now it says bananas.")])
    assert store.count_documents() == 1 and store.count_chunks() == 1 < before
    assert ids(search(store, EMBEDDER, "apples", mode="bm25", k=5)) == []
    hits = search(store, EMBEDDER, "bananas", mode="hybrid", k=5)
    assert ids(hits) == ["a"] and "bananas" in hits[0].text


def test_delete_removes_from_every_index(open_store):
    store = open_store()
    store.upsert([make_doc("a", "alpha text"), make_doc("b", "beta text")], embedder=EMBEDDER.info())
    search(store, EMBEDDER, "alpha", k=2)  # build the indexes, then delete
    assert store.delete(["a", "missing"]) == 1
    for mode in ("bm25", "dense", "hybrid"):
        assert "a" not in ids(search(store, EMBEDDER, "alpha text", mode=mode, k=5)), mode
    assert store.get_document("a") is None and store.count_documents() == 1


def test_metadata_filters_before_ranking(open_store):
    store = open_store()
    docs = [make_doc(f"d{i}", f"shared words about topic {i}", lang="en" if i % 3 else "de") for i in range(30)]
    store.upsert(docs, embedder=EMBEDDER.info())
    for mode in ("bm25", "dense", "hybrid"):
        hits = search(store, EMBEDDER, "shared words topic", mode=mode, k=10, where={"lang": "de"})
        assert len(hits) == 10 and all(h.metadata["lang"] == "de" for h in hits), mode
    assert [d.id for d in store.list_documents(where={"lang": "de"})] == sorted(f"d{i}" for i in range(0, 30, 3))


def test_access_groups(open_store):
    store = open_store()
    store.upsert([make_doc("public", "salary policy overview"), make_doc("hr", "salary bands table", groups=["hr"]),
                  make_doc("eng", "salary of build servers", groups=["eng", "ops"])], embedder=EMBEDDER.info())
    for mode in ("bm25", "dense", "hybrid"):
        assert sorted(ids(search(store, EMBEDDER, "salary", mode=mode, k=10, groups=["eng"]))) == ["eng", "public"]
        assert sorted(ids(search(store, EMBEDDER, "salary", mode=mode, k=10, groups=[]))) == ["public"]
        assert sorted(ids(search(store, EMBEDDER, "salary", mode=mode, k=10))) == ["eng", "hr", "public"]
    assert store.get_document("hr", groups=["eng"]) is None
    assert store.get_document("hr", groups=["hr"])[0].groups == ["hr"]
    assert [d.id for d in store.list_documents(groups=["ops"])] == ["eng", "public"]


def test_reopen_keeps_everything(open_store):
    store = open_store()
    store.upsert([make_doc("a", "persistent words here", groups=["g"], team="x")], embedder=EMBEDDER.info())
    search(store, EMBEDDER, "words", k=1)
    store.close()
    again = open_store()
    doc, chunks = again.get_document("a")
    assert doc.groups == ["g"] and doc.metadata["team"] == "x" and chunks
    assert ids(search(again, EMBEDDER, "persistent", mode="hybrid", k=1, groups=["g"])) == ["a"]
    assert again.embedder_info() == EMBEDDER.info()


def test_embedder_mismatch_refused(open_store):
    store = open_store()
    store.upsert([make_doc("a", "text")], embedder=EMBEDDER.info())
    other = create_embedder(EmbedderConfig(backend="hashing", dimension=32)).info()
    with pytest.raises(EmbedderMismatchError, match="--reembed"):
        store.check_embedder(other)
    with pytest.warns(UserWarning, match="same weights"):
        store.check_embedder({**EMBEDDER.info(), "backend": "onnx"})


def test_derived_indexes_rebuilt_when_damaged(open_store, tmp_path):
    store = open_store()
    store.upsert([make_doc("a", "alpha"), make_doc("b", "beta")], embedder=EMBEDDER.info())
    store.build_indexes()
    store.close()
    for name in ("dense.npz", "bm25.pkl"):
        path = tmp_path / "store" / name
        if path.exists():
            path.write_bytes(b"garbage")
    again = open_store()
    assert ids(search(again, EMBEDDER, "beta", mode="hybrid", k=1)) == ["b"]


def test_document_ranked_by_best_chunk(open_store):
    store = open_store()
    long = " ".join(f"Filler sentence number {i} says nothing." for i in range(40)) + " The needle is here."
    store.upsert([make_doc("long", long), *[make_doc(f"o{i}", f"other doc {i} mentions needle once") for i in range(5)]],
                 embedder=EMBEDDER.info())
    hits = search(store, EMBEDDER, "filler sentence", mode="bm25", k=3, unit="documents")
    assert len(hits) == len(set(ids(hits)))
    hits = search(store, EMBEDDER, "needle", mode="hybrid", k=6, unit="documents")
    assert sorted(ids(hits)) == sorted(["long", *[f"o{i}" for i in range(5)]])


def test_newer_format_refused(tmp_path):
    store = _sqlite(tmp_path)
    store.conn.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    store.close()
    with pytest.raises(StoreError, match="newer ragtune"):
        _sqlite(tmp_path)


def test_missing_store_is_clear(tmp_path):
    with pytest.raises(StoreError, match="ragtune index"):
        create("store", "sqlite", StoreConfig(path=str(tmp_path / "nope")), tmp_path, RetrievalConfig(), create=False)


def test_ann_path_respects_filters(tmp_path):
    """Past the ANN threshold, filtered dense search still returns k permitted hits."""
    store = _sqlite(tmp_path, RetrievalConfig(ann_threshold=50))
    docs = [make_doc(f"d{i:03d}", f"document {i} about subject {i % 7}", groups=["a"] if i % 4 else ["b"])
            for i in range(400)]
    store.upsert(docs, embedder=EMBEDDER.info())
    with store.snapshot() as snap:
        assert snap._dense.hnsw is not None
    hits = search(store, EMBEDDER, "document about subject 3", mode="dense", k=20, groups=["b"])
    assert len(hits) == 20 and all(int(h.document_id[1:]) % 4 == 0 for h in hits)
    exact = _sqlite(tmp_path / "exact")
    exact.upsert(docs, embedder=EMBEDDER.info())
    want = ids(search(exact, EMBEDDER, "document about subject 3", mode="dense", k=10))
    got = ids(search(store, EMBEDDER, "document about subject 3", mode="dense", k=10))
    assert len(set(want) & set(got)) >= 9
    np.testing.assert_equal(len(store.list_documents()), 400)
