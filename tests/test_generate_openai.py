"""The openai generator against a real loopback OpenAI-compatible server serving the tiny Llama.

Nothing is patched: the official SDK talks HTTP (JSON and SSE) to tests/openai_app.py, which answers
with ragtune's own HFGenerator, so answers must match calling that generator directly.
"""
from __future__ import annotations

import socket
import time

import pytest

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError, GenerationError
from ragtune.generate.base import Generation, Generator
from ragtune.generate.hf import HFGenerator
from ragtune.generate.openai import OpenAIGenerator
from ragtune.registry import create
from tests.openai_app import openai_server
from tests.tiny_generators import PROMPT, one_torch_thread, tiny_llama  # noqa: F401  (fixtures)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tiny_llama):
    with openai_server(tiny_llama) as state:
        yield state


@pytest.fixture(autouse=True)
def fresh_server(request):
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()


def remote(server, **options) -> OpenAIGenerator:
    options = {"model": server.model_name, "max_new_tokens": 12, "max_retries": 0, "timeout": 10, **options}
    return create("generator", "openai", GeneratorConfig(backend="openai", base_url=server.base_url, **options))


@pytest.fixture(scope="module")
def local(tiny_llama) -> Generation:
    """The answer of HFGenerator called directly, with the same greedy settings as the server."""
    return HFGenerator(GeneratorConfig(backend="hf", model=str(tiny_llama), max_new_tokens=12)).generate(PROMPT)


def test_construction_is_cheap_and_follows_the_contract():
    generator = OpenAIGenerator(GeneratorConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1"))
    assert generator._client is None and isinstance(generator, Generator) and generator.name == "openai"
    assert generator.context_window == 8192
    assert generator.count_tokens("a" * 64) == 20  # estimate_tokens: ~4 characters a token, +25%
    assert OpenAIGenerator(GeneratorConfig(backend="openai", context_window=4096)).context_window == 4096


def test_generate_matches_the_model_called_directly(server, local):
    generation = remote(server).generate(PROMPT)
    assert generation.text == local.text and generation.text
    assert generation.usage == local.usage and generation.usage.completion_tokens > 0
    assert generation.finish_reason == local.finish_reason
    body = server.bodies[-1]
    assert body["messages"] == PROMPT.messages and body["max_tokens"] == 12 and body["temperature"] == 0


def test_stream_joins_to_the_final_text_and_carries_usage(server, local):
    items = list(remote(server).stream(PROMPT))
    pieces, final = items[:-1], items[-1]
    assert isinstance(final, Generation) and len(pieces) >= 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == final.text == local.text
    assert final.usage == local.usage and final.finish_reason == local.finish_reason
    assert server.bodies[-1]["stream"] is True and server.bodies[-1]["stream_options"] == {"include_usage": True}


def test_stream_without_stream_options_support(server, local):
    server.reject_stream_options = True
    items = list(remote(server).stream(PROMPT))
    assert items[-1].text == local.text and "".join(items[:-1]) == local.text
    assert server.requests == 2 and "stream_options" not in server.bodies[-1]
    assert items[-1].usage.completion_tokens == 0  # the server sent none: unknown, not guessed


def test_stream_that_sends_nothing_is_an_error(server):
    server.empty_stream = True
    with pytest.raises(GenerationError, match="ended the stream without sending anything"):
        list(remote(server).stream(PROMPT))


def test_model_none_uses_the_only_served_model(server, local):
    generator = remote(server, model=None)
    assert generator.generate(PROMPT).text == local.text
    assert generator.model == server.model_name


def test_model_none_with_several_served_models_is_a_config_error(server):
    server.extra_models = ["other-model"]
    with pytest.raises(ConfigError, match=r"serves 2 models \(other-model, tiny-llama\); set generator.model"):
        remote(server, model=None).generate(PROMPT)


def test_retries_on_429_and_503_then_succeeds(server, local):
    server.fail_next(429, 503)
    generation = remote(server, max_retries=2).generate(PROMPT)
    assert generation.text == local.text
    assert server.requests == 3


def test_retries_exhausted_names_the_status(server):
    server.fail_next(503, 503)
    with pytest.raises(GenerationError, match=r"answered 503 after 1 retries: injected failure 503"):
        remote(server, max_retries=1).generate(PROMPT)
    assert server.requests == 2


def test_endpoint_down_fails_quickly_naming_the_base_url():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        base_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        generator = OpenAIGenerator(GeneratorConfig(backend="openai", model="m", base_url=base_url,
                                                    max_retries=1, timeout=2))
        start = time.monotonic()
        with pytest.raises(GenerationError) as error:
            generator.generate(PROMPT)
        assert time.monotonic() - start < 5
    message = str(error.value)
    assert f"cannot reach {base_url} after 1 retries" in message and "generator.base_url" in message
    assert "\n" not in message


def test_timeout(server):
    server.delay = 1.0
    with pytest.raises(GenerationError, match=r"did not answer within 0.3 s"):
        remote(server, timeout=0.3).generate(PROMPT)


def test_bad_key_names_the_variable(server, monkeypatch):
    server.api_key = "sk-right"
    monkeypatch.setenv("RAGTUNE_TEST_KEY", "sk-wrong")
    with pytest.raises(GenerationError, match=r"401.*\$RAGTUNE_TEST_KEY was refused"):
        remote(server, api_key_env="RAGTUNE_TEST_KEY").generate(PROMPT)
    monkeypatch.delenv("RAGTUNE_TEST_KEY")
    with pytest.raises(GenerationError, match=r"\$RAGTUNE_TEST_KEY is not set"):
        remote(server, api_key_env="RAGTUNE_TEST_KEY").generate(PROMPT)
    monkeypatch.setenv("RAGTUNE_TEST_KEY", "sk-right")
    assert remote(server, api_key_env="RAGTUNE_TEST_KEY").generate(PROMPT).text


def test_unknown_model_names_the_model_and_url(server):
    with pytest.raises(GenerationError, match=r"model 'no-such-model' was not found at http://127\.0\.0\.1:\d+/v1"):
        remote(server, model="no-such-model").generate(PROMPT)
    with pytest.raises(GenerationError, match=r"model 'no-such-model' was not found"):
        list(remote(server, model="no-such-model").stream(PROMPT))
