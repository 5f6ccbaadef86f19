"""PostgreSQL + pgvector store: the knowledge base in a PostgreSQL database, for corpora and
deployments past one machine (several ragtune processes, one server, the database's own backups).

Tables, in schema `store.schema` (default `ragtune`) of the database named by `store.dsn`:
    meta        format version, store id, generation, chunk count, embedder record
    documents   id, title, source, file, metadata (jsonb), groups (text[]), hash, sections
    chunks      rowid (identity), chunk fields, metadata and groups (copied from the document so
                a filter is a predicate on the scanned table), embedding vector(D) with an HNSW
                index (vector_ip_ops: unit vectors, inner product)
    files       source-file hashes

Every write is one transaction that bumps the generation (its row lock serialises writers); a
search reads one REPEATABLE READ snapshot. Dense search: exact below `retrieval.ann_threshold`
chunks, else the HNSW index with `hnsw.ef_search = retrieval.ef_search` and pgvector's iterative
index scans (`hnsw.iterative_scan = relaxed_order`), so a filtered query keeps scanning the graph
until k permitted chunks are found; if the scan still stops short (a very narrow filter), the query
is re-run as an exact scan of the permitted chunks. Sparse search (`store.sparse`): `bm25` is
ragtune's BM25 over the stored chunks, in this process (knowledge/chunk_bm25.py; the scores of the
embedded store); `fts` is PostgreSQL full-text search (ts_rank_cd over an `english` tsvector with
a GIN index; nothing held in the process). The search side is in pgvector_search.py.

>>> store = PgVectorStore(StoreConfig(backend="pgvector", dsn="postgresql://kb@db:5432/kb"), Path("kb/store"))  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ragtune.config import RetrievalConfig, StoreConfig
from ragtune.errors import ConfigError, EmbedderMismatchError, StoreError, require
from ragtune.knowledge.chunk_bm25 import ChunkBM25
from ragtune.knowledge.pgvector_search import MAX_EF_SEARCH, PgSnapshot, pg_filter
from ragtune.knowledge.store import IndexedDocument, StoredDocument, text_hash
from ragtune.knowledge.store_api import check_embedder_record, plain_metadata, redact, section_rows
from ragtune.registry import register
from ragtune.types import Chunk, Document, Section

FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.documents (
    id text PRIMARY KEY, title text, source text, file text, metadata jsonb NOT NULL, groups text[] NOT NULL,
    content_hash text NOT NULL, chunk_count integer NOT NULL, gen bigint NOT NULL, sections jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS documents_file ON {s}.documents (file);
CREATE TABLE IF NOT EXISTS {s}.chunks (
    rowid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE, document_id text NOT NULL,
    idx integer NOT NULL, text text NOT NULL, header text NOT NULL, start integer NOT NULL, "end" integer NOT NULL,
    section text, page integer, text_hash text NOT NULL, gen bigint NOT NULL, metadata jsonb NOT NULL,
    groups text[] NOT NULL, embedding vector NOT NULL);
ALTER TABLE {s}.chunks ALTER COLUMN embedding SET STORAGE MAIN;
CREATE INDEX IF NOT EXISTS chunks_document ON {s}.chunks (document_id);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON {s}.chunks (text_hash);
CREATE INDEX IF NOT EXISTS chunks_groups ON {s}.chunks USING gin (groups);
CREATE TABLE IF NOT EXISTS {s}.files (path text PRIMARY KEY, hash text NOT NULL, gen bigint NOT NULL)
"""
_CHUNK_COLUMNS = ('id, document_id, idx, text, header, start, "end", section, page, text_hash, gen, metadata, '
                  'groups, embedding')
_CHUNK_TYPES = ["text", "text", "int4", "text", "text", "int4", "int4", "text", "int4", "text", "int8", "jsonb",
                "text[]"]  # + the vector type's oid, which differs between databases


# --- the vector type, in psycopg's binary format (int16 dims, int16 unused, float4 big-endian) ---------
def _register_vector(conn, psycopg) -> None:
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    row = conn.execute("SELECT 'vector'::regtype::oid").fetchone()
    conn.vector_oid = row[0]  # for COPY's set_types

    class VectorDumper(Dumper):
        format = Format.BINARY
        oid = row[0]

        def dump(self, obj):
            vector = np.asarray(obj, dtype=">f4").reshape(-1)
            return struct.pack(">HH", vector.shape[0], 0) + vector.tobytes()

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data):
            return np.frombuffer(bytes(data), dtype=">f4", offset=4).astype(np.float32)

    class VectorTextLoader(Loader):
        def load(self, data):
            return np.array(bytes(data).decode()[1:-1].split(","), dtype=np.float32)

    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(row[0], VectorLoader)
    conn.adapters.register_loader(row[0], VectorTextLoader)


def _first_line(exc: Exception, dsn: str = "") -> str:
    """The first line of a driver error, with the DSN's password (if the driver quoted it) hidden."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    from urllib.parse import urlsplit

    with contextlib.suppress(ValueError):
        secrets = [urlsplit(dsn).password, *re.findall(r"password\s*=\s*(\S+)", dsn)]
        for secret in filter(None, secrets):
            line = line.replace(secret, "***")
    return line


class PgVectorStore:
    """The knowledge base in PostgreSQL (see module docstring). Connects on construction, one
    connection per thread."""

    def __init__(self, config: StoreConfig, cache_dir: Path | None, retrieval: RetrievalConfig | None = None,
                 create: bool = True):
        if not config.dsn:
            raise ConfigError("store.dsn is not set: the pgvector backend needs a PostgreSQL connection string, e.g. "
                              "store: {backend: pgvector, dsn: 'postgresql://user@host:5432/db'}")
        self.psycopg = require("psycopg", "the pgvector store (store.backend: pgvector)", "pgvector")
        self.config, self.retrieval = config, retrieval or RetrievalConfig()
        self.schema = config.schema_name
        self.s = f'"{self.schema}"'
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        self._open(create)
        self.bm25 = ChunkBM25(cache_dir, self.store_id, self.retrieval.bm25)

    # --- connections and schema ---------------------------------------------------------------
    def describe(self) -> str:
        return f"{redact(self.config.dsn)} (schema {self.schema})"

    def _connect(self):
        psycopg = self.psycopg
        try:
            conn = psycopg.connect(self.config.dsn, autocommit=True, connect_timeout=max(1, int(self.config.timeout)),
                                   application_name="ragtune")
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {redact(self.config.dsn)} ({_first_line(exc, self.config.dsn)}). Check "
                             f"store.dsn in ragtune.yaml (host, port, database, user; the password comes from "
                             f"PGPASSWORD or ~/.pgpass) and that the server is running.") from None
        try:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            _register_vector(conn, psycopg)
        except psycopg.errors.InsufficientPrivilege:
            conn.close()
            raise StoreError(f"the database at {redact(self.config.dsn)} has no pgvector extension and this user may "
                             f"not create it. Ask its administrator to run: CREATE EXTENSION vector;") from None
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"PostgreSQL at {redact(self.config.dsn)} cannot load pgvector ({_first_line(exc)}). "
                             f"Install pgvector on the server (Debian: .ci/install-pgvector.sh; "
                             f"https://github.com/pgvector/pgvector#installation).") from None
        with self._lock:
            self._connections.append(conn)
        return conn

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._local.conn = self._connect()
        return conn

    @contextlib.contextmanager
    def _errors(self, doing: str):
        """PostgreSQL failures a user can meet (server gone, schema dropped) as StoreErrors."""
        psycopg = self.psycopg
        try:
            yield
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            raise StoreError(f"{doing} failed at PostgreSQL {self.describe()}: {_first_line(exc)}. Check that the "
                             f"server is up and store.dsn / store.schema in ragtune.yaml; nothing was changed by "
                             f"the failed step.") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator:
        """One transaction; yields (connection, new generation)."""
        with self._errors("writing"):
            conn = self.conn
            with conn.transaction():
                gen = conn.execute(f"UPDATE {self.s}.meta SET value = (value::bigint + 1)::text "
                                   f"WHERE key = 'generation' RETURNING value::bigint").fetchone()[0]
                yield conn, gen

    def _meta(self, key: str, conn=None) -> str | None:
        with self._errors("reading"):
            row = (conn or self.conn).execute(f"SELECT value FROM {self.s}.meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def _open(self, create: bool) -> None:
        with self._errors("opening the store"):
            conn = self.conn
            exists = conn.execute("SELECT to_regclass(%s)", (f"{self.s}.meta",)).fetchone()[0] is not None
            if not exists:
                if not create:
                    raise StoreError(f"no knowledge base in {self.describe()}. Index documents first: ragtune index "
                                     f"PATH (or copy one there: ragtune migrate --to URL)")
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ragtune:{self.schema}",))
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.s}")
                    for statement in _SCHEMA.format(s=self.s).split(";"):
                        conn.execute(statement)
                    conn.execute(f"INSERT INTO {self.s}.meta VALUES ('format_version', %s), ('generation', '0'), "
                                 f"('chunks', '0'), ('store_id', %s) ON CONFLICT DO NOTHING",
                                 (str(FORMAT_VERSION), uuid.uuid4().hex))
            version = int(self._meta("format_version"))
            if version > FORMAT_VERSION:
                raise StoreError(f"{self.describe()} was written by a newer ragtune (store format {version}, this "
                                 f"ragtune reads {FORMAT_VERSION}). Upgrade: pip install -U ragtune")
            self.store_id = self._meta("store_id")
            if self.config.sparse == "fts":
                self._ensure_fts(conn)

    def _ensure_fts(self, conn) -> None:
        """Add the full-text column and its GIN index (once; rewrites the table)."""
        has = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'chunks' "
                           "AND column_name = 'tsv'", (self.schema,)).fetchone()
        if has is None:
            with conn.transaction():
                conn.execute(f"ALTER TABLE {self.s}.chunks ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS AS "
                             f"(to_tsvector('english', header || E'\\n' || text)) STORED")
                conn.execute(f"CREATE INDEX IF NOT EXISTS chunks_tsv ON {self.s}.chunks USING gin (tsv)")

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    # --- embedder record and the vector column ------------------------------------------------
    def embedder_info(self) -> dict | None:
        value = self._meta("embedder")
        return json.loads(value) if value else None

    def check_embedder(self, info: dict) -> None:
        stored = self.embedder_info()
        check_embedder_record(stored, info, self.count_chunks, self.describe())

    def _dimension(self, conn) -> int:
        """The vector column's declared dimension (-1 while undeclared)."""
        return conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                            (f"{self.s}.chunks",)).fetchone()[0]

    def _index_sql(self) -> str:
        m = self.retrieval.hnsw_m
        ef = max(self.config.hnsw_ef_construction, 2 * m)  # pgvector requires ef_construction >= 2 m
        return (f"CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON {self.s}.chunks USING hnsw "
                f"(embedding vector_ip_ops) WITH (m = {int(m)}, ef_construction = {int(ef)})")

    def _ensure_dimension(self, conn, dim: int, build_index: bool = True) -> None:
        """Declare vector(dim) (the HNSW index needs it) and create the index, when not done yet."""
        current = self._dimension(conn)
        if current != dim:
            if current != -1 and int(self._meta("chunks", conn)) > 0:
                raise EmbedderMismatchError(f"{self.describe()} holds {current}-dim vectors; these have {dim}. "
                                            f"Re-embed everything with `ragtune index --reembed`.")
            conn.execute(f"DROP INDEX IF EXISTS {self.s}.chunks_embedding_hnsw")
            conn.execute(f"ALTER TABLE {self.s}.chunks ALTER COLUMN embedding TYPE vector({int(dim)})")
            self._vectors_inline(conn)
        if build_index and not getattr(self._local, "bulk", False) and not self._has_index(conn):
            conn.execute(f"SET LOCAL maintenance_work_mem = '{self.config.maintenance_work_mem}'")
            conn.execute(self._index_sql())

    def _vectors_inline(self, conn) -> None:
        """Keep vectors in the table row (ALTER ... TYPE resets the column to pgvector's default,
        out-of-line TOAST, which made an exact scan of SciFact's 12.9k chunks ~10x slower: every
        vector was a TOAST lookup). The chunk text is compressed or moved out instead."""
        conn.execute(f"ALTER TABLE {self.s}.chunks ALTER COLUMN embedding SET STORAGE MAIN")

    def _has_index(self, conn) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (f"{self.s}.chunks_embedding_hnsw",)).fetchone()[0] is not None

    @contextlib.contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Load many chunks without the HNSW index, then build it once: much faster than growing the
        graph one insert at a time (used by `ragtune migrate`). Searches meanwhile are exact."""
        with self._errors("dropping the HNSW index"):
            self.conn.execute(f"DROP INDEX IF EXISTS {self.s}.chunks_embedding_hnsw")
        self._local.bulk = True
        try:
            yield
        finally:
            self._local.bulk = False
        self.build_vector_index()

    def build_vector_index(self) -> None:
        """Create the HNSW index if missing (maintenance_work_mem from store config, parallel workers)."""
        with self._errors("building the HNSW index"):
            conn = self.conn
            if self._dimension(conn) == -1:
                return
            with conn.transaction():
                conn.execute(f"SET LOCAL maintenance_work_mem = '{self.config.maintenance_work_mem}'")
                conn.execute(f"SET LOCAL max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 1) - 1)}")
                conn.execute(self._index_sql())
            conn.execute(f"ANALYZE {self.s}.chunks")  # planner statistics after a bulk load

    # --- writes -------------------------------------------------------------------------------
    def upsert(self, items: list[IndexedDocument], files: Iterable[tuple[str, str]] = (),
               embedder: dict | None = None) -> int:
        """Store documents (replacing earlier versions) and file hashes in one transaction; returns the generation."""
        from psycopg.types.json import Jsonb

        latest = {item.document.id: item for item in items}  # a repeated id: the last one wins
        files = list(files)
        with self._write() as (conn, gen):
            if embedder is not None:
                self._set_embedder(conn, embedder)
            dim = (embedder or self.embedder_info() or {}).get("dimension")
            for item in latest.values():
                if item.vectors.shape[0] != len(item.chunks):
                    raise StoreError(f"document {item.document.id}: {len(item.chunks)} chunks but "
                                     f"{item.vectors.shape[0]} vectors")
                if len(item.chunks) and dim and item.vectors.shape[1] != dim:
                    raise EmbedderMismatchError(f"document {item.document.id}: {item.vectors.shape[1]}-dim vectors "
                                                f"for a {dim}-dim store. Run `ragtune index --reembed`.")
            if dim and any(len(item.chunks) for item in latest.values()):
                self._ensure_dimension(conn, int(dim))
            removed = self._delete_documents(conn, list(latest))
            conn.cursor().executemany(
                f"INSERT INTO {self.s}.documents VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [(d.id, d.title, d.metadata.get("source"), item.file, Jsonb(plain_metadata(d.metadata)),
                  sorted(set(d.groups)), d.content_hash, len(item.chunks), gen, Jsonb(section_rows(item)))
                 for item in latest.values() for d in [item.document]])
            added = 0
            with conn.cursor().copy(f"COPY {self.s}.chunks ({_CHUNK_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types([*_CHUNK_TYPES, conn.vector_oid])
                for item in latest.values():
                    d = item.document
                    metadata, groups = Jsonb(plain_metadata(d.metadata)), sorted(set(d.groups))
                    vectors = np.ascontiguousarray(item.vectors, dtype=np.float32)
                    for i, c in enumerate(item.chunks):
                        copy.write_row((c.id, d.id, c.index, c.text, c.header, c.start, c.end, c.section, c.page,
                                        text_hash(c.index_text), gen, metadata, groups, vectors[i]))
                        added += 1
            self._add_chunks(conn, added - removed)
            if files:
                conn.cursor().executemany(
                    f"INSERT INTO {self.s}.files VALUES (%s,%s,%s) ON CONFLICT (path) DO UPDATE "
                    f"SET hash = EXCLUDED.hash, gen = EXCLUDED.gen", [(p, h, gen) for p, h in files])
        return gen

    def _set_embedder(self, conn, info: dict) -> None:
        conn.execute(f"INSERT INTO {self.s}.meta VALUES ('embedder', %s) ON CONFLICT (key) DO UPDATE "
                     f"SET value = EXCLUDED.value", (json.dumps(info),))

    def _add_chunks(self, conn, delta: int) -> None:
        if delta:
            conn.execute(f"UPDATE {self.s}.meta SET value = (value::bigint + %s)::text WHERE key = 'chunks'", (delta,))

    def _delete_documents(self, conn, doc_ids: list[str]) -> int:
        """Delete the chunks and records of these documents; returns the chunks removed."""
        removed = conn.execute(f"DELETE FROM {self.s}.chunks WHERE document_id = ANY(%s)", (doc_ids,)).rowcount
        conn.execute(f"DELETE FROM {self.s}.documents WHERE id = ANY(%s)", (doc_ids,))
        return removed

    def delete(self, doc_ids: Iterable[str], forget_files: Iterable[str] = ()) -> int:
        """Delete documents (and file records) in one transaction; returns how many documents existed."""
        doc_ids, forget_files = list(doc_ids), list(forget_files)
        with self._write() as (conn, gen):
            existed = conn.execute(f"SELECT count(*) FROM {self.s}.documents WHERE id = ANY(%s)", (doc_ids,)).fetchone()[0]
            self._add_chunks(conn, -self._delete_documents(conn, doc_ids))
            if forget_files:
                conn.execute(f"DELETE FROM {self.s}.files WHERE path = ANY(%s)", (forget_files,))
        return existed

    def replace_vectors(self, rowids: list[int], vectors: np.ndarray, embedder: dict) -> None:
        """Swap every chunk vector and the embedder record in one transaction (the HNSW index is rebuilt)."""
        with self._write() as (conn, gen):
            conn.execute(f"DROP INDEX IF EXISTS {self.s}.chunks_embedding_hnsw")
            conn.execute(f"ALTER TABLE {self.s}.chunks ALTER COLUMN embedding TYPE vector")
            self._vectors_inline(conn)
            conn.execute("CREATE TEMPORARY TABLE new_vectors (rowid bigint PRIMARY KEY, embedding vector) ON COMMIT DROP")
            with conn.cursor().copy("COPY new_vectors FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", conn.vector_oid])
                for rowid, vector in zip(rowids, np.asarray(vectors, dtype=np.float32)):
                    copy.write_row((int(rowid), vector))
            conn.execute(f"UPDATE {self.s}.chunks c SET embedding = n.embedding, gen = %s FROM new_vectors n "
                         f"WHERE c.rowid = n.rowid", (gen,))
            self._set_embedder(conn, embedder)
            if len(rowids):
                self._ensure_dimension(conn, int(np.asarray(vectors).shape[1]))

    # --- reads --------------------------------------------------------------------------------
    def _rows(self, sql: str, params=(), binary: bool = False) -> list[tuple]:
        with self._errors("reading"):
            return self.conn.cursor(binary=binary).execute(sql, params).fetchall()

    def file_hashes(self) -> dict[str, str]:
        return dict(self._rows(f"SELECT path, hash FROM {self.s}.files"))

    def documents_of_file(self, file: str) -> dict[str, str]:
        return dict(self._rows(f"SELECT id, content_hash FROM {self.s}.documents WHERE file = %s", (file,)))

    def file_of(self, doc_id: str) -> str | None:
        rows = self._rows(f"SELECT file FROM {self.s}.documents WHERE id = %s", (doc_id,))
        return rows[0][0] if rows else None

    def files_with_documents(self) -> list[str]:
        return [r[0] for r in self._rows(f"SELECT DISTINCT file FROM {self.s}.documents WHERE file IS NOT NULL")]

    def count_documents(self) -> int:
        return self._rows(f"SELECT count(*) FROM {self.s}.documents")[0][0]

    def count_chunks(self) -> int:
        return int(self._meta("chunks") or 0)

    def chunk_texts(self) -> list[tuple[int, str, str]]:
        return self._rows(f"SELECT rowid, header, text FROM {self.s}.chunks ORDER BY rowid")

    def vectors_for_texts(self, hashes: list[str]) -> dict[str, np.ndarray]:
        return dict(self._rows(f"SELECT text_hash, embedding FROM {self.s}.chunks WHERE text_hash = ANY(%s)",
                               (list(hashes),), binary=True))

    def chunk_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        return dict(self._rows(f"SELECT id, embedding FROM {self.s}.chunks WHERE id = ANY(%s)", (list(chunk_ids),),
                               binary=True))

    def list_documents(self, where: dict | None = None, groups: list[str] | None = None,
                       limit: int | None = None, offset: int = 0) -> list[StoredDocument]:
        clause, params = pg_filter(where, groups, "d", "id")
        sql = (f"SELECT id, title, source, metadata::text, groups, content_hash, chunk_count FROM {self.s}.documents d "
               f"WHERE {clause} ORDER BY id")
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return [StoredDocument(r[0], r[1], r[2], json.loads(r[3]), list(r[4]), r[5], r[6]) for r in self._rows(sql, params)]

    def get_document(self, doc_id: str, groups: list[str] | None = None) -> tuple[Document, list[Chunk]] | None:
        clause, params = pg_filter(None, groups, "d", "id")
        rows = self._rows(f"SELECT id, title, metadata::text, content_hash, sections, groups FROM {self.s}.documents d "
                          f"WHERE id = %s AND {clause}", [doc_id, *params])
        if not rows:
            return None
        row = rows[0]
        chunks = [Chunk(id=r[0], document_id=doc_id, index=r[1], text=r[2], start=r[3], end=r[4], section=r[5],
                        page=r[6], header=r[7])
                  for r in self._rows(f'SELECT id, idx, text, start, "end", section, page, header FROM {self.s}.chunks '
                                      f"WHERE document_id = %s ORDER BY idx", (doc_id,))]
        sections = [Section("", title=t, page=p) for t, p, _ in row[4]]
        return Document(id=row[0], title=row[1], sections=sections, metadata=json.loads(row[2]), groups=list(row[5]),
                        content_hash=row[3]), chunks

    def export_documents(self, batch_size: int = 256) -> Iterator[list[IndexedDocument]]:
        """Every document with its chunks, stored vectors and sections, in batches, in the order their
        chunks were written (so a copy breaks score ties the same way)."""
        ids = [r[0] for r in self._rows(
            f"SELECT d.id FROM {self.s}.documents d LEFT JOIN (SELECT document_id, min(rowid) AS first FROM "
            f"{self.s}.chunks GROUP BY document_id) c ON c.document_id = d.id ORDER BY c.first NULLS LAST, d.id")]
        dim = (self.embedder_info() or {}).get("dimension") or 0
        for i in range(0, len(ids), batch_size):
            part = ids[i:i + batch_size]
            chunks: dict[str, list] = {}
            for r in self._rows(f'SELECT document_id, id, idx, text, start, "end", section, page, header, embedding '
                                f"FROM {self.s}.chunks WHERE document_id = ANY(%s) ORDER BY document_id, idx", (part,),
                                binary=True):
                chunks.setdefault(r[0], []).append(r)
            batch = []
            records = {r[0]: r for r in self._rows(f"SELECT id, title, metadata::text, content_hash, sections::text, "
                                                   f"groups, file FROM {self.s}.documents WHERE id = ANY(%s)", (part,))}
            for r in (records[doc_id] for doc_id in part):
                rows, sections = chunks.get(r[0], []), json.loads(r[4])
                doc = Document(id=r[0], title=r[1], sections=[Section("", title=t, page=p) for t, p, _ in sections],
                               metadata=json.loads(r[2]), groups=list(r[5]), content_hash=r[3])
                items = [Chunk(id=c[1], document_id=r[0], index=c[2], text=c[3], start=c[4], end=c[5], section=c[6],
                               page=c[7], header=c[8]) for c in rows]
                vectors = np.stack([c[9] for c in rows]) if rows else np.zeros((0, dim), np.float32)
                batch.append(IndexedDocument(doc, items, vectors, file=r[6], sections=sections))
            yield batch

    # --- search -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator["PgSnapshot"]:
        """One REPEATABLE READ, read-only transaction: every query of a search sees one committed state."""
        with self._errors("searching"):
            conn = self.conn
            ef = min(MAX_EF_SEARCH, self.retrieval.ef_search)
            # One round trip: begin, HNSW settings for this transaction, the store's state.
            cursor = conn.cursor()
            cursor.execute(f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                           f"SELECT set_config('hnsw.ef_search', '{int(ef)}', true), "
                           f"set_config('hnsw.iterative_scan', 'relaxed_order', true); "
                           f"SELECT key, value FROM {self.s}.meta WHERE key IN ('generation', 'chunks', 'embedder')")
            try:
                while cursor.nextset():
                    pass
                meta = dict(cursor.fetchall())
                dim = json.loads(meta["embedder"]).get("dimension") if meta.get("embedder") else None
                yield PgSnapshot(self, conn, int(meta["generation"]), int(meta["chunks"]), dim, ef)
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute("COMMIT")

    def build_indexes(self) -> None:
        """Bring the in-process BM25 index up to date and save it (end of `ragtune index`)."""
        if self.config.sparse == "bm25":
            with self.snapshot() as snap:
                snap.bm25()


def open_pgvector_store(config: StoreConfig, project_dir: Path, retrieval: RetrievalConfig,
                        create: bool = True) -> PgVectorStore:
    path = Path(config.path)
    return PgVectorStore(config, path if path.is_absolute() else project_dir / path, retrieval, create=create)


register("store", "pgvector", open_pgvector_store)
