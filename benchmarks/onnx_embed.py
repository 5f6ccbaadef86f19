"""Embedding backends side by side on a BEIR set: torch fp32 vs ONNX fp32 vs ONNX int8.

    python benchmarks/onnx_embed.py --data ../shared/data/scifact [--workdir /tmp/bench-onnx]

Measures, in one run:
- encoding throughput, alternating backends over several repetitions (medians): the test
  queries (short texts) and a fixed sample of full documents (title + abstract; MiniLM reads up to
  256 tokens);
- dense retrieval quality per backend: every document embedded whole (truncated at 256 tokens, as
  in the reference figure 0.645), exact inner-product search, nDCG@10 / Recall@100 / MRR@10 on the
  test queries, and the cosine between each backend's document vectors and torch's.
Writes benchmarks/results/onnx-embed-<dataset>.json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fingerprint, header, log, median, write_result  # noqa: E402
from beir import evaluate, find_data, load_qrels, load_queries  # noqa: E402

BACKENDS = {"torch-fp32": ("sentence-transformers", "none"), "onnx-fp32": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}
# Throughput only (same vectors as torch-fp32 up to denormals): torch at batch 8, and at batch 8 with
# denormals flushed to zero (torch.set_flush_denormal, as onnxruntime does on its threads), so the
# int8 ratio is also quoted against torch at its best on this CPU.
EXTRA = {"torch-fp32-batch8": ("sentence-transformers", "none", 8),
         "torch-fp32-batch8-ftz": ("sentence-transformers", "none", 8)}
FLUSH_DENORMALS = {"torch-fp32-batch8-ftz"}


def load_corpus(path: Path) -> tuple[list[str], list[str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    ids, texts = [], []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(f"{row.get('title', '')} {row['text']}".strip())
    return ids, texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, help="keep full-corpus embeddings here between runs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sample-docs", type=int, default=256)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args(argv)

    import torch

    from ragtune.config import EmbedderConfig
    from ragtune.knowledge.embedders import create_embedder
    from ragtune.knowledge.onnx import EXPORT_VERSION

    files = find_data(args.data, "test")
    qrels = load_qrels(files["qrels"])
    qids = sorted(qrels)
    queries = load_queries(files["queries"], set(qids))
    qids = [q for q in qids if q in queries]
    doc_ids, docs = load_corpus(files["corpus"])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sample = [docs[i] for i in sorted(rng.choice(len(docs), size=min(args.sample_docs, len(docs)), replace=False))]
    query_texts = [queries[q] for q in qids]

    embedders = {}
    timed_backends = {name: (*spec, 32) for name, spec in BACKENDS.items()} | EXTRA
    for name, (backend, quantize, batch_size) in timed_backends.items():
        embedders[name] = create_embedder(EmbedderConfig(backend=backend, model=args.model, quantize=quantize,
                                                         batch_size=batch_size))
        embedders[name].embed(["warm up"])  # load (and export, once) outside the timed region

    log(f"throughput: {args.reps} reps x {len(timed_backends)} backends, {len(query_texts)} queries, {len(sample)} docs")
    times: dict[str, dict[str, list[float]]] = {n: {"queries": [], "documents": []} for n in timed_backends}
    for rep in range(args.reps):
        order = list(timed_backends) if rep % 2 == 0 else list(reversed(timed_backends))
        for name in order:
            if name in FLUSH_DENORMALS:
                torch.set_flush_denormal(True)
            for kind, texts in (("queries", query_texts), ("documents", sample)):
                started = time.perf_counter()
                embedders[name].embed(texts)
                times[name][kind].append(time.perf_counter() - started)
            torch.set_flush_denormal(False)
            log(f"  rep {rep}: {name} docs {len(sample) / times[name]['documents'][-1]:.1f}/s")
    throughput = {name: {kind: {"median_s": median(t), "per_s": (len(query_texts) if kind == "queries" else len(sample)) / median(t),
                                "all_s": t} for kind, t in kinds.items()} for name, kinds in times.items()}
    ratios = {name: {kind: throughput[name][kind]["per_s"] / throughput["torch-fp32"][kind]["per_s"]
                     for kind in ("queries", "documents")} for name in timed_backends}
    fastest_torch = max(("torch-fp32", *EXTRA), key=lambda n: throughput[n]["documents"]["per_s"])
    int8_vs_fastest_torch = {"torch": fastest_torch, "documents": throughput["onnx-int8"]["documents"]["per_s"]
                             / throughput[fastest_torch]["documents"]["per_s"]}

    quality, vectors = {}, {}
    for name in BACKENDS:
        embedder = embedders[name]
        # keyed by the weights and the export format, so a changed export is never read from an old cache
        cache = workdir / f"{args.data.name}-{name}-{embedder.info()['fingerprint']}-export{EXPORT_VERSION}.npy"
        if cache.exists():
            doc_vectors, seconds = np.load(cache), None
        else:
            log(f"embedding {len(docs)} documents with {name}")
            started = time.perf_counter()
            doc_vectors = np.concatenate([embedder.embed(docs[i:i + 512]) for i in range(0, len(docs), 512)])
            seconds = time.perf_counter() - started
            np.save(cache, doc_vectors)
        vectors[name] = doc_vectors
        query_vectors = embedder.embed(query_texts)
        scores = query_vectors @ doc_vectors.T  # (Q, N)
        top = np.argsort(-scores, axis=1)[:, :100]
        run = {q: [doc_ids[j] for j in top[i]] for i, q in enumerate(qids)}
        result = evaluate(qrels, run, qids)
        quality[name] = {**result["means"], "full_corpus_seconds": seconds,
                         "full_corpus_docs_per_s": len(docs) / seconds if seconds else None,
                         "per_query_ndcg@10": dict(zip(qids, result["per_query"]["ndcg@10"]))}
        log(f"  {name}: nDCG@10 {result['means']['ndcg@10']:.4f}")
    for name in BACKENDS:
        cos = (vectors[name] * vectors["torch-fp32"]).sum(1)
        quality[name]["cosine_to_torch"] = {"mean": float(cos.mean()), "min": float(cos.min())}
        quality[name]["ndcg@10_minus_torch"] = quality[name]["ndcg@10"] - quality["torch-fp32"]["ndcg@10"]

    payload = {**header(argv, {"model": args.model, "reps": args.reps, "sample_docs": len(sample),
                               "queries": len(query_texts), "documents": len(docs),
                               "threads": os.environ.get("RAGTUNE_THREADS") or os.cpu_count()}),
               "benchmark": "onnx-embed", "dataset": args.data.name,
               "dataset_fingerprint": fingerprint([files["corpus"], files["queries"], files["qrels"]], args.data),
               "throughput": throughput, "ratios_vs_torch": ratios, "int8_vs_fastest_torch": int8_vs_fastest_torch,
               "quality": quality,
               "targets": {"int8_documents_speedup_vs_torch": ">= 2.0", "int8_ndcg@10_drop": "<= 0.005"}}
    path = write_result(f"onnx-embed-{args.data.name}", payload)
    for name in timed_backends:
        print(f"{name:17s} docs {throughput[name]['documents']['per_s']:7.1f}/s ({ratios[name]['documents']:.2f}x)  "
              f"queries {throughput[name]['queries']['per_s']:7.1f}/s ({ratios[name]['queries']:.2f}x)  "
              + (f"nDCG@10 {quality[name]['ndcg@10']:.4f}" if name in quality else "(same vectors as torch-fp32)"))
    print(f"onnx-int8 documents vs the fastest torch ({fastest_torch}): {int8_vs_fastest_torch['documents']:.2f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
