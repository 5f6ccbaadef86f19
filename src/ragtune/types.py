"""Plain records that flow between stages. No heavy imports here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass
class Section:
    """A contiguous part of a document that chunks never cross (a page, a Markdown section)."""

    text: str
    title: str | None = None  # section heading, e.g. "Install > Linux"
    page: int | None = None  # 1-based page number for paged formats (PDF)


@dataclass
class Document:
    """One source document: what ingest produces and the store keeps.

    >>> Document(id="guides/install.md", sections=[Section("Run the installer.", title="Install")],
    ...          title="Install", metadata={"source": "guides/install.md"})
    """

    id: str
    sections: list[Section]
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # access groups; empty = visible to everyone
    content_hash: str = ""

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass
class Chunk:
    """A piece of a document sized for the embedder; the unit that is embedded and retrieved."""

    id: str  # "<document id>#<index>", stable while the document is unchanged
    document_id: str
    index: int
    text: str
    start: int  # character offsets into Document.text
    end: int
    section: str | None = None
    page: int | None = None
    header: str = ""  # document title / section path, indexed in front of the text

    @property
    def index_text(self) -> str:
        """What is embedded and BM25-indexed: the header line, then the text."""
        return f"{self.header}\n{self.text}" if self.header else self.text


class Hit(NamedTuple):
    """One retrieved chunk with its score (higher is better) and where it came from."""

    chunk_id: str
    document_id: str
    score: float
    text: str
    source: str | None
    title: str | None
    section: str | None
    page: int | None
    metadata: dict


@dataclass
class Usage:
    """Tokens a generator read and wrote (0 where the backend cannot tell)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Citation:
    """A `[n]` in an answer, resolved to the source it names."""

    number: int  # the n of [n]: 1-based position in Answer.hits
    document_id: str
    chunk_id: str
    source: str | None = None
    page: int | None = None
    section: str | None = None
    quote: str | None = None  # the cited span, checked to occur in the source


@dataclass
class Answer:
    """A question's answer, the sources it was given and what it cost.

    >>> answer.text                                   # doctest: +SKIP
    'The sync daemon listens on port 7741 [1].'
    >>> answer.citations[0].document_id               # doctest: +SKIP
    'reference/config.md'
    """

    question: str
    text: str
    citations: list[Citation]
    hits: list[Hit]  # the numbered sources given to the generator: hits[n-1] is source [n]
    abstained: bool = False
    abstain_reason: str | None = None  # 'retrieval' (nothing relevant found) or 'generator' (it declined)
    invalid_citations: list[str] = field(default_factory=list)  # dropped: why each was invalid
    usage: Usage = field(default_factory=Usage)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: embed, search, rerank, prompt, generate
    generator: str = ""
    retrieval_query: str = ""  # what was searched (in chat: built from the conversation)
    messages: list[dict[str, str]] = field(default_factory=list)  # exactly what the generator was sent

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (hits with field names; timings in seconds)."""
        from dataclasses import asdict

        out = asdict(self)
        out["hits"] = [hit._asdict() for hit in self.hits]
        return out
