"""Format readers: a file in, Documents out. One function per format, picked by file suffix.

>>> [d.title for d in read_file(Path("guide.md"), "guide.md", IngestConfig())]   # doctest: +SKIP
['Installing Quillmate']
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from ragtune.config import IngestConfig
from ragtune.errors import InputError
from ragtune.types import Document, Section

# A reader yields Documents; a per-row problem in a multi-document file is yielded as InputError
# (the row is skipped, the file goes on), a whole-file problem is raised.
Reader = Callable[[Path, str, IngestConfig], Iterator["Document | InputError"]]


def _decode(raw: bytes, path: Path) -> str:
    if b"\x00" in raw[:8192]:
        raise InputError(f"{path}: binary file, not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _read_text(path: Path) -> str:
    text = _decode(path.read_bytes(), path).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InputError(f"{path}: empty file")
    return text


def read_txt(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document]:
    yield Document(id=doc_id, title=path.stem, sections=[Section(_read_text(path).strip())])


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def read_markdown(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document]:
    """Sections split at ATX headings; each section titled with its heading path ("A > B")."""
    text = _read_text(path)
    metadata: dict = {}
    front = _FRONT_MATTER.match(text)
    if front:
        import yaml

        try:
            loaded = yaml.safe_load(front.group(1))
            metadata = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            metadata = {}
        text = text[front.end():]
    title = str(metadata.pop("title", "")) or None
    sections, stack, buffer, in_fence = [], [], [], False

    def flush():
        body = "\n".join(buffer).strip()
        if body:
            sections.append(Section(body, title=" > ".join(t for _, t in stack) or None))
        buffer.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            level, heading = len(match.group(1)), match.group(2)
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, heading)]
            title = title or (heading if level == 1 else None)
        else:
            buffer.append(line)
    flush()
    if not sections:
        raise InputError(f"{path}: no text outside headings")
    yield Document(id=doc_id, title=title or path.stem, sections=sections, metadata=metadata)


_INVISIBLE = ["script", "style", "nav", "header", "footer", "aside", "noscript", "template", "svg", "form",
              "iframe", "button", "select"]


def read_html(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document]:
    """Visible text only: scripts, styles, navigation, headers and footers removed; <main> or
    <article> preferred when present; sections split at h1-h4."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_text(path), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup.find_all(_INVISIBLE):
        tag.decompose()
    for tag in soup.find_all(style=re.compile(r"display\s*:\s*none", re.I)):
        tag.decompose()
    for tag in soup.find_all(attrs={"hidden": True}):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    marker = "\x00"
    for heading in root.find_all(["h1", "h2", "h3", "h4"]):
        heading.replace_with(f"\n{marker}{heading.get_text(' ', strip=True)}{marker}\n")
    blocks = {"p", "div", "li", "tr", "br", "pre", "blockquote", "section", "table", "ul", "ol", "dd", "dt", "dl",
              "h5", "h6", "figure", "figcaption", "hr", "address", "caption"}
    for tag in root.find_all(blocks):
        tag.insert_before("\n")
        tag.insert_after("\n")
    for tag in root.find_all(["td", "th"]):
        tag.insert_after(" ")
    raw = root.get_text("")
    sections, current_title = [], None
    for i, part in enumerate(raw.split(marker)):
        if i % 2 == 1:
            current_title = part.strip() or None
            title = title or current_title
            continue
        lines = [re.sub(r"[ \t\r\f\v]+", " ", ln).strip() for ln in part.splitlines()]
        body = re.sub(r"\n{2,}", "\n", "\n".join(lines)).strip()
        if body:
            sections.append(Section(body, title=current_title))
    if not sections and current_title:  # a page whose only text is its heading
        sections.append(Section(current_title, title=current_title))
    if not sections:
        raise InputError(f"{path}: no visible text")
    yield Document(id=doc_id, title=title or path.stem, sections=sections)


def read_pdf(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document]:
    """One section per page, page numbers kept (1-based). Pages are read one at a time."""
    from ragtune.errors import require

    pypdf = require("pypdf", "reading PDF files", "pdf")
    try:
        reader = pypdf.PdfReader(str(path))
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(text, page=number))
        meta_title = (reader.metadata.title if reader.metadata else None) or None
    except pypdf.errors.PdfReadError as exc:
        raise InputError(f"{path}: not a readable PDF ({exc})") from None
    if not sections:
        raise InputError(f"{path}: PDF has no extractable text (scanned images need OCR first)")
    yield Document(id=doc_id, title=meta_title or path.stem, sections=sections)


def _open_text(path: Path) -> io.TextIOBase:
    """Streamed text of a row-per-document file (gzip allowed); refuses binary content."""
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")
    if b"\x00" in raw.peek(8192)[:8192]:
        raw.close()
        raise InputError(f"{path}: binary file, not text")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def read_jsonl(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document | InputError]:
    """One document per line, streamed. BEIR style (`_id`, `title`, `text`) or
    (`id`, `text`, `metadata`, `groups`). Lines without text are reported and skipped."""
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputError(f"{path}:{number}: not valid JSON ({exc.msg}); line skipped")
                continue
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                yield InputError(f"{path}:{number}: missing or empty 'text' field; line skipped")
                continue
            rid = row.get("_id", row.get("id"))
            metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
            groups = row.get("groups") or []
            if isinstance(groups, str):
                groups = [groups]
            yield Document(id=str(rid) if rid is not None else f"{doc_id}#{number}",
                           title=str(row["title"]) if row.get("title") else None,
                           sections=[Section(text.strip())], metadata=dict(metadata),
                           groups=[str(g) for g in groups])


def read_csv(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document | InputError]:
    """One document per row, streamed; the text column is `ingest.csv_text_column`."""
    with _open_text(path) as fh:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(fh, delimiter=delimiter)
        columns = reader.fieldnames or []
        if config.csv_text_column not in columns:
            raise InputError(f"{path}: no column '{config.csv_text_column}' (columns: {', '.join(columns) or 'none'}). "
                             f"Set ingest.csv_text_column in ragtune.yaml to the column holding the text.")
        for row in reader:
            number = reader.line_num
            text = (row.get(config.csv_text_column) or "").strip()
            if not text:
                yield InputError(f"{path}:{number}: empty '{config.csv_text_column}'; row skipped")
                continue
            rid = (row.get(config.csv_id_column) or "").strip() if config.csv_id_column else None
            title = (row.get(config.csv_title_column) or "").strip() or None if config.csv_title_column else None
            skip = {config.csv_text_column, config.csv_id_column, config.csv_title_column}
            metadata = {k: v for k, v in row.items() if k not in skip and k is not None and v not in (None, "")}
            yield Document(id=rid or f"{doc_id}#{number}", title=title, sections=[Section(text)], metadata=metadata)


READERS: dict[str, Reader] = {
    ".txt": read_txt, ".text": read_txt, ".md": read_markdown, ".markdown": read_markdown,
    ".html": read_html, ".htm": read_html, ".pdf": read_pdf, ".jsonl": read_jsonl, ".jsonl.gz": read_jsonl,
    ".csv": read_csv, ".tsv": read_csv,
}


def format_of(path: Path) -> str | None:
    """The READERS key for `path` (".jsonl.gz" for compressed JSONL), or None if unsupported."""
    name = path.name.lower()
    for suffix in sorted(READERS, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def file_metadata(path: Path, source: str) -> dict:
    stat = path.stat()
    return {"source": source, "format": (format_of(path) or "").lstrip("."),
            "modified": datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc).isoformat(timespec="seconds")}


def read_file(path: Path, doc_id: str, config: IngestConfig) -> Iterator[Document | InputError]:
    """Documents of one file; raises InputError for an unusable file."""
    fmt = format_of(path)
    if fmt is None:
        raise InputError(f"{path}: unsupported format (supported: {', '.join(sorted(READERS))})")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file")
        base = file_metadata(path, doc_id)
        for item in READERS[fmt](path, doc_id, config):
            if isinstance(item, Document):
                item.metadata = {**base, **item.metadata}
                if fmt in (".jsonl", ".jsonl.gz", ".csv", ".tsv"):
                    item.metadata["source"] = doc_id
            yield item
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
