"""The store contract: every backend passes this suite (add, update, delete, prune, filters,
access groups, reopen, embedder record). New backends add a factory to STORE_FACTORIES.

pgvector runs against a real PostgreSQL started for the session on loopback (tests/pgserver.py;
skipped, with the reason, where PostgreSQL or pgvector is not installed); qdrant runs in
qdrant-client's local mode (no Qdrant server can be installed here)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ragtune.config import EmbedderConfig, ProjectConfig, RetrievalConfig, StoreConfig
from ragtune.errors import EmbedderMismatchError, StoreError
from ragtune.knowledge.chunk import chunk_document
from ragtune.knowledge.embedders import create_embedder
from ragtune.knowledge.indexer import document_hash
from ragtune.knowledge.store import IndexedDocument
from ragtune.project import Project
from ragtune.registry import create
from ragtune.retrieve.search import search
from ragtune.types import Document, Section
from tests.conftest import write_docs

EMBEDDER = create_embedder(EmbedderConfig(backend="hashing", dimension=64))


def _sqlite(tmp_path, retrieval=None):
    return create("store", "sqlite", StoreConfig(path=str(tmp_path / "store")), tmp_path, retrieval or RetrievalConfig())


def schema_for(folder: Path) -> str:
    """A PostgreSQL schema of its own for each test folder (one server serves the whole session)."""
    return "t_" + hashlib.sha1(str(folder).encode()).hexdigest()[:16]


def store_config(backend: str, request, folder: Path) -> StoreConfig:
    """The StoreConfig of `backend` for a store private to `folder`."""
    if backend == "sqlite":
        return StoreConfig(path=str(folder / "store"))
    if backend == "pgvector":
        server = request.getfixturevalue("postgres_server")
        return StoreConfig(backend="pgvector", dsn=server.dsn, schema=schema_for(folder), path=str(folder / "store"))
    pytest.importorskip("qdrant_client", reason="qdrant-client is not installed: pip install 'ragtune[qdrant]'")
    return StoreConfig(backend="qdrant", path=str(folder / "store"))


def _factory(backend: str):
    def factory(request, tmp_path, retrieval=None, create_missing=True):
        return create("store", backend, store_config(backend, request, tmp_path), tmp_path,
                      retrieval or RetrievalConfig(), create=create_missing)
    return factory


STORE_FACTORIES = {"sqlite": _factory("sqlite"), "pgvector": _factory("pgvector"), "qdrant": _factory("qdrant")}
BACKENDS = [pytest.param(name, marks=[pytest.mark.server] if name == "pgvector" else []) for name in sorted(STORE_FACTORIES)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def open_store(backend, request, tmp_path):
    opened = []

    def factory(retrieval=None, folder=None):
        store = STORE_FACTORIES[backend](request, folder or tmp_path, retrieval)
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
    hit = search(store, EMBEDDER, "dogs bark", mode="bm25", k=1)[0]
    assert (hit.chunk_id, hit.source, hit.title, hit.metadata) == ("dogs#0", "dogs", "dogs", {"source": "dogs"})


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
    docs = [make_doc(f"d{i}", f"shared words about topic {i}", lang="en" if i % 3 else "de", n=i) for i in range(30)]
    store.upsert(docs, embedder=EMBEDDER.info())
    for mode in ("bm25", "dense", "hybrid"):
        hits = search(store, EMBEDDER, "shared words topic", mode=mode, k=10, where={"lang": "de"})
        assert len(hits) == 10 and all(h.metadata["lang"] == "de" for h in hits), mode
        assert ids(search(store, EMBEDDER, "shared words topic", mode=mode, k=3, where={"n": "7"})) == ["d7"], mode
        assert ids(search(store, EMBEDDER, "topic", mode=mode, k=3, where={"id": "d4"})) == ["d4"], mode
    assert [d.id for d in store.list_documents(where={"lang": "de"})] == sorted(f"d{i}" for i in range(0, 30, 3))
    assert [d.id for d in store.list_documents(limit=2, offset=1)] == ["d1", "d10"]


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
    store.upsert([make_doc("a", "persistent words here", groups=["g"], team="x")], embedder=EMBEDDER.info(),
                 files=[("/files/a", "hash-a")])
    search(store, EMBEDDER, "words", k=1)
    store.close()
    again = open_store()
    doc, chunks = again.get_document("a")
    assert doc.groups == ["g"] and doc.metadata["team"] == "x" and chunks
    assert ids(search(again, EMBEDDER, "persistent", mode="hybrid", k=1, groups=["g"])) == ["a"]
    assert again.embedder_info() == EMBEDDER.info()
    assert again.file_hashes() == {"/files/a": "hash-a"}
    assert again.documents_of_file("/files/a") == {"a": doc.content_hash} and again.documents_of_file("/x") == {}
    assert again.file_of("a") == "/files/a" and again.files_with_documents() == ["/files/a"]


def test_embedder_mismatch_refused(open_store):
    store = open_store()
    store.upsert([make_doc("a", "text")], embedder=EMBEDDER.info())
    other = create_embedder(EmbedderConfig(backend="hashing", dimension=32)).info()
    with pytest.raises(EmbedderMismatchError, match="--reembed"):
        store.check_embedder(other)
    with pytest.warns(UserWarning, match="same weights"):
        store.check_embedder({**EMBEDDER.info(), "backend": "onnx"})


def test_stored_vectors_come_back(open_store):
    store = open_store()
    item = make_doc("a", "vectors are kept exactly " * 10)
    store.upsert([item], embedder=EMBEDDER.info())
    by_id = store.chunk_vectors([c.id for c in item.chunks] + ["missing#0"])
    assert sorted(by_id) == sorted(c.id for c in item.chunks)
    for i, c in enumerate(item.chunks):
        np.testing.assert_array_equal(by_id[c.id], item.vectors[i])
    from ragtune.knowledge.store import text_hash
    assert set(store.vectors_for_texts([text_hash(c.index_text) for c in item.chunks])) == {
        text_hash(c.index_text) for c in item.chunks}
    [exported] = [d for batch in store.export_documents(batch_size=1) for d in batch]
    assert [c.id for c in exported.chunks] == [c.id for c in item.chunks] and exported.file == "/files/a"
    np.testing.assert_array_equal(exported.vectors, item.vectors)
    assert [row[2] for row in store.chunk_texts()] == [c.text for c in item.chunks] or \
        sorted(row[2] for row in store.chunk_texts()) == sorted(c.text for c in item.chunks)


def test_derived_indexes_rebuilt_when_damaged(open_store, tmp_path):
    store = open_store()
    store.upsert([make_doc("a", "alpha"), make_doc("b", "beta")], embedder=EMBEDDER.info())
    store.build_indexes()
    store.close()
    damaged = [*(tmp_path / "store").glob("*.pkl"), *(tmp_path / "store").glob("*.npz")]
    assert damaged  # every backend keeps a BM25 file there
    for path in damaged:
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


def test_index_reindex_prune_reembed_through_a_project(backend, request, tmp_path):
    """The indexer's whole path (file hashes, unchanged skips, vector reuse, --prune, --reembed) on each backend."""
    config = ProjectConfig(embedder=EmbedderConfig(backend="hashing", dimension=64),
                           store=store_config(backend, request, tmp_path))
    project = Project(tmp_path, config)
    body = "\n\n".join(f"Paragraph {i} talks about topic {i} at length." for i in range(30))
    folder = write_docs(tmp_path / "docs", {"a.md": f"# A\n\n{body}", "b.txt": "delete me later", "c.txt": "cherries"})
    try:
        assert project.index([str(folder)], progress=False).documents_added == 3
        again = project.index([str(folder)], progress=False)
        assert (again.files_unchanged, again.chunks_embedded) == (3, 0)
        (folder / "a.md").write_text(f"# A\n\n{body}\n\nA new closing paragraph mentions kiwis.")
        (folder / "b.txt").unlink()
        report = project.index([str(folder)], prune=True, progress=False)
        assert (report.documents_updated, report.documents_deleted) == (1, 1) and report.chunks_reused >= 1
        assert [d.id for d in project.store().list_documents()] == ["docs/a.md", "docs/c.txt"]
        assert project.search("kiwis", mode="bm25", k=1)[0].document_id == "docs/a.md"
        assert project.search("delete me later", mode="bm25") == []
        before = project.search("cherries", mode="dense", k=1)
        project.index([], reembed=True, progress=False)  # same model: every vector recomputed, same results
        assert project.search("cherries", mode="dense", k=1) == before
        project.config.embedder.dimension = 128  # another model: refused until re-embedded
        project.__dict__.pop("embedder")
        with pytest.raises(EmbedderMismatchError):
            project.search("cherries", mode="dense")
        if backend == "qdrant":  # a Qdrant collection keeps its dimension: says so
            with pytest.raises(EmbedderMismatchError, match="new collection"):
                project.index([], reembed=True, progress=False)
        else:
            project.index([], reembed=True, progress=False)
            assert project.store().embedder_info()["dimension"] == 128
            assert project.search("cherries", mode="dense", k=1)[0].document_id == "docs/c.txt"
    finally:
        project.close()


def test_newer_format_refused(backend, request, tmp_path):
    factory = STORE_FACTORIES[backend]
    store = factory(request, tmp_path)
    if backend == "sqlite":
        store.conn.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    elif backend == "pgvector":
        store.conn.execute(f"UPDATE {store.s}.meta SET value='99' WHERE key='format_version'")
    else:
        store._set_meta(format_version=99)
    store.close()
    with pytest.raises(StoreError, match="newer ragtune"):
        factory(request, tmp_path)


def test_missing_store_is_clear(backend, request, tmp_path):
    with pytest.raises(StoreError, match="ragtune index"):
        STORE_FACTORIES[backend](request, tmp_path / "nope", create_missing=False)


def test_ann_path_respects_filters(open_store, backend, tmp_path):
    """Past the ANN threshold (faiss HNSW; pgvector's HNSW with iterative scans; Qdrant's HNSW),
    filtered dense search still returns k permitted hits, close to exact search."""
    store = open_store(RetrievalConfig(ann_threshold=50))
    docs = [make_doc(f"d{i:03d}", f"document {i} about subject {i % 7}", groups=["a"] if i % 4 else ["b"])
            for i in range(400)]
    store.upsert(docs, embedder=EMBEDDER.info())
    if backend == "sqlite":
        with store.snapshot() as snap:
            assert snap._dense.hnsw is not None
    hits = search(store, EMBEDDER, "document about subject 3", mode="dense", k=20, groups=["b"])
    assert len(hits) == 20 and all(int(h.document_id[1:]) % 4 == 0 for h in hits)
    rare = search(store, EMBEDDER, "document about subject 3", mode="dense", k=5, where={"id": "d008"})
    assert ids(rare) == ["d008"]  # a filter that leaves one chunk: the exact fallback finds it
    exact = open_store(folder=tmp_path / "exact")
    exact.upsert(docs, embedder=EMBEDDER.info())
    want = ids(search(exact, EMBEDDER, "document about subject 3", mode="dense", k=10))
    got = ids(search(store, EMBEDDER, "document about subject 3", mode="dense", k=10))
    assert len(set(want) & set(got)) >= 9
    np.testing.assert_equal(len(store.list_documents()), 400)


@pytest.mark.server
def test_pgvector_uses_hnsw_with_iterative_scans(request, tmp_path):
    """A filtered ANN query is an HNSW index scan with iterative scans on, and still returns k."""
    store = STORE_FACTORIES["pgvector"](request, tmp_path, RetrievalConfig(ann_threshold=50))
    try:
        docs = [make_doc(f"d{i:04d}", f"document {i} about subject {i % 7}", groups=["a"] if i % 10 else ["b"])
                for i in range(2000)]
        store.upsert(docs, embedder=EMBEDDER.info())
        query = EMBEDDER.embed(["document about subject 3"])[0]
        vectors = np.concatenate([d.vectors for d in docs])  # (2000, 64): one chunk per document
        with store.snapshot() as snap:
            # On a table this small the planner prefers a sequential scan (exact); make it take the index.
            snap.conn.execute("SET LOCAL enable_seqscan = off")
            for group, members in (("a", [i for i in range(2000) if i % 10]), ("b", list(range(0, 2000, 10)))):
                hits = snap.hits(snap.dense(query, 30, snap.allowed_rowids(None, [group])))
                thirtieth = np.sort(vectors[members] @ query)[-30]  # many ties: compare scores, not ids
                assert len(hits) == 30 and all(int(h.document_id[1:]) in members for h in hits), group
                assert sum(h.score >= thirtieth - 1e-6 for h in hits) >= 27, group
            allowed = snap.allowed_rowids(None, ["b"])
            from ragtune.knowledge.pgvector_search import dense_sql

            plan = "\n".join(r[0] for r in snap.conn.execute(
                "EXPLAIN " + dense_sql(store.s, allowed[0], exact=False), [query, *allowed[1], 30]))
            exact_plan = "\n".join(r[0] for r in snap.conn.execute(
                "EXPLAIN " + dense_sql(store.s, allowed[0], exact=True), [query, *allowed[1], 30]))
            settings = snap.conn.execute("SELECT current_setting('hnsw.iterative_scan'), "
                                         "current_setting('hnsw.ef_search')").fetchone()
        assert "chunks_embedding_hnsw" in plan and "chunks_embedding_hnsw" not in exact_plan, (plan, exact_plan)
        assert settings == ("relaxed_order", "256")
        storage = store.conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND "
                                     "attname = 'embedding'", (f"{store.s}.chunks",)).fetchone()[0]
        assert storage == "m"  # vectors kept in the row, not TOAST (exact scans ~10x faster)
    finally:
        store.close()


@pytest.mark.server
def test_pgvector_bad_dsn_and_fts(request, tmp_path):
    """A wrong DSN is one clear error naming store.dsn (password hidden); sparse: fts ranks with PostgreSQL."""
    with pytest.raises(StoreError, match=r"store\.dsn.*") as caught:
        create("store", "pgvector", StoreConfig(backend="pgvector", dsn="postgresql://me:secret@127.0.0.1:1/db",
                                                timeout=2), tmp_path, RetrievalConfig())
    assert "secret" not in str(caught.value)
    config = store_config("pgvector", request, tmp_path).model_copy(update={"sparse": "fts"})
    store = create("store", "pgvector", config, tmp_path, RetrievalConfig())
    try:
        store.upsert([make_doc("cats", "Cats purr and sleep all day."), make_doc("dogs", "Dogs bark at the mail carrier.",
                                                                                  groups=["k9"])], embedder=EMBEDDER.info())
        assert ids(search(store, EMBEDDER, "barking dogs", mode="bm25", k=2)) == ["dogs"]
        assert ids(search(store, EMBEDDER, "barking dogs", mode="bm25", k=2, groups=[])) == []
        with store.snapshot() as snap:
            idf = snap.idf(["dog", "purr", "zebra"])
        assert idf["zebra"] > idf["dog"] > 0
    finally:
        store.close()


@pytest.mark.parametrize("backend,module,extra", [("pgvector", "psycopg", "pgvector"), ("qdrant", "qdrant_client", "qdrant")])
def test_missing_driver_names_the_extra(backend, module, extra, tmp_path, monkeypatch):
    from ragtune.errors import MissingExtraError

    monkeypatch.setitem(__import__("sys").modules, module, None)  # as if it were not installed
    config = StoreConfig(backend=backend, dsn="postgresql://nobody@127.0.0.1:1/db" if backend == "pgvector" else None)
    with pytest.raises(MissingExtraError, match=rf"pip install 'ragtune\[{extra}\]'"):
        create("store", backend, config, tmp_path, RetrievalConfig())


def test_pgvector_without_dsn_is_a_config_error(tmp_path):
    from ragtune.config import load_config
    from ragtune.errors import ConfigError

    (tmp_path / "ragtune.yaml").write_text("store:\n  backend: pgvector\n")
    with pytest.raises(ConfigError, match=r"ragtune.yaml:1: field 'store'.*store.dsn is not set"):
        load_config(tmp_path / "ragtune.yaml")


def test_qdrant_server_down_is_one_clear_error(tmp_path):
    pytest.importorskip("qdrant_client", reason="qdrant-client is not installed: pip install 'ragtune[qdrant]'")
    config = StoreConfig(backend="qdrant", url="http://127.0.0.1:1", timeout=2)
    with pytest.raises(StoreError, match=r"store\.url http://127\.0\.0\.1:1 in ragtune\.yaml"):
        create("store", "qdrant", config, tmp_path, RetrievalConfig())
