"""Crash safety: SIGKILL an indexing process at random moments, many times, a share of them while
a commit is being written; the store must reopen holding every document the process reported
committed, complete, and no partial document."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ragtune.config import RetrievalConfig
from tests.conftest import hashing_config, ROOT

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ragtune.knowledge import indexer
    from ragtune.knowledge.store import SQLiteStore
    from ragtune.project import Project
    from tests.conftest import hashing_config

    indexer.BATCH_CHUNKS = 6  # many small commits
    original = SQLiteStore.upsert
    def upsert(self, items, *args, **kwargs):
        print("WRITING", flush=True)
        gen = original(self, items, *args, **kwargs)
        return gen
    SQLiteStore.upsert = upsert
    project = Project(Path(sys.argv[1]), hashing_config())
    project.index([sys.argv[2]], progress=False,
                  on_commit=lambda ids: print("COMMITTED", *ids, flush=True))
    print("DONE", flush=True)
""")


def _write(folder: Path, texts: dict[str, set[str]], i: int, version: int) -> None:
    body = " ".join(f"Document {i} version {version} sentence {j} mentions token{i}x{j}." for j in range(12))
    (folder / f"doc{i:03d}.txt").write_text(body)
    texts.setdefault(f"docs/doc{i:03d}.txt", set()).add(body)


def _corpus(folder: Path, n: int) -> dict[str, set[str]]:
    folder.mkdir(parents=True)
    texts: dict[str, set[str]] = {}
    for i in range(n):
        _write(folder, texts, i, 0)
    return texts


def _check(store_folder: Path, committed: set[str], texts: dict[str, str]) -> int:
    from ragtune.knowledge.store import SQLiteStore
    from ragtune.knowledge.embedders import HashingEmbedder
    from ragtune.retrieve.search import search

    store = SQLiteStore(store_folder, RetrievalConfig())
    try:
        stored = {d.id: d for d in store.list_documents()}
        missing = committed - set(stored)
        assert not missing, f"acknowledged documents lost: {sorted(missing)[:5]}"
        for doc_id, meta in stored.items():
            doc, chunks = store.get_document(doc_id)
            assert len(chunks) == meta.chunk_count > 0, f"partial document {doc_id}"
            assert [c.index for c in chunks] == list(range(len(chunks)))
            assert any(all(t[c.start:c.end] == c.text for c in chunks) for t in texts[doc_id]), doc_id
            assert len({c.text.split(" sentence")[0] for c in chunks if " sentence" in c.text}) == 1, doc_id
        vectors = store.conn.execute("SELECT COUNT(*), MIN(LENGTH(vector)), MAX(LENGTH(vector)) FROM chunks").fetchone()
        assert vectors[0] == store.count_chunks() and (vectors[0] == 0 or vectors[1] == vectors[2] == 64 * 4)
        if stored:
            embedder = HashingEmbedder(hashing_config().embedder)
            some = sorted(stored)[0]
            hits = search(store, embedder, f"token{some[8:11].lstrip('0') or '0'}x3", mode="hybrid", k=3)
            assert hits and all(h.document_id in stored for h in hits)
        return len(stored)
    finally:
        store.close()


def test_sigkill_during_indexing(tmp_path):
    rng = random.Random(1234)
    texts = _corpus(tmp_path / "docs", 120)
    project = tmp_path / "kb"
    project.mkdir()
    committed: set[str] = set()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    kills = kills_in_commit = 0
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    version = 0
    for attempt in range(80):
        if kills >= 30:
            break
        proc = subprocess.Popen([sys.executable, str(script), str(project), str(tmp_path / "docs")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        in_commit = attempt % 2 == 0  # half the kills aim at an open commit
        writes_to_skip = rng.randint(0, 3)
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        killed = False
        for line in proc.stdout:
            if line.startswith("COMMITTED"):
                committed.update(line.split()[1:])
            elif line.startswith("DONE"):
                # Finished: change a third of the files so the next runs have updates to write.
                version += 1
                for i in rng.sample(range(len(texts)), len(texts) // 3):
                    _write(tmp_path / "docs", texts, i, version)
            elif line.startswith("WRITING") and in_commit:
                if writes_to_skip == 0:
                    time.sleep(rng.uniform(0, 0.004))
                    proc.send_signal(signal.SIGKILL)
                    killed, kills_in_commit = True, kills_in_commit + 1
                    break
                writes_to_skip -= 1
            if not in_commit and time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait()
        assert killed or proc.returncode == 0, err
        kills += killed
        _check(project / "store", committed, texts)
    assert kills >= 24 and kills_in_commit >= 10, (kills, kills_in_commit)
    # Finish cleanly: the final run completes and everything is there exactly once.
    subprocess.run([sys.executable, str(script), str(project), str(tmp_path / "docs")], check=True, env=env,
                   cwd=ROOT, capture_output=True)
    assert _check(project / "store", committed, texts) == len(texts)
