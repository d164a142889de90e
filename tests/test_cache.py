"""The SQLite cache: round trips, many threads and processes at once, and survival of SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from optimizer.cache import Cache, cache_key


def test_round_trip_and_namespaces(cache: Cache) -> None:
    cache.put_json("lm", "k", {"text": "hi"})
    cache.put("embedding", "k", b"\x00\x01")
    assert cache.get_json("lm", "k") == {"text": "hi"}
    assert cache.get("embedding", "k") == b"\x00\x01"
    assert cache.get("lm", "missing") is None
    assert cache.stats().entries == {"embedding": 1, "lm": 1}
    assert cache.clear("lm") == 1 and cache.stats().entries == {"embedding": 1}
    assert cache.clear() == 1 and cache.stats().entries == {}


def test_key_is_stable_and_order_free() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def _write_many(directory: str, worker: int, count: int) -> None:
    cache = Cache(directory)

    def write(i: int) -> None:
        cache.put_json("lm", f"{worker}-{i}", {"worker": worker, "i": i, "pad": "x" * (i % 50)})

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(write, range(count)))


def test_four_processes_of_sixteen_threads(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    Cache(directory)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_many, args=(directory, w, 250)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    cache = Cache(directory)
    assert len(cache.keys("lm")) == 1000
    for worker in range(4):
        for i in range(250):
            assert cache.get_json("lm", f"{worker}-{i}") == {"worker": worker, "i": i, "pad": "x" * (i % 50)}


WRITER = """
import sys
from optimizer.cache import Cache
cache = Cache(sys.argv[1])
i = 0
while True:
    cache.put_json("lm", f"k{i}", {"i": i, "body": "y" * 500})
    i += 1
    if i == 50:
        print("ready", flush=True)
"""


def test_sigkill_mid_write_leaves_a_usable_cache(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    cache = Cache(directory)
    keys = cache.keys("lm")
    assert len(keys) >= 50
    for key in keys:
        assert cache.get_json("lm", key)["body"] == "y" * 500
    cache.put_json("lm", "after", {"ok": True})
    assert cache.get_json("lm", "after") == {"ok": True}


def test_a_corrupt_cache_file_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:
    """Pages overwritten behind SQLite's back ("database disk image is malformed") end every command that reads
    the cache with one line naming the file, not a traceback."""
    folder = tmp_path / "corrupt"
    cache = Cache(folder)
    for i in range(300):
        cache.put("lm", f"k{i}", b"x" * 300)
    cache._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray((folder / "formfit.sqlite3").read_bytes())
    for offset in range(2 * 4096, len(data), 4096):
        data[offset:offset + 64] = b"\xff" * 64
    (folder / "formfit.sqlite3").write_bytes(data)
    for command in (["cache", "stats"], ["eval", "support_intent", "--limit", "1"]):
        code, out, err = run_cli(*command, "--cache-dir", str(folder))
        assert code == 2 and out == "", err
        assert err.count("\n") == 1 and err.startswith(f"formfit: error: {folder / 'formfit.sqlite3'}: "), err
        assert "malformed" in err


def test_a_read_only_cache_database_is_a_config_error(cache: Cache) -> None:
    from optimizer.errors import ConfigError

    cache._connect().execute("PRAGMA query_only = ON")  # as a read-only file or folder would refuse writes
    with pytest.raises(ConfigError, match=r"formfit\.sqlite3: cache database error \(attempt to write a readonly"):
        cache.put("lm", "k", b"v")
