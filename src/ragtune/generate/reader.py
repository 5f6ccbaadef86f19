"""Reader generator: answers with the best span an extractive reader finds in the sources.

`generator: {backend: reader, model: FOLDER}` where FOLDER holds a reader trained with
`ragtune train reader` (or any transformers question-answering model). The reader reads each
source in windows and the answer is the most probable span across all sources, cited `[n]`; the
quote is the sentence(s) of source n that hold the span, verbatim.

`min_score` is on the reader's own scale: the span's probability in its window (softmax of the
start logits x softmax of the end logits, 0-1). Below it the generator abstains. The default 0.35
asks for a fairly confident reader; lower it for a reader trained on little data.

>>> generator = ReaderGenerator(GeneratorConfig(backend="reader", model="reader"))  # doctest: +SKIP
>>> generator.generate(prompt).text                                                  # doctest: +SKIP
'7741 [1]'
"""
from __future__ import annotations

from functools import cached_property
from typing import Iterator, Union

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError, ModelNotFoundError
from ragtune.generate.base import Generation, Prompt, stream_from_generate
from ragtune.registry import register
from ragtune.types import Usage

ABSTAIN_TEXT = "I cannot answer this from the sources."
DEFAULT_CONTEXT_WINDOW = 4096  # the reader reads any length in windows; this only bounds the work per question


def quote_around(text: str, start: int, end: int) -> str:
    """The sentence(s) of `text` that hold text[start:end], verbatim (a slice of `text`)."""
    from ragtune.knowledge.chunk import _units

    units = _units(text, 0) or [(0, len(text))]
    first = next((a for a, b in units if a <= start < b), start)
    last = next((b for a, b in units if a < end <= b), end)
    first, last = min(first, start), max(last, end)
    quote = text[first:last]
    return quote.strip() or text[start:end]


class ReaderGenerator:
    name = "reader"

    def __init__(self, config: GeneratorConfig, embedder=None, **_unused):
        if not config.model:
            raise ConfigError("generator.model is not set: give the folder of a reader trained with "
                              "`ragtune train reader` (or a question-answering model)")
        self.config = config
        self.context_window = config.context_window or DEFAULT_CONTEXT_WINDOW

    @cached_property
    def _path(self):
        from ragtune.knowledge.embedders import resolve_model_path

        return resolve_model_path(self.config.model, "generator.model")

    @cached_property
    def settings(self) -> dict:
        """The window settings the reader was trained with (read once)."""
        from ragtune.train.reader import reader_settings

        return reader_settings(self._path)

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self._path))

    @cached_property
    def model(self):
        import torch
        from transformers import AutoModelForQuestionAnswering

        from ragtune.train.common import quiet_transformers

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            with quiet_transformers():
                return AutoModelForQuestionAnswering.from_pretrained(str(self._path)).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"generator.model '{self.config.model}' ({self._path}) is not a question-answering "
                                     f"model transformers can load: {exc}") from None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])  # counting only: no length warning

    def generate(self, prompt: Prompt) -> Generation:
        from ragtune.train.reader import read_spans

        texts = [hit.text for hit in prompt.sources]
        if not texts or not prompt.question.strip():
            return Generation(ABSTAIN_TEXT, abstained=True, finish_reason="stop")
        spans = read_spans(self.model, self.tokenizer, prompt.question, texts,
                           max_length=self.settings["max_length"], stride=self.settings["stride"])
        spans = [s for s in spans if texts[s.context][s.start:s.end].strip()]
        if not spans or spans[0].probability < self.config.min_score:
            return Generation(ABSTAIN_TEXT, abstained=True, finish_reason="stop",
                              confidence=spans[0].probability if spans else None)
        best = spans[0]
        source = texts[best.context]
        n = best.context + 1
        answer = " ".join(source[best.start:best.end].split())
        return Generation(f"{answer} [{n}]", usage=Usage(0, 0), quotes=[(n, quote_around(source, best.start, best.end))],
                          finish_reason="stop", confidence=best.probability)

    def stream(self, prompt: Prompt) -> Iterator[Union[str, Generation]]:
        return stream_from_generate(self, prompt)


register("generator", "reader", ReaderGenerator)
