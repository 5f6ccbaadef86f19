"""`ragtune serve` for real: uvicorn on 127.0.0.1 in a thread, a hashing-embedder project indexed
from examples/docs, called with httpx and the official `openai` client."""
from __future__ import annotations

import json
import re
import socket
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from ragtune.project import Project  # noqa: E402
from ragtune.serve.auth import KeyStore, hash_key  # noqa: E402
from tests.conftest import EXAMPLE_DOCS  # noqa: E402

pytestmark = pytest.mark.server
QUESTION = "What port does the sync daemon listen on by default?"


# --- helpers shared with test_serve_schema.py and test_ui.py --------------------------------------
def make_project(folder: Path, server: dict | None = None, docs: Path | None = EXAMPLE_DOCS) -> Project:
    """A project on the hashing embedder, indexed from `docs`, with these `server:` settings."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in (server or {}).items())
    (folder / "ragtune.yaml").write_text("embedder: {backend: hashing, dimension: 64}\n"
                                         + (f"server:\n{settings}" if settings else ""))
    project = Project.open(folder)
    if docs is not None:
        project.index([str(docs)], progress=False)
    return project


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # held from here on, so no other process can take the port
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ragtune-serve-test", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on port {port} did not start")
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def normalised(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> Iterator[SimpleNamespace]:
    from ragtune.serve.app import create_app

    folder = tmp_path_factory.mktemp("serve") / "kb"
    project = make_project(folder, {"max_body_bytes": 200_000, "max_k": 20, "max_messages": 8, "max_tokens": 512})
    keys = KeyStore(folder, env="")
    admin, _ = keys.create([], write=True, name="admin")
    reader, _ = keys.create([], name="reader")
    a_writer, _ = keys.create(["tenant-a"], write=True, name="tenant-a")
    b_writer, _ = keys.create(["tenant-b"], write=True, name="tenant-b")
    with live_server(create_app(project, keys=keys)) as url:
        yield SimpleNamespace(url=url, project=project, keys=keys, admin=admin, reader=reader, a=a_writer, b=b_writer,
                              http=httpx.Client(base_url=url, timeout=30))
    project.close()


def openai_client(srv, secret: str):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=secret, max_retries=0, timeout=30)


def post(srv, path: str, body: dict, secret: str) -> httpx.Response:
    return srv.http.post(path, json=body, headers=bearer(secret))


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] and error["type"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


def assert_quotes_in_sources(srv, extra: dict, secret: str) -> None:
    """Every citation's quote occurs in its stored document, and in the file on disk for text formats."""
    assert extra["citations"], extra
    for citation in extra["citations"]:
        assert citation["quote"]
        quote = normalised(citation["quote"])
        doc = srv.http.get(f"/documents/{citation['document_id']}", headers=bearer(secret)).json()
        assert any(quote in normalised(c["text"]) for c in doc["chunks"] if c["id"] == citation["chunk_id"])
        source = EXAMPLE_DOCS.parent / citation["source"]
        if source.suffix in (".md", ".txt"):
            assert quote in normalised(source.read_text()), (quote, source)


# --- the OpenAI API, with the official client ------------------------------------------------------
def test_openai_client_lists_models_and_answers_with_citations(srv):
    client = openai_client(srv, srv.reader)
    assert {m.id for m in client.models.list()} == {"ragtune-rag", "hashing-64"}
    assert client.models.retrieve("ragtune-rag").id == "ragtune-rag"
    completion = client.chat.completions.create(model="ragtune-rag", messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=64, temperature=0)
    answer = completion.choices[0].message.content
    assert "7741" in answer and re.search(r"\[\d\]", answer)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 0  # the extractive generator reads no tokens
    extra = completion.model_extra["ragtune"]
    assert extra["abstained"] is False and extra["text"] == answer
    assert [s["number"] for s in extra["sources"]] == list(range(1, len(extra["sources"]) + 1))
    assert_quotes_in_sources(srv, extra, srv.reader)


def test_openai_client_streams_with_citations_in_the_last_chunk(srv):
    client = openai_client(srv, srv.reader)
    stream = client.chat.completions.create(model="ragtune-rag", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "7741" in text
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    extra = finish[0].model_extra["ragtune"]
    assert extra["text"] == text
    assert_quotes_in_sources(srv, extra, srv.reader)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0


def test_chat_follow_up_is_searched_with_the_conversation(srv):
    first = "How long are backups kept?"
    response = post(srv, "/v1/chat/completions", {"model": "ragtune-rag", "messages": [
        {"role": "system", "content": "ignored: ragtune has its own system prompt"},
        {"role": "user", "content": first}, {"role": "assistant", "content": "Backups are kept for 30 days. [1]"},
        {"role": "user", "content": "and when do they run?"}]}, srv.reader)
    assert response.status_code == 200, response.text
    assert response.json()["ragtune"]["retrieval_query"] == f"{first} and when do they run?"


def test_openai_client_embeddings_float_and_base64(srv):
    import numpy as np

    client = openai_client(srv, srv.reader)
    result = client.embeddings.create(model="hashing-64", input=["sync daemon port", "backups"])  # base64 on the wire
    assert [len(d.embedding) for d in result.data] == [64, 64]
    direct = srv.project.embedder.embed(["sync daemon port", "backups"])
    assert np.allclose(np.array([d.embedding for d in result.data]), direct, atol=1e-6)
    floats = post(srv, "/v1/embeddings", {"model": "hashing-64", "input": "backups", "encoding_format": "float"},
                  srv.reader).json()
    assert np.allclose(floats["data"][0]["embedding"], direct[1], atol=1e-6)


def test_openai_errors_are_clear_4xx(srv):
    openai = pytest.importorskip("openai")
    client = openai_client(srv, srv.reader)
    with pytest.raises(openai.NotFoundError, match="ragtune-rag"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.AuthenticationError):
        openai_client(srv, "rtk_not-a-key").models.list()
    base = {"model": "ragtune-rag", "messages": [{"role": "user", "content": QUESTION}]}
    cases = [({"messages": []}, 422, "messages"),
             ({"messages": [{"role": "user", "content": "hi"}] * 9}, 422, "messages"),  # max_messages: 8
             ({"max_tokens": 513}, 422, "max_tokens"),
             ({"n": 2}, 422, "n"),
             ({"temperature": 3}, 422, "temperature"),
             ({"messages": [{"role": "assistant", "content": "hello"}]}, 400, "user message"),
             ({"messages": [{"role": "user", "content": "   "}]}, 400, "user message"),
             ({"ragtune": {"k": 21}}, 422, "k")]
    for change, status, word in cases:
        assert_error(post(srv, "/v1/chat/completions", {**base, **change}, srv.reader), status, word)
    assert_error(post(srv, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, srv.reader), 404,
                 "hashing-64")
    assert_error(post(srv, "/v1/embeddings", {"model": "hashing-64", "input": ["x", ""]}, srv.reader), 400)
    assert_error(post(srv, "/v1/embeddings", {"model": "hashing-64", "input": "x", "dimensions": 3}, srv.reader), 400)


def test_classify_and_reports_say_what_is_missing(srv):
    assert_error(post(srv, "/v1/classify", {"input": "great product"}, srv.reader), 409, "no classify strategy",
                 "ragtune compare")
    assert_error(srv.http.get("/reports", headers=bearer(srv.reader)), 403, "write scope")
    assert_error(srv.http.get("/reports", headers=bearer(srv.admin)), 404, "no reports yet")
    assert_error(srv.http.get("/reports/x.json", headers=bearer(srv.admin)), 404)


# --- search and documents ---------------------------------------------------------------------------
def test_search_modes_k_filters_and_units(srv):
    for mode in ("bm25", "dense", "hybrid"):
        body = post(srv, "/search", {"query": "sync daemon port", "mode": mode, "k": 3}, srv.reader).json()
        assert body["mode"] == mode and len(body["hits"]) == 3
    body = post(srv, "/search", {"query": "sync daemon port"}, srv.reader).json()
    assert body["k"] == 10 and len(body["hits"]) == 10  # retrieval.k
    hits = post(srv, "/search", {"query": "install", "k": 5, "unit": "documents"}, srv.reader).json()["hits"]
    assert len({h["document_id"] for h in hits}) == 5
    only = post(srv, "/search", {"query": "install", "where": {"id": "docs/guides/install-linux.md"}}, srv.reader).json()
    assert only["hits"] and {h["document_id"] for h in only["hits"]} == {"docs/guides/install-linux.md"}
    assert_error(post(srv, "/search", {"query": "x", "k": 21}, srv.reader), 422, "k")
    assert_error(post(srv, "/search", {"query": "x", "mode": "fuzzy"}, srv.reader), 422, "mode")
    assert_error(post(srv, "/search", {"query": "   "}, srv.reader), 400, "empty query")
    assert_error(post(srv, "/search", {"query": "x", "where": {"bad key!": 1}}, srv.reader), 400, "filter field")
    assert_error(post(srv, "/search", {"query": "x", "typo": 1}, srv.reader), 422, "typo")


def test_documents_json_upsert_list_get_delete(srv):
    doc = {"id": "notes/json-doc", "title": "Kiwi notes", "text": "The kiwi protocol uses port 9931 for gossip.",
           "metadata": {"team": "infra"}}
    result = post(srv, "/documents", {"documents": [doc]}, srv.admin).json()
    assert result == {"documents": [{"id": "notes/json-doc", "status": "added", "chunks": 1}], "skipped": []}
    assert post(srv, "/documents", {"documents": [doc]}, srv.admin).json()["documents"][0]["status"] == "unchanged"
    changed = {**doc, "text": "The kiwi protocol uses port 9932 for gossip."}
    assert post(srv, "/documents", {"documents": [changed]}, srv.admin).json()["documents"][0]["status"] == "updated"
    hits = post(srv, "/search", {"query": "kiwi gossip port", "k": 1, "mode": "bm25"}, srv.reader).json()["hits"]
    assert hits[0]["document_id"] == "notes/json-doc" and "9932" in hits[0]["text"]
    assert hits[0]["metadata"]["team"] == "infra"
    listed = srv.http.get("/documents", params={"where": "team=infra"}, headers=bearer(srv.reader)).json()
    assert [d["id"] for d in listed["documents"]] == ["notes/json-doc"]
    page = srv.http.get("/documents", params={"limit": 10}, headers=bearer(srv.reader)).json()
    assert len(page["documents"]) == 10 and page["next_offset"] == 10
    shown = srv.http.get("/documents/notes/json-doc", headers=bearer(srv.reader)).json()
    assert shown["title"] == "Kiwi notes" and "9932" in shown["chunks"][0]["text"]
    assert srv.http.delete("/documents/notes/json-doc", headers=bearer(srv.admin)).json() == {"deleted": "notes/json-doc"}
    assert_error(srv.http.delete("/documents/notes/json-doc", headers=bearer(srv.admin)), 404)
    assert_error(srv.http.get("/documents/notes/json-doc", headers=bearer(srv.reader)), 404)
    hits = post(srv, "/search", {"query": "kiwi gossip port", "k": 20}, srv.reader).json()["hits"]
    assert "notes/json-doc" not in {h["document_id"] for h in hits}


def test_documents_multipart_upload(srv):
    files = [("files", ("walrus.md", b"# Walrus\n\nThe walrus gateway retries uploads 7 times.\n", "text/markdown")),
             ("files", ("rows.jsonl", b'{"id": "row-1", "text": "Narwhal tusks grow spirally."}\n'
                                      b'{"id": "row-2", "text": ""}\n', "application/json"))]
    response = srv.http.post("/documents", files=files, data={"metadata": '{"batch": "b1"}'}, headers=bearer(srv.admin))
    assert response.status_code == 200, response.text
    body = response.json()
    assert {d["id"]: d["status"] for d in body["documents"]} == {"walrus.md": "added", "row-1": "added"}
    assert len(body["skipped"]) == 1 and "rows.jsonl:2" in body["skipped"][0]
    shown = srv.http.get("/documents/walrus.md", headers=bearer(srv.reader)).json()
    assert shown["metadata"]["batch"] == "b1" and shown["chunks"][0]["section"] == "Walrus"
    one = srv.http.post("/documents", files=[("files", ("a.txt", b"Single file with an id.", "text/plain"))],
                        data={"id": "custom/id"}, headers=bearer(srv.admin))
    assert one.json()["documents"][0]["id"] == "custom/id"
    bad = [({"files": ("x.exe", b"MZ\x00\x00", "application/octet-stream")}, {}, "unsupported"),
           ({"files": ("a.txt", b"text", "text/plain")}, {"metadata": "[1]"}, "metadata"),
           ({"files": ("a.txt", b"text", "text/plain")}, {"groups": "bad group!"}, "group"),
           ({"other": ("a.txt", b"text", "text/plain")}, {}, "files")]
    for files, data, word in bad:
        assert_error(srv.http.post("/documents", files=files, data=data, headers=bearer(srv.admin)), 400, word)
    for doc_id in ("walrus.md", "row-1", "custom/id"):
        srv.http.delete(f"/documents/{doc_id}", headers=bearer(srv.admin))


def test_limits_and_bad_input_get_4xx_json(srv):
    big = {"documents": [{"id": "big", "text": "x " * 150_000}]}  # 300 kB > max_body_bytes 200 kB
    assert_error(post(srv, "/documents", big, srv.admin), 413, "max_body_bytes")
    chunked = srv.http.post("/search", content=iter([b"{" + b" " * 150_000, b" " * 150_000 + b"}"]),
                            headers={**bearer(srv.reader), "content-type": "application/json"})
    assert_error(chunked, 413)
    invalid = srv.http.post("/search", content=b"{not json", headers={**bearer(srv.reader), "content-type": "application/json"})
    assert_error(invalid, 422)
    assert_error(srv.http.post("/documents", content=b"id,text", headers={**bearer(srv.admin), "content-type": "text/csv"}),
                 415)
    assert_error(srv.http.get("/nope", headers=bearer(srv.reader)), 404, "no route")
    assert_error(srv.http.put("/search", headers=bearer(srv.reader)), 405)
    assert_error(post(srv, "/documents", {"documents": [{"id": "x", "text": " "}]}, srv.admin), 400, "empty")
    assert_error(post(srv, "/documents", {"documents": [{"id": "a\nb", "text": "t"}]}, srv.admin), 422, "id")
    twice = {"documents": [{"id": "d", "text": "one"}, {"id": "d", "text": "two"}]}
    assert_error(post(srv, "/documents", twice, srv.admin), 400, "unique")
    assert_error(srv.http.get("/documents", params={"limit": 5000}, headers=bearer(srv.reader)), 422, "limit")
    assert_error(srv.http.get("/documents", params={"where": "novalue"}, headers=bearer(srv.reader)), 400, "key=value")


def test_request_timeout_answers_504_json(tmp_path):
    from ragtune.serve.app import create_app

    project = make_project(tmp_path / "kb", {"request_timeout_s": 0.3}, docs=None)
    keys = KeyStore(project.folder, env="")
    secret, _ = keys.create([])
    app = create_app(project, keys=keys)
    project.search = lambda *args, **kwargs: time.sleep(1.5) or []  # a search that takes too long
    project.index([str(EXAMPLE_DOCS / "faq.md")], progress=False)
    with live_server(app) as url:
        started = time.monotonic()
        response = httpx.post(f"{url}/search", json={"query": "x"}, headers=bearer(secret), timeout=10)
        assert time.monotonic() - started < 1.2
        assert_error(response, 504, "request_timeout_s")
        assert httpx.get(f"{url}/health").status_code == 200


# --- keys and access ----------------------------------------------------------------------------------
def test_every_route_but_health_needs_a_key(srv):
    schema = srv.http.get("/openapi.json").json()
    routes = [(method, path) for path, item in schema["paths"].items() for method in item]
    assert len(routes) >= 12
    for method, path in routes:
        url = path.replace("{model_id}", "ragtune-rag").replace("{doc_id}", "docs/faq.md").replace("{report_id}", "r.json")
        for headers in ({}, bearer("rtk_wrong"), {"Authorization": srv.reader}):  # none, unknown, no "Bearer"
            response = srv.http.request(method.upper(), url, headers=headers, json={})
            if path == "/health":
                assert response.status_code == 200
            else:
                assert_error(response, 401, "API key")
                assert response.headers["www-authenticate"] == "Bearer"
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert srv.http.get("/").status_code == 200  # the page itself holds no data
    for method, path in [("POST", "/documents"), ("DELETE", "/documents/docs/faq.md")]:
        assert_error(srv.http.request(method, path, headers=bearer(srv.reader), json={"documents": []}), 403, "--write")
    assert srv.http.get("/documents/docs/faq.md", headers=bearer(srv.reader)).status_code == 200


def test_keys_are_hashed_private_revocable_and_come_from_env(srv):
    path = srv.project.folder / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    assert srv.reader not in stored and hash_key(srv.reader) in stored
    secret, key = srv.keys.create(["x"], name="temporary")
    assert srv.http.get("/v1/models", headers=bearer(secret)).status_code == 200  # picked up while serving
    srv.keys.revoke("temporary")
    assert_error(srv.http.get("/v1/models", headers=bearer(secret)), 401)
    env_secret = "a-container-secret-of-some-length"
    env = KeyStore(srv.project.folder, env=f"sha256:{hash_key(env_secret)}|hr,eng|write|bot; {env_secret}-2")
    found = env.authenticate(env_secret)
    assert (found.groups, found.write, found.name, found.source) == (["eng", "hr"], True, "bot", "env")
    assert env.authenticate(f"{env_secret}-2").groups == [] and env.authenticate("nope") is None
    from ragtune.errors import ConfigError

    for bad in ("short|a", "sha256:abc|a", "x" * 30 + "|a|admin", "x" * 30 + "|a|read|n|extra"):
        with pytest.raises(ConfigError, match="RAGTUNE_API_KEYS"):
            KeyStore(srv.project.folder, env=bad)


def test_two_tenants_see_nothing_of_each_other(srv):
    secret_words = {"a": "aardvark", "b": "bobcat"}
    for tenant, secret in (("a", srv.a), ("b", srv.b)):
        word = secret_words[tenant]
        docs = [{"id": f"{tenant}/plan-{i}", "text": f"The {word} project plan {i}: the sync daemon port for the "
                                                    f"{word} team is {7000 + i}. Backups of {word} run hourly."}
                for i in range(3)]
        assert post(srv, "/documents", {"documents": docs}, secret).status_code == 200
    own = {"a": "a/", "b": "b/"}
    for tenant, secret in (("a", srv.a), ("b", srv.b)):
        other = "b" if tenant == "a" else "a"
        for query in ("sync daemon port", f"{secret_words[other]} project plan", "backups hourly",
                      f"{secret_words[tenant]} {secret_words[other]}"):
            for mode in ("bm25", "dense", "hybrid"):
                hits = post(srv, "/search", {"query": query, "mode": mode, "k": 20}, secret).json()["hits"]
                assert not [h for h in hits if h["document_id"].startswith(own[other])], (tenant, query, mode)
                documents = post(srv, "/search", {"query": query, "mode": mode, "k": 20, "unit": "documents"},
                                 secret).json()["hits"]
                assert not [h for h in documents if h["document_id"].startswith(own[other])]
            chat = post(srv, "/v1/chat/completions", {"model": "ragtune-rag", "messages": [
                {"role": "user", "content": f"What is the sync daemon port of the {secret_words[other]} team?"}]},
                secret).json()["ragtune"]
            assert not [s for s in chat["sources"] if s["document_id"].startswith(own[other])]
            assert not [c for c in chat["citations"] if c["document_id"].startswith(own[other])]
            assert secret_words[other] not in json.dumps([chat["text"], chat["sources"], chat["citations"]])
        mine = post(srv, "/search", {"query": f"{secret_words[tenant]} project plan", "k": 3}, secret).json()["hits"]
        assert mine and all(h["document_id"].startswith(own[tenant]) for h in mine)
        listed = srv.http.get("/documents", params={"limit": 1000}, headers=bearer(secret)).json()["documents"]
        ids = {d["id"] for d in listed}
        assert {f"{tenant}/plan-{i}" for i in range(3)} <= ids and not [i for i in ids if i.startswith(own[other])]
        assert "docs/faq.md" in ids  # documents without groups are everyone's
        assert [d["groups"] for d in listed if d["id"].startswith(own[tenant])] == [[f"tenant-{tenant}"]] * 3
        # The other tenant's documents cannot be read, replaced or deleted either.
        victim = f"{other}/plan-0"
        assert_error(srv.http.get(f"/documents/{victim}", headers=bearer(secret)), 404)
        assert_error(srv.http.delete(f"/documents/{victim}", headers=bearer(secret)), 404)
        assert_error(post(srv, "/documents", {"documents": [{"id": victim, "text": "mine now"}]}, secret), 403)
        assert_error(post(srv, "/documents", {"documents": [{"id": "x", "text": "t", "groups": [f"tenant-{other}"]}]},
                          secret), 403, "groups")
        assert_error(post(srv, "/documents", {"documents": [{"id": "docs/faq.md", "text": "defaced"}]}, secret), 403)
    # A key without groups sees only the documents without groups.
    listed = srv.http.get("/documents", params={"limit": 1000}, headers=bearer(srv.reader)).json()["documents"]
    assert not [d for d in listed if d["id"].startswith(("a/", "b/"))]
    for tenant, secret in (("a", srv.a), ("b", srv.b)):
        for i in range(3):
            assert srv.http.delete(f"/documents/{tenant}/plan-{i}", headers=bearer(secret)).status_code == 200


def test_indexing_while_serving_stays_consistent(srv):
    """Uploads replace a many-chunk document while searches run: every result set holds exactly
    one version of it (the store's snapshots), and nothing fails."""
    def version(v: int) -> dict:
        paragraphs = [f"Section {s} of the heron manual, revision r{v}. " + " ".join(
            f"The heron relay setting {s}-{w} is described in revision r{v}." for w in range(12)) for s in range(6)]
        return {"documents": [{"id": "live/heron.md", "title": "Heron", "text": "\n\n".join(paragraphs)}]}

    assert post(srv, "/documents", version(0), srv.admin).json()["documents"][0]["chunks"] >= 4
    failures, seen, stop = [], set(), threading.Event()

    def searcher(mode: str) -> None:
        client = httpx.Client(base_url=srv.url, headers=bearer(srv.reader), timeout=30)
        while not stop.is_set():
            response = client.post("/search", json={"query": "heron relay setting revision", "mode": mode, "k": 20})
            if response.status_code != 200:
                failures.append(response.text)
                continue
            versions = {m for h in response.json()["hits"] if h["document_id"] == "live/heron.md"
                        for m in re.findall(r"revision r(\d+)", h["text"])}
            if len(versions) > 1:
                failures.append(f"{mode}: one result set mixes versions {sorted(versions)}")
            seen.update(versions)

    threads = [threading.Thread(target=searcher, args=(mode,)) for mode in ("bm25", "dense", "hybrid")]
    for t in threads:
        t.start()
    try:
        for v in range(1, 9):
            response = post(srv, "/documents", version(v), srv.admin)
            assert response.status_code == 200 and response.json()["documents"][0]["status"] == "updated"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures, failures[:3]
    assert len(seen) >= 2  # the searches did overlap the updates
    assert srv.http.delete("/documents/live/heron.md", headers=bearer(srv.admin)).status_code == 200


# --- the command line -------------------------------------------------------------------------------
def test_keys_commands_and_serve_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from ragtune import cli
    from ragtune.cli_serve import keys_app, serve_command

    root = typer.Typer()
    root.callback()(cli._main)
    root.command("serve")(serve_command)
    root.add_typer(keys_app, name="keys")
    folder = tmp_path / "kb"
    make_project(folder, docs=None)
    runner = CliRunner()
    created = runner.invoke(root, ["-p", str(folder), "keys", "create", "--groups", "b,a", "--write", "--name", "ci"])
    assert created.exit_code == 0, created.output
    secret = re.search(r"(rtk_\S+)", created.output).group(1)
    assert "groups a,b" in created.output and "scope write" in created.output
    env_line = re.search(r"entry: (\S+)", created.output).group(1)
    assert KeyStore(folder, env=env_line).authenticate(secret).groups == ["a", "b"]
    listed = runner.invoke(root, ["-p", str(folder), "keys", "list", "--json"])
    assert json.loads(listed.stdout)[0]["name"] == "ci" and secret not in listed.output
    assert hash_key(secret) not in listed.output
    assert runner.invoke(root, ["-p", str(folder), "keys", "revoke", "ci"]).exit_code == 0
    assert KeyStore(folder, env="").keys() == []
    missing = runner.invoke(root, ["-p", str(folder), "keys", "revoke", "ci"])
    assert missing.exit_code != 0 and "no key 'ci'" in str(missing.exception)
    help_text = runner.invoke(root, ["serve", "--help"]).output
    assert "127.0.0.1" in help_text and "--port" in help_text
