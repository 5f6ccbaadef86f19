"""Search on the pgvector store: one snapshot (a REPEATABLE READ transaction) per search, filters as
SQL predicates, dense search through the HNSW index with iterative scans or exactly, sparse search
through ragtune's BM25 over the stored chunks or PostgreSQL full-text search. See store_pgvector.py.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ragtune.errors import EmbedderMismatchError
from ragtune.knowledge.store import _metadata
from ragtune.knowledge.store_api import filter_key, filter_text
from ragtune.types import Hit

if TYPE_CHECKING:
    from ragtune.knowledge.store_pgvector import PgVectorStore

MAX_EF_SEARCH = 1000  # pgvector's limit for hnsw.ef_search


def pg_filter(where: dict | None, groups: list[str] | None, alias: str, id_column: str) -> tuple[str, list]:
    """SQL predicate over `alias` (documents or chunks: both carry metadata and groups)."""
    clauses, params = ["true"], []
    for key, value in (where or {}).items():
        if filter_key(key) == "id":
            clauses.append(f"{alias}.{id_column} = %s")
            params.append(str(value))
        else:
            clauses.append(f"{alias}.metadata ->> %s = %s")
            params.extend([key, filter_text(value)])
    if groups is not None:
        clauses.append(f"(cardinality({alias}.groups) = 0 OR {alias}.groups && %s::text[])")
        params.append(list(groups))
    return " AND ".join(clauses), params


def dense_sql(s: str, clause: str, exact: bool) -> str:
    """(row id, negative inner product, document id) of the k nearest chunks passing `clause`; params
    (query vector, *clause params, k). The HNSW index serves `ORDER BY distance`; the exact form orders
    by `distance + 0`, which the index cannot serve, over a subquery computing each distance once."""
    inner = f"SELECT c.rowid, c.embedding <#> %s AS distance, c.document_id FROM {s}.chunks c WHERE {clause}"
    if not exact:
        return f"{inner} ORDER BY distance LIMIT %s"
    return f"SELECT * FROM ({inner} OFFSET 0) scan ORDER BY distance + 0, rowid LIMIT %s"


class PgSnapshot:
    """One search's view of a PgVectorStore: a REPEATABLE READ transaction on this thread's connection."""

    def __init__(self, store: PgVectorStore, conn, generation: int, chunks: int, dimension: int | None, ef: int):
        self.store, self.conn, self.generation, self.chunks = store, conn, generation, chunks
        self.dimension, self.ef = dimension, ef
        self.s = store.s
        self._documents: dict[int, str] = {}  # row id -> document id of chunks seen by this snapshot's queries

    def allowed_rowids(self, where: dict | None, groups: list[str] | None) -> tuple[str, list] | None:
        """A predicate over the chunks table (alias c), or None when nothing is filtered."""
        if not where and groups is None:
            return None
        return pg_filter(where, groups, "c", "document_id")

    def count(self, allowed) -> int:
        if allowed is None:
            return self.chunks
        return self.conn.execute(f"SELECT count(*) FROM {self.s}.chunks c WHERE {allowed[0]}", allowed[1]).fetchone()[0]

    def dense(self, query: np.ndarray, k: int, allowed=None) -> list[tuple[int, float]]:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        dim = self.dimension
        if self.chunks and dim and query.shape[0] != dim:
            raise EmbedderMismatchError(f"query vector has {query.shape[0]} dims; the store holds {dim}-dim vectors. "
                                        f"Run `ragtune index --reembed`.")
        clause, params = allowed or ("true", [])
        rows = None
        if self.chunks > self.store.retrieval.ann_threshold:
            if k > self.ef:  # the graph search must be at least as wide as k
                self.ef = min(MAX_EF_SEARCH, k)
                self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(self.ef),))
            rows = self.conn.execute(dense_sql(self.s, clause, exact=False), [query, *params, k]).fetchall()
        if rows is None or len(rows) < k:
            rows = self.conn.execute(dense_sql(self.s, clause, exact=True), [query, *params, k]).fetchall()
        self._documents.update((r, d) for r, _, d in rows)
        # <#> is the negative inner product; relaxed_order may return the HNSW rows slightly out of order.
        return sorted(((r, -d) for r, d, _ in rows), key=lambda pair: (-pair[1], pair[0]))

    def bm25(self):
        return self.store.bm25.at(self.generation, lambda: self.conn.execute(
            f"SELECT rowid, header, text, document_id FROM {self.s}.chunks ORDER BY rowid").fetchall())

    def _passes(self, allowed):
        if allowed is None:
            return None
        clause, params = allowed
        return lambda rowids: {r[0] for r in self.conn.execute(
            f"SELECT c.rowid FROM {self.s}.chunks c WHERE c.rowid = ANY(%s) AND {clause}", [rowids, *params])}

    def sparse(self, query: str, k: int, allowed=None) -> list[tuple[int, float]]:
        if self.store.config.sparse == "bm25":
            return self.bm25().search(query, k, self._passes(allowed))
        words = re.findall(r"\w+", query.lower())
        if not words:
            return []
        clause, params = allowed or ("true", [])
        rows = self.conn.execute(
            f"SELECT c.rowid, ts_rank_cd(c.tsv, q) AS rank, c.document_id FROM {self.s}.chunks c, "
            f"to_tsquery('english', %s) q WHERE c.tsv @@ q AND {clause} ORDER BY rank DESC, c.rowid LIMIT %s",
            [" | ".join(f"'{w}'" for w in words), *params, k]).fetchall()
        self._documents.update((r, d) for r, _, d in rows)
        return [(r, float(s)) for r, s, _ in rows]

    def idf(self, tokens: list[str]) -> dict[str, float]:
        if self.store.config.sparse == "bm25":
            return self.bm25().idf(tokens)
        out = {}
        for token in tokens:  # document frequency from the GIN index, one token at a time
            words = re.findall(r"\w+", token)
            df = self.conn.execute(f"SELECT count(*) FROM {self.s}.chunks WHERE tsv @@ to_tsquery('simple', %s)",
                                   (f"'{words[0]}'",)).fetchone()[0] if words else 0
            out[token] = float(np.log1p((self.chunks - df + 0.5) / (df + 0.5)))
        return out

    def chunk_documents(self, rowids: list[int]) -> dict[int, str]:
        """From what this snapshot's queries returned and the BM25 index; the rest from the server."""
        found = {r: self._documents[r] for r in rowids if r in self._documents}
        missing = [r for r in rowids if r not in found]
        view = self.store.bm25.current(self.generation)
        if missing and view is not None:
            found.update(view.documents_of(missing))
            missing = [r for r in missing if r not in found]
        if missing:
            found.update(self.conn.execute(f"SELECT rowid, document_id FROM {self.s}.chunks WHERE rowid = ANY(%s)",
                                           (missing,)))
        return found

    def hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        if not ranked:
            return []
        rows = {r[0]: r for r in self.conn.execute(
            f"SELECT c.rowid, c.id, c.document_id, c.text, d.source, d.title, c.section, c.page, d.metadata::text "
            f"FROM {self.s}.chunks c JOIN {self.s}.documents d ON d.id = c.document_id WHERE c.rowid = ANY(%s)",
            ([rowid for rowid, _ in ranked],))}
        return [Hit(r[1], r[2], score, r[3], r[4], r[5], r[6], r[7], _metadata(r[8]))
                for rowid, score in ranked if (r := rows.get(rowid)) is not None]
