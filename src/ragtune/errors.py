"""Errors a user can cause. Each message says what was wrong, where, and what to do."""
from __future__ import annotations


class RagtuneError(Exception):
    """Base class for mistakes in user input, config or environment (exit code 2, no traceback)."""

    exit_code = 2


class ConfigError(RagtuneError):
    """The project config (ragtune.yaml) or a CLI flag is invalid."""


class InputError(RagtuneError):
    """A file, document or argument the user gave cannot be used."""


class ModelNotFoundError(RagtuneError):
    """A model could not be found locally and cannot be downloaded."""


class StoreError(RagtuneError):
    """The knowledge-base store cannot be opened or used as asked."""


class EmbedderMismatchError(StoreError):
    """The store was built with a different embedding model than the one configured."""


class GenerationError(RagtuneError):
    """A generator could not produce an answer (model missing, endpoint down or refusing)."""


class MissingExtraError(RagtuneError):
    """An optional dependency is not installed."""

    def __init__(self, what: str, extra: str, package: str | None = None):
        package = package or extra
        super().__init__(
            f"{what} needs the optional dependency '{package}'. "
            f"Install it with: pip install 'ragtune[{extra}]'"
        )


def require(module: str, what: str, extra: str):
    """Import and return `module`, or raise MissingExtraError naming the pip line that fixes it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(what, extra, module) from None
