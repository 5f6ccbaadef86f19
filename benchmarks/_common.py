"""Shared helpers of the benchmark scripts: machine and version info, dataset fingerprints,
timing statistics and the JSON result files. Benchmarks measure; they are not tests.

Every result file holds: what was run (argv, settings), versions, machine, dataset fingerprint,
repetitions, medians and ratios (see ../shared/BENCHMARKS.md, "Protocol").
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

# Distribution names whose versions go into every result file.
PACKAGES = {
    "ragtune": "ragtune",
    "numpy": "numpy",
    "torch": "torch",
    "faiss": "faiss-cpu",
    "bm25s": "bm25s",
    "sentence-transformers": "sentence-transformers",
    "transformers": "transformers",
    "PyStemmer": "PyStemmer",
    "pytrec-eval-terrier": "pytrec-eval-terrier",
}


def fail(message: str, code: int = 2) -> None:
    """Print a clear message and exit non-zero (missing data, bad arguments)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def ragtune_source_digest() -> str | None:
    """sha256 over ragtune's .py source files (name + content): tells apart runs of an edited
    working tree that all report the same package version."""
    try:
        import ragtune
    except ImportError:
        return None
    root = Path(ragtune.__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for label, dist in PACKAGES.items():
        try:
            out[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[label] = None
    out["ragtune_source_sha256"] = ragtune_source_digest()
    if out.get("faiss") is None:  # faiss-gpu or a conda build
        try:
            import faiss

            out["faiss"] = faiss.__version__
        except ImportError:
            pass
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpu() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:
        pass
    return None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict:
    threads = {}
    try:
        import torch

        threads["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import faiss

        threads["faiss_omp"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpu": _gpu() or "none",
        "memory_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "threads": threads,
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(files: Iterable[Path], root: Path | None = None) -> dict:
    """sha256 of each data file (names relative to `root`) and one combined digest over them."""
    files = sorted(Path(f) for f in files)
    per_file = {}
    for f in files:
        name = f.relative_to(root).as_posix() if root is not None else f.name
        per_file[name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    combined = hashlib.sha256("".join(f"{n}:{v['sha256']}\n" for n, v in per_file.items()).encode()).hexdigest()
    return {"files": per_file, "combined_sha256": combined}


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    """q-th percentile (0-100), linear interpolation (numpy's default)."""
    import numpy as np

    values = list(values)
    return float(np.percentile(values, q)) if values else float("nan")


def latency_summary(seconds: list[float]) -> dict:
    """p50 / p95 / mean / max of per-call seconds, in milliseconds."""
    return {"n": len(seconds), "p50_ms": percentile(seconds, 50) * 1e3, "p95_ms": percentile(seconds, 95) * 1e3,
            "mean_ms": (sum(seconds) / len(seconds) * 1e3) if seconds else float("nan"),
            "max_ms": max(seconds) * 1e3 if seconds else float("nan")}


def limit_blas_threads(n: int | None) -> dict | None:
    """Limit the BLAS (OpenBLAS/MKL) pool of numpy to `n` threads for the rest of the process."""
    if not n:
        return None
    from threadpoolctl import threadpool_limits, threadpool_info

    threadpool_limits(n, user_api="blas")
    return {"blas_threads": n, "pools": [{k: p.get(k) for k in ("internal_api", "num_threads", "version")}
                                          for p in threadpool_info()]}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def header(argv: list[str] | None = None, settings: dict | None = None) -> dict:
    """The common first part of a result file."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv if argv is None else argv),
        "settings": settings or {},
        "versions": versions(),
        "machine": machine(),
    }


def _clean(value):
    """JSON-safe: numpy scalars/arrays to Python, NaN/inf to None."""
    import math

    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if np is not None:
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(name: str, payload: dict, out: Path | None = None) -> Path:
    """Write `payload` to benchmarks/results/<name>.json (or `out`) atomically; returns the path."""
    path = Path(out) if out is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
