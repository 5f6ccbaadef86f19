"""Split documents into chunks sized in the embedder's own tokens, on sentence boundaries.

A chunk never crosses a section (page, Markdown section). Sentences are packed greedily up to
`size` tokens; the next chunk starts with whole trailing sentences of the previous one worth at
most `overlap` tokens. A sentence longer than a chunk is cut at token boundaries.

>>> doc = Document(id="a.md", sections=[Section("One. Two three. Four.")])
>>> [c.text for c in chunk_document(doc, HashingEmbedder(EmbedderConfig()), size=3, overlap=0)]
['One. Two three.', 'Four.']
"""
from __future__ import annotations

import re

from ragtune.types import Chunk, Document

# Sentence ends: . ! ? (optionally closing quote/bracket) followed by whitespace; or a blank line.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\n\s*\n|\n(?=\s*[-*#|>]|\s*\d+[.)]\s)")


def _units(text: str, offset: int) -> list[tuple[int, int]]:
    """Character spans (absolute) of the sentences and paragraphs of `text`."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > start:
            spans.append((offset + start, offset + match.start()))
        start = match.end()
    if start < len(text.rstrip()):
        spans.append((offset + start, offset + len(text.rstrip())))
    return spans


def header_of(doc: Document, section: str | None) -> str:
    """Text indexed in front of each chunk: document title and section title when they differ."""
    parts = [p for p in (doc.title, section) if p]
    if len(parts) == 2 and (parts[1] == parts[0] or parts[1].startswith(parts[0] + " >")):
        parts = [parts[1]]
    return " > ".join(parts)


def chunk_document(doc: Document, embedder, size: int = 200, overlap: int = 32,
                   prepend_title: bool = True) -> list[Chunk]:
    """Chunks of `doc`, ids "<doc id>#<n>" in order; offsets index into `doc.text`."""
    size = max(8, min(size, embedder.max_tokens))
    full = doc.text
    sections, pos = [], 0
    for section in doc.sections:
        sections.append((pos, section))
        pos += len(section.text) + 2
    all_units: list[tuple[int, int]] = []
    owners: list[int] = []
    for s_index, (start, section) in enumerate(sections):
        for span in _units(section.text, start):
            all_units.append(span)
            owners.append(s_index)
    headers = [header_of(doc, s.title) if prepend_title else "" for _, s in sections]
    unique_headers = sorted(set(headers))
    header_tokens = dict(zip(unique_headers, map(len, embedder.token_spans(unique_headers))))
    token_spans = embedder.token_spans([full[a:b] for a, b in all_units]) if all_units else []

    chunks: list[Chunk] = []
    for s_index, (_, section) in enumerate(sections):
        budget = max(8, size - header_tokens[headers[s_index]] - (1 if headers[s_index] else 0))
        pieces: list[tuple[int, int, int]] = []  # (start, end, tokens), long sentences cut
        for (a, b), spans, owner in zip(all_units, token_spans, owners):
            if owner != s_index:
                continue
            if len(spans) <= budget:
                pieces.append((a, b, max(1, len(spans))))
                continue
            for i in range(0, len(spans), budget):
                part = spans[i:i + budget]
                end = b if i + budget >= len(spans) else a + spans[i + budget][0]
                pieces.append((a + part[0][0], end, len(part)))
        current: list[tuple[int, int, int]] = []
        for piece in pieces:
            if current and sum(p[2] for p in current) + piece[2] > budget:
                _emit(chunks, doc, full, current, section, headers[s_index])
                carried, total = [], 0
                for prev in reversed(current):
                    if total + prev[2] > overlap or total + prev[2] + piece[2] > budget:
                        break
                    carried.insert(0, prev)
                    total += prev[2]
                current = carried
            current.append(piece)
        if current:
            _emit(chunks, doc, full, current, section, headers[s_index])
    return chunks


def _emit(chunks: list[Chunk], doc: Document, full: str, pieces, section, header: str) -> None:
    start, end = pieces[0][0], pieces[-1][1]
    chunks.append(Chunk(id=f"{doc.id}#{len(chunks)}", document_id=doc.id, index=len(chunks), text=full[start:end],
                        start=start, end=end, section=section.title, page=section.page, header=header))
