"""A reader searching while a writer (another process) rewrites documents sees one committed
state: every result set holds exactly one version of each document."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from ragtune.config import RetrievalConfig
from ragtune.knowledge.embedders import HashingEmbedder
from ragtune.knowledge.store import SQLiteStore
from ragtune.retrieve.search import search
from tests.conftest import ROOT, hashing_config

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ragtune.config import RetrievalConfig
    from ragtune.knowledge.store import SQLiteStore
    from tests.test_store_contract import EMBEDDER, make_doc

    store = SQLiteStore(Path(sys.argv[1]), RetrievalConfig())
    version, stop = 0, time.monotonic() + float(sys.argv[2])
    while time.monotonic() < stop:
        version += 1
        # Each document has several chunks, every one stamped with the version.
        docs = [make_doc(f"doc{d}", " ".join(f"Shared words v{version}v of doc{d} part {p}." for p in range(8)))
                for d in range(version % 3, 12, 3)]
        store.upsert(docs, embedder=EMBEDDER.info())
        print(version, flush=True)
""")


def test_reader_sees_one_version_per_document(tmp_path):
    from tests.test_store_contract import EMBEDDER, make_doc

    folder = tmp_path / "store"
    store = SQLiteStore(folder, RetrievalConfig())
    store.upsert([make_doc(f"doc{d}", " ".join(f"Shared words v0v of doc{d} part {p}." for p in range(8)))
                  for d in range(12)], embedder=EMBEDDER.info())
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(folder), "4"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    embedder = HashingEmbedder(hashing_config().embedder)
    checked, generations = 0, set()
    try:
        deadline = time.monotonic() + 6
        while writer.poll() is None and time.monotonic() < deadline:
            for mode in ("bm25", "dense", "hybrid"):
                hits = search(store, embedder, "shared words part", mode=mode, k=40)
                assert len(hits) == 40, mode
                versions: dict[str, set[str]] = {}
                for hit in hits:
                    versions.setdefault(hit.document_id, set()).add(hit.text.split("v")[1])
                mixed = {d: v for d, v in versions.items() if len(v) > 1}
                assert not mixed, f"{mode}: documents seen in two versions at once: {mixed}"
                checked += 1
            generations.add(store.generation)
    finally:
        out, err = writer.communicate(timeout=30)
        store.close()
    assert writer.returncode == 0, err
    assert checked >= 20 and len(generations) >= 5, (checked, len(generations))
    assert int(out.split()[-1]) >= 5  # the writer really committed many versions meanwhile
