"""Backends by kind and name: plain dicts filled by one `register()` call per backend.

Third-party packages add backends through the `ragtune.plugins` entry-point group: each entry
point names a function that is called once with this module's `register`.

>>> register("embedder", "mine", lambda config: MyEmbedder(config))   # doctest: +SKIP
>>> create("embedder", "mine", config)                                 # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable

from ragtune.errors import ConfigError

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}
_builtins_loaded = False
_plugins_loaded = False


def register(kind: str, name: str, factory: Callable[..., Any]) -> None:
    """Make `factory` available as backend `name` of `kind` (a later call replaces it)."""
    _REGISTRY.setdefault(kind, {})[name] = factory


def _load() -> None:
    global _builtins_loaded, _plugins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from ragtune.generate import extractive, hf, openai, reader  # noqa: F401  (they register themselves)
        from ragtune.knowledge import embedders, onnx, store, store_pgvector, store_qdrant  # noqa: F401
        from ragtune.retrieve import rerank  # noqa: F401
    if not _plugins_loaded:
        _plugins_loaded = True
        from importlib.metadata import entry_points

        for entry in entry_points(group="ragtune.plugins"):
            entry.load()(register)


def names(kind: str) -> list[str]:
    """Sorted backend names of `kind`: the list used in help texts and error messages."""
    _load()
    return sorted(_REGISTRY.get(kind, {}))


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Build backend `name` of `kind`; an unknown name is a ConfigError listing the valid ones."""
    _load()
    factory = _REGISTRY.get(kind, {}).get(name)
    if factory is None:
        raise ConfigError(f"unknown {kind} backend '{name}'; choose one of: {', '.join(names(kind))}.")
    return factory(*args, **kwargs)
