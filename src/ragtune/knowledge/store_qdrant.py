"""Qdrant store: the knowledge base in a Qdrant server or cluster (`store.url`), or in
qdrant-client's local mode (a folder, one process at a time; what the tests run against).

Collections:
    <collection>               one point per chunk: named vector "dense" (dot product over unit
                               vectors; HNSW with m = retrieval.hnsw_m) and a payload with the chunk's
                               fields, its document's source, title and metadata, `groups`, and
                               `filters` ("key=value" strings, one per scalar metadata field)
    <collection>__documents    one point per document (kind "document"), per source file (kind
                               "file") and the store record (kind "meta": format, generation, embedder)

Filters and access groups are Qdrant payload filters on the searched points, so they apply before
ranking (Qdrant's filterable HNSW; an exact search is re-run if a filtered query comes back short).
Sparse search is ragtune's BM25 over the stored chunks in this process (knowledge/chunk_bm25.py),
not Qdrant's sparse vectors: BM25's document weights depend on corpus statistics (average length,
idf) that change with every write, so stored sparse weights would drift from the exact scores the
embedded store gives; the in-process index gives the same ranking on every backend.

Qdrant has no transactions across points. A write goes: bump the generation, write the new chunk
points (new ids: a hash of chunk id and generation), write the document records, delete the
document's chunk points of other generations, write the file hashes last. A crash in between can
leave a document's old and new chunks side by side (or its new chunks without their record) until
that file is indexed again, which the unrecorded file hash makes the next `ragtune index` do;
nothing acknowledged is lost. Searches see each point as Qdrant has it, not a snapshot.

>>> store = QdrantStore(StoreConfig(backend="qdrant", url="http://qdrant:6333"), Path("kb/store"))   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ragtune.config import RetrievalConfig, StoreConfig
from ragtune.errors import EmbedderMismatchError, StoreError, require
from ragtune.knowledge.chunk_bm25 import ChunkBM25
from ragtune.knowledge.store import IndexedDocument, StoredDocument, text_hash
from ragtune.knowledge.store_api import check_embedder_record, filter_key, filter_text, plain_metadata, section_rows
from ragtune.registry import register
from ragtune.types import Chunk, Document, Hit, Section

FORMAT_VERSION = 1
BATCH = 256  # points per request
_NAMESPACE = uuid.UUID("8d3c6d0e-52a4-4c8e-9a57-6f1b0f4c2a11")
_CHUNK_FIELDS = ["chunk_id", "document_id", "idx", "text", "header", "start", "end", "section", "page"]


def point_id(kind: str, key: str) -> str:
    """Stable point id (a UUID) of a document, file or meta record."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{key}"))


def chunk_point_id(generation: int, position: int) -> int:
    """A chunk's point id (and row id): the generation that wrote it, then its position in that write.
    Ids grow in write order, as the other stores' row ids do, so every backend breaks score ties alike."""
    if position >= 1 << 24:
        raise StoreError(f"one write may hold at most {1 << 24} chunks; write in smaller batches")
    return (generation << 24) | position


def _filters(metadata: dict) -> list[str]:
    return [f"{k}={filter_text(v)}" for k, v in metadata.items() if not isinstance(v, (dict, list))]


class QdrantStore:
    """The knowledge base in Qdrant (see module docstring)."""

    def __init__(self, config: StoreConfig, folder: Path, retrieval: RetrievalConfig | None = None,
                 create: bool = True):
        qdrant_client = require("qdrant_client", "the qdrant store (store.backend: qdrant)", "qdrant")
        self.m = qdrant_client.models
        self.config, self.retrieval, self.folder = config, retrieval or RetrievalConfig(), Path(folder)
        self.chunks_name, self.docs_name = config.collection, f"{config.collection}__documents"
        self.local = not config.url
        with self._errors("connecting"):
            if self.local:
                self.folder.mkdir(parents=True, exist_ok=True)
                try:
                    self.client = qdrant_client.QdrantClient(path=str(self.folder))
                except RuntimeError as exc:  # the folder is locked by another client
                    raise StoreError(f"{self.describe()}: {exc} Local mode serves one process at a time; "
                                     f"set store.url to a Qdrant server to share the knowledge base.") from None
            else:
                self.client = qdrant_client.QdrantClient(url=config.url, api_key=os.environ.get(config.api_key_env) or None,
                                                         timeout=int(config.timeout))
            self._open(create)
        self.bm25 = ChunkBM25(self.folder, self.store_id, self.retrieval.bm25)

    def describe(self) -> str:
        where = f"local folder {self.folder}" if self.local else self.config.url
        return f"Qdrant {where} (collection {self.config.collection})"

    @contextlib.contextmanager
    def _errors(self, doing: str):
        """Qdrant failures a user can meet (server down, refused key, folder in use) as StoreErrors."""
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            yield
        except (ResponseHandlingException, UnexpectedResponse) as exc:
            where = f"store.path {self.folder} (local mode)" if self.local else f"store.url {self.config.url}"
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"{doing} failed at {self.describe()}: {reason}. Check {where} in ragtune.yaml, that the "
                             f"server is up and, if it needs one, the API key in ${self.config.api_key_env}.") from None

    # --- records ------------------------------------------------------------------------------
    def _open(self, create: bool) -> None:
        m = self.m
        if not self.client.collection_exists(self.docs_name):
            if not create:
                raise StoreError(f"no knowledge base in {self.describe()}. Index documents first: ragtune index PATH "
                                 f"(or copy one there: ragtune migrate --to URL)")
            self.client.create_collection(self.docs_name, vectors_config={"none": m.VectorParams(size=1, distance=m.Distance.DOT)})
            self._index_payload(self.docs_name, {"kind": "keyword", "document_id": "keyword", "file": "keyword",
                                                 "groups": "keyword", "filters": "keyword"})
        meta = self._meta()
        if meta is None:
            meta = {"kind": "meta", "format_version": FORMAT_VERSION, "generation": 0, "store_id": uuid.uuid4().hex,
                    "embedder": None}
            self._put(self.docs_name, [(point_id("meta", "store"), None, meta)])
        if int(meta["format_version"]) > FORMAT_VERSION:
            raise StoreError(f"{self.describe()} was written by a newer ragtune (store format {meta['format_version']}, "
                             f"this ragtune reads {FORMAT_VERSION}). Upgrade: pip install -U ragtune")
        self.store_id = meta["store_id"]

    def _index_payload(self, collection: str, fields: dict[str, str]) -> None:
        if self.local:  # local mode scans; payload indexes are a server feature
            return
        for field, schema in fields.items():
            self.client.create_payload_index(collection, field, field_schema=schema, wait=True)

    def _meta(self) -> dict | None:
        found = self.client.retrieve(self.docs_name, [point_id("meta", "store")], with_payload=True)
        return found[0].payload if found else None

    def _set_meta(self, **values) -> None:
        self.client.set_payload(self.docs_name, payload=values, points=[point_id("meta", "store")], wait=True)

    def _put(self, collection: str, rows: list[tuple], vector_name: str = "none") -> None:
        """Upsert (id, vector or None, payload) rows in batches."""
        m = self.m
        for i in range(0, len(rows), BATCH):
            points = [m.PointStruct(id=pid, vector={vector_name: (vector.tolist() if vector is not None else [1.0])},
                                    payload=payload) for pid, vector, payload in rows[i:i + BATCH]]
            self.client.upsert(collection, points, wait=True)

    def _scroll(self, collection: str, flt=None, payload=True, vectors=False) -> Iterator:
        """Every point passing `flt`."""
        if collection == self.chunks_name and not self._has_chunks():
            return
        offset = None
        while True:
            points, offset = self.client.scroll(collection, scroll_filter=flt, limit=1024, offset=offset,
                                                with_payload=payload, with_vectors=vectors)
            yield from points
            if offset is None:
                return

    def _has_chunks(self) -> bool:
        return self.client.collection_exists(self.chunks_name)

    def _kind(self, kind: str, *more):
        m = self.m
        return m.Filter(must=[m.FieldCondition(key="kind", match=m.MatchValue(value=kind)), *more])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    @property
    def generation(self) -> int:
        return int(self._meta()["generation"])

    # --- embedder record ----------------------------------------------------------------------
    def embedder_info(self) -> dict | None:
        value = (self._meta() or {}).get("embedder")
        return json.loads(value) if value else None

    def check_embedder(self, info: dict) -> None:
        stored = self.embedder_info()
        check_embedder_record(stored, info, self.count_chunks, self.describe())

    def _ensure_chunks(self, dim: int) -> None:
        m = self.m
        if self._has_chunks():
            size = self.client.get_collection(self.chunks_name).config.params.vectors["dense"].size
            if size != dim:
                if self.count_chunks():
                    raise EmbedderMismatchError(
                        f"{self.describe()} holds {size}-dim vectors; these have {dim}. A Qdrant collection keeps "
                        f"its dimension: index into a new collection (store.collection) instead.")
                self.client.delete_collection(self.chunks_name)
            else:
                return
        hnsw = m.HnswConfigDiff(m=self.retrieval.hnsw_m, ef_construct=self.config.hnsw_ef_construction)
        self.client.create_collection(self.chunks_name, vectors_config={
            "dense": m.VectorParams(size=dim, distance=m.Distance.DOT, hnsw_config=hnsw)})
        self._index_payload(self.chunks_name, {"document_id": "keyword", "chunk_id": "keyword", "text_hash": "keyword",
                                               "groups": "keyword", "filters": "keyword", "gen": "integer"})

    # --- writes -------------------------------------------------------------------------------
    def upsert(self, items: list[IndexedDocument], files: Iterable[tuple[str, str]] = (),
               embedder: dict | None = None) -> int:
        """Store documents (replacing earlier versions), then file hashes; returns the generation."""
        m = self.m
        latest = {item.document.id: item for item in items}
        with self._errors("writing"):
            meta = self._meta()
            gen = int(meta["generation"]) + 1
            self._set_meta(generation=gen, **({"embedder": json.dumps(embedder)} if embedder is not None else {}))
            info = embedder or (json.loads(meta["embedder"]) if meta.get("embedder") else {})
            chunks, docs = [], []
            for item in latest.values():
                d = item.document
                metadata = plain_metadata(d.metadata)
                if item.vectors.shape[0] != len(item.chunks):
                    raise StoreError(f"document {d.id}: {len(item.chunks)} chunks but {item.vectors.shape[0]} vectors")
                shared = {"document_id": d.id, "source": metadata.get("source"), "title": d.title,
                          "metadata": metadata, "groups": sorted(set(d.groups)), "filters": _filters(metadata)}
                vectors = np.asarray(item.vectors, dtype=np.float32)
                chunks += [(chunk_point_id(gen, len(chunks) + i), vectors[i],
                            {**shared, "chunk_id": c.id, "idx": c.index, "text": c.text, "header": c.header,
                             "start": c.start, "end": c.end, "section": c.section, "page": c.page,
                             "text_hash": text_hash(c.index_text), "gen": gen}) for i, c in enumerate(item.chunks)]
                docs.append((point_id("document", d.id), None,
                             {**shared, "kind": "document", "file": item.file, "content_hash": d.content_hash,
                              "chunk_count": len(item.chunks), "gen": gen, "sections": section_rows(item)}))
            if chunks:
                dim = int(info.get("dimension") or chunks[0][1].shape[0])
                if any(v.shape[0] != dim for _, v, _ in chunks):
                    raise EmbedderMismatchError(f"vectors of {chunks[0][1].shape[0]} dims for a {dim}-dim store. "
                                                f"Run `ragtune index --reembed`.")
                self._ensure_chunks(dim)
                self._put(self.chunks_name, chunks, "dense")
            self._put(self.docs_name, docs)
            if latest and self._has_chunks():
                self.client.delete(self.chunks_name, points_selector=m.FilterSelector(filter=m.Filter(
                    must=[m.FieldCondition(key="document_id", match=m.MatchAny(any=list(latest)))],
                    must_not=[m.FieldCondition(key="gen", match=m.MatchValue(value=gen))])), wait=True)
            self._put(self.docs_name, [(point_id("file", p), None, {"kind": "file", "path": p, "hash": h, "gen": gen})
                                       for p, h in files])
        return gen

    def delete(self, doc_ids: Iterable[str], forget_files: Iterable[str] = ()) -> int:
        """Delete documents (chunks first) and file records; returns how many documents existed."""
        m = self.m
        doc_ids, forget_files = list(doc_ids), list(forget_files)
        with self._errors("deleting"):
            self._set_meta(generation=self.generation + 1)
            existed = len(self.client.retrieve(self.docs_name, [point_id("document", d) for d in doc_ids]))
            if doc_ids and self._has_chunks():
                self.client.delete(self.chunks_name, points_selector=m.FilterSelector(filter=m.Filter(must=[
                    m.FieldCondition(key="document_id", match=m.MatchAny(any=doc_ids))])), wait=True)
            ids = [point_id("document", d) for d in doc_ids] + [point_id("file", p) for p in forget_files]
            if ids:
                self.client.delete(self.docs_name, points_selector=m.PointIdsList(points=ids), wait=True)
        return existed

    def replace_vectors(self, rowids: list[int], vectors: np.ndarray, embedder: dict) -> None:
        """Swap chunk vectors (same dimension: a Qdrant collection keeps its own) and the embedder record."""
        m = self.m
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._errors("re-embedding"):
            if len(rowids):
                self._ensure_chunks(vectors.shape[1])
            for i in range(0, len(rowids), BATCH):
                self.client.update_vectors(self.chunks_name, points=[
                    m.PointVectors(id=int(r), vector={"dense": v.tolist()})
                    for r, v in zip(rowids[i:i + BATCH], vectors[i:i + BATCH])], wait=True)
            self._set_meta(generation=self.generation + 1, embedder=json.dumps(embedder))

    # --- reads --------------------------------------------------------------------------------
    def file_hashes(self) -> dict[str, str]:
        with self._errors("reading"):
            return {p.payload["path"]: p.payload["hash"] for p in self._scroll(self.docs_name, self._kind("file"))}

    def _documents(self, flt, fields=True) -> list:
        with self._errors("reading"):
            return sorted(self._scroll(self.docs_name, flt, payload=fields), key=lambda p: p.payload["document_id"])

    def documents_of_file(self, file: str) -> dict[str, str]:
        m = self.m
        flt = self._kind("document", m.FieldCondition(key="file", match=m.MatchValue(value=file)))
        return {p.payload["document_id"]: p.payload["content_hash"] for p in self._documents(flt)}

    def file_of(self, doc_id: str) -> str | None:
        with self._errors("reading"):
            found = self.client.retrieve(self.docs_name, [point_id("document", doc_id)], with_payload=["file"])
        return found[0].payload.get("file") if found else None

    def files_with_documents(self) -> list[str]:
        return sorted({p.payload["file"] for p in self._documents(self._kind("document"), ["document_id", "file"])
                       if p.payload.get("file")})

    def count_documents(self) -> int:
        with self._errors("reading"):
            return self.client.count(self.docs_name, count_filter=self._kind("document"), exact=True).count

    def count_chunks(self) -> int:
        with self._errors("reading"):
            return self.client.count(self.chunks_name, exact=True).count if self._has_chunks() else 0

    def chunk_texts(self) -> list[tuple[int, str, str]]:
        return [row[:3] for row in self.chunk_rows()]

    def chunk_rows(self) -> list[tuple[int, str, str, str]]:
        """(row id, header, text, document id) of every chunk, by row id."""
        with self._errors("reading"):
            return sorted((p.id, p.payload["header"], p.payload["text"], p.payload["document_id"])
                          for p in self._scroll(self.chunks_name, payload=["header", "text", "document_id"]))

    def _vectors_by(self, key: str, values: list[str]) -> dict[str, np.ndarray]:
        m = self.m
        found = {}
        with self._errors("reading"):
            for i in range(0, len(values), 1000):
                flt = m.Filter(must=[m.FieldCondition(key=key, match=m.MatchAny(any=values[i:i + 1000]))])
                for p in self._scroll(self.chunks_name, flt, payload=[key], vectors=["dense"]):
                    found[p.payload[key]] = np.asarray(p.vector["dense"], dtype=np.float32)
        return found

    def vectors_for_texts(self, hashes: list[str]) -> dict[str, np.ndarray]:
        return self._vectors_by("text_hash", list(hashes))

    def chunk_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        return self._vectors_by("chunk_id", list(chunk_ids))

    def list_documents(self, where: dict | None = None, groups: list[str] | None = None,
                       limit: int | None = None, offset: int = 0) -> list[StoredDocument]:
        flt = qdrant_filter(self.m, where, groups, [self.m.FieldCondition(key="kind", match=self.m.MatchValue(value="document"))])
        docs = self._documents(flt)[offset:None if limit is None else offset + limit]
        return [StoredDocument(p.payload["document_id"], p.payload["title"], p.payload["source"], p.payload["metadata"],
                               p.payload["groups"], p.payload["content_hash"], p.payload["chunk_count"]) for p in docs]

    def get_document(self, doc_id: str, groups: list[str] | None = None) -> tuple[Document, list[Chunk]] | None:
        m = self.m
        flt = qdrant_filter(m, None, groups, [m.HasIdCondition(has_id=[point_id("document", doc_id)])])
        docs = self._documents(flt)
        if not docs:
            return None
        p = docs[0].payload
        with self._errors("reading"):
            rows = sorted((c.payload for c in self._scroll(self.chunks_name, m.Filter(must=[
                m.FieldCondition(key="document_id", match=m.MatchValue(value=doc_id))]), payload=_CHUNK_FIELDS)),
                key=lambda c: c["idx"])
        return _document(p), [_chunk(c) for c in rows]

    def export_documents(self, batch_size: int = 256) -> Iterator[list[IndexedDocument]]:
        """Every document with its chunks, stored vectors and sections, in batches, in the order their
        chunks were written (so a copy breaks score ties the same way)."""
        m = self.m
        first: dict[str, int] = {}
        with self._errors("reading"):
            for c in self._scroll(self.chunks_name, payload=["document_id"]):
                first[c.payload["document_id"]] = min(c.id, first.get(c.payload["document_id"], c.id))
        docs = sorted(self._documents(self._kind("document")),
                      key=lambda p: (first.get(p.payload["document_id"], 1 << 63), p.payload["document_id"]))
        dim = (self.embedder_info() or {}).get("dimension") or 0
        for i in range(0, len(docs), batch_size):
            part = [p.payload for p in docs[i:i + batch_size]]
            chunks: dict[str, list] = {}
            with self._errors("reading"):
                flt = m.Filter(must=[m.FieldCondition(key="document_id", match=m.MatchAny(any=[p["document_id"] for p in part]))])
                for c in self._scroll(self.chunks_name, flt, payload=_CHUNK_FIELDS, vectors=["dense"]):
                    chunks.setdefault(c.payload["document_id"], []).append(c)
            batch = []
            for p in part:
                rows = sorted(chunks.get(p["document_id"], []), key=lambda c: c.payload["idx"])
                vectors = (np.array([c.vector["dense"] for c in rows], dtype=np.float32) if rows
                           else np.zeros((0, dim), np.float32))
                batch.append(IndexedDocument(_document(p), [_chunk(c.payload) for c in rows], vectors, file=p.get("file"),
                                             sections=p["sections"]))
            yield batch

    # --- search -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator["QdrantSnapshot"]:
        """A read view at the current generation (Qdrant has no snapshot isolation: see module docstring)."""
        with self._errors("searching"):
            meta = self._meta()
            info = json.loads(meta["embedder"]) if meta.get("embedder") else {}
            yield QdrantSnapshot(self, int(meta["generation"]), info.get("dimension"))

    def build_indexes(self) -> None:
        """Bring the in-process BM25 index up to date and save it (end of `ragtune index`)."""
        with self.snapshot() as snap:
            snap.bm25()


def qdrant_filter(m, where: dict | None, groups: list[str] | None, must: list | None = None):
    """A Qdrant payload filter for metadata equality (key "id" = document id) and access groups."""
    must = list(must or [])
    for key, value in (where or {}).items():
        if filter_key(key) == "id":
            must.append(m.FieldCondition(key="document_id", match=m.MatchValue(value=str(value))))
        else:
            must.append(m.FieldCondition(key="filters", match=m.MatchValue(value=f"{key}={filter_text(value)}")))
    if groups is not None:
        should = [m.IsEmptyCondition(is_empty=m.PayloadField(key="groups"))]
        if groups:
            should.append(m.FieldCondition(key="groups", match=m.MatchAny(any=list(groups))))
        must.append(m.Filter(should=should))
    return m.Filter(must=must) if must else None


def _document(p: dict) -> Document:
    return Document(id=p["document_id"], title=p["title"], sections=[Section("", title=t, page=pg) for t, pg, _ in p["sections"]],
                    metadata=p["metadata"], groups=list(p["groups"]), content_hash=p["content_hash"])


def _chunk(p: dict) -> Chunk:
    return Chunk(id=p["chunk_id"], document_id=p["document_id"], index=p["idx"], text=p["text"], start=p["start"],
                 end=p["end"], section=p["section"], page=p["page"], header=p["header"])


class QdrantSnapshot:
    """One search's view of a QdrantStore at one generation (for the BM25 index)."""

    def __init__(self, store: QdrantStore, generation: int, dimension: int | None):
        self.store, self.generation, self.dimension = store, generation, dimension
        self.client, self.m, self.name = store.client, store.m, store.chunks_name
        self._ready = store._has_chunks()
        self._count: int | None = None

    def allowed_rowids(self, where: dict | None, groups: list[str] | None):
        """A Qdrant filter, or None when nothing is filtered."""
        if not where and groups is None:
            return None
        return qdrant_filter(self.m, where, groups)

    def count(self, allowed) -> int:
        if not self._ready:
            return 0
        return self.client.count(self.name, count_filter=allowed, exact=True).count

    def dense(self, query: np.ndarray, k: int, allowed=None) -> list[tuple[int, float]]:
        if not self._ready:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if self.dimension and query.shape[0] != self.dimension:
            raise EmbedderMismatchError(f"query vector has {query.shape[0]} dims; the store holds {self.dimension}-dim "
                                        f"vectors. Run `ragtune index --reembed`.")
        retrieval = self.store.retrieval
        if self._count is None:
            self._count = self.count(None)
        exact = self._count <= retrieval.ann_threshold
        points = self._query(query, k, allowed, exact)
        if len(points) < k and allowed is not None and not exact:
            points = self._query(query, k, allowed, True)
        return sorted(((p.id, float(p.score)) for p in points), key=lambda pair: (-pair[1], pair[0]))

    def _query(self, query, k, allowed, exact: bool):
        # Local mode always scans exactly (and warns about search parameters): give them to servers only.
        params = None if self.store.local else self.m.SearchParams(hnsw_ef=max(self.store.retrieval.ef_search, k),
                                                                   exact=exact)
        return self.client.query_points(self.name, query=query.tolist(), using="dense", query_filter=allowed, limit=k,
                                        search_params=params, with_payload=False).points

    def bm25(self):
        return self.store.bm25.at(self.generation, self.store.chunk_rows)

    def sparse(self, query: str, k: int, allowed=None) -> list[tuple[int, float]]:
        if not self._ready:
            return []
        return self.bm25().search(query, k, None if allowed is None else lambda rowids: self._passes(rowids, allowed))

    def _passes(self, rowids: list[int], allowed) -> set[int]:
        """Which of these chunks the filter permits."""
        m = self.m
        flt = m.Filter(must=[m.HasIdCondition(has_id=rowids), allowed])
        points, _ = self.client.scroll(self.name, scroll_filter=flt, limit=len(rowids), with_payload=False)
        return {p.id for p in points}

    def idf(self, tokens: list[str]) -> dict[str, float]:
        return self.bm25().idf(tokens)

    def chunk_documents(self, rowids: list[int]) -> dict[int, str]:
        view = self.store.bm25.current(self.generation)
        found = view.documents_of(list(rowids)) if view is not None and rowids else {}
        missing = [r for r in rowids if r not in found]
        if missing:
            found.update((p.id, p.payload["document_id"])
                         for p in self.client.retrieve(self.name, missing, with_payload=["document_id"]))
        return found

    def hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        if not ranked:
            return []
        found = {p.id: p.payload for p in self.client.retrieve(self.name, [r for r, _ in ranked], with_payload=True)}
        return [Hit(p["chunk_id"], p["document_id"], score, p["text"], p["source"], p["title"], p["section"], p["page"],
                    dict(p["metadata"])) for rowid, score in ranked if (p := found.get(rowid)) is not None]


def open_qdrant_store(config: StoreConfig, project_dir: Path, retrieval: RetrievalConfig,
                      create: bool = True) -> QdrantStore:
    path = Path(config.path)
    return QdrantStore(config, path if path.is_absolute() else project_dir / path, retrieval, create=create)


register("store", "qdrant", open_qdrant_store)
