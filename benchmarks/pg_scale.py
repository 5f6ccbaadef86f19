"""Dense ANN at scale on PostgreSQL + pgvector: ragtune's pgvector store with its HNSW index on N
chunk-like vectors (the generator of benchmarks/scale.py: real all-MiniLM-L6-v2 sentence embeddings
of SciFact plus perturbed copies; held-out real sentences as queries).

Reported: bulk load seconds, HNSW build seconds (one CREATE INDEX after the load, with
`maintenance_work_mem` sized so the graph fits, and whether PostgreSQL said it did not), table and
index size; an ef_search sweep of recall@10 against exact search (numpy over all N) with
single-query p50/p95 through the store's snapshot (`snap.dense`, one REPEATABLE READ transaction a
query, as `ragtune search` runs it) and, at the chosen ef_search (the smallest reaching recall@10 >=
0.95), the whole `search(mode="dense")` call (hits fetched); the same for two filters that iterative
index scans must serve (access groups passing 90% of chunks; a metadata field passing 10%), against
exact filtered search; the exact scan of the store for comparison.

    python benchmarks/pg_scale.py --data ../shared/data/scifact --workdir /tmp/bench-pg-scale --n 100000
    python benchmarks/pg_scale.py --data ../shared/data/scifact --workdir /tmp/bench-pg-scale --n 1000000

Result: benchmarks/results/pg-scale-<n>.json (pg-scale-100k.json, pg-scale-1m.json).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _common import fail, fingerprint, header, latency_summary, log, peak_rss_mib, write_result  # noqa: E402
from scale import build_base, corpus_file, embed_cached, exact_topk, recall_at, sentences, size_name  # noqa: E402

RECALL_TARGET = 0.95
CHUNKS_PER_DOCUMENT = 100


def graph_memory_mb(n: int, dim: int, m: int) -> int:
    """maintenance_work_mem that holds pgvector's in-memory HNSW graph: the vectors plus ~2m neighbour
    slots of 10 bytes (level 0) and element overhead, with 30% headroom."""
    per_element = dim * 4 + 2 * m * 10 + 120
    return int(n * per_element * 1.3 / 2**20) + 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--workdir", type=Path, help="cache of sentence embeddings (default: a temp dir)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--n-real", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=1000, help="held-out real sentences used as queries (as scale.py)")
    parser.add_argument("--sigma", type=float, default=0.025)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-m", type=int, default=32, help="ragtune's default (retrieval.hnsw_m); pgvector's own is 16")
    parser.add_argument("--ef-construction", type=int, default=128, help="ragtune's default (store.hnsw_ef_construction)")
    parser.add_argument("--ef-search", default="100,200,400,800")
    parser.add_argument("--maintenance-work-mem", help="e.g. 2GB (default: sized from N, dim and m)")
    parser.add_argument("--shared-buffers", default="2GB")
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--dsn", help="an existing PostgreSQL with pgvector (default: start one on loopback)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    ef_list = sorted({int(x) for x in args.ef_search.split(",") if x.strip()})
    corpus = corpus_file(args.data.expanduser().resolve())
    started = time.perf_counter()
    import numpy as np

    from ragtune.config import RetrievalConfig, StoreConfig
    from ragtune.knowledge.store import IndexedDocument
    from ragtune.knowledge.pgvector_search import dense_sql
    from ragtune.registry import create
    from ragtune.retrieve.search import search
    from ragtune.types import Chunk, Document, Section
    from tests.pgserver import local_postgres, missing_reason

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ragtune-pg-scale-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)

    # 1. the vectors: scale.py's generator (same seeds, same sentences, same copies)
    texts = sentences(corpus, 40, 400)
    rng = np.random.default_rng(args.seed)
    chosen = [texts[i] for i in rng.permutation(len(texts))[:args.n_real + args.queries]]
    vectors, embed_meta = embed_cached(chosen, workdir, args.batch_size)
    queries, real = np.ascontiguousarray(vectors[:args.queries]), np.ascontiguousarray(vectors[args.queries:])
    real_texts = chosen[args.queries:]
    base, source, base_stats = build_base(real, args.n, args.sigma, args.seed + 1)
    dim = base.shape[1]
    t0 = time.perf_counter()
    truth = exact_topk(base, queries, args.k)
    log(f"{args.n} x {dim} base vectors, {len(queries)} queries; exact top-{args.k} in {time.perf_counter() - t0:.1f} s")
    doc_of = np.arange(args.n) // CHUNKS_PER_DOCUMENT
    restricted = doc_of % 10 == 9  # these documents carry an access group; callers with groups=[] must not see them
    shard3 = doc_of % 10 == 3  # metadata shard=3: 10% of the chunks

    work_mem = args.maintenance_work_mem or f"{graph_memory_mb(args.n, dim, args.hnsw_m)}MB"
    server = None
    if args.dsn is None:
        reason = missing_reason()
        if reason:
            fail(f"cannot start PostgreSQL: {reason}. Nothing was measured.")
        server = local_postgres({"shared_buffers": args.shared_buffers, "work_mem": "64MB",
                                 "max_parallel_maintenance_workers": str(max(0, (os.cpu_count() or 1) - 1))})
        dsn = server.__enter__().dsn
    else:
        dsn = args.dsn
    try:
        config = StoreConfig(backend="pgvector", dsn=dsn, schema=f"scale_{size_name(args.n)}",
                             path=str(workdir / "pg-cache"), maintenance_work_mem=work_mem,
                             hnsw_ef_construction=args.ef_construction)
        retrieval = RetrievalConfig(ann_threshold=1, hnsw_m=args.hnsw_m, ef_search=ef_list[0])
        store = create("store", "pgvector", config, workdir, retrieval)
        if store.count_chunks():
            fail(f"schema {config.schema_name} is not empty; drop it or use another server")
        notices: list[str] = []
        store.conn.add_notice_handler(lambda d: notices.append(d.message_primary)
                                      if "does not exist" not in (d.message_primary or "") else None)
        info = {"backend": "benchmark", "model": "all-MiniLM-L6-v2 sentences + perturbed copies",
                "fingerprint": embed_meta["embedder"]["fingerprint"], "dimension": dim}

        # 2. bulk load (no index), then one CREATE INDEX
        log(f"loading {args.n} chunks (maintenance_work_mem {work_mem}, m {args.hnsw_m}, "
            f"ef_construction {args.ef_construction}) ...")
        t0 = time.perf_counter()
        with store.bulk_load():
            per_write = 20
            for first in range(0, args.n // CHUNKS_PER_DOCUMENT + 1, per_write):
                items = []
                for d in range(first, min(first + per_write, -(-args.n // CHUNKS_PER_DOCUMENT))):
                    rows = range(d * CHUNKS_PER_DOCUMENT, min((d + 1) * CHUNKS_PER_DOCUMENT, args.n))
                    doc = Document(id=f"d{d:06d}", title=f"document {d}", sections=[Section("")],
                                   metadata={"source": f"d{d:06d}", "shard": str(d % 10)},
                                   groups=["restricted"] if d % 10 == 9 else [], content_hash=str(d))
                    chunks = [Chunk(id=f"d{d:06d}#{i - rows[0]}", document_id=doc.id, index=i - rows[0],
                                    text=real_texts[source[i]], start=0, end=0, header=doc.title) for i in rows]
                    items.append(IndexedDocument(doc, chunks, base[rows.start:rows.stop]))
                if items:
                    store.upsert(items, embedder=info)
            load_seconds = time.perf_counter() - t0
            log(f"loaded in {load_seconds:.1f} s; building the HNSW index ...")
            t1 = time.perf_counter()
        build_seconds = time.perf_counter() - t1
        log(f"HNSW index built in {build_seconds:.1f} s" + (f"; notices: {notices}" if notices else ""))
        s = store.s
        sizes = dict(zip(("table_bytes", "index_bytes"), store.conn.execute(
            f"SELECT pg_total_relation_size('{s}.chunks') - pg_indexes_size('{s}.chunks'), "
            f"pg_relation_size('{s}.chunks_embedding_hnsw')").fetchone()))
        position = {rowid: int(cid[1:7]) * CHUNKS_PER_DOCUMENT + int(cid.split("#")[1])
                    for rowid, cid in store.conn.execute(f"SELECT rowid, id FROM {s}.chunks")}

        def run(ef: int, where=None, groups=None, count: int | None = None, exact=False):
            """Positions found and per-query seconds through snap.dense (one snapshot a query)."""
            store.retrieval.ef_search = ef
            store.retrieval.ann_threshold = args.n + 1 if exact else 1
            found, times = [], []
            for q in queries[:count]:
                t = time.perf_counter()
                with store.snapshot() as snap:
                    ranked = snap.dense(q, args.k, snap.allowed_rowids(where, groups))
                times.append(time.perf_counter() - t)
                found.append([position[r] for r, _ in ranked])
            return found, times

        # 3. exact scan of the store, for comparison
        exact_found, exact_times = run(ef_list[0], count=args.exact_queries, exact=True)
        exact = {"queries": len(exact_times), "latency": latency_summary(exact_times),
                 f"recall@{args.k}": recall_at(exact_found, truth[:args.exact_queries], args.k)}
        log(f"exact scan in PostgreSQL: p50 {exact['latency']['p50_ms']:.1f} ms ({len(exact_times)} queries)")

        # 4. ef_search sweep
        sweep = []
        for ef in ef_list:
            run(ef, count=20)  # warm-up
            found, times = run(ef)
            row = {"ef_search": ef, f"recall@{args.k}": recall_at(found, truth, args.k),
                   "recall@1": recall_at([f[:1] for f in found], truth[:, :1], 1), "latency": latency_summary(times),
                   "queries_short_of_k": sum(len(f) < args.k for f in found)}
            sweep.append(row)
            log(f"ef_search {ef}: recall@{args.k} {row[f'recall@{args.k}']:.4f}, p50 {row['latency']['p50_ms']:.2f} ms, "
                f"p95 {row['latency']['p95_ms']:.2f} ms")
        meeting = [r for r in sweep if r[f"recall@{args.k}"] >= RECALL_TARGET]
        chosen_row = meeting[0] if meeting else sweep[-1]
        ef = chosen_row["ef_search"]

        # 5. the whole search call at the chosen ef_search (hits fetched)
        store.retrieval.ef_search, store.retrieval.ann_threshold = ef, 1
        whole = []
        for q in queries:
            t = time.perf_counter()
            search(store, None, "vector query", mode="dense", k=args.k, query_vector=q, config=store.retrieval)
            whole.append(time.perf_counter() - t)

        # 6. filters served by iterative index scans, against exact filtered search
        filtered = {}
        for name, where, groups, permitted in (("groups=[] (90% of chunks)", None, [], ~restricted),
                                               ("where shard=3 (10% of chunks)", {"shard": "3"}, None, shard3)):
            rows = np.flatnonzero(permitted)
            want = rows[exact_topk(base[rows], queries, args.k)]
            found, times = run(ef, where=where, groups=groups)
            outside = sum(not permitted[p] for f in found for p in f)
            filtered[name] = {"permitted_chunks": int(len(rows)), f"recall@{args.k}": recall_at(found, want, args.k),
                              "latency": latency_summary(times), "queries_short_of_k": sum(len(f) < args.k for f in found),
                              "hits_outside_filter": int(outside)}
            log(f"{name}: recall@{args.k} {filtered[name][f'recall@{args.k}']:.4f}, p50 "
                f"{filtered[name]['latency']['p50_ms']:.2f} ms, short {filtered[name]['queries_short_of_k']}, "
                f"outside {outside}")
        with store.snapshot() as snap:
            snap.conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                              "set_config('hnsw.iterative_scan', 'relaxed_order', true)", (str(ef),))
            plans = {}
            for name, (clause, params) in (("unfiltered", ("true", [])), ("groups=[]", snap.allowed_rowids(None, [])),
                                           ("shard=3", snap.allowed_rowids({"shard": "3"}, None))):
                plans[name] = [re.sub(r"'\[[^']*\]'::vector", "'[query]'::vector", r[0]) for r in snap.conn.execute(
                    "EXPLAIN " + dense_sql(s, clause, exact=False), [queries[0], *params, args.k])][:3]
        pg = dict(zip(("postgresql", "pgvector"), store.conn.execute(
            "SELECT current_setting('server_version'), (SELECT extversion FROM pg_extension WHERE extname = 'vector')"
        ).fetchone()), psycopg=metadata.version("psycopg"))
        store.close()
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        if tmp is not None:
            tmp.cleanup()

    payload = header(sys.argv if argv is None else ["benchmarks/pg_scale.py", *argv], settings={
        "n": args.n, "n_real": args.n_real, "queries": args.queries, "sigma": args.sigma, "k": args.k,
        "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": ef_list,
        "maintenance_work_mem": work_mem, "shared_buffers": args.shared_buffers, "seed": args.seed,
        "chunks_per_document": CHUNKS_PER_DOCUMENT,
        "server": "started on loopback by tests/pgserver.py (fsync off)" if args.dsn is None else "given --dsn",
        "vectors": "benchmarks/scale.py's generator: real all-MiniLM-L6-v2 sentence embeddings + perturbed copies",
        "ground_truth": "numpy exact inner product over all N (or over the permitted rows, for filters)",
    })
    payload["versions"].update(pg)
    payload.update({
        "benchmark": "pg-scale",
        "dataset": {"name": corpus.parent.name, "fingerprint": fingerprint([corpus], root=corpus.parent),
                    "embedding": embed_meta},
        "base": base_stats,
        "load": {"seconds": load_seconds, "chunks_per_s": args.n / load_seconds},
        "hnsw": {"build_seconds": build_seconds, "build_vectors_per_s": args.n / build_seconds,
                 "notices": notices, "graph_fit_in_maintenance_work_mem": not any("fits" in n for n in notices),
                 **sizes, "sweep": sweep, "chosen": chosen_row, "recall_target": RECALL_TARGET,
                 "recall_target_met": bool(meeting)},
        "search_call_at_chosen": {"ef_search": ef, "latency": latency_summary(whole)},
        "filtered_at_chosen": filtered,
        "plans": plans,
        "exact": exact,
        "peak_rss_mib": peak_rss_mib(),
        "wall_seconds": time.perf_counter() - started,
    })
    path = write_result(f"pg-scale-{size_name(args.n)}", payload, args.out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
