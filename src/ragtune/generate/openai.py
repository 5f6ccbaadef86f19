"""OpenAI-compatible generator: vLLM, Ollama, llama.cpp server, OpenAI, ... through the official SDK.

>>> config = GeneratorConfig(backend="openai", base_url="http://127.0.0.1:11434/v1", model="qwen2.5:0.5b")
>>> OpenAIGenerator(config).generate(prompt).text                        # doctest: +SKIP
'The sync daemon listens on port 7741 [1].'

Retries are the SDK's own: `max_retries` times with exponential backoff (0.5 s doubling, capped at
8 s, or the server's Retry-After) on connection errors, timeouts, 408, 409, 429 and 5xx. Whatever
still fails becomes a one-line `GenerationError` that says what to change.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Union

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError, GenerationError, require
from ragtune.generate.base import Generation, Prompt, estimate_tokens
from ragtune.registry import register
from ragtune.types import Usage

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 8192  # when generator.context_window is not set: the endpoint does not say
NO_KEY = "not-needed"  # sent when the key variable is unset; local servers ignore it


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_detail(exc: Any) -> str:
    """The server's own words from an error response: OpenAI's error.message, FastAPI's detail, or the body."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = (error.get("message") or error.get("detail")) if isinstance(error, dict) else error
        body = message or body
    return _one_line(body if body else exc.message)


class OpenAIGenerator:
    """Chat completions from any OpenAI-compatible endpoint. The client is built on first use."""

    name = "openai"

    def __init__(self, config: GeneratorConfig, embedder: Any = None):
        self.config = config
        self._client = None
        self._model = config.model  # None: asked from the endpoint on first use
        self._lock = threading.Lock()

    @property
    def context_window(self) -> int:
        return self.config.context_window or DEFAULT_CONTEXT_WINDOW

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    @property
    def client(self) -> Any:
        if self._client is None:
            openai = require("openai", "the openai generator", "openai")
            with self._lock:
                if self._client is None:
                    self._client = openai.OpenAI(
                        base_url=self.config.base_url, api_key=os.environ.get(self.config.api_key_env) or NO_KEY,
                        timeout=self.config.timeout, max_retries=self.config.max_retries)
        return self._client

    @property
    def model(self) -> str:
        """The configured model, else the only one the endpoint serves."""
        if self._model is None:
            with self._errors(None):
                served = sorted(model.id for model in self.client.models.list())
            if len(served) != 1:
                listed = ", ".join(served) if served else "none"
                raise ConfigError(f"generator.model is not set and {self.config.base_url} serves "
                                  f"{len(served)} models ({listed}); set generator.model to the one to use.")
            self._model = served[0]
        return self._model

    @contextmanager
    def _errors(self, model: str | None) -> Iterator[None]:
        """Turn the SDK's errors (after its retries) into a GenerationError that says what to do."""
        import openai

        try:
            yield
        except openai.OpenAIError as exc:
            raise GenerationError(self._describe(exc, model)) from None

    def _describe(self, exc: Exception, model: str | None) -> str:
        import openai

        url, retries = self.config.base_url, self.config.max_retries
        if isinstance(exc, openai.APITimeoutError):
            return (f"{url} did not answer within {self.config.timeout:g} s (tried {retries + 1} times); "
                    f"raise generator.timeout or check the server.")
        if isinstance(exc, openai.APIConnectionError):
            reason = _one_line(exc.__cause__ or exc)
            return (f"cannot reach {url} after {retries} retries: {reason} — is the server running? "
                    f"set generator.base_url.")
        if isinstance(exc, openai.APIStatusError):
            status, detail = exc.status_code, _status_detail(exc)
            if status in (401, 403):
                key = "is not set" if not os.environ.get(self.config.api_key_env) else "was refused"
                return (f"{url} refused the request ({status}: {detail}): the API key in ${self.config.api_key_env} "
                        f"{key}. Set {self.config.api_key_env}, or point generator.api_key_env at the variable "
                        f"holding the key.")
            if status == 404 and model is None:
                return (f"{url}/models answered 404 ({detail}): set generator.model, and check generator.base_url "
                        f"(it usually ends in /v1).")
            if status == 404:
                return (f"model '{model}' was not found at {url} (404: {detail}). Set generator.model to a model "
                        f"the endpoint serves, and check generator.base_url (it usually ends in /v1).")
            retried = f" after {retries} retries" if status in (408, 409, 429) or status >= 500 else ""
            return f"{url} answered {status}{retried}: {detail}"
        return f"openai client error talking to {url}: {_one_line(exc)}"

    def _arguments(self, prompt: Prompt) -> dict[str, Any]:
        config = self.config
        arguments = dict(model=self.model, messages=prompt.messages, max_tokens=config.max_new_tokens,
                         temperature=config.temperature)
        if config.temperature > 0 and config.top_p < 1:
            arguments["top_p"] = config.top_p
        return arguments

    def generate(self, prompt: Prompt) -> Generation:
        arguments = self._arguments(prompt)
        with self._errors(arguments["model"]):
            response = self.client.chat.completions.create(**arguments)
        if not response.choices:
            raise GenerationError(f"{self.config.base_url} returned no choices for model '{arguments['model']}'.")
        choice, usage = response.choices[0], response.usage
        return Generation(
            text=choice.message.content or "",
            usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else Usage(),
            finish_reason=choice.finish_reason)

    def stream(self, prompt: Prompt) -> Iterator[Union[str, Generation]]:
        """Content deltas as the server sends them (SSE), then the Generation with the server's usage."""
        import openai

        arguments = self._arguments(prompt)
        pieces: list[str] = []
        usage, finish_reason, chunk = Usage(), None, None
        with self._errors(arguments["model"]):
            try:
                chunks = self.client.chat.completions.create(**arguments, stream=True,
                                                             stream_options={"include_usage": True})
            except openai.BadRequestError as exc:  # older servers reject stream_options
                log.info("%s refused stream_options (%s); streaming without usage", self.config.base_url,
                         _status_detail(exc))
                chunks = self.client.chat.completions.create(**arguments, stream=True)
            with chunks:  # closes the connection if the caller stops reading early
                for chunk in chunks:
                    if chunk.usage:
                        usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices:
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        if choice.delta is not None and choice.delta.content:
                            pieces.append(choice.delta.content)
                            yield choice.delta.content
        if chunk is None:
            raise GenerationError(f"{self.config.base_url} ended the stream without sending anything for model "
                                  f"'{arguments['model']}'; check the server's log.")
        if finish_reason is None:
            log.warning("%s ended the stream without a finish_reason: the answer may be cut short",
                        self.config.base_url)
        yield Generation(text="".join(pieces), usage=usage, finish_reason=finish_reason)


register("generator", "openai", OpenAIGenerator)
