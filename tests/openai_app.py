"""A small OpenAI-compatible server for tests: real model output over real HTTP, with fault injection.

`POST /v1/chat/completions` (JSON, or SSE with `stream: true`) and `GET /v1/models`, answered by the
tiny Llama through ragtune's own HFGenerator, so the bytes are real model output.

>>> with openai_server(tiny_llama) as server:                       # doctest: +SKIP
...     server.fail_next(429, 503)              # the next two /v1 requests fail with these statuses
...     OpenAIGenerator(GeneratorConfig(backend="openai", base_url=server.base_url)).generate(prompt)
...     server.requests                         # /v1 requests seen, failed ones included
3
"""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ragtune.config import GeneratorConfig
from ragtune.errors import RagtuneError
from ragtune.generate.base import Generation, Prompt
from ragtune.generate.hf import HFGenerator


@dataclass
class ServerState:
    """What a test reads and sets while the server runs. Settings apply to later requests."""

    model_dir: Path
    model_name: str = "tiny-llama"
    api_key: str | None = None  # when set, /v1 requests need "Authorization: Bearer <api_key>"
    reject_stream_options: bool = False  # answer 400 to requests carrying stream_options (older servers)
    delay: float = 0.0  # seconds to wait before answering a chat request
    empty_stream: bool = False  # answer streaming requests with 200 and no events at all (a broken server)
    retry_after_ms: int | None = 10  # Retry-After-Ms on injected failures (keeps retry tests fast)
    extra_models: list[str] = field(default_factory=list)  # listed by /v1/models besides model_name
    base_url: str = ""
    requests: int = 0  # /v1 requests seen, failed ones included
    failures: list[int] = field(default_factory=list)  # statuses for the next /v1 requests
    bodies: list[dict] = field(default_factory=list)  # chat request bodies, in order
    _generators: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, *statuses: int) -> None:
        """Fail the next len(statuses) /v1 requests, one status each."""
        with self._lock:
            self.failures.extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self.api_key, self.reject_stream_options, self.delay, self.retry_after_ms = None, False, 0.0, 10
            self.empty_stream = False
            self.requests, self.failures, self.bodies, self.extra_models = 0, [], [], []

    def generator(self, max_tokens: int, temperature: float, top_p: float) -> HFGenerator:
        """An HFGenerator for these settings (the tiny model loads in milliseconds)."""
        key = (max_tokens, temperature, top_p)
        with self._lock:
            if key not in self._generators:
                config = GeneratorConfig(backend="hf", model=str(self.model_dir), max_new_tokens=max_tokens,
                                         temperature=temperature, top_p=top_p, device="cpu")
                self._generators[key] = HFGenerator(config)
            return self._generators[key]


def _error(status: int, message: str, kind: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status, headers=headers)


def _usage(generation: Generation) -> dict:
    usage = generation.usage
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def _sse(items: Iterator, model: str, include_usage: bool) -> Iterator[str]:
    """OpenAI's chunk stream: a role chunk, content deltas, a finish chunk, [usage chunk], [DONE]."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def event(choices: list, usage: dict | None = None) -> str:
        data = {**head, "choices": choices, **({"usage": usage} if include_usage else {})}
        return f"data: {json.dumps(data)}\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    final = None
    for item in items:
        if isinstance(item, Generation):
            final = item
        else:
            yield event([{"index": 0, "delta": {"content": item}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": final.finish_reason}])
    if include_usage:
        yield event([], _usage(final))
    yield "data: [DONE]\n\n"


def create_app(state: ServerState):
    """The FastAPI app serving `state.model_dir` as `state.model_name`."""
    from fastapi import Body, FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.middleware("http")
    async def faults_and_auth(request: Request, call_next):
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        with state._lock:
            state.requests += 1
            status = state.failures.pop(0) if state.failures else None
        if status is not None:
            headers = {"retry-after-ms": str(state.retry_after_ms)} if state.retry_after_ms is not None else None
            return _error(status, f"injected failure {status}", "server_error", headers)
        if state.api_key and request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error")
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ragtune-tests"}
                                           for name in [state.model_name, *state.extra_models]]}

    @app.post("/v1/chat/completions")
    def chat_completions(body: dict[str, Any] = Body(...)):
        state.bodies.append(body)
        model = body.get("model")
        if model != state.model_name:
            return _error(404, f"The model `{model}` does not exist.", "invalid_request_error")
        if body.get("stream_options") is not None and state.reject_stream_options:
            return _error(400, "Unrecognized request argument supplied: stream_options", "invalid_request_error")
        if state.delay:
            time.sleep(state.delay)
        if body.get("stream") and state.empty_stream:
            return StreamingResponse(iter([]), media_type="text/event-stream")
        generator = state.generator(body.get("max_tokens") or 16, float(body.get("temperature", 1.0)),
                                    float(body.get("top_p", 1.0)))
        prompt = Prompt(question="", sources=[], messages=body["messages"])
        try:  # like vLLM, refuse a request the model cannot take (e.g. too long) before streaming
            if body.get("stream"):
                items = generator.stream(prompt)
                first = next(items)
            else:
                generation = generator.generate(prompt)
        except RagtuneError as exc:
            return _error(400, str(exc), "invalid_request_error")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_sse(itertools.chain([first], items), model, include_usage),
                                     media_type="text/event-stream")
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "usage": _usage(generation),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                             "finish_reason": generation.finish_reason}]}

    return app


@contextmanager
def openai_server(model_dir: Path, **settings: Any) -> Iterator[ServerState]:
    """Serve `model_dir` with uvicorn on 127.0.0.1 (a free port) in a thread; yield its state."""
    import httpx
    import uvicorn

    state = ServerState(model_dir=Path(model_dir), **settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # held from here on, so no other process can take the port
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="openai-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{host}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test OpenAI server on port {port} did not start")
            time.sleep(0.02)
        state.base_url = f"http://{host}:{port}/v1"
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
