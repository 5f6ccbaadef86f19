"""The RAG pipeline: question -> retrieve -> (rerank) -> abstain? -> prompt -> generate -> check citations.

>>> rag = RAG(Project.open("demo-kb"))                                      # doctest: +SKIP
>>> answer = rag.ask("What port does the sync daemon listen on?")          # doctest: +SKIP
>>> answer.text, answer.citations[0].source                                 # doctest: +SKIP
('The sync daemon listens on TCP port 7741 by default. [1]', 'reference/configuration.md')
>>> answer.timings                                                          # doctest: +SKIP
{'embed': 0.012, 'search': 0.002, 'rerank': 0.0, 'prompt': 0.0003, 'generate': 0.004, 'total': 0.019}
"""
from __future__ import annotations

import re
import time
import warnings
from typing import Iterator, Union

import numpy as np

from ragtune.errors import InputError, StoreError
from ragtune.generate.base import Generation, Prompt
from ragtune.generate.prompts import build_prompt, declined
from ragtune.registry import create
from ragtune.types import Answer, Citation, Hit

NO_ANSWER = "I cannot answer this from the sources."
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_QUOTED = re.compile(r"[\"“]([^\"”]{8,}?)[\"”]\s*((?:\[\d+(?:\s*,\s*\d+)*\]\s*)+)")
_FOLLOW_UP = re.compile(r"\b(it|its|it's|that|this|these|those|they|them|their|there|he|she|his|her|"
                        r"same|one|ones|former|latter|also)\b|^\s*(and|what about|how about|why|how so)\b", re.I)


class RAG:
    """Answers questions from a project's knowledge base with its configured generator and reranker."""

    def __init__(self, project, generator=None, reranker=None):
        """`generator`/`reranker`: use these instead of the configured ones; reranker=False never
        reranks, even when rag.rerank.model is set."""
        self.project, self.config = project, project.config
        self._generator, self._reranker = generator, reranker

    @property
    def generator(self):
        if self._generator is None:
            g = self.config.generator
            self._generator = create("generator", g.backend, g, embedder=self.project.embedder,
                                     **({"reranker": self.reranker} if g.backend == "extractive" and self.reranker else {}))
        return self._generator

    @property
    def reranker(self):
        if self._reranker is None and self.config.rag.rerank.model:
            self._reranker = create("reranker", self.config.rag.rerank.backend, self.config.rag.rerank)
        return self._reranker

    # --- public API -------------------------------------------------------------------------------
    def ask(self, question: str, history: list[dict[str, str]] | None = None, **options) -> Answer:
        """Answer `question` (with earlier chat turns in `history`). Options: k, mode, where, groups,
        retrieval_query (what to search instead of the question), query_vector (its embedding, if
        already computed)."""
        answer = None
        for item in self.ask_stream(question, history, stream=False, **options):
            answer = item if isinstance(item, Answer) else answer
        return answer

    def ask_stream(self, question: str, history: list[dict[str, str]] | None = None, *, stream: bool = True,
                   k: int | None = None, mode: str | None = None, where: dict | None = None,
                   groups: list[str] | None = None, retrieval_query: str | None = None,
                   query_vector: np.ndarray | None = None) -> Iterator[Union[str, Answer]]:
        """Yields answer text pieces as the generator produces them, then the final Answer. The final
        text may differ from the pieces: invalid citations are dropped from it after generation."""
        started = time.perf_counter()
        question = self._check_question(question)
        query = retrieval_query or question
        timings: dict[str, float] = {}
        hits, vector = self._retrieve(query, k, mode, where, groups, timings, query_vector)
        abstain = self._abstain_reason(vector, hits)
        if abstain:
            timings["total"] = time.perf_counter() - started
            text = f"{NO_ANSWER} {abstain}"
            if stream:
                yield text
            yield Answer(question, text, [], hits, abstained=True, abstain_reason="retrieval", timings=timings,
                         generator=self.generator.name, retrieval_query=query)
            return
        t = time.perf_counter()
        prompt = self.prompt(question, hits, history, vector)
        timings["prompt"] = time.perf_counter() - t
        t = time.perf_counter()
        if stream:
            generation = None
            for piece in self.generator.stream(prompt):
                if isinstance(piece, Generation):
                    generation = piece
                else:
                    yield piece
        else:
            generation = self.generator.generate(prompt)
        timings["generate"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        yield self._answer(question, query, prompt, generation, timings)

    def prompt(self, question: str, hits: list[Hit], history=None, vector=None) -> Prompt:
        """The exact Prompt the generator gets for these hits (what --show-prompt prints)."""
        prompt = build_prompt(question, hits, self.generator, self.config.rag, history,
                              max_new_tokens=self.config.generator.max_new_tokens)
        prompt.question_vector = vector
        if self.generator.name == "extractive":
            prompt.term_weights = self._term_weights(question)
        return prompt

    def _term_weights(self, question: str) -> dict[str, float]:
        """Knowledge-base idf of the question's words (as the extractive generator splits them); each
        word is looked up by its BM25 analysis, and a word BM25 drops (a number, a code) counts as rare."""
        from ragtune.generate.extractive import terms, words
        from ragtune.retrieve.bm25 import analyze_query

        analysed = {w: analyze_query(w, self.config.retrieval.bm25) for w in set(words(question))}
        with self.project.store().snapshot() as snap:
            idf = snap.idf(sorted({t for tokens in analysed.values() for t in tokens} | {"\x00"}))
        rare = idf["\x00"]  # a word in no chunk
        return {next(iter(terms(w)), w): idf[tokens[0]] if len(tokens) == 1 else rare
                for w, tokens in analysed.items()}

    # --- stages -----------------------------------------------------------------------------------
    def _check_question(self, question: str) -> str:
        question = (question or "").strip()
        if not question:
            raise InputError("empty question: ask something, e.g. ragtune ask \"How do I restore a backup?\"")
        limit = self.config.rag.max_question_chars
        if len(question) > limit:
            warnings.warn(f"question is {len(question)} characters; using the first {limit} "
                          f"(rag.max_question_chars)", stacklevel=3)
            question = question[:limit]
        return question

    def _retrieve(self, query, k, mode, where, groups, timings, vector=None) -> tuple[list[Hit], np.ndarray]:
        from ragtune.retrieve.search import search

        project, rag = self.project, self.config.rag
        store = project.store(create_if_missing=False)
        if store.count_chunks() == 0:
            raise StoreError(f"the knowledge base in {project.folder} is empty: add documents with "
                             f"`ragtune index PATH` first")
        store.check_embedder(project.embedder.info())
        t = time.perf_counter()
        if vector is None:
            vector = project.embedder.embed([query])[0]
        timings["embed"] = time.perf_counter() - t
        k = k or rag.k
        pool = max(k, rag.rerank.top_n) if self.reranker else k
        t = time.perf_counter()
        hits = search(store, project.embedder, query, mode=mode or rag.mode or self.config.retrieval.mode, k=pool,
                      where=where, groups=groups, unit="chunks", config=self.config.retrieval, query_vector=vector)
        timings["search"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.reranker:
            hits = self.reranker.rerank(query, hits, k)
        timings["rerank"] = time.perf_counter() - t
        return hits[:k], vector

    def _abstain_reason(self, vector: np.ndarray, hits: list[Hit]) -> str | None:
        rag = self.config.rag
        if not hits:
            return "Nothing in the knowledge base matches the question."
        best = max(h.score for h in hits)  # reranked hits carry reranker scores (fusion may reorder them)
        if rag.rerank.min_score is not None and self.reranker and best < rag.rerank.min_score:
            return (f"The best source scores {best:.2f} with the reranker, below "
                    f"rag.rerank.min_score {rag.rerank.min_score}.")
        if rag.min_relevance > -1:
            vectors = self.project.store().chunk_vectors([h.chunk_id for h in hits])
            best = max((float(vectors[h.chunk_id] @ vector) for h in hits if h.chunk_id in vectors), default=-1.0)
            if best < rag.min_relevance:
                return (f"The closest source has similarity {best:.2f} to the question, below "
                        f"rag.min_relevance {rag.min_relevance}.")
        return None

    def _answer(self, question, query, prompt: Prompt, generation: Generation, timings) -> Answer:
        text, citations, invalid = check_citations(generation.text, prompt.sources, generation.quotes)
        abstained = generation.abstained or declined(text)
        return Answer(question, text, [] if abstained else citations, prompt.sources, abstained=abstained,
                      abstain_reason="generator" if abstained else None, invalid_citations=invalid,
                      usage=generation.usage, timings=timings, generator=self.generator.name, retrieval_query=query,
                      messages=prompt.messages)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:")


def check_citations(text: str, sources: list[Hit], quotes: list[tuple[int, str]] = ()
                    ) -> tuple[str, list[Citation], list[str]]:
    """(text without invalid citations, the valid citations in order, why each dropped one was invalid).

    A citation [n] is valid when source n was given; a quoted span followed by [n] ("..." [n], or a
    generator's own quote) must also occur in source n, else that [n] is dropped."""
    invalid: list[str] = []
    bad_quotes: set[tuple[int, int]] = set()  # (marker start, n) whose quote is not in source n
    verified: dict[int, str] = {}
    normalised = [_normalise(h.text) for h in sources]

    def quote_ok(n: int, quote: str) -> bool:
        return 1 <= n <= len(sources) and _normalise(quote) in normalised[n - 1]

    for match in _QUOTED.finditer(text):
        quote = match.group(1)
        for marker in _CITE.finditer(match.group(2)):
            for n in (int(x) for x in marker.group(1).split(",")):
                if not 1 <= n <= len(sources):
                    continue  # reported below as a missing source
                if quote_ok(n, quote):
                    verified.setdefault(n, quote.strip())
                else:
                    bad_quotes.add((match.start(2) + marker.start(), n))
                    invalid.append(f'[{n}]: the quote "{quote[:60]}" does not occur in source {n}')
    for n, quote in quotes:
        if quote_ok(n, quote):
            verified.setdefault(n, quote.strip())
        else:
            invalid.append(f'[{n}]: the quote "{quote[:60]}" does not occur in source {n}')

    order: list[int] = []

    def keep(marker: re.Match) -> str:
        kept = []
        for n in (int(x) for x in marker.group(1).split(",")):
            if not 1 <= n <= len(sources):
                invalid.append(f"[{n}]: there is no source {n} ({len(sources)} were given)")
            elif (marker.start(), n) not in bad_quotes:
                kept.append(n)
                if n not in order:
                    order.append(n)
        return f"[{', '.join(map(str, kept))}]" if kept else ""

    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", _CITE.sub(keep, text)).strip()
    citations = [Citation(n, sources[n - 1].document_id, sources[n - 1].chunk_id, sources[n - 1].source,
                          sources[n - 1].page, sources[n - 1].section, verified.get(n)) for n in order]
    return cleaned, citations, invalid


def is_follow_up(question: str) -> bool:
    """True when a chat question refers back to earlier turns: a pronoun such as "it" or "that", an
    opening "and"/"what about", or fewer than three content words ("How many are kept?")."""
    from ragtune.generate.extractive import words

    return len(words(question)) < 3 or bool(_FOLLOW_UP.search(question))


def retrieval_query(question: str, history: list[dict[str, str]]) -> str:
    """What to search for in a chat: a follow-up question is searched together with the last user
    question that stood on its own; any other question is searched as asked."""
    if not is_follow_up(question):
        return question
    for message in reversed(history):
        if message.get("role") == "user" and not is_follow_up(message["content"]):
            return f"{message['content']} {question}"
    return question
