"""Load on `ragtune serve` over loopback: /search and chat throughput and latency, /health latency
under that load, and HTTP search throughput against the same searches called in-process.

    python benchmarks/serve_load.py [--project FOLDER | --workdir DIR] [--search 2000] [--chat 200]

1. A project: `--project` (already indexed), or one built in `--workdir` (default: a temp dir)
   from examples/docs with the default config (the README quickstart: MiniLM, ONNX int8 on CPU),
   or `--embedder hashing` for a quick smoke run.
2. The server runs in its own process (`ragtune.cli_serve.serve`, 127.0.0.1, a free port) with
   one read key without groups, passed in $RAGTUNE_API_KEYS. A third process samples /health
   every 20 ms for the whole load.
3. Warm-up (not counted), then `--search` POST /search at `--concurrency` (asyncio workers, one
   keep-alive connection each, through a minimal HTTP/1.1 client so the load generator takes as
   little of the shared CPU as possible), then `--chat` POST /v1/chat/completions (the project's generator:
   extractive by default) at the same concurrency. Queries are the first words of the project's
   chunks, cycled; chat questions are the same queries.
4. The server is stopped, and the same searches (same queries, mode, k, groups=[] as for a key
   without groups) are run in this process: once one at a time and once from `--concurrency`
   threads; the HTTP/in-process ratio is taken against the faster of the two.
Writes benchmarks/results/serve-load.json (or --out). Targets: zero errors; HTTP /search
throughput >= 0.7x in-process; /health p99 <= 50 ms during the load.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, header, latency_summary, log, percentile, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"http_vs_in_process_search_throughput": 0.7, "health_p99_ms": 50.0, "errors": 0}
SERVER = ("import sys; from ragtune.project import Project; from ragtune.cli_serve import serve; "
          "serve(Project.open(sys.argv[1]), port=int(sys.argv[2]), log_level='error')")


def summary(seconds: list[float]) -> dict:
    return {**latency_summary(seconds), "p99_ms": percentile(seconds, 99) * 1e3}


def build_project(folder: Path, embedder: str):
    from ragtune.config import write_starter
    from ragtune.project import Project

    if not (folder / "ragtune.yaml").exists():
        if embedder == "hashing":
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "ragtune.yaml").write_text("embedder: {backend: hashing, dimension: 256}\n")
        else:
            write_starter(folder)
    project = Project.open(folder)
    started = time.perf_counter()
    report = project.index([str(ROOT / "examples" / "docs")], progress=False)
    log(f"indexed examples/docs into {folder}: {report.documents_written} written in {time.perf_counter() - started:.1f} s")
    return project


def queries_of(project, limit: int = 400) -> list[str]:
    """Deterministic queries: the first 6 words of the project's chunks (at most `limit`)."""
    rows = project.store(create_if_missing=False).conn.execute("SELECT text FROM chunks ORDER BY rowid").fetchall()
    out = []
    for (text,) in rows:
        words = [w.strip("`*#|>[](),:;") for w in text.split()]
        words = [w for w in words if w and any(c.isalnum() for c in w)][:6]
        if len(words) >= 3:
            out.append(" ".join(words))
    if not out:
        fail(f"{project.folder}: no chunks to build queries from; index documents first")
    return out[:limit]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail(f"the server exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    fail(f"the server at {url} did not become healthy within {timeout:.0f} s")


def probe(url: str) -> None:
    """--probe mode: GET /health every 20 ms over one keep-alive connection (http.client: a light
    client, so the figure is the server's); a line on stdin names the phase, EOF stops. Prints
    'ready' once the first probe succeeded, then at the end {"samples": {phase: [s, ...]}, "errors": n}."""
    import http.client

    host, port = url.rsplit("/", 1)[-1].split(":")
    phase, stop, samples, errors = ["idle"], threading.Event(), {}, [0]

    def read_phases():
        for line in sys.stdin:
            phase[0] = line.strip() or phase[0]
        stop.set()

    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    ready = False
    threading.Thread(target=read_phases, daemon=True).start()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
        elapsed = time.perf_counter() - started
        if ok:
            samples.setdefault(phase[0], []).append(elapsed)
            if not ready:
                print("ready", flush=True)
                ready = True
        else:
            errors[0] += 1
        time.sleep(max(0.0, 0.02 - elapsed))
    print(json.dumps({"samples": samples, "errors": errors[0]}), flush=True)


class Connection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator shares the
    machine with the server, so it should cost as little CPU per request as possible (like wrk)."""

    def __init__(self, host: str, port: int, key: str):
        self.host, self.port, self.key = host, port, key
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {self.key}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in headers:
            raise RuntimeError(f"{path}: response without Content-Length ({lines[0]})")
        payload = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.reader = self.writer = None
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(url: str, key: str, requests: list[tuple[str, dict]], concurrency: int) -> dict:
    """Send `requests` (path, JSON body) with `concurrency` workers, one connection each;
    latencies, errors and wall time. A response counts when it is 200 and parses as JSON."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    latencies, errors, queue = [], [], list(reversed(requests))

    async def worker():
        connection = Connection(host, int(port), key)
        try:
            while queue:
                path, body = queue.pop()
                started = time.perf_counter()
                try:
                    status, payload = await connection.post(path, body)
                    json.loads(payload)
                except Exception as exc:  # counted, reported; the run goes on with a new connection
                    errors.append(f"{type(exc).__name__}: {exc}")
                    connection.close()
                    connection = Connection(host, int(port), key)
                    continue
                if status != 200:
                    errors.append(f"{status}: {payload[:200]!r}")
                    continue
                latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {"requests": len(requests), "concurrency": concurrency, "ok": len(latencies), "errors": len(errors),
            "error_examples": errors[:5], "seconds": wall, "throughput_rps": len(latencies) / wall,
            "latency": summary(latencies)}


def in_process(project, bodies: list[dict], concurrency: int) -> dict:
    """The same searches through Project.search in this process: sequential and threaded."""
    def one(body):
        project.search(body["query"], mode=body["mode"], k=body["k"], groups=[])

    for body in bodies[:50]:  # warm-up, as the server had
        one(body)
    started = time.perf_counter()
    latencies = []
    for body in bodies:
        t = time.perf_counter()
        one(body)
        latencies.append(time.perf_counter() - t)
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies))
    threaded = time.perf_counter() - started
    return {"sequential": {"seconds": sequential, "throughput_rps": len(bodies) / sequential, "latency": summary(latencies)},
            "threaded": {"threads": concurrency, "seconds": threaded, "throughput_rps": len(bodies) / threaded}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="an indexed project folder to serve (default: build one)")
    parser.add_argument("--workdir", type=Path, help="build/reuse the project here (default: a temp dir)")
    parser.add_argument("--embedder", default="auto", choices=["auto", "hashing"],
                        help="embedder of a built project: auto (the default config) or hashing (smoke runs)")
    parser.add_argument("--search", type=int, default=2000, help="POST /search requests")
    parser.add_argument("--chat", type=int, default=200, help="POST /v1/chat/completions requests")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", default=None, help="search mode (default: the project's retrieval.mode)")
    parser.add_argument("-k", type=int, default=10, help="hits per search")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/serve-load.json)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: the /health sampler process
    args = parser.parse_args(argv)
    if args.probe:
        return probe(args.probe)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ragtune.project import Project

    tmp = None
    if args.project:
        project = Project.open(args.project)
    else:
        folder = args.workdir or Path(tmp := tempfile.mkdtemp(prefix="ragtune-serve-load-"))
        project = build_project(Path(folder) / "kb" if args.workdir is None else Path(folder), args.embedder)
    store = project.store(create_if_missing=False)
    mode = args.mode or project.config.retrieval.mode
    queries = queries_of(project)
    searches = [{"query": queries[i % len(queries)], "mode": mode, "k": args.k} for i in range(args.search)]
    chats = [{"model": "ragtune-rag", "messages": [{"role": "user", "content": queries[i % len(queries)] + "?"}]}
             for i in range(args.chat)]
    key = "rtk_" + secrets.token_urlsafe(32)
    url = f"http://127.0.0.1:{(port := free_port())}"
    env = {**os.environ, "RAGTUNE_API_KEYS": f"{key}||read|bench"}
    log(f"serving {project.folder} ({store.count_documents()} documents, {store.count_chunks()} chunks) on {url}")
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(project.folder), str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    prober = None
    try:
        wait_healthy(url, server)
        asyncio.run(load(url, key, [("/search", b) for b in searches[:50]] +
                         [("/v1/chat/completions", c) for c in chats[:5]], args.concurrency))  # warm-up
        prober = subprocess.Popen([sys.executable, __file__, "--probe", url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        if prober.stdout.readline().strip() != "ready":
            fail("the /health sampler did not start")
        prober.stdin.write("search\n")
        prober.stdin.flush()
        log(f"{args.search} searches ({mode}, k={args.k}) at concurrency {args.concurrency}")
        search = asyncio.run(load(url, key, [("/search", b) for b in searches], args.concurrency))
        log(f"search: {search['throughput_rps']:.0f} req/s, p50 {search['latency']['p50_ms']:.1f} ms, "
            f"p95 {search['latency']['p95_ms']:.1f} ms, errors {search['errors']}")
        prober.stdin.write("chat\n")
        prober.stdin.flush()
        log(f"{args.chat} chat requests ({project.config.generator.backend}) at concurrency {args.concurrency}")
        chat = asyncio.run(load(url, key, [("/v1/chat/completions", c) for c in chats], args.concurrency))
        log(f"chat: {chat['throughput_rps']:.1f} req/s, p50 {chat['latency']['p50_ms']:.1f} ms, "
            f"p95 {chat['latency']['p95_ms']:.1f} ms, errors {chat['errors']}")
        prober.stdin.close()
        health_raw = json.loads(prober.stdout.read().strip().splitlines()[-1])
        prober.wait(timeout=30)
    finally:
        if prober is not None and prober.poll() is None:
            prober.kill()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    health = {phase: summary(samples) for phase, samples in health_raw["samples"].items()}
    loaded = health_raw["samples"].get("search", []) + health_raw["samples"].get("chat", [])
    health["during_load"] = summary(loaded)
    health["errors"] = health_raw["errors"]
    log(f"/health during the load: p50 {health['during_load']['p50_ms']:.1f} ms, "
        f"p99 {health['during_load']['p99_ms']:.1f} ms over {len(loaded)} samples")
    log("the same searches in-process (server stopped)")
    local = in_process(project, searches, args.concurrency)
    best = max(local["sequential"]["throughput_rps"], local["threaded"]["throughput_rps"])
    ratio = search["throughput_rps"] / best
    log(f"in-process: {local['sequential']['throughput_rps']:.0f} req/s sequential, "
        f"{local['threaded']['throughput_rps']:.0f} req/s with {args.concurrency} threads; HTTP/in-process {ratio:.2f}x")
    errors = search["errors"] + chat["errors"] + health["errors"]
    results = {
        "project": {"folder": str(project.folder) if args.project else "(built from examples/docs)",
                    "documents": store.count_documents(), "chunks": store.count_chunks(),
                    "embedder": project.embedder.info(), "generator": project.config.generator.backend,
                    "mode": mode, "k": args.k, "distinct_queries": len(queries)},
        "search": search, "chat": chat, "health": health, "in_process_search": local,
        "ratios": {"http_vs_in_process_search_throughput": ratio},
        "targets": {
            "errors": {"target": 0, "value": errors, "met": errors == 0},
            "http_vs_in_process_search_throughput": {"target": TARGETS["http_vs_in_process_search_throughput"],
                                                     "value": ratio, "met": ratio >= TARGETS["http_vs_in_process_search_throughput"]},
            "health_p99_ms": {"target": TARGETS["health_p99_ms"], "value": health["during_load"]["p99_ms"],
                              "met": health["during_load"]["p99_ms"] <= TARGETS["health_p99_ms"]}},
    }
    payload = header(sys.argv if argv is None else ["benchmarks/serve_load.py", *argv], settings={
        "search_requests": args.search, "chat_requests": args.chat, "concurrency": args.concurrency,
        "embedder_option": args.embedder, "loopback": True, "server_worker_threads": 4})
    payload["benchmark"] = "serve-load"
    payload.update(results)
    payload["machine_end_loadavg"] = list(os.getloadavg())
    name = "serve-load" if (args.search, args.chat) == (2000, 200) and not args.project else \
        f"serve-load-s{args.search}-c{args.chat}"
    path = write_result(name, payload, args.out)
    log(f"wrote {path}; targets: " + ", ".join(f"{k} {'met' if v['met'] else 'NOT met'} ({v['value']:.3g})"
                                              for k, v in results["targets"].items()))
    project.close()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
