"""`ragtune index`: files -> documents -> chunks -> vectors -> store, incrementally and crash-safely.

Unchanged files are skipped by content hash; within a changed file, unchanged documents are
skipped by document hash and unchanged chunks reuse their stored vectors, so nothing is
embedded twice. Documents are committed in batches (one transaction each); a file's hash is
recorded only in the batch holding its last document, so an interrupted run resumes cleanly.
One bad file never stops the run: it is listed in the report with the reason.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ragtune.config import ChunkingConfig, IngestConfig
from ragtune.errors import InputError
from ragtune.knowledge.chunk import chunk_document
from ragtune.knowledge.readers import format_of, read_file
from ragtune.knowledge.store import IndexedDocument, text_hash
from ragtune.types import Document, Section

log = logging.getLogger(__name__)
BATCH_CHUNKS = 256  # chunks embedded and committed together


@dataclass
class IndexReport:
    """What one indexing run did."""

    files_seen: int = 0
    files_unchanged: int = 0
    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_deleted: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or path:line, reason)
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def documents_written(self) -> int:
        return self.documents_added + self.documents_updated


def document_hash(doc: Document) -> str:
    """Hash of everything indexed about a document (text, structure, title, metadata, groups)."""
    metadata = {k: v for k, v in doc.metadata.items() if k != "modified"}
    payload = json.dumps([doc.title, [[s.text, s.title, s.page] for s in doc.sections], metadata,
                          sorted(set(doc.groups))], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _ignored(rel: str, include: list[str], exclude: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in exclude):
        return True
    return bool(include) and not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in include)


def discover(paths: Iterable[str], config: IngestConfig, report: IndexReport) -> list[tuple[Path, str]]:
    """(file, document id) pairs under `paths`; ids are the path from the named folder, e.g. 'docs/a.md'."""
    found = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            if not _ignored(path.name, [], config.exclude):
                found.append((path, path.name))
        elif path.is_dir():
            root = path.resolve()
            for file in sorted(root.rglob("*")):
                rel = file.relative_to(root).as_posix()
                if not file.is_file() or any(part.startswith(".") for part in rel.split("/")):
                    continue
                if _ignored(rel, config.include, config.exclude):
                    continue
                if format_of(file) is None:
                    report.skipped.append((str(file), "unsupported format"))
                    continue
                found.append((file, f"{root.name}/{rel}"))
        else:
            report.skipped.append((raw, "no such file or folder"))
    return found


def index_paths(store, embedder, paths: list[str], chunking: ChunkingConfig | None = None,
                ingest: IngestConfig | None = None, *, prune: bool = False, groups: list[str] | None = None,
                metadata: dict | None = None, stdin_id: str = "stdin", progress: bool = True,
                on_commit: Callable[[list[str]], None] | None = None) -> IndexReport:
    """Index files, folders and '-' (stdin) into `store`; see the module docstring."""
    chunking, ingest = chunking or ChunkingConfig(), ingest or IngestConfig()
    report, started = IndexReport(), time.perf_counter()
    info = embedder.info()
    store.check_embedder(info)
    files = discover([p for p in paths if p != "-"], ingest, report)
    missing = [w for w, why in report.skipped if why == "no such file or folder"]
    if paths and "-" not in paths and len(missing) == len(paths):
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    if paths and not files and "-" not in paths and not report.skipped:
        raise InputError(f"nothing to index in {', '.join(paths)}")
    known = store.file_hashes()
    with _progress(progress) as bar:
        task = bar.add_task("indexing", total=len(files) + ("-" in paths))

        def committed(doc_ids: list[str]) -> None:
            bar.update(task, description=_rate(report, started))
            if on_commit is not None:
                on_commit(doc_ids)

        writer = _BatchWriter(store, embedder, info, chunking, report, committed)
        for path, doc_id in files:
            report.files_seen += 1
            key = str(path.resolve())
            try:
                digest = file_hash(path)
            except OSError as exc:
                report.skipped.append((str(path), f"cannot read ({exc.strerror})"))
                bar.advance(task)
                continue
            if known.get(key) == digest:
                report.files_unchanged += 1
                bar.advance(task)
                continue
            writer.add_file(key, digest, _documents(path, doc_id, ingest, report, groups, metadata))
            bar.advance(task)
        if "-" in paths:
            text = sys.stdin.read()
            if text.strip():
                doc = Document(id=stdin_id, title=stdin_id, sections=[Section(text.strip())],
                               metadata={"source": "stdin", **(metadata or {})}, groups=list(groups or []))
                writer.add_file(None, None, iter([doc]))
            else:
                report.skipped.append(("-", "empty standard input"))
            bar.advance(task)
        writer.flush()
    if prune:
        gone = [f for f in store.files_with_documents() if not Path(f).exists()]
        doomed = [d for f in gone for d in store.documents_of_file(f)]
        if doomed:
            report.documents_deleted += store.delete(doomed, forget_files=gone)
    store.build_indexes()
    report.seconds = time.perf_counter() - started
    return report


def _documents(path: Path, doc_id: str, ingest: IngestConfig, report: IndexReport,
               groups: list[str] | None, metadata: dict | None) -> Iterator[Document]:
    try:
        for item in read_file(path, doc_id, ingest):
            if isinstance(item, InputError):
                report.skipped.append((str(item).split(": ", 1)[0], str(item).split(": ", 1)[-1]))
                continue
            item.groups = sorted(set(item.groups) | set(groups or []))
            item.metadata.update(metadata or {})
            yield item
    except InputError as exc:
        report.skipped.append((str(path), str(exc).split(": ", 1)[-1]))
    except Exception as exc:  # a reader bug or a malformed file: skip the file, keep going
        log.debug("reader failed on %s", path, exc_info=True)
        report.skipped.append((str(path), f"could not parse ({type(exc).__name__}: {exc})"))


class _BatchWriter:
    """Chunks documents, embeds what is new, and commits in batches of ~BATCH_CHUNKS chunks."""

    def __init__(self, store, embedder, info, chunking: ChunkingConfig, report: IndexReport, on_commit):
        self.store, self.embedder, self.info, self.chunking = store, embedder, info, chunking
        self.report, self.on_commit = report, on_commit
        self.pending: list[IndexedDocument] = []
        self.pending_files: list[tuple[str, str]] = []
        self.pending_deletes: list[str] = []
        self.claimed: dict[str, str | None] = {}  # document id -> file key, in this run

    def add_file(self, key: str | None, digest: str | None, documents: Iterator[Document]) -> None:
        previous = self.store.documents_of_file(key) if key else {}
        seen = set()
        for doc in documents:
            if doc.id in seen:
                self.report.skipped.append((f"{key}", f"duplicate document id '{doc.id}'; later copy skipped"))
                continue
            seen.add(doc.id)
            owner = self.claimed.get(doc.id, self.store.file_of(doc.id) if doc.id not in previous else key)
            if owner is not None and key is not None and owner != key:
                self.report.skipped.append((key, f"document id '{doc.id}' already comes from {owner}; "
                                                 "give rows unique ids (or remove the other file)"))
                continue
            self.claimed[doc.id] = key
            doc.content_hash = document_hash(doc)
            if previous.get(doc.id) == doc.content_hash:
                self.report.documents_unchanged += 1
                continue
            if doc.id in previous:
                self.report.documents_updated += 1
            else:
                self.report.documents_added += 1
            chunks = chunk_document(doc, self.embedder, self.chunking.size, self.chunking.overlap,
                                    self.chunking.prepend_title)
            self.pending.append(IndexedDocument(doc, chunks, np.zeros((0, 0), np.float32), file=key))
            if sum(len(p.chunks) for p in self.pending) >= BATCH_CHUNKS:
                self.flush()
        self.pending_deletes.extend(d for d in previous if d not in seen)
        self.report.documents_deleted += len([d for d in previous if d not in seen])
        if key is not None:
            self.pending_files.append((key, digest))

    def flush(self) -> None:
        if not (self.pending or self.pending_files or self.pending_deletes):
            return
        texts = [c.index_text for item in self.pending for c in item.chunks]
        hashes = [text_hash(t) for t in texts]
        reuse = self.store.vectors_for_texts(sorted(set(hashes)))
        todo = sorted({h: t for h, t in zip(hashes, texts) if h not in reuse}.items())
        started = time.perf_counter()
        fresh = self.embedder.embed([t for _, t in todo]) if todo else np.zeros((0, 0), np.float32)
        self.report.embed_seconds += time.perf_counter() - started
        vectors_by_hash = {**reuse, **{h: fresh[i] for i, (h, _) in enumerate(todo)}}
        self.report.chunks_embedded += len(todo)
        self.report.chunks_reused += len(hashes) - len(todo)
        position = 0
        for item in self.pending:
            n = len(item.chunks)
            item.vectors = (np.stack([vectors_by_hash[h] for h in hashes[position:position + n]])
                            if n else np.zeros((0, self.info["dimension"]), np.float32))
            position += n
        if self.pending_deletes:
            self.store.delete(self.pending_deletes)
        self.store.upsert(self.pending, files=self.pending_files, embedder=self.info)
        if self.on_commit is not None:
            self.on_commit([item.document.id for item in self.pending])
        self.pending, self.pending_files, self.pending_deletes = [], [], []


def _rate(report: IndexReport, started: float) -> str:
    elapsed = max(1e-9, time.perf_counter() - started)
    done = report.documents_written
    return f"indexing ({done} docs written, {done / elapsed:.1f} docs/s, {report.chunks_embedded} chunks embedded)"


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                    TimeElapsedColumn(), transient=False)


def reembed(store, embedder, progress: bool = True, batch: int = 512) -> int:
    """Recompute every chunk vector with `embedder` and record it; one transaction at the end."""
    rows = store.chunk_texts()
    vectors = []
    with _progress(progress) as bar:
        task = bar.add_task("re-embedding chunks", total=len(rows))
        for i in range(0, len(rows), batch):
            part = rows[i:i + batch]
            vectors.append(embedder.embed([f"{h}\n{t}" if h else t for _, h, t in part]))
            bar.advance(task, len(part))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    store.replace_vectors([r[0] for r in rows], matrix, embedder.info())
    return len(rows)
