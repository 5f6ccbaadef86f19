"""The store contract: what every knowledge-base backend (sqlite, pgvector, qdrant, plugins) provides.

Backends register a factory `factory(config: StoreConfig, project_dir: Path, retrieval:
RetrievalConfig, create: bool = True)` under kind "store"; tests/test_store_contract.py runs
one suite against every one. These Protocols are documentation and type hints, not base classes:
a backend implements the methods, and shares helpers from this module by calling them.

>>> store = create("store", "pgvector", StoreConfig(backend="pgvector", dsn="postgresql://..."), Path("kb"),
...                RetrievalConfig())                                        # doctest: +SKIP
>>> with store.snapshot() as snap:                                            # doctest: +SKIP
...     snap.hits(snap.dense(query_vector, k=3))
"""
from __future__ import annotations

import json
import re
import warnings
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from ragtune.errors import EmbedderMismatchError, InputError
from ragtune.types import Chunk, Document, Hit


class Snapshot(Protocol):
    """One read view for the duration of a search. Chunks are addressed by integer row ids that stay
    valid for the snapshot; a chunk's row id changes when its document is replaced.

    Filters (`where`: metadata equality, key "id" = document id; `groups`: access groups, None =
    everything, [] = only documents without groups) apply *before* ranking: `dense` and `sparse`
    return the best k among permitted chunks, and k of them whenever k permitted (for sparse:
    matching) chunks exist."""

    def allowed_rowids(self, where: dict | None, groups: list[str] | None) -> Any:
        """An opaque filter for `dense`/`sparse`/`count` (None when nothing is filtered); the embedded
        store returns the permitted row ids, server stores a query predicate."""

    def count(self, allowed: Any) -> int:
        """Chunks passing the filter."""

    def dense(self, query: np.ndarray, k: int, allowed: Any = None) -> list[tuple[int, float]]:
        """(row id, inner product) of the k nearest permitted chunks, best first."""

    def sparse(self, query: str, k: int, allowed: Any = None) -> list[tuple[int, float]]:
        """(row id, BM25 score) of the k best permitted chunks with a query term, best first."""

    def idf(self, tokens: list[str]) -> dict[str, float]:
        """Inverse document frequency of BM25-analysed tokens over the live chunks."""

    def chunk_documents(self, rowids: list[int]) -> dict[int, str]:
        """{row id: document id}."""

    def hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        """Hits for these (row id, score) pairs in the same order (chunks gone meanwhile are left out)."""


class Store(Protocol):
    """Documents, chunks with their vectors, metadata, access groups and file hashes.

    A write (upsert, delete, replace_vectors) replaces whole documents: a reader never receives a
    chunk of a deleted document, nor old and new chunks of one document mixed, once the write has
    returned. The embedded store and pgvector make every write one transaction; Qdrant has no
    transactions across points (see store_qdrant.py for what a crash there can leave)."""

    def upsert(self, items: list, files: Iterable[tuple[str, str]] = (), embedder: dict | None = None) -> int:
        """Store IndexedDocuments (replacing earlier versions) and (path, hash) file records; returns the generation."""

    def delete(self, doc_ids: Iterable[str], forget_files: Iterable[str] = ()) -> int:
        """Delete documents and file records; returns how many documents existed."""

    def replace_vectors(self, rowids: list[int], vectors: np.ndarray, embedder: dict) -> None:
        """Swap the vectors of these chunks (all of them, after re-embedding) and the embedder record."""

    def chunk_texts(self) -> list[tuple[int, str, str]]:
        """(row id, header, text) of every chunk, by row id: what `ragtune index --reembed` embeds."""

    def export_documents(self, batch_size: int = 256) -> Iterator[list]:
        """Every document as IndexedDocuments with their stored vectors and stored sections, in
        batches: what `ragtune migrate` copies."""

    def file_hashes(self) -> dict[str, str]: ...
    def documents_of_file(self, file: str) -> dict[str, str]: ...
    def file_of(self, doc_id: str) -> str | None: ...
    def files_with_documents(self) -> list[str]: ...
    def count_documents(self) -> int: ...
    def count_chunks(self) -> int: ...
    def vectors_for_texts(self, hashes: list[str]) -> dict[str, np.ndarray]: ...
    def chunk_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]: ...
    def list_documents(self, where: dict | None = None, groups: list[str] | None = None,
                       limit: int | None = None, offset: int = 0) -> list: ...
    def get_document(self, doc_id: str, groups: list[str] | None = None) -> tuple[Document, list[Chunk]] | None: ...
    def embedder_info(self) -> dict | None: ...
    def check_embedder(self, info: dict) -> None: ...
    def snapshot(self) -> AbstractContextManager[Snapshot]: ...
    def build_indexes(self) -> None: ...
    def describe(self) -> str:
        """Where the store lives, for messages (no secrets)."""
    def close(self) -> None: ...


def check_embedder_record(stored: dict | None, info: dict, chunks: Callable[[], int], where: str) -> None:
    """Refuse a different model, weights or dimension; warn on a different backend of the same weights.

    `chunks` counts the stored chunks (an empty store takes any embedder); it is called only when
    the records differ, so the check on every query costs no table scan."""
    if stored is None or all(stored.get(k) == info.get(k) for k in ("fingerprint", "dimension", "backend")):
        return
    if chunks() == 0:
        return
    for key in ("fingerprint", "dimension"):
        if stored.get(key) != info.get(key):
            raise EmbedderMismatchError(
                f"the knowledge base in {where} was built with embedder '{stored.get('model')}' "
                f"({stored.get('dimension')} dims, weights {stored.get('fingerprint')}), but the config uses "
                f"'{info.get('model')}' ({info.get('dimension')} dims, weights {info.get('fingerprint')}). "
                f"Rebuild the vectors with `ragtune index --reembed`, or set embedder.model back.")
    warnings.warn(f"knowledge base vectors were made by the {stored.get('backend')} backend; "
                  f"querying with {info.get('backend')} (same weights)", stacklevel=3)


def filter_key(key: str) -> str:
    """A metadata filter field, checked: letters, digits, '_' or '-'."""
    if not key or not key.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"filter field '{key}': use letters, digits, '_' or '-'")
    return key


def filter_text(value: Any) -> str:
    """How a metadata value compares in a filter: strings as they are, anything else as JSON text
    (3 -> '3', true -> 'true'), as PostgreSQL's ->> gives it."""
    return value if isinstance(value, str) else json.dumps(value)


def plain_metadata(metadata: dict) -> dict:
    """Metadata as JSON values (a date becomes its string, as the embedded store writes it)."""
    return json.loads(json.dumps(metadata, default=str))


def section_rows(item) -> list:
    """[[title, page, length]] of an IndexedDocument's sections, as the stores keep them."""
    if item.sections is not None:
        return item.sections
    return [[s.title, s.page, len(s.text)] for s in item.document.sections]


def redact(dsn: str) -> str:
    """A connection string without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn))
