"""The `ragtune` command, run as a real subprocess in temp folders, on the hashing embedder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import write_docs

HASHING = "embedder: {backend: hashing, dimension: 64}\n"
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "bm25s", "scipy", "Stemmer", "sqlite3",
         "_sqlite3", "pypdf", "bs4", "psycopg", "qdrant_client")

DOCS = {
    "install.md": "# Installing\n\nInstall the server with the penguin installer package.\n\n"
                  "## Linux\n\nOn Linux run apt install penguin-server and start the penguin service.\n",
    "backup.md": "# Backups\n\nBackups run nightly at 02:00 and are kept for 30 days on the backup volume.\n",
    "faq.txt": "How do I reset my password? Use the reset link on the login page.\n",
    "page.html": "<html><head><title>Walrus Page</title><script>var SCRIPTWORD = 1;</script></head><body>"
                 "<nav>NAVWORD menu</nav><main><h1>Walrus</h1><p>The walrus feeds on clams in shallow water.</p>"
                 "</main><footer>FOOTERWORD</footer></body></html>",
}
HR_DOCS = {"salaries.md": "# Salaries\n\nSalary bands are reviewed every April by the compensation committee.\n"}


def ragtune(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ragtune.cli", *args], cwd=cwd, input=input or "",
                          capture_output=True, text=True, env=env, timeout=120)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def summary(result: subprocess.CompletedProcess) -> str:
    """The 'documents: ...' summary line of `ragtune index`."""
    lines = [ln for ln in ok(result).splitlines() if ln.startswith("documents:")]
    assert len(lines) == 1, result.stdout
    return lines[0]


def hits(result: subprocess.CompletedProcess) -> list[dict]:
    return json.loads(ok(result))["hits"]


def new_project(root: Path) -> Path:
    folder = root / "kb"
    folder.mkdir(parents=True)
    (folder / "ragtune.yaml").write_text(HASHING)
    return folder


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> SimpleNamespace:
    """A project indexed once through the CLI: docs/ (4 files), hr/ with --groups hr, one stdin note."""
    root = tmp_path_factory.mktemp("cli")
    init = ragtune("init", "kb", cwd=root)
    starter = (root / "kb" / "ragtune.yaml").read_text()
    (root / "kb" / "ragtune.yaml").write_text(HASHING)
    write_docs(root / "docs", DOCS)
    write_docs(root / "hr", HR_DOCS)
    first = ragtune("-p", "kb", "index", "docs", cwd=root)
    second = ragtune("-p", "kb", "index", "docs", "-q", cwd=root)
    hr = ragtune("-p", "kb", "index", "hr", "--groups", "hr", "-q", cwd=root)
    note = ragtune("-p", "kb", "index", "-", "--id", "note", "--meta", "team=ops", "-q", cwd=root,
                   input="Standup notes: the ops team moves the weekly sync to Thursday.\n")
    return SimpleNamespace(root=root, init=init, starter=starter, first=first, second=second, hr=hr, note=note)


def search(kb, *args: str) -> subprocess.CompletedProcess:
    return ragtune("-p", "kb", "search", *args, cwd=kb.root)


# --- init and index -----------------------------------------------------------------------------
def test_init_creates_a_commented_config(kb):
    assert "created" in ok(kb.init) and "ragtune -p kb index PATH" in kb.init.stdout
    assert kb.starter.startswith("#") and "backend: auto" in kb.starter


def test_index_summary_counts(kb):
    assert summary(kb.first) == "documents: 4 added, 0 updated, 0 unchanged, 0 deleted (0 of 4 files unchanged)"
    assert re.search(r"^chunks: \d+ embedded .*store now holds 4 documents, \d+ chunks", kb.first.stdout, re.M)
    assert summary(kb.hr).startswith("documents: 1 added,")
    assert "store now holds 5 documents" in kb.hr.stdout


def test_reindex_reports_files_unchanged(kb):
    assert summary(kb.second) == "documents: 0 added, 0 updated, 0 unchanged, 0 deleted (4 of 4 files unchanged)"
    assert "chunks: 0 embedded" in kb.second.stdout
    assert "store now holds 4 documents" in kb.second.stdout


def test_index_from_stdin_with_id(kb):
    assert summary(kb.note).startswith("documents: 1 added,")
    assert "store now holds 6 documents" in kb.note.stdout
    shown = json.loads(ok(ragtune("-p", "kb", "docs", "show", "note", "--json", cwd=kb.root)))
    assert shown["id"] == "note" and shown["title"] == "note" and shown["groups"] == []
    assert shown["metadata"] == {"source": "stdin", "team": "ops"}  # --meta added
    assert [c["text"] for c in shown["chunks"]] == ["Standup notes: the ops team moves the weekly sync to Thursday."]


def test_index_is_quiet_without_verbose(kb):
    # bm25s sets its own logger to DEBUG on import; ragtune must keep it quiet unless -v
    assert "DEBUG" not in kb.first.stderr + kb.hr.stderr + kb.note.stderr
    assert kb.hr.stderr == ""


# --- search -------------------------------------------------------------------------------------
def test_search_prints_ranked_hits(kb):
    out = ok(search(kb, "backups nightly backup volume", "-k", "3"))  # default mode (hybrid)
    lines = out.splitlines()
    assert re.match(r"^ 1\. -?\d+\.\d{4}  docs/backup\.md  \[Backups\]$", lines[0]), out
    assert lines[1].startswith("    Backups run nightly")
    assert len([ln for ln in lines if re.match(r"^\s*\d+\. ", ln)]) <= 3


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_json_has_document_ids(kb, mode):
    found = hits(search(kb, "walrus clams shallow water", "--mode", mode, "-k", "2", "--json"))
    assert 1 <= len(found) <= 2
    assert found[0]["document_id"] == "docs/page.html"
    assert found[0]["title"] == "Walrus Page"
    assert found[0]["text"] == "The walrus feeds on clams in shallow water."  # no nav, script or footer text
    for hit in found:
        assert hit["chunk_id"].startswith(hit["document_id"] + "#")
        assert set(hit) >= {"score", "text", "source", "section", "page", "metadata"}
    assert [h["score"] for h in found] == sorted((h["score"] for h in found), reverse=True)


def test_search_finds_the_project_from_a_subfolder(kb):
    out = ok(ragtune("search", "password reset link", "-m", "bm25", "-k", "1", cwd=kb.root / "kb" / "store"))
    assert out.splitlines()[0].endswith("docs/faq.txt")


def test_where_filters_on_metadata(kb):
    found = hits(search(kb, "penguin server backups walrus password", "-m", "bm25", "--where", "format=md", "--json"))
    assert {h["document_id"] for h in found} == {"docs/install.md", "docs/backup.md"}
    out = ok(search(kb, "weekly sync penguin backups walrus", "--where", "team=nobody"))
    assert out.strip() == "no hits"


def test_groups_filter_hides_other_groups(kb):
    query = "salary bands compensation committee backups"
    assert hits(search(kb, query, "-m", "bm25", "--groups", "hr", "--json"))[0]["document_id"] == "hr/salaries.md"
    found = hits(search(kb, query, "--groups", "eng", "-k", "50", "--json"))
    assert "docs/backup.md" in {h["document_id"] for h in found}  # documents without groups are visible to all
    assert "hr/salaries.md" not in {h["document_id"] for h in found}


def test_documents_gives_distinct_documents(kb):
    query = "penguin installer server linux backups"
    chunk_ids = [h["document_id"] for h in hits(search(kb, query, "-m", "hybrid", "-k", "20", "--json"))]
    assert len(chunk_ids) > len(set(chunk_ids))  # install.md has two chunks (two sections)
    doc_ids = [h["document_id"] for h in hits(search(kb, query, "-m", "hybrid", "-k", "20", "--documents", "--json"))]
    assert len(doc_ids) == len(set(doc_ids)) == len(set(chunk_ids))
    assert doc_ids[0] == "docs/install.md"


# --- docs list / show / rm -----------------------------------------------------------------------
def test_docs_list(kb):
    result = ragtune("-p", "kb", "docs", "list", cwd=kb.root)
    rows = [line.split("\t") for line in ok(result).splitlines()]
    assert [r[0] for r in rows] == ["docs/backup.md", "docs/faq.txt", "docs/install.md", "docs/page.html",
                                    "hr/salaries.md", "note"]
    assert rows[2][1] == "2 chunks" and rows[2][2] == "Installing"
    assert rows[4][-1] == "groups=hr"
    assert result.stderr.strip().endswith("6 documents")


def test_docs_show(kb):
    out = ok(ragtune("-p", "kb", "docs", "show", "docs/install.md", cwd=kb.root))
    assert out.startswith("id: docs/install.md\ntitle: Installing\ngroups: (everyone)\n")
    assert "--- chunk 0 [" in out and "--- chunk 1 [" in out and "Installing > Linux" in out


def test_docs_rm_of_a_missing_id_exits_1(kb):
    result = ragtune("-p", "kb", "docs", "rm", "docs/nope.md", cwd=kb.root)
    assert "removed 0 of 1 documents" in result.stdout
    assert result.returncode == 1


def test_update_prune_and_rm(tmp_path):
    new_project(tmp_path)
    docs = write_docs(tmp_path / "docs", {"a.md": "# A\n\nAlpha text.\n", "b.md": "# B\n\nBeta text.\n",
                                          "c.txt": "Gamma text.\n"})
    assert summary(ragtune("-p", "kb", "index", "docs", "-q", cwd=tmp_path)).startswith("documents: 3 added")
    (docs / "a.md").write_text("# A\n\nAlpha text, revised.\n")
    (docs / "c.txt").unlink()
    pruned = ragtune("-p", "kb", "index", "docs", "--prune", "-q", cwd=tmp_path)
    assert summary(pruned) == "documents: 0 added, 1 updated, 0 unchanged, 1 deleted (1 of 2 files unchanged)"
    assert "store now holds 2 documents" in pruned.stdout
    removed = ragtune("-p", "kb", "docs", "rm", "docs/b.md", cwd=tmp_path)
    assert ok(removed).strip() == "removed 1 of 1 documents"
    assert ok(ragtune("-p", "kb", "docs", "list", cwd=tmp_path)).split("\t")[0] == "docs/a.md"


# --- user errors: exit 2, one line, no traceback -------------------------------------------------
def _broken_yaml(root: Path) -> None:
    new_project(root).joinpath("ragtune.yaml").write_text("embedder:\n  backend: hashing\n  dimension: [64\n")


def _bad_field(root: Path) -> None:
    new_project(root).joinpath("ragtune.yaml").write_text(HASHING + "retrieval:\n  k: lots\n")


@pytest.mark.parametrize("setup, args, message", [
    ("kb", ["search", "alpha", "--mode", "fast"], "unknown search mode 'fast'; choose one of: bm25, dense, hybrid"),
    ("kb", ["search", "alpha", "--where", "format"], "--where 'format': expected key=value"),
    ("kb", ["search", "alpha", "--where", "a b=c"], "filter field 'a b'"),
    ("kb", ["docs", "show", "docs/nope.md"], "no document 'docs/nope.md'"),
    (None, ["search", "alpha"], "no ragtune.yaml here or in any parent folder"),
    (new_project, ["search", "alpha"], "no knowledge base at"),
    (_broken_yaml, ["search", "alpha"], "ragtune.yaml:4: not valid YAML"),
    (_bad_field, ["index", "."], "ragtune.yaml:3: field 'retrieval.k'"),
    ("kb", ["ask", "  "], "empty question"),
    ("kb", ["ask", "when?", "--generator", "gpt9"], "unknown generator backend 'gpt9'; choose one of: extractive, hf, openai"),
    ("kb", ["ask", "when?", "--generator", "hf"], "generator.model"),
    (new_project, ["ask", "alpha"], "no knowledge base at"),
], ids=["unknown-mode", "where-without-equals", "where-bad-field", "show-missing", "no-project",
        "search-before-index", "broken-yaml", "bad-field", "ask-empty", "ask-unknown-generator",
        "ask-hf-without-model", "ask-before-index"])
def test_user_errors_exit_2_without_traceback(kb, tmp_path, setup, args, message):
    if setup == "kb":
        cwd, args = kb.root, ["-p", "kb", *args]
    else:
        cwd = tmp_path
        if setup is not None:
            setup(tmp_path)
            args = ["-p", "kb", *args]
    result = ragtune(*args, cwd=cwd)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_init_refuses_an_existing_project(kb):
    result = ragtune("init", "kb", cwd=kb.root)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "already exists" in result.stderr
    assert (kb.root / "kb" / "ragtune.yaml").read_text() == HASHING


def test_verbose_shows_the_traceback(tmp_path):
    new_project(tmp_path)
    result = ragtune("-v", "-p", "kb", "search", "alpha", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "StoreError: no knowledge base" in result.stderr


# --- lightness ----------------------------------------------------------------------------------
def test_import_and_help_load_no_heavy_modules(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        heavy = {HEAVY!r}
        loaded = lambda: sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
        import ragtune
        after_package = loaded()
        import ragtune.cli
        after_cli = loaded()
        sys.argv = ["ragtune", "--help"]
        try:
            ragtune.cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        print(json.dumps({{"package": after_package, "cli": after_cli, "help": loaded(), "code": code}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    report = json.loads(ok(result).splitlines()[-1])
    assert report == {"package": [], "cli": [], "help": [], "code": 0}


def test_console_script_help():
    script = Path(sys.executable).with_name("ragtune")
    if not script.exists():
        pytest.skip("ragtune console script is not installed next to this Python")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    out = ok(result)
    for command in ("init", "index", "search", "docs"):
        assert re.search(rf"^\s*{command}\s", out, re.M), out


def test_usage_mistakes_print_usage_not_a_traceback(tmp_path):
    missing = ragtune("search", cwd=tmp_path)
    assert missing.returncode == 2 and "Missing argument" in missing.stderr and "Traceback" not in missing.stderr
    bare = ragtune("docs", cwd=tmp_path)
    assert "docs [OPTIONS] COMMAND" in bare.stdout + bare.stderr and "Traceback" not in bare.stderr
