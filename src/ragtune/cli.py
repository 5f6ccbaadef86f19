"""The `ragtune` command: thin commands over the library. Heavy imports happen inside commands."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ragtune.cli_compare import compare_command, demo_command, report_command
from ragtune.cli_data import data_app
from ragtune.cli_serve import keys_app, serve_command
from ragtune.cli_store import migrate_command
from ragtune.cli_train import classify_command, train_app
from ragtune.cli_train_encoders import add_commands as add_encoder_training
from ragtune.cli_train_sft import add_commands as add_sft_training
from ragtune.errors import RagtuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="RAG, fine-tuning, or both? Build each strategy on your data, compare, serve the winner.")
docs_app = typer.Typer(no_args_is_help=True, help="List, show and remove indexed documents.")
app.add_typer(docs_app, name="docs")
app.add_typer(data_app, name="data")
add_encoder_training(train_app)
add_sft_training(train_app)
app.add_typer(train_app, name="train")
app.add_typer(keys_app, name="keys")

_state = {"project": None, "verbose": False}
ProjectOpt = typer.Option(None, "--project", "-p", help="Project folder (default: nearest folder with ragtune.yaml).")


@app.callback()
def _main(project: Optional[Path] = ProjectOpt,
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details; show tracebacks.")):
    _state["project"], _state["verbose"] = project, verbose
    if not verbose:
        import warnings

        warnings.showwarning = lambda message, *args, **kwargs: typer.echo(f"warning: {message}", err=True)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict:
    from ragtune.errors import InputError

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} '{pair}': expected key=value")
        out[key.strip()] = value.strip()
    return out


def _groups(value: str | None) -> list[str] | None:
    return None if value is None else [g.strip() for g in value.split(",") if g.strip()]


def _project(overrides: dict | None = None):
    from ragtune.project import Project

    return Project.open(_state["project"], overrides)


@app.command()
def init(folder: Path = typer.Argument(Path("."), help="Project folder to create."),
         model: str = typer.Option(None, help="Embedding model (HF id or local folder).")):
    """Create a project folder with a commented ragtune.yaml."""
    from ragtune.config import DEFAULT_EMBEDDER, write_starter

    path = write_starter(folder, model or DEFAULT_EMBEDDER)
    typer.echo(f"created {path}\nnext: ragtune -p {folder} index PATH")


@app.command()
def index(paths: List[str] = typer.Argument(..., help="Files and folders to index; '-' reads one document from stdin."),
          prune: bool = typer.Option(False, help="Drop documents whose source files are gone."),
          reembed: bool = typer.Option(False, help="Re-embed every chunk with the configured embedder first."),
          group: Optional[str] = typer.Option(None, "--groups", "-g", help="Access groups for these documents, comma-separated."),
          meta: Optional[List[str]] = typer.Option(None, "--meta", help="Metadata key=value added to every document (repeatable)."),
          include: Optional[List[str]] = typer.Option(None, help="Glob of files to index inside folders (repeatable)."),
          exclude: Optional[List[str]] = typer.Option(None, help="Glob of files to skip (repeatable)."),
          stdin_id: str = typer.Option("stdin", "--id", help="Document id for text read from stdin."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")):
    """Index documents incrementally: unchanged files are skipped, changed ones replaced."""
    overrides = {"ingest.include": include or None, "ingest.exclude": exclude or None}
    project = _project(overrides)
    report = project.index(paths, prune=prune, reembed=reembed, groups=_groups(group),
                           metadata=_parse_pairs(meta, "--meta"), stdin_id=stdin_id, progress=not quiet)
    store = project.store()
    typer.echo(f"documents: {report.documents_added} added, {report.documents_updated} updated, "
               f"{report.documents_unchanged} unchanged, {report.documents_deleted} deleted "
               f"({report.files_unchanged} of {report.files_seen} files unchanged)")
    rate = report.chunks_embedded / report.embed_seconds if report.embed_seconds else 0.0
    typer.echo(f"chunks: {report.chunks_embedded} embedded ({rate:.0f}/s), {report.chunks_reused} reused; "
               f"store now holds {store.count_documents()} documents, {store.count_chunks()} chunks "
               f"[{report.seconds:.1f} s]")
    if report.skipped:
        typer.echo(f"skipped {len(report.skipped)}:", err=True)
        for where, why in report.skipped:
            typer.echo(f"  {where}: {why}", err=True)


@app.command()
def search(query: str = typer.Argument(..., help="What to search for."),
           mode: Optional[str] = typer.Option(None, "--mode", "-m", help="bm25 | dense | hybrid (default from config)."),
           k: Optional[int] = typer.Option(None, "-k", help="Number of hits."),
           where: Optional[List[str]] = typer.Option(None, "--where", help="Metadata filter key=value (repeatable)."),
           groups: Optional[str] = typer.Option(None, "--groups", "-g", help="Only documents visible to these groups."),
           documents: bool = typer.Option(False, "--documents", help="One hit per document (its best chunk)."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Search the knowledge base."""
    trace: dict = {}
    project = _project()
    hits = project.search(query, mode=mode, k=k, where=_parse_pairs(where, "--where"), groups=_groups(groups),
                          unit="documents" if documents else "chunks", trace=trace)
    if as_json:
        typer.echo(json.dumps({"query": query, "hits": [h._asdict() for h in hits],
                               "timing_ms": {k: round(v * 1000, 2) for k, v in trace.items()}}, indent=2))
        return
    if not hits:
        typer.echo("no hits")
    for rank, hit in enumerate(hits, start=1):
        where_in = " / ".join(str(x) for x in (hit.section, f"page {hit.page}" if hit.page else None) if x)
        snippet = " ".join(hit.text.split())
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {hit.document_id}" + (f"  [{where_in}]" if where_in else ""))
        typer.echo(f"    {snippet[:200]}{'...' if len(snippet) > 200 else ''}")


def _rag(mode: str | None, generator: str | None, model: str | None):
    from ragtune.rag import RAG

    return RAG(_project({"rag.mode": mode, "generator.backend": generator, "generator.model": model}))


def _print_sources(answer) -> None:
    from ragtune.generate.prompts import location

    cited = {c.number: c for c in answer.citations}
    for n, hit in enumerate(answer.hits, start=1):
        mark = "*" if n in cited else " "
        typer.echo(f"{mark}[{n}] {location(hit)}  ({hit.chunk_id}, score {hit.score:.3f})")
        quote = cited[n].quote if n in cited and cited[n].quote else None
        if quote:
            typer.echo(f'     "{" ".join(quote.split())[:300]}"')


def _print_answer(answer, streamed: bool) -> None:
    if not streamed:
        typer.echo(answer.text)
    elif answer.text:
        typer.echo()
    if answer.abstained:
        typer.echo(f"(abstained: {'nothing relevant was retrieved' if answer.abstain_reason == 'retrieval' else 'the generator found no answer in the sources'})")
    for problem in answer.invalid_citations:
        typer.echo(f"dropped citation {problem}", err=True)
    if answer.hits:
        typer.echo("\nSources (* = cited):")
        _print_sources(answer)


@app.command()
def ask(question: str = typer.Argument(..., help="The question."),
        mode: Optional[str] = typer.Option(None, "--mode", "-m", help="Retrieval: bm25 | dense | hybrid."),
        k: Optional[int] = typer.Option(None, "-k", help="Sources given to the generator (default rag.k)."),
        where: Optional[List[str]] = typer.Option(None, "--where", help="Metadata filter key=value (repeatable)."),
        groups: Optional[str] = typer.Option(None, "--groups", "-g", help="Only documents visible to these groups."),
        generator: Optional[str] = typer.Option(None, "--generator", help="extractive | hf | openai (default from config)."),
        model: Optional[str] = typer.Option(None, "--model", help="Generator model (hf: path or id; openai: model name)."),
        stream: bool = typer.Option(False, "--stream", help="Print the answer as it is generated."),
        show_prompt: bool = typer.Option(False, "--show-prompt", help="Print exactly what is sent to the generator."),
        as_json: bool = typer.Option(False, "--json", help="Print the Answer as JSON.")):
    """Answer a question from the knowledge base, with cited sources."""
    rag = _rag(mode, generator, model)
    options = {"k": k, "where": _parse_pairs(where, "--where"), "groups": _groups(groups)}
    if show_prompt and not as_json:
        from ragtune.generate.prompts import render_messages

        answer = rag.ask(question, **options)
        if not answer.messages:
            shown = "(none: abstained before generation)"
        elif hasattr(rag.generator, "render"):  # a local model reads its chat template's output
            from ragtune.generate.base import Prompt

            shown = rag.generator.render(Prompt(question, answer.hits, answer.messages))
        else:
            shown = render_messages(answer.messages)
        typer.echo("=== prompt ===\n" + shown + "\n=== answer ===")
        _print_answer(answer, streamed=False)
        return
    if as_json:
        typer.echo(json.dumps(rag.ask(question, **options).to_dict(), indent=2, default=str))
        return
    answer = None
    for piece in rag.ask_stream(question, stream=stream, **options):
        if isinstance(piece, str):
            typer.echo(piece, nl=False)
            sys.stdout.flush()
        else:
            answer = piece
    _print_answer(answer, streamed=stream)


@app.command()
def chat(mode: Optional[str] = typer.Option(None, "--mode", "-m", help="Retrieval: bm25 | dense | hybrid."),
         k: Optional[int] = typer.Option(None, "-k", help="Sources per answer (default rag.k)."),
         groups: Optional[str] = typer.Option(None, "--groups", "-g", help="Only documents visible to these groups."),
         generator: Optional[str] = typer.Option(None, "--generator", help="extractive | hf | openai."),
         model: Optional[str] = typer.Option(None, "--model", help="Generator model."),
         turns: int = typer.Option(4, help="Earlier question/answer pairs kept in the prompt.")):
    """Chat with the knowledge base. /sources shows the last answer's sources, /reset forgets, /quit leaves."""
    from ragtune.errors import RagtuneError as _UserError
    from ragtune.rag import retrieval_query

    rag = _rag(mode, generator, model)
    history: list[dict[str, str]] = []
    last = None
    typer.echo("Ask a question (/sources, /reset, /quit).")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            typer.echo()
            return
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            return
        if line == "/reset":
            history, last = [], None
            typer.echo("(history cleared)")
            continue
        if line == "/sources":
            if last is None or not last.hits:
                typer.echo("(no sources yet)")
            else:
                typer.echo(f"searched: {last.retrieval_query}")
                _print_sources(last)
            continue
        if line.startswith("/"):
            typer.echo("commands: /sources, /reset, /quit")
            continue
        query = retrieval_query(line, history)
        try:
            typer.echo("ragtune> ", nl=False)
            for piece in rag.ask_stream(line, history[-2 * turns:], k=k, groups=_groups(groups), retrieval_query=query):
                if isinstance(piece, str):
                    typer.echo(piece, nl=False)
                    sys.stdout.flush()
                else:
                    last = piece
            typer.echo()
            cited = ", ".join(f"[{c.number}] {c.source or c.document_id}" for c in last.citations)
            if cited:
                typer.echo(f"  sources: {cited}")
        except _UserError as exc:
            typer.echo(f"\nerror: {exc}", err=True)
            continue
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": last.text}]


@docs_app.command("list")
def docs_list(where: Optional[List[str]] = typer.Option(None, "--where", help="Metadata filter key=value."),
              groups: Optional[str] = typer.Option(None, "--groups", "-g", help="Only documents visible to these groups."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List indexed documents."""
    store = _project().store(create_if_missing=False)
    docs = store.list_documents(_parse_pairs(where, "--where"), _groups(groups))
    if as_json:
        typer.echo(json.dumps([d.__dict__ for d in docs], indent=2, default=str))
        return
    for d in docs:
        typer.echo(f"{d.id}\t{d.chunk_count} chunks\t{d.title or ''}" + (f"\tgroups={','.join(d.groups)}" if d.groups else ""))
    typer.echo(f"{len(docs)} documents", err=True)


@docs_app.command("show")
def docs_show(doc_id: str = typer.Argument(..., help="Document id (see `ragtune docs list`)."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Show a document's metadata and chunks."""
    from ragtune.errors import InputError

    found = _project().store(create_if_missing=False).get_document(doc_id)
    if found is None:
        raise InputError(f"no document '{doc_id}'. See `ragtune docs list`.")
    doc, chunks = found
    if as_json:
        typer.echo(json.dumps({"id": doc.id, "title": doc.title, "metadata": doc.metadata, "groups": doc.groups,
                               "content_hash": doc.content_hash, "chunks": [c.__dict__ for c in chunks]}, indent=2))
        return
    typer.echo(f"id: {doc.id}\ntitle: {doc.title}\ngroups: {', '.join(doc.groups) or '(everyone)'}")
    for key, value in doc.metadata.items():
        typer.echo(f"{key}: {value}")
    for c in chunks:
        place = " / ".join(str(x) for x in (c.section, f"page {c.page}" if c.page else None) if x)
        typer.echo(f"\n--- chunk {c.index} [{c.start}:{c.end}] {place}\n{c.text}")


@docs_app.command("rm")
def docs_rm(doc_ids: List[str] = typer.Argument(..., help="Document ids to remove.")):
    """Remove documents from every index."""
    store = _project().store(create_if_missing=False)
    count = store.delete(doc_ids)
    store.build_indexes()
    typer.echo(f"removed {count} of {len(doc_ids)} documents")
    if count < len(doc_ids):
        raise typer.Exit(1)


app.command("serve")(serve_command)
app.command("migrate")(migrate_command)
app.command("classify")(classify_command)
app.command("compare")(compare_command)
app.command("report")(report_command)
app.command("demo")(demo_command)


def main() -> None:
    """Console entry point: user mistakes print one clear line and exit 2 (tracebacks with -v)."""
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except RagtuneError as exc:
        if _state["verbose"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # Usage mistakes (a missing argument, `ragtune docs` alone): click's own classes, or the copy
        # typer vendors as typer._click, whichever this typer uses.
        usage = _click_exceptions()
        if isinstance(exc, usage["ClickException"]):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, usage["Exit"]):
            sys.exit(exc.exit_code)
        if isinstance(exc, usage["Abort"]):
            sys.exit(1)
        raise


def _click_exceptions() -> dict[str, tuple[type, ...]]:
    import click

    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored

        modules.append(vendored)
    except ImportError:
        pass
    return {name: tuple(getattr(m, name) for m in modules if hasattr(m, name))
            for name in ("ClickException", "Exit", "Abort")}

if __name__ == "__main__":
    main()
