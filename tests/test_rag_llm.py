"""The RAG pipeline with real LLM generators: `hf` on the tiny Llama, and `openai` against a real
loopback server (also through the `ragtune ask` command). The models are tiny and random, so the
text is noise; what is checked is the pipeline: prompt, usage, streaming, citation checks, errors."""
from __future__ import annotations

import re

import pytest

from ragtune.config import GeneratorConfig
from ragtune.rag import RAG
from tests.conftest import EXAMPLE_DOCS
from tests.openai_app import openai_server
from tests.test_cli import ragtune
from tests.tiny_generators import one_torch_thread, tiny_llama  # noqa: F401  (fixtures)

QUESTION = "What port does the sync daemon listen on by default?"
HASHING = "embedder: {backend: hashing, dimension: 1024}\n"


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    from ragtune.project import Project
    from tests.conftest import hashing_config

    folder = tmp_path_factory.mktemp("kb")
    (folder / "ragtune.yaml").write_text(HASHING)
    config = hashing_config()
    config.embedder.dimension = 1024
    project = Project(folder, config)
    project.index([str(EXAMPLE_DOCS)], progress=False)
    yield project
    project.close()


@pytest.fixture(scope="module")
def server(tiny_llama):
    with openai_server(tiny_llama) as state:
        yield state


def _check(answer, backend: str):
    assert answer.generator == backend and not answer.abstained
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    user = answer.messages[-1]["content"]
    assert '<source n="1"' in user and user.rstrip().endswith(f"Question: {QUESTION}")
    for citation in answer.citations:  # whatever the model wrote, only valid citations survive
        assert 1 <= citation.number <= len(answer.hits)
    assert not re.search(r"\[(\d+)\]", answer.text) or all(
        1 <= int(n) <= len(answer.hits) for n in re.findall(r"\[(\d+)\]", answer.text))
    assert answer.timings["generate"] > 0


def test_hf_generator_in_the_pipeline(kb, tiny_llama):
    # The tiny Llama reads 256 positions; its rotary embeddings take more, so give it a 600-token window
    # to fit a few sources (packing must still keep the prompt inside it).
    kb.config.generator = GeneratorConfig(backend="hf", model=str(tiny_llama), max_new_tokens=16, context_window=600)
    try:
        rag = RAG(kb)
        answer = rag.ask(QUESTION)
        pieces = list(rag.ask_stream(QUESTION))
    finally:
        kb.config.generator = GeneratorConfig()
    _check(answer, "hf")
    streamed = pieces[-1]
    assert streamed.usage == answer.usage and "".join(pieces[:-1]).strip()
    # The prompt fits the tiny model's window: packing shrank the sources to its budget.
    assert answer.usage.prompt_tokens + 16 <= rag.generator.context_window


def test_openai_generator_in_the_pipeline(kb, server):
    kb.config.generator = GeneratorConfig(backend="openai", base_url=server.base_url, max_new_tokens=16,
                                          max_retries=2)
    try:
        server.reset()
        server.fail_next(503)  # retried
        answer = RAG(kb).ask(QUESTION)
    finally:
        kb.config.generator = GeneratorConfig()
    _check(answer, "openai")
    assert server.requests >= 2


def test_ask_command_against_the_loopback_server(kb, server):
    server.reset()
    (kb.folder / "ragtune.yaml").write_text(HASHING + f"generator: {{base_url: '{server.base_url}', max_new_tokens: 8}}\n")
    try:
        out = ragtune("-p", str(kb.folder), "ask", QUESTION, "--generator", "openai", "--stream", cwd=kb.folder)
    finally:
        (kb.folder / "ragtune.yaml").write_text(HASHING)
    assert out.returncode == 0, out.stderr
    assert "Sources (* = cited):" in out.stdout and server.requests >= 1


def test_endpoint_down_is_one_clear_error(kb):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    (kb.folder / "ragtune.yaml").write_text(
        HASHING + f"generator: {{backend: openai, model: m, base_url: 'http://127.0.0.1:{port}/v1', max_retries: 1, timeout: 2}}\n")
    try:
        out = ragtune("-p", str(kb.folder), "ask", QUESTION, cwd=kb.folder)
    finally:
        (kb.folder / "ragtune.yaml").write_text(HASHING)
    assert out.returncode == 2 and out.stderr.startswith("error: cannot reach")
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_show_prompt_prints_what_the_local_model_reads(kb, tiny_llama):
    (kb.folder / "ragtune.yaml").write_text(
        HASHING + f"generator: {{backend: hf, model: '{tiny_llama}', max_new_tokens: 4, context_window: 600}}\n")
    try:
        out = ragtune("-p", str(kb.folder), "ask", QUESTION, "--show-prompt", cwd=kb.folder)
    finally:
        (kb.folder / "ragtune.yaml").write_text(HASHING)
    assert out.returncode == 0, out.stderr
    prompt = out.stdout.split("=== answer ===")[0]
    assert "<|system|>" in prompt and "<|user|>" in prompt and prompt.rstrip().endswith("<|assistant|>")
