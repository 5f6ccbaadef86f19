"""The offline default generator: answers with the retrieved sentences that best answer the question.

No language model, so nothing is made up: every word of an answer is a sentence of a source, cited.
A sentence's score blends the embedding similarity of sentence and question (the project's own
embedder) with the share of the question's content words it contains; a trained reranker
(cross-encoder), when given, scores the pairs instead. Below `min_score` it abstains.

>>> generator = ExtractiveGenerator(GeneratorConfig(), embedder=embedder)      # doctest: +SKIP
>>> generator.generate(prompt).text                                              # doctest: +SKIP
'The sync daemon listens on TCP port 7741 by default. [1]'
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import lru_cache
from typing import Iterator, Union

import numpy as np

from bm25s.stopwords import STOPWORDS_EN as _EN

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError
from ragtune.generate.base import Generation, Prompt, stream_from_generate
from ragtune.knowledge.chunk import sentences
from ragtune.registry import register
from ragtune.types import Usage

ABSTAIN_TEXT = "I cannot answer this from the sources."
TYPE_BONUS = 0.05  # added when a sentence holds the kind of answer asked for (a date for "when" ...)
# Words for lexical overlap: like BM25's analysis, but numbers, versions and codes stay whole
# ("3.2.1", "qm-2010", "x-quillmate-signature"), as answers often hinge on them.
_WORD = re.compile(r"\w+(?:[.\-/:]\w+)*")
# BM25's stopwords plus question words and auxiliaries, which say what is asked, not what about.
_STOPWORDS = frozenset(_EN) | frozenset(
    "what which who whom whose when where why how do does did done have has had can could would should may "
    "might must shall am i you we me my our your us there here any many much some get got use used".split())
_DATE = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b", re.I)
_NUMBER = re.compile(r"\d")


def words(text: str) -> list[str]:
    """Content words of `text`, lowercased, unstemmed (numbers and codes kept whole)."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


@lru_cache(maxsize=65536)
def terms(text: str) -> frozenset[str]:
    """Stemmed content words of `text`."""
    return frozenset(_stem(words(text)))


def readable(sentence: str) -> str:
    """A source sentence as answer text: Markdown emphasis and code marks dropped, a table row's
    cells joined with dashes, line breaks as spaces. (The citation keeps the exact quote.)"""
    text = re.sub(r"(\*\*|__|`)", "", sentence)
    if text.strip().startswith("|"):
        text = " — ".join(cell.strip() for cell in text.strip().strip("|").split("|") if cell.strip())
    return " ".join(text.split())


def answer_type_match(question: str, sentence: str) -> bool:
    """Whether `sentence` holds the kind of thing the question asks for: a date for "when" and
    "what year", a number for "how many/much/long/often" and "what percentage"."""
    q = question.lower()
    if q.startswith("when") or "what year" in q or "which year" in q:
        return bool(_DATE.search(sentence))
    if re.search(r"\bhow (many|much|long|often|old|far|large|big)\b|\bwhat (percent|percentage|number)\b", q):
        return bool(_NUMBER.search(sentence))
    return False


def _stem(words: list[str]) -> list[str]:
    import Stemmer

    global _stemmer
    if _stemmer is None:
        _stemmer = Stemmer.Stemmer("english").stemWords
    return _stemmer(words)


_stemmer = None


def candidates(text: str) -> list[str]:
    """Answer candidates of a source: its sentences, with short-line blocks (headers, "Key: value"
    lines) split into their lines."""
    out = []
    for sentence in sentences(text):
        lines = [line.strip() for line in sentence.split("\n") if line.strip()]
        if len(lines) > 1 and all(len(line) <= 60 for line in lines):
            out.extend(lines)
        else:
            out.append(sentence)
    return [c for c in out if len(c.split()) >= 3 or any(ch.isdigit() for ch in c)]


class ExtractiveGenerator:
    name = "extractive"
    context_window = 1_000_000  # reads sources, not a prompt: only rag.max_context_tokens limits them

    def __init__(self, config: GeneratorConfig, embedder=None, reranker=None, cache_size: int = 20_000):
        if embedder is None and reranker is None:
            raise ConfigError("the extractive generator needs the project's embedder (or a reranker) to score sentences")
        self.config, self.embedder, self.reranker = config, embedder, reranker
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # sentence -> embedding, LRU
        self._cache_size = cache_size

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.embed(missing)):
                self._vectors[text] = vector
        out = np.stack([self._vectors[t] for t in texts])
        for text in texts:
            self._vectors.move_to_end(text)
        while len(self._vectors) > self._cache_size:
            self._vectors.popitem(last=False)
        return out

    def score(self, question: str, sources: list[tuple[str, str]], question_vector: np.ndarray | None = None,
              term_weights: dict[str, float] | None = None) -> np.ndarray:
        """Score (about 0-1) of each (context, sentence) pair as an answer to `question`. The context
        (the source's section or title) is read with the sentence: "Released: 2024-12-09" under the
        title "3.2.1" answers "When was 3.2.1 released?"."""
        texts = [f"{context}: {sentence}" if context else sentence for context, sentence in sources]
        if self.reranker is not None:
            return 1.0 / (1.0 + np.exp(-self.reranker.scores(question, texts)))
        if question_vector is None:
            question_vector = self.embedder.embed([question])[0]
        similarity = self._embed(texts) @ question_vector  # (S,) cosine: vectors are normalised
        wanted = terms(question)
        weight = (lambda t: term_weights.get(t, 1.0)) if term_weights else (lambda t: 1.0)
        total = sum(weight(t) for t in wanted)
        overlap = np.array([sum(weight(t) for t in wanted & (terms(s) | terms(c))) / total if total else 0.0
                            for c, s in sources], dtype=np.float32)
        typed = np.array([answer_type_match(question, s) for _, s in sources], dtype=np.float32)
        w = self.config.lexical_weight
        return (1 - w) * similarity + w * overlap + TYPE_BONUS * typed

    def generate(self, prompt: Prompt) -> Generation:
        seen, pool = set(), []  # (source number, context, sentence); a sentence repeated in overlapping chunks once
        for n, hit in enumerate(prompt.sources, start=1):
            context = hit.section or hit.title or ""
            for sentence in candidates(hit.text):
                key = " ".join(sentence.lower().split())
                if key not in seen:
                    seen.add(key)
                    pool.append((n, context, sentence))
        if not pool:
            return Generation(ABSTAIN_TEXT, abstained=True, finish_reason="stop")
        scores = self.score(prompt.question, [(c, s) for _, c, s in pool], prompt.question_vector, prompt.term_weights)
        order = np.argsort(-scores, kind="stable")
        best = float(scores[order[0]])
        if best < self.config.min_score:
            return Generation(ABSTAIN_TEXT, abstained=True, finish_reason="stop")
        # A further sentence only when it is nearly as good as the first: it adds, it doesn't dilute.
        chosen = [i for i in order[: self.config.max_sentences] if scores[i] >= max(self.config.min_score, 0.9 * best)]
        quotes = [(pool[i][0], pool[i][2]) for i in chosen]
        text = " ".join(f"{readable(sentence)} [{n}]" for n, sentence in quotes)
        return Generation(text, usage=Usage(0, 0), quotes=quotes, finish_reason="stop")

    def stream(self, prompt: Prompt) -> Iterator[Union[str, Generation]]:
        return stream_from_generate(self, prompt)


register("generator", "extractive", ExtractiveGenerator)
