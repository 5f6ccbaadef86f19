"""A throwaway PostgreSQL server on loopback, for the pgvector store's tests and benchmarks.

`initdb` into a temp folder, `pg_ctl start` on a free 127.0.0.1 port (no Unix socket, trust auth
for loopback only), `pg_ctl stop` and delete the folder afterwards. PostgreSQL refuses to run as
root, so under root the server runs as the `postgres` system user (Debian's packages create it)
or `nobody`.

>>> with local_postgres() as server:                 # doctest: +SKIP
...     server.dsn
'postgresql://ragtune@127.0.0.1:54321/postgres'
"""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def find_bin_dir() -> Path | None:
    """Folder of initdb/pg_ctl: $PG_BIN, Debian's /usr/lib/postgresql/<newest>/bin, or PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing_reason() -> str | None:
    """Why a local server with pgvector cannot be started here (None when it can)."""
    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        return "PostgreSQL binaries (initdb, pg_ctl) not found; install them with .ci/install-pgvector.sh"
    pg_config = bin_dir / "pg_config"
    share = None
    if pg_config.exists():
        share = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True).stdout.strip()
    if share and not Path(share, "extension", "vector.control").exists():
        return f"pgvector is not installed for {bin_dir.parent.name}; install it with .ci/install-pgvector.sh"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed: pip install 'ragtune[pgvector]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalPostgres:
    folder: Path
    port: int
    user: str = "ragtune"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"


def _as_user():
    """(preexec function, uid, gid) that drop root to an unprivileged user; (None, None, None) otherwise."""
    if os.geteuid() != 0:
        return None, None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            uid, gid = entry.pw_uid, entry.pw_gid

            def drop():
                os.setgid(gid)
                os.setuid(uid)
            return drop, uid, gid
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@contextlib.contextmanager
def local_postgres(settings: dict[str, str] | None = None, log=None) -> Iterator[LocalPostgres]:
    """Start a fresh server, yield it, stop it and delete its files. `settings` become -c options."""
    bin_dir = find_bin_dir()
    preexec, uid, gid = _as_user()
    folder = Path(tempfile.mkdtemp(prefix="ragtune-pg-"))
    data = folder / "data"
    if uid is not None:
        os.chown(folder, uid, gid)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    server = LocalPostgres(folder, _free_port())
    run = dict(preexec_fn=preexec, env=env, capture_output=True, text=True, cwd=folder)
    try:
        done = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "--auth=trust",
                               "-E", "UTF8", "--no-sync"], **run)
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        options = {"listen_addresses": "'127.0.0.1'", "port": str(server.port), "unix_socket_directories": "''",
                   "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", **(settings or {})}
        flags = " ".join(f"-c {k}={v}" for k, v in options.items())
        done = subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", flags, "-l", str(folder / "server.log"),
                               "-w", "-t", "60", "start"], **run)
        if done.returncode:
            log_text = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{log_text[-2000:]}")
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], **run)
        shutil.rmtree(folder, ignore_errors=True)
