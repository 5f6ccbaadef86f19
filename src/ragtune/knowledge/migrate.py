"""Copy a knowledge base between store backends without re-embedding: `ragtune migrate --to URL`.

Documents, chunks, their stored vectors, metadata, access groups, section records, file hashes
and the embedder record are copied batch by batch through the store contract (`export_documents`
-> `upsert`); a pgvector target builds its HNSW index once at the end. The source is only read.
File hashes are written last, so an interrupted copy leaves files that `ragtune index` redoes.

Store URLs:
    postgresql://user@host:5432/db[?schema=name]    pgvector (the rest of the URL is the libpq DSN)
    qdrant+http://host:6333/collection              a Qdrant server (qdrant+https:// too)
    qdrant:///abs/folder[?collection=name]          qdrant-client's local mode in a folder
    sqlite:///abs/folder, or a plain folder path    the embedded store

>>> report = migrate(project.store(), target)                                     # doctest: +SKIP
>>> report.documents, report.chunks
(5183, 12917)
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ragtune.config import StoreConfig
from ragtune.errors import ConfigError, StoreError

URL_FORMS = ("postgresql://user@host:5432/db[?schema=name]", "qdrant+http://host:6333/collection",
             "qdrant:///folder[?collection=name]", "sqlite:///folder (or a folder path)")


@dataclass
class MigrationReport:
    """What one copy moved."""

    documents: int
    chunks: int
    files: int
    seconds: float
    source: str
    target: str


def store_config_from_url(url: str, base: StoreConfig | None = None, cwd: Path | None = None) -> StoreConfig:
    """The StoreConfig a store URL names (settings not in the URL come from `base`)."""
    base = base or StoreConfig()
    cwd = cwd or Path.cwd()
    keep = {k: v for k, v in base.model_dump().items() if k not in ("backend", "path", "dsn", "url", "collection",
                                                                       "schema_name")}
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme in ("postgresql", "postgres"):
        schema = query.pop("schema", base.schema_name)
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
        return StoreConfig(**keep, backend="pgvector", dsn=dsn, schema=schema, path=base.path)
    if scheme in ("qdrant+http", "qdrant+https"):
        collection = parts.path.strip("/") or base.collection
        return StoreConfig(**keep, backend="qdrant", url=f"{scheme.split('+')[1]}://{parts.netloc}",
                           collection=collection, path=base.path)
    if scheme == "qdrant":
        folder = _folder(parts.netloc + parts.path, cwd)
        return StoreConfig(**keep, backend="qdrant", path=str(folder), collection=query.get("collection", base.collection))
    if scheme in ("sqlite", "file") or (not scheme and url):
        return StoreConfig(**keep, backend="sqlite", path=str(_folder(parts.netloc + parts.path if scheme else url, cwd)))
    raise ConfigError(f"--to '{url}': not a store URL. Use one of: {'; '.join(URL_FORMS)}")


def _folder(path: str, cwd: Path) -> Path:
    if not path:
        raise ConfigError("the store URL names no folder")
    folder = Path(path).expanduser()
    return folder if folder.is_absolute() else (cwd / folder).resolve()


def migrate(source, target, batch_size: int = 256, progress: bool = False) -> MigrationReport:
    """Copy every document of `source` into the empty store `target`; returns what moved."""
    if source.describe() == target.describe():
        raise StoreError(f"source and target are the same store ({source.describe()}); choose another target.")
    present = target.count_documents()
    if present:
        raise StoreError(f"the target {target.describe()} already holds {present} documents; copy into an empty "
                         f"store (another schema, collection or folder), or remove them first.")
    started = time.perf_counter()
    embedder = source.embedder_info()
    total = source.count_documents()
    documents = chunks = 0
    bulk = getattr(target, "bulk_load", None)
    with _bar(progress, total) as advance, (bulk() if bulk else contextlib.nullcontext()):
        for batch in source.export_documents(batch_size):
            target.upsert(batch, embedder=embedder)
            documents += len(batch)
            chunks += sum(len(item.chunks) for item in batch)
            advance(len(batch))
    files = source.file_hashes()
    target.upsert([], files=sorted(files.items()), embedder=embedder)
    target.build_indexes()
    if (target.count_documents(), target.count_chunks()) != (documents, chunks):
        raise StoreError(f"the copy in {target.describe()} holds {target.count_documents()} documents and "
                         f"{target.count_chunks()} chunks, not the {documents} and {chunks} sent; the source is "
                         f"unchanged. Empty the target and run migrate again.")
    return MigrationReport(documents, chunks, len(files), time.perf_counter() - started, source.describe(),
                           target.describe())


@contextlib.contextmanager
def _bar(enabled: bool, total: int):
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("copying documents"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("copy", total=total)
        yield lambda n: bar.advance(task, n)


def migrate_project(project, url: str, batch_size: int = 256, progress: bool = False) -> tuple[MigrationReport, StoreConfig]:
    """Copy `project`'s knowledge base to the store `url` names; returns the report and the target's config."""
    from ragtune.registry import create

    config = store_config_from_url(url, project.config.store)
    source = project.store(create_if_missing=False)
    target = create("store", config.backend, config, project.folder, project.config.retrieval)
    try:
        return migrate(source, target, batch_size, progress), config
    finally:
        target.close()


def config_snippet(config: StoreConfig) -> str:
    """The `store:` block of ragtune.yaml that uses this store."""
    fields = {"sqlite": ["path"], "pgvector": ["dsn", "schema_name"], "qdrant": ["url", "collection"] if config.url
              else ["path", "collection"]}[config.backend]
    from ragtune.knowledge.store_api import redact

    names = {"schema_name": "schema"}
    lines = [f"  {names.get(f, f)}: {redact(getattr(config, f)) if f == 'dsn' else getattr(config, f)}" for f in fields]
    return "\n".join(["store:", f"  backend: {config.backend}", *lines])
