"""Property: no hit is ever outside the caller's groups, in any mode, and a filtered query
returns k hits whenever k permitted (and, for BM25, matching) chunks exist. On every store backend."""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragtune.config import RetrievalConfig
from ragtune.retrieve.search import search
from tests.test_store_contract import BACKENDS, EMBEDDER, STORE_FACTORIES, make_doc

GROUPS = ["a", "b", "c", "d"]
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]

corpus = st.lists(st.tuples(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
                            st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)), min_size=1, max_size=25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_hit_outside_groups(backend, request):
    factory = STORE_FACTORIES[backend]

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(docs=corpus, caller=st.lists(st.sampled_from(GROUPS), max_size=3, unique=True),
           query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), k=st.integers(1, 12),
           ann=st.booleans())
    def check(docs, caller, query, k, ann):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / uuid.uuid4().hex  # a fresh store (and PostgreSQL schema) per example
            store = factory(request, folder, RetrievalConfig(ann_threshold=5 if ann else 100_000))
            try:
                items = [make_doc(f"d{i}", " ".join(words), groups=groups) for i, (words, groups) in enumerate(docs)]
                store.upsert(items, embedder=EMBEDDER.info())
                visible = {f"d{i}" for i, (_, groups) in enumerate(docs) if not groups or set(groups) & set(caller)}
                matching = {f"d{i}" for i, (words, _) in enumerate(docs) if set(words) & set(query)} & visible
                text = " ".join(query)
                for mode in ("bm25", "dense", "hybrid"):
                    hits = search(store, EMBEDDER, text, mode=mode, k=k, groups=caller)
                    got = {h.document_id for h in hits}
                    assert got <= visible, (mode, got - visible)
                    expected = min(k, len(matching) if mode == "bm25" else len(visible))
                    assert len(hits) == expected, (mode, len(hits), expected)
            finally:
                store.close()

    check()
