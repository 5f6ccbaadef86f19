"""Property: no hit is ever outside the caller's groups, in any mode, and a filtered query
returns k hits whenever k permitted (and, for BM25, matching) chunks exist."""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragtune.config import RetrievalConfig
from ragtune.retrieve.search import search
from tests.test_store_contract import EMBEDDER, _sqlite, make_doc

GROUPS = ["a", "b", "c", "d"]
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]

corpus = st.lists(st.tuples(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
                            st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=corpus, caller=st.lists(st.sampled_from(GROUPS), max_size=3, unique=True),
       query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), k=st.integers(1, 12),
       ann=st.booleans())
def test_no_hit_outside_groups(docs, caller, query, k, ann):
    with tempfile.TemporaryDirectory() as tmp:
        store = _sqlite(Path(tmp), RetrievalConfig(ann_threshold=5 if ann else 100_000))
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
        store.close()
