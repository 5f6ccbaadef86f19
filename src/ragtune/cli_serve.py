"""`ragtune serve` and `ragtune keys`: thin commands over ragtune.serve. Only typer is imported
here; the server's libraries load when a command runs.

    ragtune keys create --groups eng,support --name ui      # prints the key once
    ragtune serve                                            # http://127.0.0.1:8000 (UI at /)
"""
from __future__ import annotations

import ipaddress
import json
from typing import Optional

import typer

keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke the API keys of `ragtune serve`.")


def _keys():
    from ragtune.cli import _state
    from ragtune.project import find_project
    from ragtune.serve.auth import KeyStore

    return KeyStore(find_project(_state["project"]))


def serve_command(host: Optional[str] = typer.Option(None, help="Address to bind (default server.host: 127.0.0.1, loopback only)."),
                  port: Optional[int] = typer.Option(None, help="Port (default server.port: 8000)."),
                  log_level: str = typer.Option("warning", help="uvicorn log level: warning, info, debug.")):
    """Serve the project: OpenAI-compatible chat, embeddings, search, documents and the web UI."""
    from ragtune.cli import _project

    serve(_project(), host=host, port=port, log_level=log_level)


def serve(project, host: str | None = None, port: int | None = None, log_level: str = "warning") -> None:
    """Run the server for `project` until interrupted (arguments override the `server:` config)."""
    from ragtune.errors import require

    uvicorn = require("uvicorn", "ragtune serve", "server")
    require("fastapi", "ragtune serve", "server")
    from ragtune.serve.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = project.config.server.model_copy(update=overrides)
    app = create_app(project, settings)
    if not app.state.keys.keys():
        typer.echo("warning: no API keys yet, so every request but /health is refused. Create one with: "
                   f"ragtune -p {project.folder} keys create --groups GROUPS [--write]", err=True)
    if not _is_loopback(settings.host):
        typer.echo(f"warning: serving on {settings.host}, reachable from other machines; the server speaks plain "
                   "HTTP, so put a TLS proxy in front of it", err=True)
    typer.echo(f"serving {project.folder} on http://{settings.host}:{settings.port}  (web UI: /, OpenAI API: /v1, "
               "schema: /openapi.json)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, server_header=False,
                timeout_keep_alive=5, timeout_graceful_shutdown=10)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@keys_app.command("create")
def keys_create(groups: str = typer.Option("", "--groups", "-g", help="Access groups, comma-separated; none = sees only documents without groups."),
                write: bool = typer.Option(False, "--write", help="May upload and delete documents."),
                name: str = typer.Option("", "--name", help="A label to find the key by (unique).")):
    """Create an API key; it is printed once and stored only as a hash."""
    from ragtune.serve.auth import parse_groups

    store = _keys()
    secret, key = store.create(parse_groups(groups), write=write, name=name)
    scope = "write" if key.write else "read"
    typer.echo(f"API key (shown once, store it now): {secret}")
    typer.echo(f"id {key.id}  name {key.name or '-'}  groups {','.join(key.groups) or '(none: ungrouped documents only)'}  "
               f"scope {scope}  saved in {store.path}")
    typer.echo(f"as a RAGTUNE_API_KEYS entry: sha256:{key.sha256}|{','.join(key.groups)}|{scope}|{key.name or key.id}")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List keys (never the keys themselves): id, name, groups, scope, where from."""
    keys = _keys().keys()
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in key.__dict__.items() if k != "sha256"} for key in keys], indent=2))
        return
    for key in keys:
        typer.echo(f"{key.id}\t{key.name or '-'}\tgroups={','.join(key.groups) or '-'}\t"
                   f"{'write' if key.write else 'read'}\t{key.source}\t{key.created}")
    typer.echo(f"{len(keys)} keys", err=True)


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="Id or name of the key (see `ragtune keys list`).")):
    """Revoke a key; a running server refuses it from its next request."""
    revoked = _keys().revoke(key)
    typer.echo(f"revoked {revoked.id} ({revoked.name or 'unnamed'})")
