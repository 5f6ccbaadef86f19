"""The embedded store: SQLite is the one source of truth; BM25 and vector indexes derive from it.

Layout of a store folder:
    ragtune.db       documents, chunks (text + vector), access groups, files, tombstones, meta
    dense.npz        derived: vectors by position (+ HNSW graph past the ANN threshold)
    bm25.pkl         derived: bm25s index over chunk texts

Every write is one SQLite transaction (WAL, synchronous=FULL) that bumps `generation`. A derived
index remembers the generation it reflects and is caught up from the `gen` column of new chunks
and from tombstones of deleted ones, inside the reader's snapshot, so a search sees exactly one
committed state. Derived files are written to a temp name and renamed, and are rebuilt whenever
their format, store id, settings or embedder fingerprint do not match: they are never trusted
past a mismatch.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import json
import logging
import os
import pickle
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ragtune.config import RetrievalConfig, StoreConfig
from ragtune.errors import EmbedderMismatchError, InputError, StoreError
from ragtune.knowledge.store_api import check_embedder_record, section_rows
from ragtune.registry import register
from ragtune.retrieve.bm25 import BM25Index
from ragtune.retrieve.dense import DenseIndex
from ragtune.types import Chunk, Document, Hit, Section

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Past this many chunks hit fields are read from SQLite instead of memory (~1 KB of text a chunk).
HIT_FIELDS_IN_MEMORY_MAX = 100_000
ALLOWED_CACHE_ROWS = 4_000_000  # row ids kept for repeated filters (32 MB)
DERIVED_LAYOUT = {"dense": 1, "bm25": 2}  # bump when a derived file's contents change shape
MMAP_BYTES = 1 << 30  # address space only; SQLite maps at most the file's size
# Upgrades from older formats: {old_version: function(connection)} applied in order on open.
MIGRATIONS: dict[int, callable] = {}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT, source TEXT, file TEXT, metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL, chunk_count INTEGER NOT NULL, gen INTEGER NOT NULL, sections TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_file ON documents(file);
CREATE TABLE IF NOT EXISTS doc_groups (document_id TEXT NOT NULL, grp TEXT NOT NULL, PRIMARY KEY (document_id, grp));
CREATE INDEX IF NOT EXISTS doc_groups_grp ON doc_groups(grp);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, document_id TEXT NOT NULL,
    idx INTEGER NOT NULL, text TEXT NOT NULL, header TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    section TEXT, page INTEGER, text_hash TEXT NOT NULL, gen INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
CREATE INDEX IF NOT EXISTS chunks_gen ON chunks(gen);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS tombstones (gen INTEGER NOT NULL, chunk_rowid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_gen ON tombstones(gen);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, hash TEXT NOT NULL, gen INTEGER NOT NULL);
"""


@dataclass
class StoredDocument:
    """A document as listed by the store."""

    id: str
    title: str | None
    source: str | None
    metadata: dict
    groups: list[str]
    content_hash: str
    chunk_count: int


@dataclass
class IndexedDocument:
    """What one write stores for one document: the document, its chunks and their vectors (C, D)."""

    document: Document
    chunks: list[Chunk]
    vectors: np.ndarray
    file: str | None = None  # source-file key, for --prune
    sections: list | None = None  # stored [title, page, length] rows, when copying a stored document (migrate)


def text_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class SQLiteStore:
    """Embedded store (see module docstring). Cheap to construct; connections open on first use."""

    def __init__(self, path: Path, retrieval: RetrievalConfig | None = None, create: bool = True):
        self.path = Path(path)
        self.retrieval = retrieval or RetrievalConfig()
        self.db_path = self.path / "ragtune.db"
        if not self.db_path.exists():
            if not create:
                raise StoreError(f"no knowledge base at {self.path}. Index documents first: ragtune index PATH")
            self.path.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._dense: tuple[DenseIndex, np.ndarray, int] | None = None  # (index, rowids, generation)
        # (index, chunk rowids by position, generation, document id by position)
        self._bm25: tuple[BM25Index, np.ndarray, int, np.ndarray, HitFields | None] | None = None
        # filter -> permitted chunk row ids, for the generation in _allowed_generation: a server asks
        # the same few filters (one per key's groups) again and again.
        self._allowed: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._allowed_generation = -1
        self._open()

    # --- connections and schema ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        # Reads through a memory map: fetching a search's hits (random rows) costs ~0.33 instead of
        # ~0.5 ms per 100 on SciFact, as pages come from the OS cache without a read() call each.
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _open(self) -> None:
        try:
            conn = self.conn
            version = self._meta(conn, "format_version")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.db_path}: not a ragtune store or damaged ({exc}).") from None
        if version is None:
            with self._write() as conn:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                if self._meta(conn, "format_version") is None:
                    conn.execute("INSERT INTO meta VALUES ('format_version', ?), ('generation', '0'), ('store_id', ?)",
                                 (str(FORMAT_VERSION), uuid.uuid4().hex))
            return
        version = int(version)
        if version > FORMAT_VERSION:
            raise StoreError(f"{self.path} was written by a newer ragtune (store format {version}, this ragtune "
                             f"reads {FORMAT_VERSION}). Upgrade: pip install -U ragtune")
        if version < FORMAT_VERSION:
            missing = [v for v in range(version, FORMAT_VERSION) if v not in MIGRATIONS]
            if missing:
                raise StoreError(f"{self.path} uses store format {version}, which this ragtune cannot upgrade. "
                                 f"Rebuild it: ragtune index PATH --rebuild")
            with self._write() as conn:
                for v in range(version, FORMAT_VERSION):
                    MIGRATIONS[v](conn)
                conn.execute("UPDATE meta SET value=? WHERE key='format_version'", (str(FORMAT_VERSION),))

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> str | None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return row[0] if row else None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction; the generation is bumped by the caller via _bump."""
        conn = self.conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _bump(self, conn: sqlite3.Connection) -> int:
        gen = int(self._meta(conn, "generation")) + 1
        conn.execute("UPDATE meta SET value=? WHERE key='generation'", (str(gen),))
        return gen

    @property
    def generation(self) -> int:
        return int(self._meta(self.conn, "generation") or 0)

    @property
    def store_id(self) -> str:
        return self._meta(self.conn, "store_id") or ""

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- embedder record ----------------------------------------------------------------------
    def embedder_info(self) -> dict | None:
        value = self._meta(self.conn, "embedder")
        return json.loads(value) if value else None

    def check_embedder(self, info: dict) -> None:
        """Refuse a different model, weights or dimension; warn on a different backend of the same weights."""
        stored = self.embedder_info()
        check_embedder_record(stored, info, self.count_chunks, str(self.path))

    def set_embedder_info(self, info: dict, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.conn).execute("INSERT OR REPLACE INTO meta VALUES ('embedder', ?)", (json.dumps(info),))

    # --- writes -------------------------------------------------------------------------------
    def upsert(self, items: list[IndexedDocument], files: Iterable[tuple[str, str]] = (),
               embedder: dict | None = None) -> int:
        """Store documents (replacing earlier versions) and file hashes atomically; returns the generation."""
        with self._write() as conn:
            gen = self._bump(conn)
            if embedder is not None:
                self.set_embedder_info(embedder, conn)
            for item in items:
                doc = item.document
                if item.vectors.shape[0] != len(item.chunks):
                    raise StoreError(f"document {doc.id}: {len(item.chunks)} chunks but {item.vectors.shape[0]} vectors")
                self._delete_document(conn, doc.id, gen)
                metadata = dict(doc.metadata)
                conn.execute("INSERT INTO documents VALUES (?,?,?,?,?,?,?,?,?)",
                             (doc.id, doc.title, metadata.get("source"), item.file, json.dumps(metadata, default=str),
                              doc.content_hash, len(item.chunks), gen, json.dumps(section_rows(item))))
                conn.executemany("INSERT INTO doc_groups VALUES (?,?)", [(doc.id, g) for g in sorted(set(doc.groups))])
                vectors = np.ascontiguousarray(item.vectors, dtype=np.float32)
                conn.executemany(
                    'INSERT INTO chunks (id, document_id, idx, text, header, start, "end", section, page, text_hash, gen, vector)'
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(c.id, doc.id, c.index, c.text, c.header, c.start, c.end, c.section, c.page,
                      text_hash(c.index_text), gen, vectors[i].tobytes()) for i, c in enumerate(item.chunks)])
            conn.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?)", [(p, h, gen) for p, h in files])
        return gen

    def _delete_document(self, conn: sqlite3.Connection, doc_id: str, gen: int) -> bool:
        conn.execute("INSERT INTO tombstones SELECT ?, rowid FROM chunks WHERE document_id=?", (gen, doc_id))
        conn.execute("DELETE FROM chunks WHERE document_id=?", (doc_id,))
        conn.execute("DELETE FROM doc_groups WHERE document_id=?", (doc_id,))
        return conn.execute("DELETE FROM documents WHERE id=?", (doc_id,)).rowcount > 0

    def delete(self, doc_ids: Iterable[str], forget_files: Iterable[str] = ()) -> int:
        """Delete documents (and file records) atomically; returns how many documents existed."""
        with self._write() as conn:
            gen = self._bump(conn)
            count = sum(self._delete_document(conn, d, gen) for d in doc_ids)
            conn.executemany("DELETE FROM files WHERE path=?", [(p,) for p in forget_files])
        return count

    def replace_vectors(self, rowids: list[int], vectors: np.ndarray, embedder: dict) -> None:
        """Swap every chunk vector (after re-embedding) and the embedder record in one transaction."""
        with self._write() as conn:
            gen = self._bump(conn)
            conn.executemany("UPDATE chunks SET vector=?, gen=? WHERE rowid=?",
                             [(np.ascontiguousarray(v, np.float32).tobytes(), gen, r) for r, v in zip(rowids, vectors)])
            conn.execute("INSERT INTO tombstones SELECT ?, rowid FROM chunks", (gen,))
            self.set_embedder_info(embedder, conn)
        self._dense = None

    # --- reads --------------------------------------------------------------------------------
    def describe(self) -> str:
        return str(self.path)

    def chunk_texts(self) -> list[tuple[int, str, str]]:
        """(rowid, header, text) of every chunk, by rowid."""
        return self.conn.execute("SELECT rowid, header, text FROM chunks ORDER BY rowid").fetchall()

    def export_documents(self, batch_size: int = 256) -> Iterator[list[IndexedDocument]]:
        """Every document with its chunks, stored vectors and stored sections, in batches, in the order
        their chunks were written (so a copy breaks score ties the same way)."""
        ids = [r[0] for r in self.conn.execute(
            "SELECT d.id FROM documents d LEFT JOIN (SELECT document_id, MIN(rowid) AS first FROM chunks "
            "GROUP BY document_id) c ON c.document_id = d.id ORDER BY c.first NULLS LAST, d.id")]
        for i in range(0, len(ids), batch_size):
            part = ids[i:i + batch_size]
            marks = ",".join("?" * len(part))
            records = {r[0]: r for r in self.conn.execute(f"SELECT id, title, metadata, content_hash, sections, file "
                                                          f"FROM documents WHERE id IN ({marks})", part)}
            docs = [records[doc_id] for doc_id in part]
            groups = self._groups_of(part)
            chunks: dict[str, list] = {}
            for r in self.conn.execute(f'SELECT document_id, id, idx, text, start, "end", section, page, header, vector '
                                       f"FROM chunks WHERE document_id IN ({marks}) ORDER BY document_id, idx", part):
                chunks.setdefault(r[0], []).append(r)
            batch, dim = [], (self.embedder_info() or {}).get("dimension") or 0
            for doc_id, title, metadata, content_hash, sections, file in docs:
                rows = chunks.get(doc_id, [])
                stored_sections = json.loads(sections)
                doc = Document(id=doc_id, title=title, sections=[Section("", title=t, page=p) for t, p, _ in stored_sections],
                               metadata=json.loads(metadata), groups=sorted(groups.get(doc_id, [])),
                               content_hash=content_hash)
                items = [Chunk(id=r[1], document_id=doc_id, index=r[2], text=r[3], start=r[4], end=r[5], section=r[6],
                               page=r[7], header=r[8]) for r in rows]
                vectors = (np.frombuffer(b"".join(r[9] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                           if rows else np.zeros((0, dim), np.float32))
                batch.append(IndexedDocument(doc, items, vectors, file=file, sections=stored_sections))
            yield batch

    def file_hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT path, hash FROM files"))

    def documents_of_file(self, file: str) -> dict[str, str]:
        """{document id: content hash} of the documents that came from `file`."""
        return dict(self.conn.execute("SELECT id, content_hash FROM documents WHERE file=?", (file,)))

    def file_of(self, doc_id: str) -> str | None:
        """Source-file key of a stored document (None if absent or not from a file)."""
        row = self.conn.execute("SELECT file FROM documents WHERE id=?", (doc_id,)).fetchone()
        return row[0] if row else None

    def files_with_documents(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT file FROM documents WHERE file IS NOT NULL")]

    def count_documents(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    def count_chunks(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def vectors_for_texts(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks whose indexed text has these hashes (to skip re-embedding)."""
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            rows = self.conn.execute(f"SELECT text_hash, vector FROM chunks WHERE text_hash IN ({','.join('?' * len(part))})", part)
            for h, blob in rows:
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def chunk_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors of these chunks (by chunk id); ids not in the store are left out."""
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(chunk_ids), 500):
            part = chunk_ids[i:i + 500]
            rows = self.conn.execute(f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)
            found.update((cid, np.frombuffer(blob, dtype=np.float32)) for cid, blob in rows)
        return found

    def list_documents(self, where: dict | None = None, groups: list[str] | None = None,
                       limit: int | None = None, offset: int = 0) -> list[StoredDocument]:
        clause, params = _filter_sql(where, groups)
        sql = f"SELECT d.id, d.title, d.source, d.metadata, d.content_hash, d.chunk_count FROM documents d WHERE {clause} ORDER BY d.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        rows = self.conn.execute(sql, params).fetchall()
        groups_of = self._groups_of([r[0] for r in rows])
        return [StoredDocument(r[0], r[1], r[2], json.loads(r[3]), groups_of.get(r[0], []), r[4], r[5]) for r in rows]

    def _groups_of(self, doc_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(doc_ids), 500):
            part = doc_ids[i:i + 500]
            for d, g in self.conn.execute(f"SELECT document_id, grp FROM doc_groups WHERE document_id IN ({','.join('?' * len(part))})", part):
                out.setdefault(d, []).append(g)
        return out

    def get_document(self, doc_id: str, groups: list[str] | None = None) -> tuple[Document, list[Chunk]] | None:
        """The document and its chunks, or None if absent or outside `groups`."""
        clause, params = _filter_sql(None, groups)
        row = self.conn.execute(f"SELECT d.id, d.title, d.metadata, d.content_hash, d.sections FROM documents d "
                                f"WHERE d.id=? AND {clause}", [doc_id, *params]).fetchone()
        if row is None:
            return None
        chunks = [Chunk(id=r[0], document_id=doc_id, index=r[1], text=r[2], start=r[3], end=r[4], section=r[5],
                        page=r[6], header=r[7])
                  for r in self.conn.execute('SELECT id, idx, text, start, "end", section, page, header FROM chunks '
                                             "WHERE document_id=? ORDER BY idx", (doc_id,))]
        sections = [Section("", title=t, page=p) for t, p, _ in json.loads(row[4])]
        doc = Document(id=row[0], title=row[1], sections=sections, metadata=json.loads(row[2]),
                       groups=self._groups_of([doc_id]).get(doc_id, []), content_hash=row[3])
        return doc, chunks

    # --- snapshots and derived indexes --------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator["Snapshot"]:
        """A consistent read view: derived indexes caught up to the snapshot's generation."""
        conn = self.conn
        with self._lock:
            for _ in range(5):
                conn.execute("BEGIN")
                gen = int(self._meta(conn, "generation"))
                try:
                    dense, bm25 = self._sync(conn, gen)
                except _Retry:
                    conn.execute("COMMIT")
                    continue
                try:
                    yield Snapshot(self, conn, gen, dense, bm25)
                finally:
                    conn.execute("COMMIT")
                return
            raise StoreError("could not get a consistent snapshot; another process keeps rewriting the indexes")

    def _sync(self, conn, gen: int):
        dense = self._dense or self._load_dense(gen)
        if dense is None or dense[2] > gen:
            if dense is not None and self._dense is not None and dense[2] > gen:
                raise _Retry()
            dense = self._build_dense(conn, gen)
            self._save_dense(dense)
        elif dense[2] < gen:
            dense = self._catch_up_dense(conn, dense, gen)
        self._dense = dense
        bm25 = self._bm25 or self._load_bm25(gen)
        if bm25 is None or bm25[2] != gen:
            if bm25 is not None and bm25[2] > gen and self._bm25 is not None:
                raise _Retry()
            rows = conn.execute("SELECT rowid, header, text, document_id, id, section, page FROM chunks "
                                "ORDER BY rowid").fetchall()
            texts = [f"{r[1]}\n{r[2]}" if r[1] else r[2] for r in rows]
            fields = None
            if len(rows) <= HIT_FIELDS_IN_MEMORY_MAX:
                documents = {d[0]: d[1:] for d in conn.execute("SELECT id, source, title, metadata FROM documents")}
                fields = HitFields([r[4] for r in rows], [r[2] for r in rows], [r[5] for r in rows],
                                   [r[6] for r in rows], documents)
            bm25 = (BM25Index(texts, self.retrieval.bm25), np.array([r[0] for r in rows], dtype=np.int64), gen,
                    np.array([r[3] for r in rows], dtype=object), fields)
            self._save_bm25(bm25)
        self._bm25 = bm25
        return dense, bm25

    def _dense_options(self) -> dict:
        r = self.retrieval
        return {"ann_threshold": r.ann_threshold, "hnsw_m": r.hnsw_m, "ef_search": r.ef_search}

    def _build_dense(self, conn, gen: int):
        rows = conn.execute("SELECT rowid, vector FROM chunks ORDER BY rowid").fetchall()
        dim = (self.embedder_info() or {}).get("dimension") or 0
        vectors = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                   if rows else np.zeros((0, dim), np.float32))
        return DenseIndex(vectors, **self._dense_options()), np.array([r[0] for r in rows], dtype=np.int64), gen

    def _catch_up_dense(self, conn, dense, gen: int):
        index, rowids, old = dense
        dead = np.array([r[0] for r in conn.execute("SELECT chunk_rowid FROM tombstones WHERE gen > ?", (old,))], dtype=np.int64)
        if len(dead):
            pos = np.searchsorted(rowids, dead)
            pos = pos[(pos < len(rowids)) & (rowids[np.minimum(pos, len(rowids) - 1)] == dead)]
            index.delete(pos)
        new = conn.execute("SELECT rowid, vector FROM chunks WHERE gen > ? ORDER BY rowid", (old,)).fetchall()
        if new:
            index.append(np.frombuffer(b"".join(r[1] for r in new), dtype=np.float32).reshape(len(new), -1))
            rowids = np.concatenate([rowids, np.array([r[0] for r in new], dtype=np.int64)])
        if index.dead_fraction > 0.25:
            return self._build_dense(conn, gen)
        return index, rowids, gen

    def _derived_key(self, kind: str) -> dict:
        info = self.embedder_info() or {}
        r = self.retrieval
        settings = ({"ann_threshold": r.ann_threshold, "hnsw_m": r.hnsw_m} if kind == "dense"
                    else r.bm25.model_dump())
        return {"format": FORMAT_VERSION, "store_id": self.store_id, "kind": kind, "layout": DERIVED_LAYOUT[kind],
                "embedder": info.get("fingerprint"), "settings": settings}

    def _atomic_write(self, name: str, write) -> None:
        target = self.path / name
        tmp = self.path / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("could not save derived index %s: %s", target, exc)
            tmp.unlink(missing_ok=True)

    def _save_dense(self, dense) -> None:
        index, rowids, gen = dense
        key = json.dumps({**self._derived_key("dense"), "generation": gen})
        self._atomic_write("dense.npz", lambda fh: np.savez(fh, key=np.array(key), rowids=rowids, **index.state()))

    def _load_dense(self, gen: int):
        try:
            with np.load(self.path / "dense.npz", allow_pickle=False) as data:
                key = json.loads(str(data["key"]))
                if {k: v for k, v in key.items() if k != "generation"} != self._derived_key("dense") or key["generation"] > gen:
                    return None
                state = {k: data[k] for k in data.files if k not in ("key", "rowids")}
                return DenseIndex.from_state(state, **self._dense_options()), data["rowids"].copy(), key["generation"]
        except FileNotFoundError:
            return None
        except Exception as exc:  # damaged or foreign file: rebuild from the source of truth
            log.warning("rebuilding dense index (%s)", exc)
            return None

    def _save_bm25(self, bm25) -> None:
        key = {**self._derived_key("bm25"), "generation": bm25[2]}
        self._atomic_write("bm25.pkl", lambda fh: pickle.dump((key, *bm25[:2], *bm25[3:]), fh, protocol=5))

    def _load_bm25(self, gen: int):
        try:
            with open(self.path / "bm25.pkl", "rb") as fh:
                key, index, rowids, docs, fields = pickle.load(fh)
            if {k: v for k, v in key.items() if k != "generation"} != self._derived_key("bm25") or key["generation"] != gen:
                return None
            return index, rowids, key["generation"], docs, fields
        except FileNotFoundError:
            return None
        except Exception as exc:
            log.warning("rebuilding BM25 index (%s)", exc)
            return None

    def build_indexes(self) -> None:
        """Bring the derived indexes up to date and save them (done at the end of `ragtune index`)."""
        with self.snapshot():
            pass
        if self._dense is not None:
            self._save_dense(self._dense)


class _Retry(Exception):
    pass


def _filter_sql(where: dict | None, groups: list[str] | None) -> tuple[str, list]:
    """SQL over alias d (documents) for metadata equality filters and access groups."""
    clauses, params = ["1=1"], []
    for key, value in (where or {}).items():
        if not key.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"filter field '{key}': use letters, digits, '_' or '-'")
        if key == "id":
            clauses.append("d.id = ?")
        else:
            clauses.append(f"CAST(json_extract(d.metadata, '$.\"{key}\"') AS TEXT) = ?")
        params.append(str(value))
    if groups is not None:
        marks = ",".join("?" * len(groups)) or "NULL"
        clauses.append("(NOT EXISTS (SELECT 1 FROM doc_groups g WHERE g.document_id = d.id) OR EXISTS "
                       f"(SELECT 1 FROM doc_groups g WHERE g.document_id = d.id AND g.grp IN ({marks})))")
        params.extend(groups)
    return " AND ".join(clauses), params


@dataclass
class HitFields:
    """What a hit shows (chunk id, text, section, page by BM25 position; source, title, metadata by
    document), kept with the BM25 index of a store of up to HIT_FIELDS_IN_MEMORY_MAX chunks, so that
    a search returns its hits without reading SQLite (100 hits: ~0.05 instead of ~0.4 ms). Rebuilt
    with the BM25 index at every generation, so it always matches the snapshot."""

    chunk_ids: list[str]
    texts: list[str]
    sections: list[str | None]
    pages: list[int | None]
    documents: dict[str, tuple[str | None, str | None, str]]  # id -> (source, title, metadata JSON)


@lru_cache(maxsize=4096)
def _parsed_metadata(text: str) -> tuple[dict, bool]:
    parsed = json.loads(text)
    return parsed, any(isinstance(v, (dict, list)) for v in parsed.values())


def _metadata(text: str) -> dict:
    """A document's metadata JSON as a fresh dict, parsed once per distinct text (a search's hits
    often share documents or sources); nested values are deep-copied so callers may mutate them."""
    parsed, nested = _parsed_metadata(text)
    return copy.deepcopy(parsed) if nested else parsed.copy()


class Snapshot:
    """One consistent view of the store for the duration of a search."""

    def __init__(self, store: SQLiteStore, conn, generation: int, dense, bm25):
        self.store, self.conn, self.generation = store, conn, generation
        self._dense, self._dense_rowids, _ = dense
        self._bm25, self._bm25_rowids, _, self._documents, self._fields = bm25  # BM25 covers every live chunk

    def allowed_rowids(self, where: dict | None, groups: list[str] | None) -> np.ndarray | None:
        """Sorted chunk row ids passing the filters, or None when nothing is filtered (cached per
        generation: every write bumps it; the snapshot holds the store's lock)."""
        if not where and groups is None:
            return None
        clause, params = _filter_sql(where, groups)
        store, cache_key = self.store, (clause, tuple(params))
        if store._allowed_generation != self.generation:
            store._allowed.clear()
            store._allowed_generation = self.generation
        found = store._allowed.get(cache_key)
        if found is not None:
            store._allowed.move_to_end(cache_key)
            return found
        rows = self.conn.execute(f"SELECT c.rowid FROM chunks c JOIN documents d ON d.id = c.document_id "
                                 f"WHERE {clause} ORDER BY c.rowid", params)
        found = np.fromiter((r[0] for r in rows), dtype=np.int64)
        found.flags.writeable = False
        store._allowed[cache_key] = found
        while sum(len(a) for a in store._allowed.values()) > ALLOWED_CACHE_ROWS and len(store._allowed) > 1:
            store._allowed.popitem(last=False)
        return found

    @staticmethod
    def _mask(rowids: np.ndarray, allowed: np.ndarray | None) -> np.ndarray | None:
        return None if allowed is None else np.isin(rowids, allowed, assume_unique=True)

    def dense(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        if query.shape[-1] != self._dense.dimension and len(self._dense_rowids):
            raise EmbedderMismatchError(f"query vector has {query.shape[-1]} dims; the store holds "
                                        f"{self._dense.dimension}-dim vectors. Run `ragtune index --reembed`.")
        result = self._dense.search(query, k, self._mask(self._dense_rowids, allowed))
        return list(zip(self._dense_rowids[result.positions].tolist(), result.scores.tolist()))

    def sparse(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        result = self._bm25.search(query, k, self._mask(self._bm25_rowids, allowed))
        return list(zip(self._bm25_rowids[result.positions].tolist(), result.scores.tolist()))

    def idf(self, tokens: list[str]) -> dict[str, float]:
        """Inverse document frequency over the live chunks of BM25-analysed tokens."""
        return self._bm25.idf(tokens)

    def chunk_documents(self, rowids: list[int]) -> dict[int, str]:
        """{chunk rowid: document id} from the in-memory map of this snapshot."""
        if not rowids:
            return {}
        positions = np.searchsorted(self._bm25_rowids, np.asarray(rowids, dtype=np.int64))
        return dict(zip(rowids, self._documents[positions].tolist()))

    def hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        """Hits for these (chunk rowid, score) pairs, in the same order, with chunk and document fields."""
        if self._fields is not None and ranked:
            f = self._fields
            positions = np.searchsorted(self._bm25_rowids, np.array([r for r, _ in ranked], dtype=np.int64))
            doc_ids = self._documents[positions].tolist()
            ids, texts, sections, pages, docs = f.chunk_ids, f.texts, f.sections, f.pages, f.documents
            make = tuple.__new__  # Hit(...) without NamedTuple's keyword handling: 5x cheaper, same object
            return [make(Hit, (ids[p], d, score, texts[p], docs[d][0], docs[d][1], sections[p], pages[p],
                               _metadata(docs[d][2])))
                    for (_, score), p, d in zip(ranked, positions.tolist(), doc_ids)]
        sql = ("SELECT c.rowid, c.id, c.document_id, c.text, d.source, d.title, c.section, c.page, d.metadata "
               "FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.rowid IN ({})")
        rows = {r[0]: r for r in self._select(sql, [rowid for rowid, _ in ranked])}
        return [Hit(r[1], r[2], score, r[3], r[4], r[5], r[6], r[7], _metadata(r[8]))
                for rowid, score in ranked if (r := rows.get(rowid)) is not None]

    def _select(self, sql: str, ids: list[int]):
        out = []
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            out.extend(self.conn.execute(sql.format(",".join("?" * len(part))), part).fetchall())
        return out

    def count(self, allowed: np.ndarray | None) -> int:
        return len(self._dense) if allowed is None else len(allowed)


def open_sqlite_store(config: StoreConfig, project_dir: Path, retrieval: RetrievalConfig, create: bool = True) -> SQLiteStore:
    path = Path(config.path)
    return SQLiteStore(path if path.is_absolute() else project_dir / path, retrieval, create=create)


register("store", "sqlite", open_sqlite_store)
