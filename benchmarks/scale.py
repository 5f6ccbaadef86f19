"""Dense ANN at scale: ragtune's DenseIndex (faiss HNSW past ann_threshold) on N chunk-like vectors.

The vectors are not random: N_real real sentences (split from a BEIR corpus's abstracts) are
embedded with ragtune's embedder (all-MiniLM-L6-v2 by default), and the base set is those vectors
plus perturbed copies (Gaussian noise of a per-copy random scale, re-normalised). Queries are
embeddings of other real sentences, held out of the base set. We report recall@10 of HNSW against
exact search (numpy over all N), single-query latency p50/p95, build seconds, peak RSS and index
memory, exact-search latency at the same N, and a side-by-side of DenseIndex.search vs calling
faiss's HNSW index directly with the same efSearch.

    python benchmarks/scale.py --data ../shared/data/scifact --workdir /tmp/bench-scale            # 1M
    python benchmarks/scale.py --data ../shared/data/scifact --workdir /tmp/bench-scale --n 100000 # quick

The result is benchmarks/results/scale-1m.json for N = 1,000,000 and scale-<N>.json otherwise, so a
small run never overwrites the 1M result. Sentence embeddings are cached (.npy) in --workdir.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (current_rss_mib, fail, fingerprint, header, latency_summary, log, median,  # noqa: E402
                     peak_rss_mib, write_result)

RECALL_TARGET = 0.95
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def size_name(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def corpus_file(folder: Path) -> Path:
    if not folder.is_dir():
        fail(f"data folder {folder} does not exist. Point --data at a BEIR folder with corpus.jsonl[.gz], "
             f"e.g. ../shared/data/scifact. Nothing was measured.")
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    fail(f"{folder} has no corpus.jsonl[.gz]. Nothing was measured.")


def sentences(corpus: Path, min_chars: int, max_chars: int) -> list[str]:
    """Distinct sentences of the corpus abstracts, in a fixed (sorted) order."""
    opener = gzip.open if corpus.name.endswith(".gz") else open
    found = set()
    with opener(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            text = json.loads(line).get("text") or ""
            for s in _SENTENCE.split(text):
                s = " ".join(s.split())
                if min_chars <= len(s) <= max_chars:
                    found.add(s)
    return sorted(found)


def embed_cached(texts: list[str], workdir: Path, batch_size: int):
    """Embeddings of `texts` with ragtune's default embedder, cached in workdir by content + weights."""
    import numpy as np

    from ragtune.config import EmbedderConfig
    from ragtune.knowledge.embedders import create_embedder

    embedder = create_embedder(EmbedderConfig(batch_size=batch_size))
    info = embedder.info()
    key = hashlib.sha256(("\n".join(texts) + "\0" + info["fingerprint"]).encode()).hexdigest()[:20]
    path = workdir / f"sentences-{len(texts)}-{key}.npy"
    meta = {"embedder": info, "texts": len(texts), "cache_file": str(path)}
    if path.exists():
        vectors = np.load(path)
        log(f"loaded {len(vectors)} cached sentence embeddings from {path}")
        meta.update(cached=True)
        return vectors, meta
    log(f"embedding {len(texts)} sentences with {info['model']} (cached afterwards in {path})")
    started = time.perf_counter()
    parts = []
    for i in range(0, len(texts), 2048):
        parts.append(embedder.embed(texts[i:i + 2048]))
        done = i + len(parts[-1])
        log(f"  {done}/{len(texts)} ({done / (time.perf_counter() - started):.0f} sentences/s)")
    vectors = np.concatenate(parts).astype(np.float32)
    seconds = time.perf_counter() - started
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    meta.update(cached=False, embed_seconds=seconds, sentences_per_s=len(texts) / seconds)
    (workdir / (path.stem + ".json")).write_text(json.dumps(meta, indent=1))
    return vectors, meta


def build_base(real, n: int, sigma: float, seed: int):
    """(n, D) unit vectors: the real ones, then copies real[i % n_real] + noise (per-copy scale in
    [0.5, 1.5] x sigma per dimension), re-normalised; rows shuffled. Also returns each row's source."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_real, dim = real.shape
    base = np.empty((n, dim), dtype=np.float32)
    base[:n_real] = real
    cos = []
    for start in range(n_real, n, 65536):
        end = min(n, start + 65536)
        src = real[np.arange(start, end) % n_real]
        scale = rng.uniform(0.5 * sigma, 1.5 * sigma, size=(end - start, 1)).astype(np.float32)
        block = src + rng.standard_normal((end - start, dim), dtype=np.float32) * scale
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        cos.append(np.einsum("ij,ij->i", block, src))
        base[start:end] = block
    source = np.arange(n, dtype=np.int64) % n_real  # which real sentence each row is (a copy of)
    perm = rng.permutation(n)
    base, source = base[perm], source[perm]
    cos = np.concatenate(cos) if cos else np.zeros(0, np.float32)
    stats = {"copies": int(n - n_real),
             "cosine_copy_to_source": ({"p5": float(np.percentile(cos, 5)), "p50": float(np.percentile(cos, 50)),
                                        "p95": float(np.percentile(cos, 95))} if len(cos) else None)}
    return base, source, stats


def exact_topk(base, queries, k: int, block: int = 100):
    import numpy as np

    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), block):
        scores = queries[i:i + block] @ base.T  # (b, N)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[i:i + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at(found: list, truth, k: int) -> float:
    return sum(len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)) / len(truth)


def hnsw_bytes(hnsw) -> dict:
    """Memory held by a faiss IndexHNSWFlat: its own copy of the vectors plus the graph."""
    import faiss

    storage = faiss.downcast_index(hnsw.storage)
    vectors = storage.ntotal * storage.d * 4
    graph = hnsw.hnsw
    links = graph.neighbors.size() * 4 + graph.offsets.size() * 8 + graph.levels.size() * 4
    if hasattr(graph, "assign_probas"):
        links += graph.assign_probas.size() * 8
    return {"vectors_bytes": int(vectors), "graph_bytes": int(links), "total_bytes": int(vectors + links)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"), help="BEIR folder (corpus.jsonl[.gz])")
    parser.add_argument("--workdir", type=Path, help="cache of sentence embeddings (default: a temp dir)")
    parser.add_argument("--n", type=int, default=1_000_000, help="base vectors (default 1,000,000)")
    parser.add_argument("--n-real", type=int, default=20_000, help="real sentence embeddings in the base set")
    parser.add_argument("--queries", type=int, default=1000, help="held-out real sentences used as queries")
    parser.add_argument("--sigma", type=float, default=0.025,
                        help="per-dimension noise scale of the copies (each copy draws 0.5-1.5 x sigma)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80, help="DenseIndex's default is 80")
    parser.add_argument("--ef-search", default="64,128,256", help="comma-separated efSearch values to sweep")
    parser.add_argument("--exact-queries", type=int, default=100, help="queries timed on the exact path")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the DenseIndex-vs-faiss side by side")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    parser.add_argument("--min-chars", type=int, default=40)
    parser.add_argument("--max-chars", type=int, default=400)
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/scale-<n>.json)")
    args = parser.parse_args(argv)

    ef_list = sorted({int(x) for x in args.ef_search.split(",") if x.strip()})
    if not ef_list or min(ef_list) < 1:
        fail("--ef-search needs positive integers, e.g. 64,128,256")
    if args.n_real > args.n:
        fail(f"--n-real ({args.n_real}) must not exceed --n ({args.n})")
    corpus = corpus_file(args.data.expanduser().resolve())
    started = time.perf_counter()

    import faiss
    import numpy as np

    from ragtune.retrieve.dense import DenseIndex

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ragtune-scale-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir.expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)

    # 1. real sentences -> embeddings (cached); held-out queries
    texts = sentences(corpus, args.min_chars, args.max_chars)
    need = args.n_real + args.queries
    if len(texts) < need:
        fail(f"{corpus} yields {len(texts)} distinct sentences of {args.min_chars}-{args.max_chars} characters; "
             f"--n-real {args.n_real} + --queries {args.queries} = {need} are needed. Nothing was measured.")
    rng = np.random.default_rng(args.seed)
    chosen = [texts[i] for i in rng.permutation(len(texts))[:need]]
    del texts
    vectors, embed_meta = embed_cached(chosen, workdir, args.batch_size)
    del chosen
    queries = np.ascontiguousarray(vectors[:args.queries])
    real = np.ascontiguousarray(vectors[args.queries:])
    log(f"{len(real)} real base vectors, {len(queries)} held-out queries, dimension {real.shape[1]}")

    # 2. base set
    t0 = time.perf_counter()
    base, source, base_stats = build_base(real, args.n, args.sigma, args.seed + 1)
    base_stats["seconds"] = time.perf_counter() - t0
    base_stats["bytes"] = int(base.nbytes)
    log(f"base set {base.shape} built in {base_stats['seconds']:.1f} s; copy-to-source cosine "
        f"{base_stats['cosine_copy_to_source']}")

    # 3. exact ground truth (numpy, batched) and the exact path of DenseIndex (single queries)
    t0 = time.perf_counter()
    truth = exact_topk(base, queries, args.k)
    truth_seconds = time.perf_counter() - t0
    log(f"exact top-{args.k} of {len(queries)} queries (numpy, batched) in {truth_seconds:.1f} s")
    nearest = np.array([float(base[truth[i, 0]] @ queries[i]) for i in range(len(queries))])
    # How clustered the true top-k is: distinct source sentences among it (1 = all copies of one sentence).
    distinct = np.array([len(set(source[truth[i]].tolist())) for i in range(len(queries))])
    truth_sources = {"mean": float(distinct.mean()), "p50": float(np.median(distinct)),
                     "share_single_source": float((distinct == 1).mean())}
    log(f"distinct source sentences in the exact top-{args.k}: mean {truth_sources['mean']:.2f}, "
        f"{truth_sources['share_single_source']:.0%} of queries have a single source")
    exact_index = DenseIndex(base, ann_threshold=args.n + 1)  # ann disabled; shares `base` (no copy)
    assert exact_index.hnsw is None and np.may_share_memory(exact_index.vectors, base)
    times, mismatched = [], 0
    for i in range(min(args.exact_queries, len(queries))):
        t0 = time.perf_counter()
        res = exact_index.search(queries[i], args.k)
        times.append(time.perf_counter() - t0)
        mismatched += set(res.positions.tolist()) != set(truth[i].tolist())
    exact = {"queries_timed": len(times), "latency": latency_summary(times),
             "top10_sets_differing_from_numpy": mismatched, "ground_truth_batched_seconds": truth_seconds}
    log(f"exact DenseIndex.search p50 {exact['latency']['p50_ms']:.1f} ms ({mismatched} queries differ from numpy)")
    del exact_index

    # 4. HNSW build through DenseIndex
    rss_before = current_rss_mib()
    log(f"building HNSW: N={args.n}, M={args.hnsw_m}, efConstruction={args.ef_construction}, "
        f"{faiss.omp_get_max_threads()} faiss threads ...")
    t0 = time.perf_counter()
    index = DenseIndex(base, ann_threshold=args.n - 1, hnsw_m=args.hnsw_m, ef_search=ef_list[0],
                       ef_construction=args.ef_construction)
    build_seconds = time.perf_counter() - t0
    if index.hnsw is None:
        fail("DenseIndex did not build an HNSW index (ann_threshold not below N?)")
    rss_after = current_rss_mib()
    memory = hnsw_bytes(index.hnsw)
    memory.update({"base_vectors_bytes": int(base.nbytes), "rss_before_build_mib": rss_before,
                   "rss_after_build_mib": rss_after, "rss_growth_mib": (rss_after or 0) - (rss_before or 0),
                   "peak_rss_after_build_mib": peak_rss_mib()})
    log(f"HNSW built in {build_seconds:.1f} s ({args.n / build_seconds:.0f} vectors/s); index "
        f"{memory['total_bytes'] / 2**20:.0f} MiB (graph {memory['graph_bytes'] / 2**20:.0f} MiB)")

    # 5. efSearch sweep: recall@k vs exact and single-query latency, through DenseIndex.search
    sweep = []
    for ef in ef_list:
        index.ef_search = ef
        for q in queries[:20]:  # warm-up
            index.search(q, args.k)
        found, times = [], []
        for q in queries:
            t0 = time.perf_counter()
            res = index.search(q, args.k)
            times.append(time.perf_counter() - t0)
            found.append(res.positions.tolist())
        same_source = sum(bool(f) and source[f[0]] == source[t[0]] for f, t in zip(found, truth)) / len(truth)
        row = {"ef_search": ef, f"recall@{args.k}": recall_at(found, truth, args.k),
               "recall@1": recall_at([f[:1] for f in found], truth[:, :1], 1),
               "top1_same_source_as_exact": same_source, "latency": latency_summary(times)}
        sweep.append(row)
        log(f"efSearch {ef}: recall@{args.k} {row[f'recall@{args.k}']:.4f}, p50 {row['latency']['p50_ms']:.2f} ms, "
            f"p95 {row['latency']['p95_ms']:.2f} ms")
    meeting = [r for r in sweep if r[f"recall@{args.k}"] >= RECALL_TARGET]
    chosen_row = meeting[0] if meeting else sweep[-1]

    # 6. side by side at the chosen efSearch: DenseIndex.search vs faiss hnsw.search (alternating)
    ef = chosen_row["ef_search"]
    index.ef_search = ef
    params = faiss.SearchParametersHNSW()
    params.efSearch = ef

    def ours():
        for q in queries:
            index.search(q, args.k)

    def library():
        for q in queries:
            index.hnsw.search(q[None, :], args.k, params=params)

    totals = {"ours": [], "library": []}
    for rep in range(args.reps):
        order = [("ours", ours), ("library", library)]
        for side, fn in (order if rep % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            totals[side].append(time.perf_counter() - t0)
    med = {s: median(v) for s, v in totals.items()}
    side = {"ef_search": ef, "repetitions": args.reps, "queries_per_repetition": len(queries),
            "what": "ours = DenseIndex.search(q, k) (alive-mask check, HNSW, result wrapping); library = "
                    "faiss IndexHNSWFlat.search(q[None], k, params=SearchParametersHNSW(efSearch)) on the same index",
            "seconds_per_repetition": totals, "median_seconds": med,
            "median_ms_per_query": {s: v / len(queries) * 1e3 for s, v in med.items()},
            "ratio_ours_over_library": med["ours"] / med["library"]}
    log(f"side by side at efSearch {ef}: ours {side['median_ms_per_query']['ours']:.3f} ms/q, faiss "
        f"{side['median_ms_per_query']['library']:.3f} ms/q, ratio {side['ratio_ours_over_library']:.2f}x")

    name = f"scale-{size_name(args.n)}"
    payload = header(sys.argv if argv is None else ["benchmarks/scale.py", *argv], settings={
        "n": args.n, "n_real": args.n_real, "queries": args.queries, "sigma": args.sigma, "k": args.k,
        "hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": ef_list,
        "exact_queries": args.exact_queries, "seed": args.seed, "sentence_chars": [args.min_chars, args.max_chars],
        "workdir": str(workdir) if args.workdir else "(temporary)",
        "vectors": "real all-MiniLM-L6-v2 sentence embeddings + perturbed, re-normalised copies (not random vectors)",
        "ground_truth": "numpy exact inner product over all N (batched); DenseIndex exact path checked against it",
    })
    payload.update({
        "benchmark": "scale",
        "dataset": {"name": corpus.parent.name, "fingerprint": fingerprint([corpus], root=corpus.parent),
                    "embedding": embed_meta},
        "base": base_stats,
        "exact_topk_distinct_sources": truth_sources,
        "query_nearest_cosine": {"p5": float(np.percentile(nearest, 5)), "p50": float(np.median(nearest)),
                                 "p95": float(np.percentile(nearest, 95))},
        "exact": exact,
        "hnsw": {"build_seconds": build_seconds, "build_vectors_per_s": args.n / build_seconds,
                 "memory": memory, "sweep": sweep, "chosen": chosen_row,
                 "recall_target": RECALL_TARGET, "recall_target_met": bool(meeting),
                 "speedup_over_exact_p50": exact["latency"]["p50_ms"] / chosen_row["latency"]["p50_ms"]},
        "side_by_side": side,
        "repetitions": args.reps,
        "peak_rss_mib": peak_rss_mib(),
        "wall_seconds": time.perf_counter() - started,
    })
    path = write_result(name, payload, args.out)
    log(f"wrote {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
