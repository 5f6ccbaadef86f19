"""The request and response models of `ragtune serve`; the OpenAPI schema is generated from them.

Request models carry the server's limits (k, max_tokens, messages), so they are built per app
by `request_models(settings)` and /openapi.json states the limits the server enforces.
"""
# No `from __future__ import annotations`: the request models are classes built inside a function
# and must be complete (resolved) when FastAPI reads them.
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ragtune.config import ServerConfig

CHAT_MODEL = "ragtune-rag"  # the served name of the RAG strategy
MAX_DOCUMENTS = 1000  # per upload request
MAX_EMBED_INPUTS = 256


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses` for these statuses, plus those every authenticated route can answer."""
    text = {400: "bad input", 401: "missing or unknown API key", 403: "the key lacks the write scope or the groups",
            404: "not found", 409: "the project is not in a state that allows this", 413: "request body too large",
            415: "unsupported content type", 422: "the request does not match the schema", 502: "the configured LLM endpoint failed",
            504: "the request took longer than server.request_timeout_s"}
    return {s: {"model": ErrorResponse, "description": text[s]} for s in (400, 401, 413, 422, 504, *statuses)}


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ragtune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: List[ModelCard]


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CitationOut(BaseModel):
    number: int = Field(description="The n of [n] in the answer; sources[n-1] is the cited source.")
    document_id: str
    chunk_id: str
    source: Optional[str] = None
    page: Optional[int] = None
    section: Optional[str] = None
    quote: Optional[str] = Field(None, description="The cited span; checked to occur in the source.")


class SourceOut(BaseModel):
    number: int
    document_id: str
    chunk_id: str
    title: Optional[str] = None
    source: Optional[str] = None
    section: Optional[str] = None
    page: Optional[int] = None
    score: float
    text: str
    cited: bool


class RagtuneExtra(BaseModel):
    """ragtune's additions to a chat completion: what the answer cites and what it was given."""

    text: str = Field(description="The checked answer; in a stream it can differ from the streamed deltas when "
                                  "an invalid citation was dropped.")
    citations: List[CitationOut]
    sources: List[SourceOut]
    abstained: bool
    abstain_reason: Optional[str] = None
    retrieval_query: str
    invalid_citations: List[str] = []
    timings_ms: Dict[str, float] = {}


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: List[ChatChoice]
    usage: TokenUsage
    ragtune: RagtuneExtra


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[List[float], str] = Field(description="floats, or base64 of little-endian float32.")


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: List[EmbeddingItem]
    model: str
    usage: TokenUsage


class HitOut(BaseModel):
    chunk_id: str
    document_id: str
    score: float
    text: str
    source: Optional[str] = None
    title: Optional[str] = None
    section: Optional[str] = None
    page: Optional[int] = None
    metadata: Dict[str, Any] = {}


class SearchResponse(BaseModel):
    query: str
    mode: str
    k: int
    hits: List[HitOut]
    timings_ms: Dict[str, float] = {}


Scalar = Union[str, int, float, bool, None]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$",
                    description="Document id; an existing document with this id is replaced.")
    text: str = Field(min_length=1, description="Plain text of the document.")
    title: Optional[str] = Field(None, max_length=1000)
    metadata: Dict[str, Scalar] = Field(default_factory=dict, max_length=64)
    groups: Optional[List[str]] = Field(None, max_length=64, description=(
        "Access groups; omitted = the key's own groups. Must be a subset of the key's groups."))


class DocumentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: List[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DocumentUpload(BaseModel):
    """multipart/form-data fields of a file upload (described here for the schema)."""

    files: List[bytes] = Field(description="One or more files (txt, md, html, pdf, jsonl, csv); the file name "
                                           "picks the reader.")
    groups: Optional[str] = Field(None, description="Comma-separated access groups (default: the key's groups).")
    metadata: Optional[str] = Field(None, description="A JSON object of metadata added to every document.")
    id: Optional[str] = Field(None, description="Document id for a single file (default: its file name).")


class WrittenDocument(BaseModel):
    id: str
    status: Literal["added", "updated", "unchanged"]
    chunks: int


class WriteResult(BaseModel):
    documents: List[WrittenDocument]
    skipped: List[str] = []


class DocumentOut(BaseModel):
    id: str
    title: Optional[str] = None
    source: Optional[str] = None
    metadata: Dict[str, Any] = {}
    groups: List[str] = Field(description="The document's groups that the key holds (others are not shown).")
    chunk_count: int


class DocumentList(BaseModel):
    documents: List[DocumentOut]
    limit: int
    offset: int
    next_offset: Optional[int] = None


class ChunkOut(BaseModel):
    id: str
    index: int
    text: str
    section: Optional[str] = None
    page: Optional[int] = None


class DocumentDetail(DocumentOut):
    chunks: List[ChunkOut]


class Deleted(BaseModel):
    deleted: str


class ReportInfo(BaseModel):
    id: str
    format: Literal["json", "html"]
    bytes: int
    modified: float


class ReportList(BaseModel):
    reports: List[ReportInfo]


class ClassifyItem(BaseModel):
    index: int
    label: str
    scores: Dict[str, float] = {}


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: List[ClassifyItem]


# --- request models: their limits come from the server settings ------------------------------------
def request_models(settings: ServerConfig):
    """The request models with the settings' limits in their schema, so /openapi.json states them."""

    class TextPart(BaseModel):
        type: Literal["text"]
        text: str

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: Union[str, List[TextPart], None] = None

    class ChatOptions(BaseModel):
        """ragtune's retrieval options for one chat request (send as `extra_body={"ragtune": {...}}`)."""

        model_config = ConfigDict(extra="forbid")
        k: Optional[int] = Field(None, ge=1, le=settings.max_k, description="Sources given to the generator.")
        mode: Optional[Literal["bm25", "dense", "hybrid"]] = None
        where: Optional[Dict[str, Scalar]] = Field(None, max_length=16, description="Metadata equality filters.")

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use
        model: str = Field(description=f"A chat model listed by /v1/models ('{CHAT_MODEL}').")
        messages: List[ChatMessage] = Field(min_length=1, max_length=settings.max_messages)
        stream: bool = False
        stream_options: Optional[StreamOptions] = None
        max_tokens: Optional[int] = Field(None, ge=1, le=settings.max_tokens)
        max_completion_tokens: Optional[int] = Field(None, ge=1, le=settings.max_tokens)
        temperature: Optional[float] = Field(None, ge=0, le=2)
        top_p: Optional[float] = Field(None, gt=0, le=1)
        n: Optional[int] = Field(None, ge=1, le=1, description="Only 1 is supported.")
        user: Optional[str] = None
        ragtune: Optional[ChatOptions] = None

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: str = Field(min_length=1, max_length=4000)
        mode: Optional[Literal["bm25", "dense", "hybrid"]] = Field(None, description="Default: retrieval.mode.")
        k: Optional[int] = Field(None, ge=1, le=settings.max_k, description="Default: retrieval.k.")
        where: Optional[Dict[str, Scalar]] = Field(None, max_length=16, description="Metadata equality filters.")
        unit: Literal["chunks", "documents"] = "chunks"

    class EmbeddingsRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str
        input: Union[str, List[str]] = Field(description=f"Text or up to {MAX_EMBED_INPUTS} texts.")
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: Optional[int] = Field(None, ge=1)
        user: Optional[str] = None

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: Optional[str] = None
        input: Union[str, List[str]]

    return ChatRequest, SearchRequest, EmbeddingsRequest, ClassifyRequest
