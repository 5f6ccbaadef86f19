"""Errors and the guard of `ragtune serve`: API keys, body size, time limit and security headers,
checked before FastAPI parses anything; and the JSON error format `{"error": {"message", "type"}}`.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune.config import ServerConfig
from ragtune.errors import GenerationError, RagtuneError, StoreError
from ragtune.serve.auth import ApiKey, KeyStore

log = logging.getLogger("ragtune.serve")

PUBLIC_PATHS = {"/health", "/", "/openapi.json"}  # plus /ui/*: static files, no data
UI_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ApiError(Exception):
    """A request the server refuses, with its HTTP status and an OpenAI-style error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(status: int, message: str, kind: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status,
                        headers=headers)


_STATUS_KIND = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
                413: "request_too_large", 415: "invalid_request_error"}


def ragtune_status(exc: RagtuneError) -> tuple[int, str]:
    if isinstance(exc, StoreError):
        return 409, "store_error"  # e.g. the knowledge base is empty: a state the caller can change
    if isinstance(exc, GenerationError):
        return 502, "upstream_error"  # the configured LLM endpoint failed after its retries
    return 400, "invalid_request_error"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.kind, exc.param)

    @app.exception_handler(RagtuneError)
    async def ragtune_error(request: Request, exc: RagtuneError):
        status, kind = ragtune_status(exc)
        return error_response(status, str(exc), kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /openapi.json"
        return error_response(exc.status_code, message, _STATUS_KIND.get(exc.status_code, "invalid_request_error"),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, "internal server error (logged on the server)", "server_error")


def validation_response(errors) -> JSONResponse:
    parts, first = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) or "body"
        first = first or where
        parts.append(f"{where}: {err.get('msg')}")
    return error_response(422, "invalid request: " + "; ".join(parts[:5]), "invalid_request_error", first)


class Guard:
    """ASGI middleware. Runs before FastAPI reads the body, so an unauthenticated or oversized
    request is refused before any of it is parsed."""

    def __init__(self, app, keys: KeyStore, settings: ServerConfig):
        self.app, self.keys, self.settings = app, keys, settings
        self._orphans: set = set()  # 504 answers being sent (a reference keeps the task alive)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        page = path == "/" or path.startswith("/ui/")
        if not (path in PUBLIC_PATHS or page):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, secret = header.partition(" ")
            try:
                key = self.keys.authenticate(secret.strip()) if scheme.lower() == "bearer" else None
            except RagtuneError as exc:
                log.error("cannot read API keys: %s", exc)
                return await _send(send, error_response(500, "the server cannot read its API keys (see its log)",
                                                        "server_error"))
            if key is None:
                message = ("invalid API key" if secret else
                           "missing API key: send 'Authorization: Bearer <key>' (create one with `ragtune keys create`)")
                return await _send(send, error_response(401, message, "authentication_error",
                                                        headers={"WWW-Authenticate": "Bearer"}))
            scope.setdefault("state", {})["api_key"] = key
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        # The app runs in this task; a timer answers 504 if nothing was sent in time. The app then
        # finishes unseen (its worker thread cannot be stopped) and whatever it sends is dropped.
        # (A timer instead of a watcher task: no extra task per request on the hot path.)
        state = {"started": False, "timed_out": False}

        async def guarded_send(message):
            if state["timed_out"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers += [(b"content-security-policy", UI_CSP.encode()), (b"x-frame-options", b"DENY")]
                elif not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        limit = self.settings.request_timeout_s

        def on_timeout():
            if not state["started"]:
                state["timed_out"] = True
                answer = asyncio.ensure_future(_send(send, error_response(
                    504, f"the request took longer than {limit:g} s (server.request_timeout_s)", "timeout")))
                self._orphans.add(answer)
                answer.add_done_callback(self._orphans.discard)

        timer = asyncio.get_running_loop().call_later(limit, on_timeout)
        try:
            await self.app(scope, replay, guarded_send)
        except Exception:
            if not state["timed_out"]:
                raise
            log.warning("a request that was answered 504 failed afterwards", exc_info=True)
        finally:
            timer.cancel()

    async def _read_body(self, scope, receive, send) -> bytes | None:
        """The whole request body, or None after answering 413/400 when it is too large or malformed."""
        limit = self.settings.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _send(send, error_response(400, "invalid Content-Length header", "invalid_request_error"))
                return None
            if int(length) > limit:
                await _send(send, _too_large(int(length), limit))
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send(send, _too_large(size, limit))
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


def _too_large(size: int, limit: int) -> JSONResponse:
    return error_response(413, f"request body of {size} bytes exceeds server.max_body_bytes ({limit})",
                          "request_too_large")


async def _send(send, response: JSONResponse) -> None:
    headers = [(k, v) for k, v in response.raw_headers] + [(b"x-content-type-options", b"nosniff"),
                                                           (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key from `ragtune keys create`, sent as `Authorization: Bearer <key>`.")


async def current_key(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Security(bearer)) -> ApiKey:
    """The caller's key (the guard has checked it; the parameter documents the scheme)."""
    return request.scope["state"]["api_key"]


async def writer_key(key: ApiKey = Depends(current_key)) -> ApiKey:
    if not key.write:
        raise ApiError(403, "this API key is read-only; writes need a key created with --write", "permission_error")
    return key
