"""A persistent SQLite cache for LM responses and embeddings, safe across threads and processes.

Every write commits at once in WAL mode, so a process killed with SIGKILL leaves every completed entry readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

DB_NAME = "formfit.sqlite3"
ENV_DIR = "FORMFIT_CACHE_DIR"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""


def cache_key(payload: Any) -> str:
    """A stable digest of a JSON-able payload (dict keys sorted)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or "cache")


@dataclass(frozen=True)
class CacheStats:
    """What is in the cache file now, by namespace, and its size on disk."""

    path: str
    entries: dict[str, int]
    bytes_on_disk: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "entries": dict(self.entries), "bytes_on_disk": self.bytes_on_disk}


class Cache:
    """Key-value store in `<directory>/formfit.sqlite3`; namespaces keep LM calls and embeddings apart."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.directory}: cannot create cache folder ({exc.strerror})") from None
        self.path = self.directory / DB_NAME
        self._local = threading.local()
        with self._database() as connection:
            connection.executescript(_SCHEMA)

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection; a SQLite error (a corrupt, locked or read-only file) becomes one ConfigError."""
        try:
            yield self._connect()
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cache database error ({exc}); fix or delete the file, or use another "
                              "--cache-dir") from None

    def _connect(self) -> sqlite3.Connection:
        """One connection per thread and process (a forked child opens its own)."""
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def get(self, namespace: str, key: str) -> bytes | None:
        with self._database() as connection:
            row = connection.execute(
                "SELECT value FROM entries WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, namespace: str, key: str, value: bytes) -> None:
        with self._database() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO entries (namespace, key, value) VALUES (?, ?, ?)", (namespace, key, value)
            )

    def get_json(self, namespace: str, key: str) -> Any | None:
        raw = self.get(namespace, key)
        return None if raw is None else json.loads(raw)

    def put_json(self, namespace: str, key: str, value: Any) -> None:
        self.put(namespace, key, json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def keys(self, namespace: str) -> list[str]:
        with self._database() as connection:
            return [key for (key,) in connection.execute("SELECT key FROM entries WHERE namespace = ?", (namespace,))]

    def stats(self) -> CacheStats:
        with self._database() as connection:
            rows = connection.execute("SELECT namespace, COUNT(*) FROM entries GROUP BY namespace").fetchall()
        size = sum(p.stat().st_size for p in self.directory.glob(DB_NAME + "*") if p.is_file())
        return CacheStats(str(self.path), {namespace: count for namespace, count in rows}, size)

    def clear(self, namespace: str | None = None) -> int:
        """Delete every entry (of one namespace, if given); returns how many were deleted."""
        with self._database() as connection:
            if namespace is None:
                deleted = connection.execute("DELETE FROM entries").rowcount
            else:
                deleted = connection.execute("DELETE FROM entries WHERE namespace = ?", (namespace,)).rowcount
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("VACUUM")
        return deleted
