"""BM25 for server stores: ragtune's own BM25 index (bm25s) over the chunks a server store holds,
kept in this process, so pgvector and Qdrant rank sparse and hybrid exactly as the embedded store.

The index is built from the store's chunk texts (ordered by row id, as the embedded store does) the
first time a snapshot needs it at a new generation, and saved beside the project
(`<project>/<store.path>/bm25-<store id>.pkl`) so the next process loads it instead of reading
every chunk again; a file whose store id, settings or generation do not match is rebuilt.

Filters run in the server: `search` ranks every chunk that has a query term, then asks the server
(`passes`) which of the best candidates are permitted, widening until it has k of them, so the
top k equal ranking only the permitted chunks.

>>> bm25 = ChunkBM25(Path("kb/store"), store_id="4f2a...", config=BM25Config())     # doctest: +SKIP
>>> view = bm25.at(generation=7, read_rows=store.chunk_texts)                        # doctest: +SKIP
>>> view.search("sync port", k=3, passes=None)                                       # doctest: +SKIP
[(812, 7.1), (44, 5.9), (45, 5.2)]
"""
from __future__ import annotations

import logging
import os
import pickle
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ragtune.config import BM25Config
from ragtune.retrieve.bm25 import BM25Index
from ragtune.retrieve.dense import top_k

log = logging.getLogger(__name__)

LAYOUT = 2  # bump when the saved file's contents change shape


@dataclass
class BM25View:
    """The BM25 index of one generation: position i is the chunk with row id rowids[i]."""

    index: BM25Index
    rowids: np.ndarray  # (N,) int64, ascending
    generation: int
    documents: np.ndarray  # (N,) object: the document id of each position

    def documents_of(self, rowids: list[int]) -> dict[int, str]:
        """{row id: document id} for the row ids this index holds."""
        wanted = np.asarray(rowids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.rowids, wanted), max(len(self.rowids) - 1, 0))
        if not len(self.rowids):
            return {}
        hit = self.rowids[pos] == wanted
        return dict(zip(wanted[hit].tolist(), self.documents[pos[hit]].tolist()))

    def search(self, query: str, k: int, passes: Callable[[list[int]], set[int]] | None) -> list[tuple[int, float]]:
        """(row id, score) of the k best chunks with a query term that `passes` permits (None = all)."""
        scores = self.index.scores(query)  # (N,)
        matching = np.flatnonzero(scores > 0)
        if passes is None:
            best = matching[top_k(scores[matching], k)]
            return list(zip(self.rowids[best].tolist(), scores[best].tolist()))
        found: list[tuple[int, float]] = []
        want, done = max(4 * k, 256), 0
        while len(found) < k and done < len(matching):
            ranked = matching[top_k(scores[matching], want)]  # best first, ties by position
            fresh = ranked[done:]
            permitted = passes(self.rowids[fresh].tolist())
            found.extend((r, float(scores[p])) for p, r in zip(fresh.tolist(), self.rowids[fresh].tolist())
                         if r in permitted)
            done, want = len(ranked), want * 4
        return found[:k]

    def idf(self, tokens: list[str]) -> dict[str, float]:
        return self.index.idf(tokens)


class ChunkBM25:
    """The current BM25View of one store, rebuilt when the store's generation moves."""

    def __init__(self, cache_dir: Path | None, store_id: str, config: BM25Config):
        self.cache_dir, self.store_id, self.config = cache_dir, store_id, config
        self._view: BM25View | None = None
        self._lock = threading.Lock()

    @property
    def _file(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"bm25-{self.store_id}.pkl"

    def _key(self, generation: int) -> dict:
        return {"layout": LAYOUT, "store_id": self.store_id, "settings": self.config.model_dump(), "generation": generation}

    def at(self, generation: int, read_rows: Callable[[], list[tuple[int, str, str, str]]]) -> BM25View:
        """The view at `generation`; `read_rows` gives (row id, header, text, document id) by row id when it
        must be built."""
        with self._lock:
            if self._view is not None and self._view.generation == generation:
                return self._view
            view = self._load(generation)
            if view is None:
                rows = read_rows()
                texts = [f"{header}\n{text}" if header else text for _, header, text, _ in rows]
                view = BM25View(BM25Index(texts, self.config), np.array([r[0] for r in rows], dtype=np.int64),
                                generation, np.array([r[3] for r in rows], dtype=object))
                self._save(view)
            self._view = view
            return view

    def current(self, generation: int) -> BM25View | None:
        """The view held in memory if it is at `generation` (nothing is built or read)."""
        view = self._view
        return view if view is not None and view.generation == generation else None

    def _load(self, generation: int) -> BM25View | None:
        if self._file is None:
            return None
        try:
            with open(self._file, "rb") as fh:
                key, index, rowids, documents = pickle.load(fh)
        except FileNotFoundError:
            return None
        except Exception as exc:  # damaged or foreign file: rebuild from the store
            log.warning("rebuilding BM25 index (%s)", exc)
            return None
        return BM25View(index, rowids, generation, documents) if key == self._key(generation) else None

    def _save(self, view: BM25View) -> None:
        if self._file is None:
            return
        tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                pickle.dump((self._key(view.generation), view.index, view.rowids, view.documents), fh, protocol=5)
            os.replace(tmp, self._file)
        except OSError as exc:
            log.warning("could not save the BM25 index to %s: %s", self._file, exc)
            tmp.unlink(missing_ok=True)
