"""A ragtune project: a folder with ragtune.yaml and its knowledge base. The library entry point
that the CLI (and later the server) call.

>>> project = Project.open("my-kb")                          # doctest: +SKIP
>>> project.index(["docs/"]).documents_added                   # doctest: +SKIP
31
>>> project.search("default sync port", k=3)[0].document_id     # doctest: +SKIP
'docs/reference/configuration.md'
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from ragtune.config import CONFIG_NAME, ProjectConfig, apply_overrides, load_config
from ragtune.errors import ConfigError
from ragtune.registry import create
from ragtune.types import Hit


def find_project(start: Path | str | None = None) -> Path:
    """The folder holding ragtune.yaml: `start` itself, or the nearest parent of the current folder."""
    if start is not None:
        folder = Path(start).expanduser()
        if not (folder / CONFIG_NAME).exists():
            raise ConfigError(f"no {CONFIG_NAME} in {folder}. Create a project there with: ragtune init {folder}")
        return folder
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).exists():
            return folder
    raise ConfigError(f"no {CONFIG_NAME} here or in any parent folder. Create a project with `ragtune init`, "
                      f"or pass --project FOLDER.")


class Project:
    """Config + store + embedder of one project folder. Cheap to create; backends load on first use."""

    def __init__(self, folder: Path, config: ProjectConfig):
        self.folder, self.config = Path(folder), config

    @classmethod
    def open(cls, folder: Path | str | None = None, overrides: dict[str, Any] | None = None) -> "Project":
        folder = find_project(folder)
        config = load_config(folder / CONFIG_NAME)
        return cls(folder, apply_overrides(config, overrides or {}))

    @cached_property
    def embedder(self):
        return create("embedder", self.config.embedder.backend, self.config.embedder)

    def store(self, create_if_missing: bool = True):
        if "_store" not in self.__dict__:
            self._store = create("store", self.config.store.backend, self.config.store, self.folder,
                                 self.config.retrieval, create=create_if_missing)
        return self._store

    def index(self, paths: list[str], *, prune: bool = False, reembed: bool = False, groups: list[str] | None = None,
              metadata: dict | None = None, stdin_id: str = "stdin", progress: bool = True, on_commit=None):
        """Index files/folders ('-' = stdin); see ragtune.knowledge.indexer.index_paths."""
        from ragtune.knowledge.indexer import index_paths, reembed as reembed_all

        store = self.store()
        if reembed:
            reembed_all(store, self.embedder, progress=progress)
        return index_paths(store, self.embedder, paths, self.config.chunking, self.config.ingest, prune=prune,
                           groups=groups, metadata=metadata, stdin_id=stdin_id, progress=progress,
                           on_commit=on_commit)

    def search(self, query: str, *, mode: str | None = None, k: int | None = None, where: dict | None = None,
               groups: list[str] | None = None, unit: str = "chunks", trace: dict | None = None) -> list[Hit]:
        """Ranked hits for `query` with the project's retrieval settings (arguments override them)."""
        from ragtune.retrieve.search import search

        store = self.store(create_if_missing=False)
        retrieval = self.config.retrieval
        mode = mode or retrieval.mode
        if mode != "bm25":
            store.check_embedder(self.embedder.info())
        return search(store, self.embedder, query, mode=mode, k=k or retrieval.k, where=where, groups=groups,
                      unit=unit, config=retrieval, trace=trace)

    def close(self) -> None:
        if "_store" in self.__dict__:
            self._store.close()
