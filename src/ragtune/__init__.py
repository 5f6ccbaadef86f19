"""ragtune: RAG, fine-tuning, or both? Build each strategy on your data, compare, serve the winner.

Importing this package is cheap: torch, transformers and database drivers load only inside the
functions that use them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ragtune.errors import RagtuneError
from ragtune.types import Chunk, Document, Hit, Section

__all__ = ["Chunk", "Document", "Hit", "RagtuneError", "Section", "__version__"]
