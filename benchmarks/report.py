"""Print Markdown tables of the benchmark results in benchmarks/results/*.json.

    python benchmarks/report.py            # all result files
    python benchmarks/report.py FILE...    # just these
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def f(value, digits=3, suffix=""):
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}{suffix}"
    return str(value)


def machine_line(r: dict) -> str:
    m, v = r.get("machine", {}), r.get("versions", {})
    src = f" (source {v['ragtune_source_sha256']})" if v.get("ragtune_source_sha256") else ""
    load = m.get("loadavg_1_5_15")
    load = f"; load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}" if load else ""
    return (f"_{m.get('nproc')} cores ({m.get('cpu_model')}), GPU {m.get('gpu')}; ragtune {v.get('ragtune')}{src}, "
            f"torch {v.get('torch')}, faiss {v.get('faiss')}, bm25s {v.get('bm25s')}, numpy {v.get('numpy')}; "
            f"{r.get('created')}{load}_")


def beir(r: dict, name: str) -> list[str]:
    out = [f"### {name}: {r['dataset']['name']} ({r['dataset']['queries']} queries, k={r['settings']['k']} documents)",
           "", machine_line(r), ""]
    idx = r.get("index", {})
    fresh = idx.get("fresh_build") or {}
    if fresh:
        out.append(f"Index (fresh build): {fresh.get('documents')} documents, {fresh.get('chunks')} chunks in "
                   f"{f(fresh.get('seconds'), 1)} s = {f(fresh.get('chunks_per_s'), 1)} chunks/s "
                   f"({f(fresh.get('documents_per_s'), 1)} documents/s; embedding {f(fresh.get('embed_seconds'), 1)} s).")
        out.append("")
    targets = r.get("targets", {})
    out += ["| mode | nDCG@10 | Recall@100 | MRR@10 | target nDCG@10 | p50 ms | p95 ms | embed p50 ms | search p50 ms | fetch p50 ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, q in r["quality"].items():
        lat = r["latency"][mode]
        t = targets.get(f"{mode}_ndcg@10", {})
        out.append(f"| {mode} | {f(q['ndcg@10'])} | {f(q['recall@100'])} | {f(q['mrr@10'])} | "
                   f"{t.get('target', '–')} ({'met' if t.get('met') else 'not met'}) | "
                   f"{f(lat['total']['p50_ms'], 1)} | {f(lat['total']['p95_ms'], 1)} | "
                   f"{f(lat['stages']['embed']['p50_ms'], 1)} | {f(lat['stages']['search']['p50_ms'], 1)} | "
                   f"{f(lat['stages']['fetch']['p50_ms'], 1)} |")
    if "hybrid_query_p50_ms" in targets:
        t = targets["hybrid_query_p50_ms"]
        out += ["", f"Hybrid query p50 {f(t['value'], 1)} ms, target {t['target']} ms: {'met' if t['met'] else 'not met'}."]
    side = r.get("side_by_side")
    if side:
        out += ["", f"Side by side (same chunks, vectors and queries; {r.get('repetitions')} alternating "
                    f"repetitions of all queries; medians; tokenization timed on both sides):", "",
                "| comparison | ours ms/query | library ms/query | ours/library | target |", "|---|---|---|---|---|"]
        for part in ("search_only", "end_to_end"):
            for cmp_name, row in side.get(part, {}).items():
                if not isinstance(row, dict) or "ratio_ours_over_library" not in row:
                    continue
                t = targets.get(f"{cmp_name}_ratio", {})
                out.append(f"| {cmp_name} | {f(row['median_ms_per_query']['ours'], 3)} | "
                           f"{f(row['median_ms_per_query']['library'], 3)} | {f(row['ratio_ours_over_library'], 2)}x | "
                           f"{t.get('target', '–')} ({'met' if t.get('met') else 'not met'}) |")
        b = side.get("bm25_index_build")
        if b:
            out.append(f"| bm25_index_build ({b['chunks']} chunks, s) | {f(b['median_seconds']['ours'], 3)} | "
                       f"{f(b['median_seconds']['library'], 3)} | {f(b['ratio_ours_over_library'], 2)}x | – |")
        lq = side.get("library_quality")
        if lq:
            out += ["", "Quality of the plain-library pipelines on the same chunks (check): " + "; ".join(
                f"{m} nDCG@10 {f(v['ndcg@10'])}, Recall@100 {f(v['recall@100'])}" for m, v in lq.items()) + "."]
        ag = side.get("agreement")
        if ag:
            out += ["", "Same top-100 chunk set as the library: " + ", ".join(
                f"{k.split('_')[0]} {v['same_set']}/{v['queries']}" for k, v in ag.items() if k.endswith("top100")) + "."]
    return out


def scale(r: dict, name: str) -> list[str]:
    s, h = r["settings"], r["hnsw"]
    mem = h["memory"]
    out = [f"### {name}: dense ANN, N = {s['n']:,} x {r['base']['bytes'] // (4 * s['n'])} "
           f"({s['n_real']:,} real sentence embeddings + perturbed copies; {s['queries']} held-out queries)",
           "", machine_line(r), "",
           f"HNSW via `DenseIndex`: M={s['hnsw_m']}, efConstruction={s['ef_construction']}; build "
           f"{f(h['build_seconds'], 1)} s ({f(h['build_vectors_per_s'], 0)} vectors/s); index memory "
           f"{f(mem['total_bytes'] / 2**20, 0)} MiB (graph {f(mem['graph_bytes'] / 2**20, 0)} MiB, vectors copy "
           f"{f(mem['vectors_bytes'] / 2**20, 0)} MiB) on top of the {f(mem['base_vectors_bytes'] / 2**20, 0)} MiB "
           f"matrix DenseIndex keeps; peak RSS {f(r['peak_rss_mib'], 0)} MiB.", "",
           "| search | recall@10 vs exact | p50 ms | p95 ms |", "|---|---|---|---|",
           f"| exact (DenseIndex, ann off) | 1.000 | {f(r['exact']['latency']['p50_ms'], 2)} | "
           f"{f(r['exact']['latency']['p95_ms'], 2)} |"]
    for row in h["sweep"]:
        out.append(f"| HNSW efSearch={row['ef_search']} | {f(row['recall@10'], 4)} | {f(row['latency']['p50_ms'], 2)} | "
                   f"{f(row['latency']['p95_ms'], 2)} |")
    ts = r.get("exact_topk_distinct_sources")
    if ts:
        out += ["", f"Exact top-10 holds {f(ts['mean'], 2)} distinct source sentences on average "
                    f"({f(100 * ts['share_single_source'], 0)}% of queries: copies of one sentence only), so at this N "
                    f"recall@10 mostly measures whether HNSW reaches the right cluster."]
    side = r["side_by_side"]
    out += ["", f"Recall target {h['recall_target']}: {'met' if h['recall_target_met'] else 'not met'} "
                f"(efSearch {h['chosen']['ef_search']}, {f(h['speedup_over_exact_p50'], 1)}x faster than exact at p50). "
                f"DenseIndex.search vs faiss directly at that efSearch: {f(side['median_ms_per_query']['ours'], 3)} vs "
                f"{f(side['median_ms_per_query']['library'], 3)} ms/query = {f(side['ratio_ours_over_library'], 2)}x "
                f"({side['repetitions']} alternating repetitions, medians)."]
    return out


def pg_scifact(r: dict, name: str) -> list[str]:
    v, mig = r["versions"], r["migration"]
    out = [f"### {name}: SciFact on PostgreSQL + pgvector vs the embedded store ({r['dataset']['queries']} queries, "
           f"k={r['settings']['k']} documents; {r['store']['chunks']:,} chunks copied by `ragtune migrate`)", "",
           machine_line(r), "",
           f"PostgreSQL {v.get('postgresql')} on loopback, pgvector {v.get('pgvector')}, psycopg {v.get('psycopg')}. "
           f"Migration (vectors copied, none re-embedded; HNSW built once at the end): {f(mig['seconds'], 1)} s. "
           f"Stores alternating, {r['repetitions']} repetitions of all queries, per-query latency pooled "
           f"(`Project.search`, query embedding included).", "",
           "| store | mode | nDCG@10 | Recall@100 | MRR@10 | p50 ms | p95 ms | search p50 ms | nDCG@10 - sqlite | p50 / sqlite |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for store, modes in r["results"].items():
        for mode, row in modes.items():
            q, lat = row["quality"], row["latency"]
            gap = r["vs_sqlite"].get(store, {}).get(mode)
            out.append(f"| {store} | {mode} | {f(q['ndcg@10'], 4)} | {f(q['recall@100'], 4)} | {f(q['mrr@10'], 4)} | "
                       f"{f(lat['p50_ms'], 1)} | {f(lat['p95_ms'], 1)} | {f(row['stages_p50_ms']['search'], 1)} | "
                       f"{f(gap['ndcg@10_minus_sqlite'], 4) if gap else '–'} | "
                       f"{f(gap['p50_ratio_over_sqlite'], 2) if gap else '–'} |")
    out += ["", "Targets: " + "; ".join(f"{k} {t['target']}: {f(t['value'], 4)} ({'met' if t['met'] else 'NOT met'})"
                                       for k, t in r["targets"].items())]
    return out


def pg_scale(r: dict, name: str) -> list[str]:
    s, h, v = r["settings"], r["hnsw"], r["versions"]
    out = [f"### {name}: pgvector HNSW, N = {s['n']:,} chunks x 384 ({s['n_real']:,} real sentence embeddings + "
           f"perturbed copies; {s['queries']} held-out queries)", "", machine_line(r), "",
           f"PostgreSQL {v.get('postgresql')}, pgvector {v.get('pgvector')}; m={s['hnsw_m']}, "
           f"ef_construction={s['ef_construction']}, maintenance_work_mem {s['maintenance_work_mem']} "
           f"(graph fit in memory: {f(h['graph_fit_in_maintenance_work_mem'])}). Bulk load {f(r['load']['seconds'], 1)} s, "
           f"HNSW build {f(h['build_seconds'], 1)} s ({f(h['build_vectors_per_s'], 0)} vectors/s); table "
           f"{f(h['table_bytes'] / 2**20, 0)} MiB, index {f(h['index_bytes'] / 2**20, 0)} MiB.", "",
           "| search (one snapshot per query) | recall@10 vs exact | p50 ms | p95 ms |", "|---|---|---|---|",
           f"| exact scan in PostgreSQL ({r['exact']['queries']} queries) | {f(r['exact']['recall@10'], 4)} | "
           f"{f(r['exact']['latency']['p50_ms'], 1)} | {f(r['exact']['latency']['p95_ms'], 1)} |"]
    for row in h["sweep"]:
        out.append(f"| HNSW ef_search={row['ef_search']} | {f(row['recall@10'], 4)} | {f(row['latency']['p50_ms'], 2)} | "
                   f"{f(row['latency']['p95_ms'], 2)} |")
    for label, row in r["filtered_at_chosen"].items():
        out.append(f"| HNSW + iterative scan, {label} | {f(row['recall@10'], 4)} | {f(row['latency']['p50_ms'], 2)} | "
                   f"{f(row['latency']['p95_ms'], 2)} |")
    call = r["search_call_at_chosen"]
    out += ["", f"Recall target {h['recall_target']}: {'met' if h['recall_target_met'] else 'NOT met'} at ef_search "
                f"{h['chosen']['ef_search']}; the whole `search(mode='dense')` call there (hits fetched): p50 "
                f"{f(call['latency']['p50_ms'], 2)} ms, p95 {f(call['latency']['p95_ms'], 2)} ms. Filtered queries short of "
                f"k: " + ", ".join(f"{k}: {row['queries_short_of_k']}" for k, row in r["filtered_at_chosen"].items()) + "."]
    return out


def onnx_embed(r: dict, name: str) -> list[str]:
    s = r["settings"]
    out = [f"### {name}: embedding backends on {r['dataset']} ({s['documents']} documents, {s['queries']} queries)", "",
           machine_line(r), "",
           f"Throughput: {s['reps']} alternating repetitions, medians, over {s['queries']} queries and a fixed sample of "
           f"{s['sample_docs']} full documents. Quality: every document embedded whole (256-token window), exact search.", "",
           "| backend | documents/s | x torch | queries/s | x torch | nDCG@10 | vs torch | Recall@100 | cosine to torch (min) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for backend, t in r["throughput"].items():
        ratio = r["ratios_vs_torch"][backend]
        q = r["quality"].get(backend)  # throughput-only rows (torch at another batch size) have no quality
        quality = (f"{f(q['ndcg@10'], 4)} | {q['ndcg@10_minus_torch']:+.4f} | {f(q['recall@100'], 3)} | "
                   f"{f(q['cosine_to_torch']['min'], 4)}") if q else "same vectors as torch-fp32 | | |"
        out.append(f"| {backend} | {f(t['documents']['per_s'], 1)} | {f(ratio['documents'], 2)}x | {f(t['queries']['per_s'], 1)} | "
                   f"{f(ratio['queries'], 2)}x | {quality} |")
    fastest = r.get("int8_vs_fastest_torch")
    if fastest:
        out += ["", f"onnx-int8 on documents vs the fastest torch ({fastest['torch']}): {f(fastest['documents'], 2)}x."]
    return out


def squad_rag(r: dict, name: str) -> list[str]:
    d = r["dataset"]
    out = [f"### {name}: SQuAD v1.1 dev as RAG ({d['paragraphs']} paragraphs = knowledge base, {d['questions']} questions; "
           f"extractive generator, k=5)", "", machine_line(r), "",
           "| mode | Recall@1 | Recall@5 | cited sentence contains answer | EM | F1 | abstained | "
           "overhead p50 / p95 ms | generate p50 / p95 ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    for mode, m in r["results"].items():
        o, g = m["latency"]["overhead"], m["latency"]["generate"]
        out.append(f"| {mode} | {f(m['recall@1'])} | {f(m['recall@5'])} | {f(m['cited_contains_answer'])} | "
                   f"{f(m['exact_match'])} | {f(m['f1'])} | {f(m['abstained'])} | {f(o['p50_ms'], 1)} / {f(o['p95_ms'], 1)} | "
                   f"{f(g['p50_ms'], 1)} / {f(g['p95_ms'], 1)} |")
    if r.get("targets"):
        out += ["", "Targets: " + "; ".join(f"{k} {t['target']}: {f(t['value'])} ({'met' if t['met'] else 'NOT met'})"
                                             for k, t in r["targets"].items())]
    return out


def serve_load(r: dict, name: str) -> list[str]:
    p, s, c, h, i = r["project"], r["search"], r["chat"], r["health"], r["in_process_search"]
    out = [f"### {name}: `ragtune serve` on loopback ({p['documents']} documents, {p['chunks']} chunks; "
           f"{p['embedder']['backend']} embedder, {p['generator']} generator, {p['mode']}, k={p['k']})", "",
           machine_line(r), "",
           "| load | requests | concurrency | errors | req/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|---|"]
    for label, x in (("POST /search", s), ("POST /v1/chat/completions", c)):
        out.append(f"| {label} | {x['requests']} | {x['concurrency']} | {x['errors']} | {f(x['throughput_rps'], 1)} | "
                   f"{f(x['latency']['p50_ms'], 1)} | {f(x['latency']['p95_ms'], 1)} |")
    load = h["during_load"]
    out += ["", f"`/health` during the load: p50 {f(load['p50_ms'], 1)} ms, p99 {f(load['p99_ms'], 1)} ms "
                f"({load['n']} samples). The same searches in-process: {f(i['sequential']['throughput_rps'], 1)} req/s "
                f"one at a time, {f(i['threaded']['throughput_rps'], 1)} req/s with {i['threaded']['threads']} threads.", "",
            "Targets: " + "; ".join(f"{k} {t['target']}: {f(t['value'])} ({'met' if t['met'] else 'NOT met'})"
                                   for k, t in r["targets"].items())]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    files = args.files or sorted(RESULTS.glob("*.json"))
    if not files:
        print(f"no result files in {RESULTS}; run a benchmark first", file=sys.stderr)
        return 1
    lines: list[str] = []
    for path in files:
        r = json.loads(path.read_text())
        kind = r.get("benchmark")
        if kind == "beir":
            lines += beir(r, path.stem)
        elif kind == "scale":
            lines += scale(r, path.stem)
        elif kind == "pg-scifact":
            lines += pg_scifact(r, path.stem)
        elif kind == "pg-scale":
            lines += pg_scale(r, path.stem)
        elif kind == "onnx-embed":
            lines += onnx_embed(r, path.stem)
        elif kind == "squad-rag":
            lines += squad_rag(r, path.stem)
        elif kind == "serve-load" or (kind is None and "in_process_search" in r):
            lines += serve_load(r, path.stem)
        else:
            continue
        lines.append("")
    print("\n".join(lines).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
