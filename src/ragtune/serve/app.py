"""The HTTP server: an OpenAI-compatible chat API answered by the project's RAG pipeline, plus
search, document management, embeddings, comparison reports and a one-page web UI.

Every route but /health (and the static UI page, which holds no data) needs an API key
(`Authorization: Bearer <key>`); the key's groups bound every search, answer and listing, and
writes need its write scope. Limits (body size, k, max_tokens, messages, time) come from the
project's `server:` config; bad input gets a 4xx JSON error `{"error": {"message", "type"}}`.
Pieces: serve/guard.py (keys, limits, errors), serve/schemas.py (request/response models),
serve/service.py (the library calls), serve/ui/ (the page).

>>> app = create_app(Project.open("demo-kb"))            # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)         # doctest: +SKIP
"""
# No `from __future__ import annotations`: the request models are built inside create_app (their
# limits come from the settings), and FastAPI resolves string annotations from module globals only.
import asyncio
import base64
import contextlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import ValidationError

from ragtune.config import ServerConfig
from ragtune.errors import InputError, RagtuneError
from ragtune.serve.auth import ApiKey, KeyStore
from ragtune.serve.guard import (ApiError, Guard, current_key, install_error_handlers, ragtune_status,
                                 validation_response, writer_key)
from ragtune.serve.schemas import (CHAT_MODEL, MAX_EMBED_INPUTS, AssistantMessage, ChatChoice, ChatCompletion,
                                   ChunkOut, ClassifyItem, ClassifyResponse, Deleted, DocumentDetail, DocumentList, DocumentOut,
                                   DocumentsIn, DocumentUpload, EmbeddingItem, EmbeddingList, Health, ModelCard,
                                   ModelList, ReportInfo, ReportList, SearchResponse, TokenUsage, WriteResult,
                                   error_responses, request_models)
from ragtune.serve.service import Service, hit_out, ragtune_extra, usage_of, visible_groups

UI_DIR = Path(__file__).resolve().parent / "ui"
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def create_app(project, settings: ServerConfig | None = None, keys: KeyStore | None = None) -> FastAPI:
    """The FastAPI app serving `project` (keys: `<project>/keys.json` and $RAGTUNE_API_KEYS)."""
    from ragtune.rag import retrieval_query

    settings = settings or project.config.server
    keys = keys or KeyStore(project.folder)
    service = Service(project, settings)
    ChatRequest, SearchRequest, EmbeddingsRequest, ClassifyRequest = request_models(settings)
    pool: list[ThreadPoolExecutor] = []  # made on first use; a restarted app gets a new one

    async def run(fn, *args):
        """Run blocking library code in a worker thread. Few threads: the store serialises searches
        anyway, and every extra thread contends for the GIL with the event loop (and /health)."""
        if not pool:
            pool.append(ThreadPoolExecutor(settings.worker_threads or min(4, os.cpu_count() or 1),
                                           thread_name_prefix="ragtune-serve"))
        return await asyncio.get_running_loop().run_in_executor(pool[0], fn, *args)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if pool:  # running calls finish; queued ones are dropped
            pool.pop().shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="ragtune", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="OpenAI-compatible chat answered with cited sources from your documents, plus search "
                              "and document management. Every route except /health needs an API key "
                              "(`Authorization: Bearer <key>`); the key's groups bound what it sees.")
    install_error_handlers(app)
    app.add_middleware(Guard, keys=keys, settings=settings)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.state.service, app.state.keys = service, keys

    @app.get("/health", response_model=Health, tags=["server"])
    async def health():
        """Liveness; needs no key and says nothing about the data."""
        return Health()

    # --- OpenAI-compatible -------------------------------------------------------------------
    def model_cards() -> list[ModelCard]:
        return [ModelCard(id=CHAT_MODEL), ModelCard(id=service.embedder.info()["model"])]

    @app.get("/v1/models", response_model=ModelList, responses=error_responses(), tags=["openai"])
    async def list_models(key: ApiKey = Depends(current_key)):
        """The served models: the RAG strategy (chat) and the embedder (embeddings)."""
        return ModelList(data=model_cards())

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=error_responses(404), tags=["openai"])
    async def get_model(model_id: str, key: ApiKey = Depends(current_key)):
        for card in model_cards():
            if card.id == model_id:
                return card
        raise ApiError(404, f"the model '{model_id}' does not exist; see /v1/models", "not_found_error", "model")

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["openai"],
              responses={**error_responses(400, 404, 409, 502),
                         200: {"description": "A chat completion; with `stream: true`, server-sent events of "
                                              "chat.completion.chunk objects (the last one carries `ragtune`).",
                               "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
    async def chat_completions(body: ChatRequest, key: ApiKey = Depends(current_key)):
        """Answer the last user message from the knowledge base (cited; `ragtune` holds the
        citations and sources). Earlier turns make the retrieval query of a follow-up question."""
        if body.model != CHAT_MODEL:
            raise ApiError(404, f"the model '{body.model}' does not exist or is not a chat model; use "
                                f"'{CHAT_MODEL}' (see /v1/models)", "not_found_error", "model")
        question, history = service.conversation(body.messages)
        options = body.ragtune.model_dump(exclude_none=True) if body.ragtune else {}
        options.update(groups=key.groups, retrieval_query=retrieval_query(question, history))
        rag = service.rag_for(body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p)
        if not body.stream:
            answer = await run(lambda: rag.ask(question, history, **options))
            return ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=CHAT_MODEL,
                                  choices=[ChatChoice(message=AssistantMessage(content=answer.text))],
                                  usage=usage_of(answer), ragtune=ragtune_extra(answer))
        items = rag.ask_stream(question, history, stream=True, **options)
        done = object()
        first = await run(next, items, done)  # retrieval errors become 4xx before the stream starts
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(first, items, done, run, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.post("/v1/embeddings", response_model=EmbeddingList, responses=error_responses(400, 404), tags=["openai"])
    async def embeddings(body: EmbeddingsRequest, key: ApiKey = Depends(current_key)):
        """Vectors from the project's embedder (unit length)."""
        info = service.embedder.info()
        if body.model not in (info["model"],):
            raise ApiError(404, f"the model '{body.model}' is not served for embeddings; use '{info['model']}'",
                           "not_found_error", "model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or len(texts) > MAX_EMBED_INPUTS or any(not t for t in texts):
            raise ApiError(400, f"input must be 1 to {MAX_EMBED_INPUTS} non-empty texts", param="input")
        if body.dimensions is not None and body.dimensions != info["dimension"]:
            raise ApiError(400, f"dimensions: this embedder makes {info['dimension']}-dim vectors", param="dimensions")
        vectors, spans = await run(lambda: (service.embedder.embed(texts), service.embedder.token_spans(texts)))
        tokens = sum(len(s) for s in spans)
        data = [EmbeddingItem(index=i, embedding=(base64.b64encode(v.astype("<f4").tobytes()).decode()
                                                  if body.encoding_format == "base64" else v.tolist()))
                for i, v in enumerate(vectors)]
        return EmbeddingList(data=data, model=info["model"], usage=TokenUsage(prompt_tokens=tokens, total_tokens=tokens))

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=error_responses(400, 409), tags=["openai"])
    async def classify(body: ClassifyRequest, key: ApiKey = Depends(current_key)):
        """Labels from the adopted classify strategy (classification projects)."""
        classifier = service.classifier()
        if classifier is None:
            raise ApiError(409, "no classify strategy adopted in this project; run `ragtune compare` on a classify "
                                "task and adopt its recommendation first", "not_configured")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or len(texts) > settings.max_k:
            raise ApiError(400, f"input: give 1 to {settings.max_k} texts (server.max_k)", "invalid_request_error")
        probabilities = await run(classifier.probabilities, texts)
        labels = classifier.labels
        return ClassifyResponse(model=f"ragtune-classify-{classifier.strategy}", data=[
            ClassifyItem(index=i, label=labels[int(p.argmax())], scores={l: float(v) for l, v in zip(labels, p)})
            for i, p in enumerate(probabilities)])

    # --- search and documents -------------------------------------------------------------------
    @app.post("/search", response_model=SearchResponse, responses=error_responses(400, 409), tags=["knowledge"])
    async def search(body: SearchRequest, key: ApiKey = Depends(current_key)):
        """Ranked chunks (or documents) for a query, only from documents the key may see."""
        mode = body.mode or project.config.retrieval.mode
        k = min(body.k or project.config.retrieval.k, settings.max_k)

        def do():
            trace: dict = {}
            if not service.store.count_chunks():
                return [], trace
            return project.search(body.query, mode=mode, k=k, where=body.where, groups=key.groups, unit=body.unit,
                                  trace=trace), trace

        hits, trace = await run(do)
        return SearchResponse(query=body.query, mode=mode, k=k, hits=[hit_out(h) for h in hits],
                              timings_ms={s: round(v * 1000, 3) for s, v in trace.items()})

    @app.get("/documents", response_model=DocumentList, responses=error_responses(400), tags=["knowledge"])
    async def list_documents(key: ApiKey = Depends(current_key),
                             limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
                             where: Optional[List[str]] = Query(None, description="Metadata filter key=value (repeatable).")):
        """Documents the key may see, by id."""
        filters = _parse_where(where)
        docs = await run(lambda: service.store.list_documents(filters, key.groups, limit=limit, offset=offset))
        out = [DocumentOut(id=d.id, title=d.title, source=d.source, metadata=d.metadata,
                           groups=visible_groups(d.groups, key), chunk_count=d.chunk_count) for d in docs]
        return DocumentList(documents=out, limit=limit, offset=offset,
                            next_offset=offset + limit if len(out) == limit else None)

    @app.get("/documents/{doc_id:path}", response_model=DocumentDetail, responses=error_responses(404), tags=["knowledge"])
    async def get_document(doc_id: str, key: ApiKey = Depends(current_key)):
        """A document the key may see, with its chunks."""
        found = await run(lambda: service.store.get_document(doc_id, key.groups))
        if found is None:
            raise ApiError(404, f"no document '{doc_id}' visible to this key", "not_found_error")
        doc, chunks = found
        return DocumentDetail(id=doc.id, title=doc.title, source=doc.metadata.get("source"), metadata=doc.metadata,
                              groups=visible_groups(doc.groups, key), chunk_count=len(chunks),
                              chunks=[ChunkOut(id=c.id, index=c.index, text=c.text, section=c.section, page=c.page)
                                      for c in chunks])

    @app.post("/documents", response_model=WriteResult, responses=error_responses(400, 403, 415), tags=["knowledge"])
    async def upload_documents(request: Request, key: ApiKey = Depends(writer_key)):
        """Add or replace documents: JSON `{"documents": [...]}` or a multipart file upload.
        Groups default to the key's groups and must be among them (write scope needed)."""
        from ragtune.types import Document, Section

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                parsed = DocumentsIn.model_validate_json(await request.body())
            except ValidationError as exc:
                return validation_response(exc.errors())
            for n, d in enumerate(parsed.documents):
                if not d.text.strip():
                    raise ApiError(400, f"document '{d.id}': empty text", param=f"documents.{n}.text")
            documents = [Document(id=d.id, title=d.title, sections=[Section(d.text.strip())],
                                  metadata={"source": d.id, **d.metadata},
                                  groups=key.groups if d.groups is None else _groups(",".join(d.groups), d.groups))
                         for d in parsed.documents]
            problems: list[str] = []
        elif kind == "multipart/form-data":
            files, fields = await _read_form(request)
            groups = key.groups if fields.get("groups") is None else _groups(fields["groups"])
            documents, problems = await run(service.documents_from_files, files, fields.get("id"), groups,
                                            _metadata_field(fields.get("metadata")))
            if not documents:
                raise ApiError(400, "nothing to index: " + ("; ".join(problems) or "no files"), param="files")
        else:
            raise ApiError(415, "send application/json ({\"documents\": [...]}) or multipart/form-data (files)")
        result = await run(service.upsert, documents, key)
        result.skipped = problems
        return result

    @app.delete("/documents/{doc_id:path}", response_model=Deleted, responses=error_responses(403, 404), tags=["knowledge"])
    async def delete_document(doc_id: str, key: ApiKey = Depends(writer_key)):
        """Remove a document from every index (write scope; the key must hold all its groups)."""
        await run(service.delete, doc_id, key)
        return Deleted(deleted=doc_id)

    # --- comparison reports -------------------------------------------------------------------
    def report_files(key: ApiKey) -> dict[str, Path]:
        if not key.write:  # reports quote questions and answers from every compared document, whatever their groups
            raise ApiError(403, "comparison reports quote every compared document: they need a key with the write "
                                "scope (ragtune keys create --write)", "permission_error")
        folder = service.reports_dir()
        if not folder.is_dir():
            return {}
        return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".json", ".html")}

    @app.get("/reports", response_model=ReportList, responses=error_responses(403, 404), tags=["reports"])
    async def list_reports(key: ApiKey = Depends(current_key)):
        """The files of the last `ragtune compare` (report.html, comparison.json, <strategy>.json in
        <project>/results); write-scope keys only."""
        files = report_files(key)
        if not files:
            raise ApiError(404, "no reports yet: run `ragtune compare` to measure strategies side by side",
                           "not_found_error")
        return ReportList(reports=[ReportInfo(id=name, format=p.suffix[1:], bytes=p.stat().st_size,
                                              modified=p.stat().st_mtime) for name, p in files.items()])

    @app.get("/reports/{report_id}", responses={**error_responses(403, 404), 200: {
        "description": "The report: JSON, or HTML served with a sandboxing Content-Security-Policy.",
        "content": {"application/json": {"schema": {"type": "object"}}, "text/html": {"schema": {"type": "string"}}}}},
        tags=["reports"])
    async def get_report(report_id: str, key: ApiKey = Depends(current_key)):
        """One report by its id from /reports."""
        path = report_files(key).get(report_id)
        if path is None:
            raise ApiError(404, f"no report '{report_id}'; see /reports", "not_found_error")
        if path.suffix == ".html":
            return HTMLResponse(path.read_text(encoding="utf-8", errors="replace"),
                                headers={"Content-Security-Policy": REPORT_CSP})
        return FileResponse(path, media_type="application/json")

    # --- the web UI -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def ui_page():
        return FileResponse(UI_DIR / "index.html", media_type="text/html")

    from starlette.staticfiles import StaticFiles

    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
    app.openapi = lambda: _openapi(app)
    return app


async def _sse(first, items, done, run, include_usage: bool):
    """OpenAI's chunk stream: role, content deltas, a finish chunk with `ragtune`, [usage], [DONE]."""
    from ragtune.types import Answer

    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": CHAT_MODEL}

    def event(choices, **extra) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    item, answer = first, None
    try:
        while item is not done:
            if isinstance(item, Answer):
                answer = item
            elif item:
                yield event([{"index": 0, "delta": {"content": item}, "finish_reason": None}])
            item = await run(next, items, done)
    except RagtuneError as exc:  # the stream has started: report the failure in it, as OpenAI does
        status, kind = ragtune_status(exc)
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': kind, 'code': status}})}\n\n"
        yield "data: [DONE]\n\n"
        return
    yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}],
                ragtune=ragtune_extra(answer).model_dump(mode="json"))
    if include_usage:
        yield event([], usage=usage_of(answer).model_dump())
    yield "data: [DONE]\n\n"


async def _read_form(request: Request) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    try:
        form = await request.form(max_files=100, max_fields=20)
    except AssertionError:  # starlette's way of saying python-multipart is missing
        from ragtune.errors import MissingExtraError

        raise MissingExtraError("file uploads", "server", "python-multipart") from None
    except Exception as exc:  # a malformed multipart body
        raise ApiError(400, f"cannot read the multipart form ({exc})") from None
    files, fields = [], {}
    for name, value in form.multi_items():
        if hasattr(value, "read"):
            if name != "files":
                raise ApiError(400, f"unexpected file field '{name}'; send files as 'files'", param=name)
            files.append((value.filename or "", await value.read()))
        elif name in ("groups", "metadata", "id"):
            fields[name] = value
        else:
            raise ApiError(400, f"unknown form field '{name}' (expected files, groups, metadata, id)", param=name)
    if not files:
        raise ApiError(400, "no files: send one or more files in the 'files' field", param="files")
    return files, fields


def _groups(text: str, listed: list[str] | None = None) -> list[str]:
    """Groups from 'a,b' (or from a JSON list, whose items may not hold commas), each a plain name."""
    from ragtune.serve.auth import parse_groups

    if listed is not None and any("," in g for g in listed):
        raise ApiError(400, "a group name cannot contain ','", param="groups")
    try:
        return parse_groups(text)
    except InputError as exc:
        raise ApiError(400, str(exc), param="groups") from None


def _metadata_field(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value.values()):
        raise ApiError(400, "metadata must be a JSON object of plain values, e.g. {\"team\": \"docs\"}",
                       param="metadata")
    return value


def _openapi(app: FastAPI) -> dict:
    """The generated schema, plus the two request bodies of POST /documents (JSON or multipart)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    for model in (DocumentsIn, DocumentUpload):
        body = model.model_json_schema(ref_template=ref)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    components["DocumentUpload"]["properties"]["files"] = {
        "type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
        "description": DocumentUpload.model_fields["files"].description}
    operation = schema["paths"]["/documents"]["post"]
    operation["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": {"$ref": ref.format(model="DocumentsIn")}},
        "multipart/form-data": {"schema": {"$ref": ref.format(model="DocumentUpload")}}}}
    app.openapi_schema = schema
    return schema


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ragtune")
    except Exception:
        return "0"


def _parse_where(pairs: list[str] | None) -> dict:
    where = {}
    for pair in pairs or []:
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise ApiError(400, f"where '{pair}': expected key=value", param="where")
        where[k] = v
    return where

