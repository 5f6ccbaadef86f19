"""Format readers: one file in, Documents (or per-row InputErrors) out. Inputs are written in tmp_path."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from ragtune.config import IngestConfig
from ragtune.errors import InputError
from ragtune.knowledge.readers import format_of, read_file
from ragtune.types import Document
from tests.conftest import EXAMPLE_DOCS


def read(path: Path, config: IngestConfig | None = None) -> list:
    """Everything read_file yields for `path` (Documents and per-row InputErrors), id = file name."""
    return list(read_file(path, path.name, config or IngestConfig()))


def read_one(tmp_path: Path, name: str, content: str | bytes) -> Document:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    items = read(path)
    assert len(items) == 1 and isinstance(items[0], Document), items
    return items[0]


def sections(doc: Document) -> list[tuple[str | None, str]]:
    return [(s.title, s.text) for s in doc.sections]


# --- plain text -------------------------------------------------------------------------------
def test_txt_is_one_section_titled_by_file_stem(tmp_path):
    doc = read_one(tmp_path, "notes.txt", "\n  First line.\nSecond line.\n\n")
    assert doc.id == "notes.txt"
    assert doc.title == "notes"
    assert sections(doc) == [(None, "First line.\nSecond line.")]
    assert doc.metadata["source"] == "notes.txt"
    assert doc.metadata["format"] == "txt"
    assert "modified" in doc.metadata


def test_txt_decoding_strips_bom_and_falls_back_to_cp1252(tmp_path):
    assert read_one(tmp_path, "bom.txt", "\ufeffhello".encode("utf-8")).text == "hello"
    assert read_one(tmp_path, "latin.txt", b"caf\xe9 cr\xe8me").text == "café crème"


# --- Markdown ---------------------------------------------------------------------------------
MARKDOWN = """\
Preamble before any heading.

# Guide

Intro text.

## Install

Install text.

### Linux ###

Linux text.

## Configure

```bash
# a comment in a code fence, not a heading
export X=1
```

~~~
## also not a heading
~~~

Configure text.
"""


def test_markdown_sections_are_titled_with_their_heading_path(tmp_path):
    doc = read_one(tmp_path, "guide.md", MARKDOWN)
    assert doc.title == "Guide"  # first level-1 heading when there is no front-matter title
    titles = [title for title, _ in sections(doc)]
    assert titles == [None, "Guide", "Guide > Install", "Guide > Install > Linux", "Guide > Configure"]
    assert sections(doc)[0][1] == "Preamble before any heading."
    assert sections(doc)[3][1] == "Linux text."  # closing '###' of an ATX heading dropped from the title


def test_markdown_code_fences_keep_hash_lines_as_text(tmp_path):
    doc = read_one(tmp_path, "guide.md", MARKDOWN)
    title, text = sections(doc)[-1]
    assert title == "Guide > Configure"
    assert "# a comment in a code fence, not a heading" in text
    assert "## also not a heading" in text
    assert text.endswith("Configure text.")


def test_markdown_front_matter_gives_title_and_metadata(tmp_path):
    text = "---\ntitle: Front Title\ntags: [a, b]\nowner: ops\n---\n# Heading One\n\nBody.\n"
    doc = read_one(tmp_path, "fm.md", text)
    assert doc.title == "Front Title"
    assert doc.metadata["tags"] == ["a", "b"]
    assert doc.metadata["owner"] == "ops"
    assert "title" not in doc.metadata
    assert "---" not in doc.text and "owner" not in doc.text
    assert sections(doc) == [("Heading One", "Body.")]


def test_markdown_invalid_front_matter_is_dropped_not_fatal(tmp_path):
    doc = read_one(tmp_path, "bad.md", "---\ntitle: [unclosed\n---\nBody text.\n")
    assert doc.text == "Body text."
    assert doc.title == "bad"


def test_markdown_front_matter_with_windows_line_endings(tmp_path):
    doc = read_one(tmp_path, "crlf.md", b"---\r\ntitle: Front Title\r\n---\r\n# Heading\r\n\r\nBody.\r\n")
    assert doc.title == "Front Title"
    assert "---" not in doc.text


def test_markdown_with_only_headings_is_an_input_error(tmp_path):
    path = tmp_path / "empty.md"
    path.write_text("# Title\n\n## Sub\n")
    with pytest.raises(InputError, match="no text outside headings"):
        read(path)


# --- HTML -------------------------------------------------------------------------------------
PAGE = """\
<!DOCTYPE html>
<html><head><title>Page Title</title>
<style>.x { color: red }</style>
<script>var tracker = "SCRIPT-IN-HEAD";</script>
</head>
<body>
<div id="banner">COOKIE-BANNER outside main</div>
<header>SITE-HEADER</header>
<nav><a href="/">NAV-LINK</a></nav>
<main>
  <h1>Welcome</h1>
  <p>Intro paragraph with <b>bold</b> and <code>code</code>.</p>
  <p>Escaped markup &lt;script&gt;alert(1)&lt;/script&gt; is shown as text.</p>
  <script>var inMain = "SCRIPT-IN-MAIN";</script>
  <aside>ASIDE-TEXT</aside>
  <div hidden>HIDDEN-ATTR</div>
  <p style="color: red; display: none">HIDDEN-STYLE</p>
  <h2>Setup</h2>
  <ul><li>Step one.</li><li>Step two.</li></ul>
  <h4>Details</h4>
  <p>Detail text.</p>
  <h5>Minor heading</h5>
  <footer>MAIN-FOOTER</footer>
</main>
<p>OUTSIDE-MAIN paragraph</p>
<footer>PAGE-FOOTER</footer>
</body></html>
"""


def test_html_keeps_visible_main_text_only(tmp_path):
    doc = read_one(tmp_path, "page.html", PAGE)
    text = doc.text
    for hidden in ("SCRIPT-IN-HEAD", "SCRIPT-IN-MAIN", "COOKIE-BANNER", "SITE-HEADER", "NAV-LINK", "ASIDE-TEXT",
                   "HIDDEN-ATTR", "HIDDEN-STYLE", "MAIN-FOOTER", "PAGE-FOOTER", "OUTSIDE-MAIN", "color: red"):
        assert hidden not in text, hidden
    assert "Intro paragraph with bold and code." in text
    assert "Escaped markup <script>alert(1)</script> is shown as text." in text


def test_html_hidden_style_in_upper_case_is_removed(tmp_path):
    doc = read_one(tmp_path, "upper.html", '<p>Shown.</p><p style="DISPLAY: NONE">HIDDEN-UPPER</p>')
    assert doc.text == "Shown."


def test_html_sections_split_at_h1_to_h4(tmp_path):
    doc = read_one(tmp_path, "page.html", PAGE)
    assert doc.title == "Page Title"
    assert [title for title, _ in sections(doc)] == ["Welcome", "Setup", "Details"]
    assert sections(doc)[1][1] == "Step one.\nStep two."
    assert "Minor heading" in sections(doc)[2][1]  # h5 is not a section break


def test_html_prefers_article_and_titles_from_first_heading(tmp_path):
    page = "<html><body><div>Sidebar junk</div><article><h1>Story</h1><p>Story text.</p></article></body></html>"
    doc = read_one(tmp_path, "story.htm", page)
    assert doc.title == "Story"
    assert sections(doc) == [("Story", "Story text.")]


def test_html_without_body_tags_still_reads(tmp_path):
    doc = read_one(tmp_path, "frag.html", "<p>Just a fragment.</p>")
    assert doc.text == "Just a fragment."
    assert doc.title == "frag"


@pytest.mark.parametrize("html, expected", [
    ("<div>Intro<p>Para one.</p></div>", r"Intro\s+Para one\."),
    ("<h5>Note</h5><p>Body text.</p>", r"Note\s+Body text\."),
    ("<table><tr><th>Item</th><th>Where</th></tr><tr><td>Logs</td><td>/var/log</td></tr></table>",
     r"Item\s+Where\s+Logs\s+/var/log"),
], ids=["text-before-block", "h5-then-paragraph", "table-cells"])
def test_html_does_not_glue_words_of_adjacent_blocks(tmp_path, html, expected):
    doc = read_one(tmp_path, "glue.html", f"<html><body>{html}</body></html>")
    assert re.search(expected, doc.text), doc.text


def test_html_with_no_visible_text_is_an_input_error(tmp_path):
    path = tmp_path / "blank.html"
    path.write_text("<html><head><script>x()</script></head><body><nav>menu</nav></body></html>")
    with pytest.raises(InputError, match="no visible text"):
        read(path)


# --- PDF --------------------------------------------------------------------------------------
def write_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def test_pdf_one_section_per_page_with_page_numbers(tmp_path):
    path = write_pdf(tmp_path / "handbook.pdf", ["Alpha page about penguins.", "Beta page about walruses."],
                     title="Staff Handbook")
    (doc,) = read(path)
    assert doc.title == "Staff Handbook"
    assert [(s.page, s.text) for s in doc.sections] == [(1, "Alpha page about penguins."),
                                                        (2, "Beta page about walruses.")]
    assert doc.metadata["format"] == "pdf"


def test_pdf_blank_page_keeps_later_page_numbers(tmp_path):
    path = write_pdf(tmp_path / "gaps.pdf", ["First.", "", "Third."])
    (doc,) = read(path)
    assert doc.title == "gaps"
    assert [s.page for s in doc.sections] == [1, 3]


def test_pdf_that_is_not_a_pdf_is_an_input_error(tmp_path):
    path = tmp_path / "fake.pdf"
    path.write_text("this is not a PDF")
    with pytest.raises(InputError, match="not a readable PDF"):
        read(path)


# --- JSONL ------------------------------------------------------------------------------------
def write_jsonl(path: Path, lines: list) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_beir_style(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [
        {"_id": "d1", "title": "First", "text": "Hello there."},
        {"_id": "d2", "title": "", "text": "  Untitled.  "},
    ])
    d1, d2 = read(path)
    assert (d1.id, d1.title, d1.text) == ("d1", "First", "Hello there.")
    assert (d2.id, d2.title, d2.text) == ("d2", None, "Untitled.")
    assert d1.metadata["source"] == "corpus.jsonl" and d1.metadata["format"] == "jsonl"


def test_jsonl_id_metadata_groups(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"id": 7, "text": "Salary bands.", "metadata": {"lang": "en", "team": "hr"}, "groups": ["hr", "admin"]},
        {"id": "x", "text": "One group.", "groups": "eng"},
        {"text": "No id."},
    ])
    a, b, c = read(path)
    assert a.id == "7"
    assert a.metadata["lang"] == "en" and a.metadata["team"] == "hr"
    assert a.groups == ["hr", "admin"]
    assert b.groups == ["eng"]
    assert c.id == "rows.jsonl#3"  # file id + line number when the row has no id
    assert c.groups == []


def test_jsonl_bad_lines_are_reported_and_the_rest_read(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"_id": "ok1", "text": "Fine."},
        '{"_id": "broken", "text": ',
        "",
        {"_id": "notext", "title": "No text here"},
        {"_id": "blank", "text": "   "},
        '["not", "an", "object"]',
        {"_id": "ok2", "text": "Also fine."},
    ])
    items = read(path)
    docs = [i for i in items if isinstance(i, Document)]
    errors = [str(i) for i in items if isinstance(i, InputError)]
    assert [d.id for d in docs] == ["ok1", "ok2"]
    assert len(errors) == 4
    assert f"{path}:2: not valid JSON" in errors[0]
    assert f"{path}:4: missing or empty 'text'" in errors[1]
    assert f"{path}:5:" in errors[2]
    assert f"{path}:6:" in errors[3]


def test_jsonl_gz(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl.gz", [{"_id": "z1", "text": "Compressed text, ünïcode."}])
    assert format_of(path) == ".jsonl.gz"
    (doc,) = read(path)
    assert (doc.id, doc.text) == ("z1", "Compressed text, ünïcode.")
    assert doc.metadata["format"] == "jsonl.gz"


# --- CSV / TSV --------------------------------------------------------------------------------
def test_csv_text_title_id_columns_and_quoted_commas(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text('id,title,text,lang\n'
                    'q1,"Hello, world","Commas, inside, quotes.",en\n'
                    ',No id,"Second row text.",\n', encoding="utf-8")
    first, second = read(path)
    assert (first.id, first.title, first.text) == ("q1", "Hello, world", "Commas, inside, quotes.")
    assert first.metadata["lang"] == "en"
    assert first.metadata["source"] == "faq.csv"
    assert second.id == "faq.csv#3"  # row number (header is row 1) when the id cell is empty
    assert "lang" not in second.metadata  # empty cells are not metadata


def test_csv_empty_text_row_is_reported_and_the_rest_read(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("text,title\nfirst row,A\n,B\nthird row,C\n")
    items = read(path)
    assert [i.text for i in items if isinstance(i, Document)] == ["first row", "third row"]
    errors = [str(i) for i in items if isinstance(i, InputError)]
    assert len(errors) == 1 and f"{path}:3:" in errors[0]


def test_csv_missing_text_column_names_it_and_lists_columns(tmp_path):
    path = tmp_path / "nocol.csv"
    path.write_text("code,body\nQM-1,Something\n")
    with pytest.raises(InputError) as info:
        read(path)
    message = str(info.value)
    assert "'text'" in message and "code, body" in message and "csv_text_column" in message


def test_csv_text_column_from_config(tmp_path):
    path = tmp_path / "custom.csv"
    path.write_text("code,body\nQM-1,Something broke.\n")
    (doc,) = read(path, IngestConfig(csv_text_column="body"))
    assert doc.text == "Something broke."
    assert doc.metadata["code"] == "QM-1"


def test_tsv(tmp_path):
    path = tmp_path / "table.tsv"
    path.write_text("id\ttext\nt1\tTabs, and commas, stay.\n")
    (doc,) = read(path)
    assert (doc.id, doc.text) == ("t1", "Tabs, and commas, stay.")
    assert doc.metadata["format"] == "tsv"


# --- whole-file errors and format_of ----------------------------------------------------------
@pytest.mark.parametrize("name, content, message", [
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    ("binary.md", b"\x00\x01\x02\x03", "binary file"),
    ("empty.txt", b"", "empty file"),
    ("blank.md", b"  \n\n \t\n", "empty file"),
    ("empty.csv", b"", "empty file"),
    ("data.docx", b"PK\x03\x04", "unsupported format"),
    ("README", b"hello", "unsupported format"),
])
def test_unusable_files_raise_input_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read(path)
    assert str(info.value).startswith(str(path))


def test_unsupported_format_lists_supported_ones(tmp_path):
    path = tmp_path / "x.rtf"
    path.write_text("{\\rtf1}")
    with pytest.raises(InputError, match=r"supported: .*\.md.*\.pdf"):
        read(path)


@pytest.mark.parametrize("name, expected", [
    ("a.txt", ".txt"), ("a.text", ".text"), ("A.MD", ".md"), ("a.markdown", ".markdown"),
    ("a.html", ".html"), ("a.htm", ".htm"), ("a.pdf", ".pdf"), ("a.jsonl", ".jsonl"),
    ("a.JSONL.GZ", ".jsonl.gz"), ("a.csv", ".csv"), ("a.tsv", ".tsv"),
    ("a.gz", None), ("a.json", None), ("a.tar.gz", None), ("Makefile", None), ("a.md.bak", None),
])
def test_format_of(name, expected):
    assert format_of(Path(name)) == expected


# --- the shipped example corpus ---------------------------------------------------------------
def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLE_DOCS.rglob("*") if p.is_file())


def test_every_example_file_reads_without_error():
    files = example_files()
    assert len(files) >= 30
    assert {format_of(p) for p in files} == {".md", ".html", ".txt", ".csv"}
    for path in files:
        items = list(read_file(path, path.relative_to(EXAMPLE_DOCS).as_posix(), IngestConfig()))
        assert items, path
        problems = [i for i in items if not isinstance(i, Document)]
        assert not problems, (path, problems)
        for doc in items:
            assert doc.text.strip() and doc.title, path
    errors = list(read_file(EXAMPLE_DOCS / "reference" / "errors.csv", "reference/errors.csv", IngestConfig()))
    assert len(errors) == 17
    assert all(doc.metadata["code"].startswith("QM-") for doc in errors)


@pytest.mark.parametrize("name, absent, present", [
    ("guides/install-windows.html",
     ["This documentation site uses cookies", "dataLayer", "trackDocsView", "Was this page helpful",
      "font-family", "Accept"],
     ["Restart-Service QuillmateServer, QuillmateSync", "ReFS is not supported"]),
    ("reference/api.html",
     ["copyCode", "DOCS_VERSION", "Search the docs", "Try Quillmate Business", "Last updated 2024-12-09"],
     ["Personal access tokens start with qmp_", "QM-4029"]),
    ("admin/security-advisories.html",
     ["advisoryFeed", "Docs home", "Enter your email", "PGP key available", "sev-high"],
     ["QSA-2024-007", "sharing.public_links = false"]),
])
def test_example_html_pages_drop_site_chrome(name, absent, present):
    (doc,) = read_file(EXAMPLE_DOCS / name, name, IngestConfig())
    visible = "\n".join([s.title or "" for s in doc.sections] + [doc.text])  # headings become section titles
    for text in absent:
        assert text not in visible, text
    for text in present:
        assert text in visible, text
