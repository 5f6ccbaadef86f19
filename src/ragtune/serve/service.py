"""What the routes of `ragtune serve` do, as plain synchronous library calls (routes run them in
worker threads): per-request RAG pipelines, document writes with group checks, and the
conversions from Answers and Hits to the response models.
"""
from __future__ import annotations

import copy
import re
import tempfile
import threading
from pathlib import Path

from ragtune.config import ServerConfig
from ragtune.errors import InputError, RagtuneError
from ragtune.serve.auth import ApiKey
from ragtune.serve.guard import ApiError
from ragtune.serve.schemas import (CitationOut, HitOut, RagtuneExtra, SourceOut, TokenUsage, WriteResult,
                                   WrittenDocument)

CHAT_TURNS = 4  # earlier question/answer pairs given to the generator, as in `ragtune chat`


class _Serialized:
    """A generator whose generate() runs one call at a time: the extractive generator's sentence
    cache is not thread-safe (and it is CPU-bound, so nothing is lost)."""

    def __init__(self, inner, lock: threading.Lock):
        self._inner, self._lock = inner, lock

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def generate(self, prompt):
        with self._lock:
            return self._inner.generate(prompt)

    def stream(self, prompt):
        from ragtune.generate.base import stream_from_generate

        return stream_from_generate(self, prompt)


def visible_groups(doc_groups: list[str], key: ApiKey) -> list[str]:
    return sorted(set(doc_groups) & set(key.groups))


def may_write(doc_groups: list[str], key: ApiKey) -> bool:
    """A key may replace or delete a document only when every group of the document is one of its
    own; documents without groups (visible to everyone) only with a key without groups."""
    return set(doc_groups) <= set(key.groups) and (bool(doc_groups) or not key.groups)


class Service:
    """The library calls behind the routes. Methods are synchronous; routes run them in threads."""

    def __init__(self, project, settings: ServerConfig):
        from ragtune.rag import RAG

        self.project, self.settings = project, settings
        self.store = project.store(create_if_missing=True)
        self.embedder = project.embedder
        self.store.check_embedder(self.embedder.info())
        self.rag = RAG(project)
        self.generator = self.rag.generator  # built once; per-request variants are shallow copies
        self.reranker = self.rag.reranker
        self._generate_lock = threading.Lock()
        self.write_lock = threading.Lock()  # check-then-write of documents is atomic within the server
        if self.store.count_chunks():
            with self.store.snapshot():  # bring derived indexes up to date before the first request
                pass

    # chat ------------------------------------------------------------------------------------
    def rag_for(self, max_tokens: int | None, temperature: float | None, top_p: float | None):
        from ragtune.rag import RAG

        generator, config = self.generator, self.generator.config
        wanted = {"max_new_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        changes = {k: v for k, v in wanted.items() if v is not None and hasattr(config, k) and getattr(config, k) != v}
        if changes:  # loaded models and clients are shared: they live in the copied __dict__
            generator = copy.copy(generator)
            generator.config = config.model_copy(update=changes)
        if generator.name == "extractive":
            generator = _Serialized(generator, self._generate_lock)
        return RAG(self.project, generator=generator, reranker=self.reranker)

    @staticmethod
    def conversation(messages) -> tuple[str, list[dict[str, str]]]:
        """(the question: the last user message, earlier user/assistant turns)."""
        def text(message) -> str:
            if isinstance(message.content, list):
                return "\n".join(part.text for part in message.content)
            return message.content or ""

        if messages[-1].role != "user" or not text(messages[-1]).strip():
            raise ApiError(400, "the last message must be a non-empty user message (the question)", param="messages")
        history = [{"role": m.role, "content": text(m)} for m in messages[:-1] if m.role in ("user", "assistant")]
        return text(messages[-1]), history[-2 * CHAT_TURNS:]

    # documents -------------------------------------------------------------------------------
    def upsert(self, documents: list, key: ApiKey) -> WriteResult:
        """Chunk, embed and store documents in one transaction, replacing same-id documents."""
        import numpy as np

        from ragtune.knowledge.chunk import chunk_document
        from ragtune.knowledge.indexer import document_hash
        from ragtune.knowledge.store import IndexedDocument, text_hash

        for doc in documents:
            if not set(doc.groups) <= set(key.groups):
                outside = ", ".join(sorted(set(doc.groups) - set(key.groups)))
                raise ApiError(403, f"document '{doc.id}': groups {outside} are not among this key's groups "
                                    f"({', '.join(key.groups) or 'none'})", "permission_error")
        ids = [doc.id for doc in documents]
        if len(set(ids)) < len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise ApiError(400, f"document ids must be unique within a request; repeated: {', '.join(twice[:5])}")
        chunking, info = self.project.config.chunking, self.embedder.info()
        written, items = [], []
        with self.write_lock:
            for doc in documents:
                existing = self.store.list_documents({"id": doc.id})
                if existing and not may_write(existing[0].groups, key):
                    raise ApiError(403, f"document '{doc.id}' exists and belongs to groups this key does not "
                                        "hold; choose another id", "permission_error")
                doc.content_hash = document_hash(doc)
                if existing and existing[0].content_hash == doc.content_hash:
                    written.append(WrittenDocument(id=doc.id, status="unchanged", chunks=existing[0].chunk_count))
                    continue
                chunks = chunk_document(doc, self.embedder, chunking.size, chunking.overlap, chunking.prepend_title)
                items.append(IndexedDocument(doc, chunks, np.zeros((0, 0), np.float32)))
                written.append(WrittenDocument(id=doc.id, status="updated" if existing else "added", chunks=len(chunks)))
            texts = [c.index_text for item in items for c in item.chunks]
            hashes = [text_hash(t) for t in texts]
            vectors = self.store.vectors_for_texts(sorted(set(hashes)))
            todo = sorted({h: t for h, t in zip(hashes, texts) if h not in vectors}.items())
            if todo:
                vectors.update(zip([h for h, _ in todo], self.embedder.embed([t for _, t in todo])))
            position = 0
            for item in items:
                n = len(item.chunks)
                item.vectors = (np.stack([vectors[h] for h in hashes[position:position + n]]) if n
                                else np.zeros((0, info["dimension"]), np.float32))
                position += n
            if items:
                self.store.upsert(items, embedder=info)
        return WriteResult(documents=written)

    def documents_from_files(self, files: list[tuple[str, bytes]], doc_id: str | None, groups: list[str],
                             metadata: dict) -> tuple[list, list[str]]:
        """Documents read from uploaded files with the project's readers; (documents, problems)."""
        from ragtune.knowledge.readers import format_of, read_file

        if doc_id is not None and len(files) != 1:
            raise ApiError(400, "'id' names one document: upload a single file with it", param="id")
        documents, problems = [], []
        with tempfile.TemporaryDirectory(prefix="ragtune-upload-") as tmp:
            for name, data in files:
                safe = re.sub(r"[^A-Za-z0-9._ -]", "_", Path(name.replace("\\", "/")).name).strip(" .")
                if not safe or format_of(Path(safe)) is None:
                    problems.append(f"{name or '(no file name)'}: unsupported file type; upload .txt, .md, .html, "
                                    ".pdf, .jsonl or .csv")
                    continue
                path = Path(tmp) / safe
                path.write_bytes(data)
                try:
                    for item in read_file(path, doc_id or safe, self.project.config.ingest):
                        if isinstance(item, InputError):
                            problems.append(str(item).replace(str(path), safe))
                            continue
                        item.groups = sorted(set(item.groups) | set(groups))
                        item.metadata.update(metadata)
                        documents.append(item)
                except RagtuneError as exc:
                    problems.append(str(exc).replace(str(path), safe))
        return documents, problems

    def delete(self, doc_id: str, key: ApiKey) -> None:
        with self.write_lock:
            existing = self.store.list_documents({"id": doc_id}, key.groups)
            if not existing:
                raise ApiError(404, f"no document '{doc_id}' visible to this key", "not_found_error")
            if not may_write(existing[0].groups, key):
                raise ApiError(403, f"document '{doc_id}' has groups this key does not hold", "permission_error")
            self.store.delete([doc_id])

    # what `ragtune compare` produced -----------------------------------------------------------
    def classifier(self):
        """The adopted classify strategy (classify.model, written by `ragtune compare --adopt`), or None."""
        adopted = self.project.config.classify.model
        if not adopted:
            return None
        if getattr(self, "_classifier", None) is None:
            from ragtune.evaluate.classify_models import load_classify_model

            self._classifier = load_classify_model(self.project.folder / adopted, self.embedder)
        return self._classifier

    def reports_dir(self) -> Path:
        """The comparison's results folder: report.html, comparison.json and results/<strategy>.json."""
        return (self.project.folder / self.project.config.compare.results).resolve()


def hit_out(hit) -> HitOut:
    return HitOut(chunk_id=hit.chunk_id, document_id=hit.document_id, score=_finite(hit.score), text=hit.text,
                  source=hit.source, title=hit.title, section=hit.section, page=hit.page, metadata=hit.metadata)


def _finite(x: float) -> float:
    return float(x) if x == x and abs(x) != float("inf") else 0.0


def ragtune_extra(answer) -> RagtuneExtra:
    cited = {c.number for c in answer.citations}
    return RagtuneExtra(
        text=answer.text,
        citations=[CitationOut(number=c.number, document_id=c.document_id, chunk_id=c.chunk_id, source=c.source,
                               page=c.page, section=c.section, quote=c.quote) for c in answer.citations],
        sources=[SourceOut(number=n, document_id=h.document_id, chunk_id=h.chunk_id, title=h.title, source=h.source,
                           section=h.section, page=h.page, score=_finite(h.score), text=h.text, cited=n in cited)
                 for n, h in enumerate(answer.hits, start=1)],
        abstained=answer.abstained, abstain_reason=answer.abstain_reason, retrieval_query=answer.retrieval_query,
        invalid_citations=answer.invalid_citations,
        timings_ms={k: round(v * 1000, 3) for k, v in answer.timings.items()})


def usage_of(answer) -> TokenUsage:
    u = answer.usage
    return TokenUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                      total_tokens=u.prompt_tokens + u.completion_tokens)
