"""BEIR retrieval benchmark: ragtune's bm25 / dense / hybrid search on a BEIR folder, with quality
(nDCG@10, Recall@100, MRR@10 via pytrec_eval), latency, and side-by-side speed against the
libraries underneath (bm25s, faiss) on the same chunks, vectors and queries.

    python benchmarks/beir.py --data ../shared/data/scifact --workdir /tmp/bench-scifact

The BEIR folder holds corpus.jsonl[.gz], queries.jsonl and qrels/<split>.tsv. The result goes to
benchmarks/results/beir-<folder name>.json. With --workdir the ragtune project (store, vectors,
derived indexes) is kept there and reused: indexing is incremental, so a rerun skips embedding and
reports the timings of the fresh build it found recorded there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (fail, fingerprint, header, latency_summary, limit_blas_threads, log, median,  # noqa: E402
                     peak_rss_mib, write_result)

MODES = ("bm25", "dense", "hybrid")
TARGETS = {"ndcg@10": {"bm25": 0.67, "dense": 0.64, "hybrid": 0.71}, "hybrid_query_p50_ms": 30.0,
           "ours_over_library_max": 1.3}
RRF_K = 60  # plain reciprocal-rank fusion for the library baseline, as ragtune's default


# --- data ------------------------------------------------------------------------------------
def find_data(folder: Path, split: str) -> dict[str, Path]:
    if not folder.is_dir():
        fail(f"BEIR data folder {folder} does not exist. Point --data at a BEIR folder (corpus.jsonl[.gz], "
             f"queries.jsonl, qrels/{split}.tsv), e.g. ../shared/data/scifact.")
    corpus = next((folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).is_file()), None)
    files = {"corpus": corpus, "queries": folder / "queries.jsonl", "qrels": folder / "qrels" / f"{split}.tsv"}
    missing = [f"{k} ({'corpus.jsonl[.gz]' if v is None else v.name})" for k, v in files.items()
               if v is None or not v.is_file()]
    if missing:
        fail(f"{folder} is not a complete BEIR folder: missing {', '.join(missing)}. Nothing was measured.")
    return files


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            try:
                score = int(parts[-1])
            except ValueError:
                if number == 0:  # header: query-id corpus-id score
                    continue
                raise
            qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


def load_queries(path: Path, wanted: set[str]) -> dict[str, str]:
    queries = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in wanted:
                    queries[str(row["_id"])] = row["text"]
    return queries


# --- quality ---------------------------------------------------------------------------------
def evaluate(qrels: dict, run: dict[str, list[str]], qids: list[str]) -> dict:
    """nDCG@10, Recall@100, MRR@10 (pytrec_eval) from ranked doc-id lists; a query with no hits scores 0.

    Scores given to pytrec_eval are rank-derived (n - rank) so that it evaluates exactly our order
    (trec_eval would otherwise re-sort ties by document id)."""
    import pytrec_eval

    full = {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in run.items() if ds}
    top10 = {q: {d: float(10 - i) for i, d in enumerate(ds[:10])} for q, ds in run.items() if ds}
    sub = {q: qrels[q] for q in qids}
    a = pytrec_eval.RelevanceEvaluator(sub, {"ndcg_cut.10", "recall.100"}).evaluate(full)
    b = pytrec_eval.RelevanceEvaluator(sub, {"recip_rank"}).evaluate(top10)
    per_q = {"ndcg@10": [a.get(q, {}).get("ndcg_cut_10", 0.0) for q in qids],
             "recall@100": [a.get(q, {}).get("recall_100", 0.0) for q in qids],
             "mrr@10": [b.get(q, {}).get("recip_rank", 0.0) for q in qids]}
    means = {m: sum(v) / len(v) for m, v in per_q.items()}
    return {"means": means, "per_query": per_q}


# --- ragtune project -------------------------------------------------------------------------
def open_project(workdir: Path, corpus: Path, progress: bool) -> tuple[object, dict]:
    from ragtune.config import ProjectConfig
    from ragtune.project import Project

    folder = workdir / "project"
    stats_file = workdir / "index-stats.json"
    project = Project(folder, ProjectConfig())
    store = project.store()
    chunks_before = store.count_chunks()
    log(f"indexing {corpus} into {folder} ({chunks_before} chunks already there)")
    report = project.index([str(corpus)], progress=progress)
    chunks = store.count_chunks()
    docs = store.count_documents()
    this_run = {"seconds": report.seconds, "embed_seconds": report.embed_seconds,
                "documents_added": report.documents_added, "documents_unchanged": report.documents_unchanged,
                "files_unchanged": report.files_unchanged, "chunks_embedded": report.chunks_embedded,
                "chunks_reused": report.chunks_reused, "skipped": len(report.skipped)}
    fresh = chunks_before == 0 and report.chunks_embedded > 0
    if fresh:
        stats = {"documents": docs, "chunks": chunks, "seconds": report.seconds,
                 "embed_seconds": report.embed_seconds, "chunks_per_s": chunks / report.seconds,
                 "documents_per_s": docs / report.seconds,
                 "embedded_chunks_per_s": report.chunks_embedded / max(report.embed_seconds, 1e-9),
                 "corpus": str(corpus.resolve()), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        stats_file.write_text(json.dumps(stats, indent=1))
    else:
        try:
            stats = json.loads(stats_file.read_text())
        except (OSError, ValueError):
            stats = None
    log(f"index: {docs} documents, {chunks} chunks, {report.seconds:.1f} s this run "
        f"({'fresh build' if fresh else 'reused workdir'})")
    info = {"documents": docs, "chunks": chunks, "fresh_build_this_run": fresh, "this_run": this_run,
            "embedder": project.embedder.info(),
            "search_indexes": ("built in this process (fresh build)" if fresh else
                               "loaded by the store from its saved derived indexes (bm25.pkl, dense.npz) when valid"),
            "fresh_build": stats, "skipped_examples": [list(s) for s in report.skipped[:5]]}
    return project, info


def run_quality(project, queries: dict[str, str], qids: list[str], k: int, modes: list[str]) -> tuple[dict, dict]:
    runs, latency = {}, {}
    for mode in modes:
        project.search(queries[qids[0]], mode=mode, k=k, unit="documents")  # warm-up: model, indexes
        ranked, totals, stages = {}, [], {"embed": [], "search": [], "fetch": []}
        short = 0
        for q in qids:
            trace: dict = {}
            started = time.perf_counter()
            hits = project.search(queries[q], mode=mode, k=k, unit="documents", trace=trace)
            totals.append(time.perf_counter() - started)
            for stage in stages:
                stages[stage].append(trace.get(stage, 0.0))
            ids = [h.document_id for h in hits]
            if len(set(ids)) != len(ids):
                raise RuntimeError(f"mode {mode}: duplicate documents in unit='documents' results for query {q}")
            short += len(ids) < k
            ranked[q] = ids
        runs[mode] = ranked
        latency[mode] = {"total": latency_summary(totals),
                         "stages": {s: latency_summary(v) for s, v in stages.items()},
                         "queries_with_fewer_than_k_documents": short}
        log(f"{mode}: p50 {latency[mode]['total']['p50_ms']:.1f} ms, p95 {latency[mode]['total']['p95_ms']:.1f} ms")
    return runs, latency


# --- the libraries, called directly ----------------------------------------------------------
class Library:
    """bm25s and faiss over exactly the chunk texts and vectors ragtune stored."""

    def __init__(self, project):
        import bm25s
        import faiss
        import numpy as np
        import Stemmer

        store = project.store()
        rows = store.conn.execute("SELECT header, text FROM chunks ORDER BY rowid").fetchall()
        self.texts = [f"{h}\n{t}" if h else t for h, t in rows]
        self.doc_of = [r[0] for r in store.conn.execute("SELECT document_id FROM chunks ORDER BY rowid")]
        blobs = [r[0] for r in store.conn.execute("SELECT vector FROM chunks ORDER BY rowid")]
        self.vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
        cfg = project.config.retrieval.bm25
        self.stemmer = Stemmer.Stemmer(cfg.stemmer)
        self.stopwords = cfg.stopwords
        self.k1, self.b = cfg.k1, cfg.b
        self.bm25s, self.np = bm25s, np
        self.bm25 = self.build_bm25()
        self.flat = faiss.IndexFlatIP(self.vectors.shape[1])
        self.flat.add(self.vectors)
        # The plain-library pipeline embeds queries the way a sentence-transformers user would: torch.
        from sentence_transformers import SentenceTransformer

        from ragtune.knowledge.embedders import resolve_model_path

        self.model = SentenceTransformer(str(resolve_model_path(project.config.embedder.model)), device="cpu")

    def build_bm25(self):
        retriever = self.bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(self.bm25s.tokenize(self.texts, stopwords=self.stopwords, stemmer=self.stemmer,
                                            show_progress=False), show_progress=False)
        return retriever

    def tokenize(self, query: str):
        return self.bm25s.tokenize([query], stopwords=self.stopwords, stemmer=self.stemmer, return_ids=False,
                                   show_progress=False)

    def sparse(self, query: str, k: int):
        docs, scores = self.bm25.retrieve(self.tokenize(query), k=min(k, len(self.texts)), show_progress=False)
        return docs[0], scores[0]

    def dense(self, vector, k: int):
        scores, ids = self.flat.search(vector[None, :], k)
        return ids[0], scores[0]

    def embed(self, query: str):
        return self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)[0]

    def _docs(self, ids, scores, k: int) -> list[tuple[str, float]]:
        seen, out = set(), []
        for i, s in zip(ids.tolist(), scores.tolist()):
            if i < 0:
                continue
            d = self.doc_of[i]
            if d not in seen:
                seen.add(d)
                out.append((d, s))
                if len(out) == k:
                    break
        return out

    def search_documents(self, query: str, mode: str, k: int) -> list[str]:
        """What a user of the two libraries would write: top chunks -> best chunk per document (-> RRF)."""
        pool, n = 2 * k, len(self.texts)
        vector = self.embed(query) if mode != "bm25" else None
        while True:
            lists = []
            if mode in ("bm25", "hybrid"):
                ids, scores = self.sparse(query, min(pool, n))
                keep = scores > 0  # a document matching no query term is not a BM25 hit
                lists.append(self._docs(ids[keep], scores[keep], k if mode == "bm25" else pool))
            if mode in ("dense", "hybrid"):
                ids, scores = self.dense(vector, min(pool, n))
                lists.append(self._docs(ids, scores, k if mode == "dense" else pool))
            if mode == "hybrid":
                fused: dict[str, float] = {}
                for ranking in lists:
                    for rank, (d, _) in enumerate(ranking, start=1):
                        fused[d] = fused.get(d, 0.0) + 1.0 / (RRF_K + rank)
                out = [d for d, _ in sorted(fused.items(), key=lambda p: (-p[1], p[0]))]
            else:
                out = [d for d, _ in lists[0]]
            if len(out) >= k or pool >= n:
                return out[:k]
            pool *= 4


def side_by_side(pairs: dict, reps: int, n_queries: int) -> dict:
    """Alternate ours/library (order flipped every repetition); per repetition each side runs all queries.

    pairs: name -> (ours(i), library(i)) callables taking a query index."""
    out = {}
    for name, (ours, lib) in pairs.items():
        for fn in (ours, lib):  # warm-up
            for i in range(min(20, n_queries)):
                fn(i)
        totals = {"ours": [], "library": []}
        per_query = {"ours": [], "library": []}
        for rep in range(reps):
            order = [("ours", ours), ("library", lib)] if rep % 2 == 0 else [("library", lib), ("ours", ours)]
            for side, fn in order:
                times = []
                started = time.perf_counter()
                for i in range(n_queries):
                    t0 = time.perf_counter()
                    fn(i)
                    times.append(time.perf_counter() - t0)
                totals[side].append(time.perf_counter() - started)
                per_query[side].extend(times)
        med = {side: median(v) for side, v in totals.items()}
        out[name] = {
            "repetitions": reps, "queries_per_repetition": n_queries,
            "seconds_per_repetition": totals,
            "median_seconds": med,
            "median_ms_per_query": {s: v / n_queries * 1e3 for s, v in med.items()},
            "per_query_latency": {s: latency_summary(v) for s, v in per_query.items()},
            "ratio_ours_over_library": med["ours"] / med["library"],
        }
        log(f"{name}: ours {out[name]['median_ms_per_query']['ours']:.3f} ms/q, library "
            f"{out[name]['median_ms_per_query']['library']:.3f} ms/q, ratio {out[name]['ratio_ours_over_library']:.2f}x")
    return out


def agreement(ours: list[list[int]], lib: list[list[int]], depth: int) -> dict:
    """How often ours and the library return the same chunks (as sets, and in the same order)."""
    same_set = sum(set(a[:depth]) == set(b[:depth]) for a, b in zip(ours, lib))
    same_order = sum(list(a[:depth]) == list(b[:depth]) for a, b in zip(ours, lib))
    overlap = [len(set(a[:depth]) & set(b[:depth])) / max(1, min(depth, len(b))) for a, b in zip(ours, lib)]
    return {"depth": depth, "queries": len(ours), "same_set": same_set, "same_order": same_order,
            "mean_overlap": sum(overlap) / max(1, len(overlap))}


def run_side_by_side(project, lib: Library, queries: dict[str, str], qids: list[str], k: int, reps: int,
                     modes: list[str], qrels: dict) -> dict:
    from ragtune.retrieve.bm25 import BM25Index

    texts = [queries[q] for q in qids]
    store = project.store()
    qvecs = project.embedder.embed(texts)  # the same query vectors on both sides (search-only)
    pos_of_rowid = {r: i for i, (r,) in enumerate(store.conn.execute("SELECT rowid FROM chunks ORDER BY rowid"))}
    result: dict = {"settings": {
        "k": k, "unit_search_only": "chunks", "unit_end_to_end": "documents",
        "tokenization_in_timed_region": True,
        "query_embedding_in_timed_region": {"search_only": False, "end_to_end": True},
        "library_bm25": f"bm25s.BM25(k1={lib.k1}, b={lib.b}, method='lucene'), bm25s.tokenize(stopwords="
                        f"'{lib.stopwords}', stemmer=Stemmer.Stemmer('{project.config.retrieval.bm25.stemmer}'), "
                        f"return_ids=False) per query, retrieve(k, n_threads=0)",
        "library_dense": "faiss.IndexFlatIP over the stored chunk vectors, one query per search() call",
        "library_end_to_end": ("SentenceTransformer.encode([q]) and/or bm25s tokenize+retrieve, top 2k chunks per "
                               "retriever, best chunk per document, plain RRF (k=60) for hybrid; widen x4 until k "
                               "documents. Returns ids only (ours also fetches chunk text and metadata from SQLite)."),
        "ours_search_only": "with store.snapshot() as snap: snap.sparse(text, k) / snap.dense(qvec, k), "
                            "one snapshot per repetition, opened outside the timed loop (the snapshot's BM25 index "
                            "is the one the store keeps: built in this process on a fresh index, else loaded from "
                            "bm25.pkl); bm25_search_only_index_built_in_process: BM25Index(chunk texts).search(text, k) "
                            "built in this process",
        "ours_end_to_end": "project.search(text, mode, k, unit='documents')",
        "order": "alternating: ours first on even repetitions, library first on odd; 20 warm-up queries each",
    }}

    # (0) correctness: do both sides return the same chunks?
    with store.snapshot() as snap:
        ours_sparse = [[pos_of_rowid[r] for r, _ in snap.sparse(t, k)] for t in texts]
        ours_dense = [[pos_of_rowid[r] for r, _ in snap.dense(v, k)] for v in qvecs]
    lib_sparse = []
    for t in texts:
        ids, scores = lib.sparse(t, k)
        lib_sparse.append(ids[scores > 0].tolist())
    lib_dense = [lib.dense(v, k)[0].tolist() for v in qvecs]
    result["agreement"] = {"bm25_top10": agreement(ours_sparse, lib_sparse, 10),
                           "bm25_top100": agreement(ours_sparse, lib_sparse, k),
                           "dense_top10": agreement(ours_dense, lib_dense, 10),
                           "dense_top100": agreement(ours_dense, lib_dense, k)}

    # (a) search only
    log("side by side (a): search only")
    cfg = project.config.retrieval.bm25
    with store.snapshot() as snap:
        pairs = {}
        if "bm25" in modes or "hybrid" in modes:
            pairs["bm25_search_only"] = (lambda i: snap.sparse(texts[i], k), lambda i: lib.sparse(texts[i], k))
            # The same BM25Index class built in this process rather than loaded from the store's bm25.pkl:
            # tells a cost of the persisted index apart from a cost of the search code.
            in_process = BM25Index(lib.texts, cfg)
            pairs["bm25_search_only_index_built_in_process"] = (lambda i: in_process.search(texts[i], k),
                                                                lambda i: lib.sparse(texts[i], k))
        if "dense" in modes or "hybrid" in modes:
            pairs["dense_search_only"] = (lambda i: snap.dense(qvecs[i], k), lambda i: lib.dense(qvecs[i], k))
        result["search_only"] = side_by_side(pairs, reps, len(texts))
        # Tokenization alone (library side), to show its share of the BM25 figure.
        started = time.perf_counter()
        for t in texts:
            lib.tokenize(t)
        result["search_only"]["bm25_tokenization_only_ms_per_query"] = (time.perf_counter() - started) / len(texts) * 1e3

    # (b) end to end
    log("side by side (b): end to end")
    traces: dict[str, list[dict]] = {mode: [] for mode in modes}

    def ours_e2e(i: int, mode: str):
        trace: dict = {}
        hits = project.search(texts[i], mode=mode, k=k, unit="documents", trace=trace)
        traces[mode].append(trace)
        return hits

    pairs = {f"{mode}_end_to_end": ((lambda i, m=mode: ours_e2e(i, m)),
                                    (lambda i, m=mode: lib.search_documents(texts[i], m, k))) for mode in modes}
    result["end_to_end"] = side_by_side(pairs, reps, len(texts))
    for mode in modes:  # where our time goes (trace stages; the library side has no fetch)
        result["end_to_end"][f"{mode}_end_to_end"]["ours_stage_p50_ms"] = {
            s: latency_summary([t.get(s, 0.0) for t in traces[mode]])["p50_ms"] for s in ("embed", "search", "fetch")}
    # Quality of the library pipelines: a check that ours ranks like the plain libraries do.
    result["library_quality"] = {mode: evaluate(qrels, {q: lib.search_documents(queries[q], mode, k) for q in qids},
                                                qids)["means"] for mode in modes}

    # (c) BM25 index build over the same chunk texts (includes corpus tokenization on both sides).
    log("side by side (c): BM25 index build")
    builds = {"ours": [], "library": []}
    for rep in range(max(3, reps // 2)):
        order = [("ours", lambda: BM25Index(lib.texts, cfg)), ("library", lib.build_bm25)]
        for side, fn in (order if rep % 2 == 0 else order[::-1]):
            started = time.perf_counter()
            fn()
            builds[side].append(time.perf_counter() - started)
    med = {s: median(v) for s, v in builds.items()}
    result["bm25_index_build"] = {"repetitions": len(builds["ours"]), "chunks": len(lib.texts),
                                  "seconds": builds, "median_seconds": med,
                                  "ratio_ours_over_library": med["ours"] / med["library"]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument("--workdir", type=Path, help="keep/reuse the ragtune project here (default: a temp dir)")
    parser.add_argument("--k", type=int, default=100, help="documents per query (default 100)")
    parser.add_argument("--modes", default="bm25,dense,hybrid", help="comma-separated subset of bm25,dense,hybrid")
    parser.add_argument("--reps", type=int, default=5, help="side-by-side repetitions (>= 5 recommended)")
    parser.add_argument("--no-side-by-side", action="store_true", help="quality and latency only")
    parser.add_argument("--no-progress", action="store_true", help="no indexing progress bar")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="limit numpy's BLAS pool to N threads (threadpoolctl) for the whole run; 0 = leave as is")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/beir-<folder>.json)")
    args = parser.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        fail(f"--modes must be a comma-separated subset of {','.join(MODES)}")
    if args.reps < 1:
        fail("--reps must be at least 1")
    blas = limit_blas_threads(args.blas_threads)
    loadavg_start = list(os.getloadavg())
    data = args.data.expanduser().resolve()
    files = find_data(data, args.split)
    qrels = load_qrels(files["qrels"])
    queries = load_queries(files["queries"], set(qrels))
    qids = sorted(q for q in qrels if q in queries)
    missing = sorted(set(qrels) - set(queries))
    if not qids:
        fail(f"no query of {files['qrels']} is in {files['queries']}; nothing to measure.")
    log(f"{data.name}: {len(qids)} {args.split} queries with judgements"
        + (f" ({len(missing)} qrels queries have no text!)" if missing else ""))

    started = time.perf_counter()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"ragtune-beir-{data.name}-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        project, index_info = open_project(workdir, files["corpus"], progress=not args.no_progress)
        runs, latency = run_quality(project, queries, qids, args.k, modes)
        quality = {m: evaluate(qrels, runs[m], qids) for m in modes}
        for m in modes:
            log(f"{m}: " + ", ".join(f"{k} {v:.4f}" for k, v in quality[m]["means"].items()))
        side = None
        if not args.no_side_by_side:
            lib = Library(project)
            side = run_side_by_side(project, lib, queries, qids, args.k, args.reps, modes, qrels)
        project.close()
    finally:
        if tmp is not None:
            tmp.cleanup()

    targets = {}
    for m in modes:
        want = TARGETS["ndcg@10"][m]
        targets[f"{m}_ndcg@10"] = {"target": f">= {want}", "value": quality[m]["means"]["ndcg@10"],
                                   "met": quality[m]["means"]["ndcg@10"] >= want}
    if "hybrid" in modes:
        p50 = latency["hybrid"]["total"]["p50_ms"]
        targets["hybrid_query_p50_ms"] = {"target": f"<= {TARGETS['hybrid_query_p50_ms']}", "value": p50,
                                          "met": p50 <= TARGETS["hybrid_query_p50_ms"]}
    if side:
        for part in ("search_only", "end_to_end"):
            for name, row in side[part].items():
                if isinstance(row, dict) and "ratio_ours_over_library" in row:
                    r = row["ratio_ours_over_library"]
                    targets[f"{name}_ratio"] = {"target": f"<= {TARGETS['ours_over_library_max']}", "value": r,
                                                "met": r <= TARGETS["ours_over_library_max"]}

    payload = header(sys.argv if argv is None else ["benchmarks/beir.py", *argv], settings={
        "data": str(data), "split": args.split, "k": args.k, "modes": modes, "unit": "documents",
        "repetitions": args.reps, "blas_threads": blas or "unchanged (library default)", "workdir": str(workdir) if args.workdir else "(temporary)",
        "ragtune_config": __import__("ragtune.config", fromlist=["ProjectConfig"]).ProjectConfig().model_dump(),
        "metric_notes": "pytrec_eval ndcg_cut.10 and recall.100 on the top-k run; recip_rank on the top-10 run "
                        "(MRR@10); scores passed to pytrec_eval are rank-derived so ties keep our order; a query "
                        "with no hits scores 0; means over all judged queries.",
    })
    payload.update({
        "benchmark": "beir",
        "dataset": {"name": data.name, "queries": len(qids), "qrels_queries_without_text": missing,
                    "fingerprint": fingerprint(files.values(), root=data)},
        "index": index_info,
        "quality": {m: quality[m]["means"] for m in modes},
        "latency": latency,
        "side_by_side": side,
        "targets": targets,
        "repetitions": args.reps,
        "per_query": {"query_ids": qids, **{m: {"ndcg@10": quality[m]["per_query"]["ndcg@10"]} for m in modes}},
        "peak_rss_mib": peak_rss_mib(),
        "loadavg_1_5_15": {"start": loadavg_start, "end": list(os.getloadavg())},
        "wall_seconds": time.perf_counter() - started,
    })
    path = write_result(f"beir-{data.name}", payload, args.out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
