"""API keys of `ragtune serve`: random keys, stored only as sha256 hashes, each with access groups
and a scope (read, or read + write).

Keys live in `<project>/keys.json` (written atomically, mode 0600) and, for containers, in the
environment variable RAGTUNE_API_KEYS: entries separated by ';' or newlines, each

    KEY_OR_HASH[|GROUPS[|SCOPE[|NAME]]]

KEY_OR_HASH is `sha256:<64 hex digits>` (preferred: `ragtune keys create` prints it) or the key
itself (at least 20 characters; hashed on load). GROUPS is comma-separated, SCOPE is `read`
(default) or `write`. Example: `RAGTUNE_API_KEYS='sha256:9f86d0...|hr,finance|write|ingest-bot'`.

>>> keys = KeyStore(Path("demo-kb"))                               # doctest: +SKIP
>>> secret, key = keys.create(groups=["eng"], write=False, name="ui")   # doctest: +SKIP
>>> keys.authenticate(secret).groups                                # doctest: +SKIP
['eng']
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragtune.errors import ConfigError, InputError

KEYS_FILE = "keys.json"
ENV_VAR = "RAGTUNE_API_KEYS"
KEY_PREFIX = "rtk_"
_GROUP = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


@dataclass
class ApiKey:
    """One key as stored: never the key itself, only its sha256."""

    id: str  # public handle for `ragtune keys list|revoke`
    sha256: str
    groups: list[str] = field(default_factory=list)  # empty: sees only documents without groups
    write: bool = False  # may upload and delete documents
    name: str = ""
    created: str = ""
    source: str = "file"  # 'file' (keys.json) or 'env' (RAGTUNE_API_KEYS)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_groups(text: str | None) -> list[str]:
    """'a, b' -> ['a', 'b'], each checked to be a plain name."""
    groups = sorted({g.strip() for g in (text or "").split(",") if g.strip()})
    for g in groups:
        if not _GROUP.match(g):
            raise InputError(f"group '{g}': use letters, digits and _ . : @ - (at most 64 characters)")
    return groups


def parse_env_keys(value: str) -> list[ApiKey]:
    """Keys from the RAGTUNE_API_KEYS format (see the module docstring)."""
    keys = []
    for number, entry in enumerate(filter(None, (e.strip() for e in re.split(r"[;\n]", value or ""))), start=1):
        parts = entry.split("|")
        where = f"{ENV_VAR} entry {number}"
        if len(parts) > 4:
            raise ConfigError(f"{where}: expected KEY_OR_HASH[|GROUPS[|SCOPE[|NAME]]], got {len(parts)} fields")
        secret, groups, scope, name = (parts + ["", "", ""])[:4]
        secret, scope = secret.strip(), (scope.strip() or "read")
        if scope not in ("read", "write"):
            raise ConfigError(f"{where}: scope '{scope}' must be 'read' or 'write'")
        if secret.startswith("sha256:"):
            digest = secret[7:].lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(f"{where}: 'sha256:' must be followed by 64 hex digits")
        elif len(secret) >= 20:
            digest = hash_key(secret)
        else:
            raise ConfigError(f"{where}: a key must be 'sha256:<hex>' or at least 20 characters "
                              f"(create one with `ragtune keys create`)")
        try:
            parsed = parse_groups(groups)
        except InputError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        keys.append(ApiKey(id=f"env{number}", sha256=digest, groups=parsed, write=scope == "write",
                           name=name.strip() or f"env{number}", source="env"))
    return keys


class KeyStore:
    """The keys of one project folder plus those in the environment. `authenticate` re-reads
    keys.json when it changes, so `ragtune keys create|revoke` applies to a running server."""

    def __init__(self, folder: Path, env: str | None = None):
        self.path = Path(folder) / KEYS_FILE
        self._env_keys = parse_env_keys(os.environ.get(ENV_VAR, "") if env is None else env)
        self._file_keys: list[ApiKey] = []
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    # --- reading ----------------------------------------------------------------------------
    def _read_file(self) -> list[ApiKey]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [ApiKey(**{k: v for k, v in row.items() if k in ApiKey.__dataclass_fields__})
                    for row in data.get("keys", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.path}: not a readable keys file ({exc}). Fix or remove it, then "
                              f"create keys with `ragtune keys create`.") from None

    def keys(self) -> list[ApiKey]:
        """Every key: those in keys.json (re-read when the file changed) and those in the environment."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._file_keys, self._stamp = self._read_file() if stamp else [], stamp
            return self._file_keys + self._env_keys

    def authenticate(self, secret: str | None) -> ApiKey | None:
        """The key whose hash matches `secret`, or None. Hashes are compared in constant time."""
        if not secret:
            return None
        digest = hash_key(secret)
        found = None
        for key in self.keys():
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found

    # --- writing (the CLI) -------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock for read-modify-write of keys.json across processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{KEYS_FILE}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, keys: list[ApiKey]) -> None:
        payload = json.dumps({"version": 1, "keys": [{k: v for k, v in asdict(key).items() if k != "source"}
                                                     for key in keys]}, indent=2) + "\n"
        tmp = self.path.with_name(f".{KEYS_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.chmod(self.path, 0o600)

    def create(self, groups: list[str] | None = None, write: bool = False, name: str = "") -> tuple[str, ApiKey]:
        """A new key: (the secret, shown once; its stored record)."""
        groups = parse_groups(",".join(groups or []))
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            keys = self._read_file()
            if name and any(k.name == name for k in keys):
                raise InputError(f"a key named '{name}' exists; revoke it first or pick another name")
            key = ApiKey(id=secrets.token_hex(4), sha256=hash_key(secret), groups=groups, write=write,
                         name=name, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            self._write(keys + [key])
        return secret, key

    def revoke(self, id_or_name: str) -> ApiKey:
        """Remove a key from keys.json by id or name; returns it."""
        with self._locked():
            keys = self._read_file()
            doomed = [k for k in keys if id_or_name in (k.id, k.name)]
            if not doomed:
                env = [k for k in self._env_keys if id_or_name in (k.id, k.name)]
                hint = f" ({id_or_name} comes from ${ENV_VAR}: remove it there)" if env else ""
                raise InputError(f"no key '{id_or_name}' in {self.path}{hint}. See `ragtune keys list`.")
            if len(doomed) > 1:
                raise InputError(f"'{id_or_name}' names {len(doomed)} keys; revoke by id instead")
            self._write([k for k in keys if k is not doomed[0]])
        return doomed[0]
