"""SciFact on PostgreSQL + pgvector vs the embedded default store, side by side: the same knowledge
base (copied with `ragtune migrate`, vectors and all, nothing re-embedded), the same queries, the
same code path (`Project.search`), quality (nDCG@10, Recall@100, MRR@10 with pytrec_eval) and
per-query latency p50/p95, alternating the stores query set by query set.

    python benchmarks/pg_scifact.py --data ../shared/data/scifact --source /tmp/bench-scifact/project

--source is a project folder whose store holds SciFact indexed with the default config (as
`benchmarks/beir.py --workdir W` leaves in W/project); its store folder is copied into the workdir
first and never written to. Without --dsn a throwaway PostgreSQL is started on loopback
(tests/pgserver.py: Debian's postgresql-15 + pgvector, see .ci/install-pgvector.sh).

Rows: sqlite (the embedded default); pgvector (sparse: bm25, ragtune's BM25 over the stored chunks;
dense: exact below retrieval.ann_threshold, as the default config gives at SciFact's 12.9k chunks);
pgvector-fts (sparse: PostgreSQL full-text search, ts_rank_cd); pgvector-hnsw (ann_threshold 1: the
query form the HNSW index serves, ef_search 256, iterative scans; at 12.9k chunks PostgreSQL's planner
still chose an exact scan for it when we checked with EXPLAIN). Result:
benchmarks/results/pg-scifact.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _common import fail, fingerprint, header, latency_summary, log, write_result  # noqa: E402
from beir import evaluate, find_data, load_qrels, load_queries  # noqa: E402

MODES = ("bm25", "dense", "hybrid")
TOLERANCE = 0.005  # |nDCG@10(pgvector) - nDCG@10(sqlite)| allowed


def server_versions(store) -> dict:
    row = store.conn.execute("SELECT current_setting('server_version'), "
                             "(SELECT extversion FROM pg_extension WHERE extname = 'vector')").fetchone()
    return {"postgresql": row[0], "pgvector": row[1], "psycopg": metadata.version("psycopg")}


def run_side_by_side(projects: dict, plan: dict, queries: dict, qids: list[str], k: int, reps: int) -> tuple[dict, dict]:
    """Alternate the stores (order flipped each repetition); each runs all queries in each of its modes."""
    rankings: dict = {}
    times: dict = {name: {m: {"total": [], "embed": [], "search": [], "fetch": []} for m in plan[name]} for name in plan}
    for name, project in projects.items():  # warm-up: model, derived indexes, server caches
        for mode in plan[name]:
            for q in qids[:20]:
                project.search(queries[q], mode=mode, k=k, unit="documents")
    names = list(projects)
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            project = projects[name]
            for mode in plan[name]:
                ranked = {}
                for q in qids:
                    trace: dict = {}
                    t0 = time.perf_counter()
                    hits = project.search(queries[q], mode=mode, k=k, unit="documents", trace=trace)
                    times[name][mode]["total"].append(time.perf_counter() - t0)
                    for stage in ("embed", "search", "fetch"):
                        times[name][mode][stage].append(trace.get(stage, 0.0))
                    ranked[q] = [h.document_id for h in hits]
                rankings.setdefault(name, {}).setdefault(mode, ranked)
            log(f"rep {rep + 1}/{reps} {name}: " + ", ".join(
                f"{m} p50 {latency_summary(times[name][m]['total'][-len(qids):])['p50_ms']:.1f} ms" for m in plan[name]))
    return rankings, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--source", type=Path, required=True, help="project folder holding an indexed SciFact store")
    parser.add_argument("--workdir", type=Path, help="where the copies live (default: a temp dir, deleted)")
    parser.add_argument("--dsn", help="an existing PostgreSQL with pgvector (default: start one on loopback)")
    parser.add_argument("--schema", default="scifact")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of all queries")
    parser.add_argument("--shared-buffers", default="1GB")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    files = find_data(args.data.expanduser().resolve(), "test")
    qrels = load_qrels(files["qrels"])
    queries = load_queries(files["queries"], set(qrels))
    qids = sorted(q for q in qrels if q in queries)
    source_store = args.source.expanduser().resolve() / "store"
    if not (source_store / "ragtune.db").is_file():
        fail(f"{source_store} holds no ragtune store. Build one with: python benchmarks/beir.py --data {args.data} "
             f"--workdir W (then --source W/project). Nothing was measured.")
    started = time.perf_counter()

    from ragtune.config import ProjectConfig, RetrievalConfig, StoreConfig
    from ragtune.knowledge.migrate import migrate
    from ragtune.project import Project
    from ragtune.registry import create
    from tests.pgserver import local_postgres, missing_reason

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ragtune-pg-scifact-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.expanduser().resolve()
        shutil.rmtree(workdir / "sqlite", ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_store, workdir / "sqlite" / "store")
    sqlite = Project(workdir / "sqlite", ProjectConfig())
    store = sqlite.store(create_if_missing=False)
    stored, configured = store.embedder_info(), sqlite.embedder.info()
    store.check_embedder(configured)  # a different model is refused here
    log(f"source: {store.count_documents()} documents, {store.count_chunks()} chunks; embedder {stored}")

    server = None
    if args.dsn is None:
        reason = missing_reason()
        if reason:
            fail(f"cannot start PostgreSQL: {reason}. Nothing was measured.")
        server = local_postgres({"shared_buffers": args.shared_buffers, "work_mem": "'64MB'",
                                 "max_parallel_maintenance_workers": "1"})
        dsn = server.__enter__().dsn
    else:
        dsn = args.dsn
    try:
        base = StoreConfig(backend="pgvector", dsn=dsn, schema=args.schema, path=str(workdir / "pg-cache"))
        target = create("store", "pgvector", base, workdir, RetrievalConfig())
        if target.count_documents():
            fail(f"schema {args.schema} at {dsn} is not empty; choose another --schema")
        t0 = time.perf_counter()
        moved = migrate(store, target)
        migrate_seconds = time.perf_counter() - t0
        target.conn.execute(f"ANALYZE {target.s}.chunks")
        pg_info = server_versions(target)
        target.close()
        log(f"migrated {moved.documents} documents, {moved.chunks} chunks in {migrate_seconds:.1f} s "
            f"(HNSW index built once at the end); PostgreSQL {pg_info['postgresql']}, pgvector {pg_info['pgvector']}")

        def on_pg(**store_changes) -> Project:
            retrieval = store_changes.pop("retrieval", {})
            config = ProjectConfig()
            config = config.model_copy(update={"store": base.model_copy(update=store_changes),
                                               "retrieval": config.retrieval.model_copy(update=retrieval)})
            return Project(workdir, config)

        t0 = time.perf_counter()
        fts = on_pg(sparse="fts")
        fts.store()  # adds the tsvector column and its GIN index (once)
        fts_seconds = time.perf_counter() - t0
        projects = {"sqlite": sqlite, "pgvector": on_pg(), "pgvector-fts": fts,
                    "pgvector-hnsw": on_pg(retrieval={"ann_threshold": 1})}
        plan = {"sqlite": MODES, "pgvector": MODES, "pgvector-fts": ("bm25", "hybrid"),
                "pgvector-hnsw": ("dense", "hybrid")}
        rankings, times = run_side_by_side(projects, plan, queries, qids, args.k, args.reps)
        for project in projects.values():
            project.close()
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        if tmp is not None:
            tmp.cleanup()

    results, gaps, targets = {}, {}, {}
    for name, modes in plan.items():
        results[name] = {}
        for mode in modes:
            quality = evaluate(qrels, rankings[name][mode], qids)
            t = times[name][mode]
            results[name][mode] = {"quality": quality["means"], "per_query_ndcg@10": quality["per_query"]["ndcg@10"],
                                   "latency": latency_summary(t["total"]),
                                   "stages_p50_ms": {s: latency_summary(t[s])["p50_ms"] for s in ("embed", "search", "fetch")}}
            log(f"{name:14s} {mode:6s} nDCG@10 {quality['means']['ndcg@10']:.4f}  R@100 "
                f"{quality['means']['recall@100']:.4f}  p50 {results[name][mode]['latency']['p50_ms']:.1f} ms  "
                f"p95 {results[name][mode]['latency']['p95_ms']:.1f} ms")
    for name in ("pgvector", "pgvector-fts", "pgvector-hnsw"):
        for mode in plan[name]:
            a, b = results[name][mode], results["sqlite"][mode]
            gaps.setdefault(name, {})[mode] = {
                "ndcg@10_minus_sqlite": a["quality"]["ndcg@10"] - b["quality"]["ndcg@10"],
                "p50_ratio_over_sqlite": a["latency"]["p50_ms"] / b["latency"]["p50_ms"],
                "p95_ratio_over_sqlite": a["latency"]["p95_ms"] / b["latency"]["p95_ms"],
                "same_top10_queries": sum(rankings[name][mode][q][:10] == rankings["sqlite"][mode][q][:10] for q in qids)}
    for mode in MODES:
        gap = gaps["pgvector"][mode]["ndcg@10_minus_sqlite"]
        targets[f"pgvector_{mode}_ndcg@10_within_{TOLERANCE}"] = {"target": f"|gap| <= {TOLERANCE}", "value": gap,
                                                                 "met": abs(gap) <= TOLERANCE}

    payload = header(sys.argv if argv is None else ["benchmarks/pg_scifact.py", *argv], settings={
        "k": args.k, "unit": "documents", "reps": args.reps, "schema": args.schema, "source": str(args.source),
        "server": "started on loopback by tests/pgserver.py" if args.dsn is None else "given --dsn",
        "server_settings": {"shared_buffers": args.shared_buffers, "work_mem": "64MB", "fsync": "off"},
        "plan": plan, "what": "Project.search(query, mode, k=100, unit='documents') per query, stores alternating "
                              "by repetition (order flipped), per-query latency pooled over repetitions",
    })
    payload["versions"].update(pg_info)
    payload.update({
        "benchmark": "pg-scifact",
        "dataset": {"name": "scifact", "queries": len(qids), "fingerprint": fingerprint(list(files.values()), root=files["corpus"].parent)},
        "store": {"documents": moved.documents, "chunks": moved.chunks, "embedder_stored": stored,
                  "embedder_configured": configured},
        "migration": {"seconds": migrate_seconds, "documents": moved.documents, "chunks": moved.chunks,
                      "files": moved.files, "fts_column_seconds": fts_seconds},
        "results": results, "vs_sqlite": gaps, "targets": targets, "repetitions": args.reps,
        "wall_seconds": time.perf_counter() - started,
    })
    path = write_result("pg-scifact", payload, args.out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
