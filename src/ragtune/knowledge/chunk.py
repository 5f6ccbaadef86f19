"""Split documents into chunks sized in the embedder's own tokens, on sentence boundaries.

A chunk never crosses a section (page, Markdown section). Sentences are packed greedily up to
`size` tokens; the next chunk starts with whole trailing sentences of the previous one worth at
most `overlap` tokens. A sentence longer than a chunk is cut at token boundaries.

>>> doc = Document(id="a.md", sections=[Section("One two three four five. Six seven eight nine ten. Eleven.")])
>>> [c.text for c in chunk_document(doc, HashingEmbedder(EmbedderConfig()), size=8, overlap=0)]
['One two three four five.', 'Six seven eight nine ten. Eleven.']
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


def sentences(text: str) -> list[str]:
    """The sentences (and list items, paragraphs) of `text`, as the chunker sees them."""
    return [text[a:b].strip() for a, b in _units(text, 0) if text[a:b].strip()]


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
    header_tokens = {}
    for header, spans in zip(unique_headers, embedder.token_spans(unique_headers)):
        limit = size // 2  # a long title must not crowd out the text
        header_tokens[header] = (header[:spans[limit - 1][1]], limit) if len(spans) > limit else (header, len(spans))
    headers = [header_tokens[h][0] for h in headers]
    header_tokens = {short: n for short, n in header_tokens.values()}
    token_spans = embedder.token_spans([full[a:b] for a, b in all_units]) if all_units else []

    chunks: list[Chunk] = []
    for s_index, (_, section) in enumerate(sections):
        budget = size - header_tokens[headers[s_index]] - (1 if headers[s_index] else 0)
        pieces: list[tuple[int, int, int]] = []  # (start, end, tokens), long sentences cut
        for (a, b), spans, owner in zip(all_units, token_spans, owners):
            if owner != s_index:
                continue
            if len(spans) <= budget:
                pieces.append((a, b, max(1, len(spans))))
                continue
            pieces.extend(_cut(a, spans, budget))
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


def _cut(offset: int, spans: list[tuple[int, int]], budget: int) -> list[tuple[int, int, int]]:
    """Pieces (start, end, tokens) of an over-long sentence, cut where a new word starts."""
    pieces, i = [], 0
    while i < len(spans):
        j = min(i + budget, len(spans))
        if j < len(spans):
            # back off to a word boundary (a gap before the token) so no word is split
            k = j
            while k > i + 1 and spans[k][0] == spans[k - 1][1]:
                k -= 1
            j = k if k > i + 1 else j
        pieces.append((offset + spans[i][0], offset + spans[j - 1][1], j - i))
        i = j
    return pieces


def _emit(chunks: list[Chunk], doc: Document, full: str, pieces, section, header: str) -> None:
    start, end = pieces[0][0], pieces[-1][1]
    chunks.append(Chunk(id=f"{doc.id}#{len(chunks)}", document_id=doc.id, index=len(chunks), text=full[start:end],
                        start=start, end=end, section=section.title, page=section.page, header=header))
