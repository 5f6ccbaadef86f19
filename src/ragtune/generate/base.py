"""The generator contract: what every backend (extractive, hf, openai, plugins) implements.

A generator gets a `Prompt` (the question, the numbered sources and the chat messages built from
them by `ragtune.generate.prompts`) and returns a `Generation`. LLM backends send `prompt.messages`;
the extractive backend reads `prompt.question` and `prompt.sources` directly.

>>> generator = create("generator", "extractive", GeneratorConfig(), embedder=embedder)  # doctest: +SKIP
>>> generator.generate(prompt).text                                                      # doctest: +SKIP
'The sync daemon listens on port 7741 [1].'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Union, runtime_checkable

from ragtune.types import Hit, Usage


@dataclass
class Prompt:
    """What a generator answers from."""

    question: str
    sources: list[Hit]  # source [n] is sources[n-1]
    messages: list[dict[str, str]]  # chat messages {"role", "content"}: system, history, user (with sources)
    history: list[dict[str, str]] = field(default_factory=list)  # earlier turns, already inside messages
    question_vector: Any = None  # the question's embedding when retrieval computed one (np.ndarray)
    term_weights: dict[str, float] | None = None  # idf of the question's words in the knowledge base


@dataclass
class Generation:
    """A generator's output. `text` cites sources as [n]."""

    text: str
    usage: Usage = field(default_factory=Usage)
    quotes: list[tuple[int, str]] = field(default_factory=list)  # ([n], exact span quoted), extractive
    abstained: bool = False  # the generator itself found no answer in the sources
    finish_reason: str | None = None  # 'stop', 'length', ...
    confidence: float | None = None  # the generator's own score of its best answer (reader: span probability)


@runtime_checkable
class Generator(Protocol):
    """Contract:

    - `name`: the registry name of the backend ("extractive", "hf", "openai", ...).
    - `context_window`: tokens the model reads in all (prompt + answer); prompts are packed to fit.
    - `count_tokens(text)`: tokens `text` takes in this model's prompt (an estimate where unknown).
    - `generate(prompt)`: the whole answer at once.
    - `stream(prompt)`: yields the answer as text pieces (str) as they are produced, then exactly one
      final `Generation` holding the whole text and usage. Backends that cannot stream yield the
      text once, then the Generation.
    - User-fixable failures (model not found, endpoint down after retries, bad key) raise
      `RagtuneError` subclasses with a message that says what to do; never a bare library error.
    - Construction is cheap; models load on first use.
    """

    name: str
    context_window: int

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompt: Prompt) -> Generation: ...

    def stream(self, prompt: Prompt) -> Iterator[Union[str, Generation]]: ...


def stream_from_generate(generator: Generator, prompt: Prompt) -> Iterator[Union[str, Generation]]:
    """`stream` for backends that produce the whole text at once."""
    generation = generator.generate(prompt)
    if generation.text:
        yield generation.text
    yield generation


def estimate_tokens(text: str) -> int:
    """Tokens for a model whose tokenizer we cannot load: ~4 characters a token for English, rounded
    up a quarter so packing errs on the safe side."""
    return (len(text) * 5 + 15) // 16
