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
