"""Carry unfinished bench/vs_dspy.py rows from one machine to the next, inside the repository.

A ChatAdapter row takes longer than one working session, and every session may start on a new machine with an
empty cache/, so an unfinished row travels as one file, `<carry>/<dataset>/<row>.pkl.xz`: its cached LM answers
(DSPy's disk cache or formfit's SQLite cache), the proxy's counters of its tags and its record in the results JSON
(a row interrupted after its optimization). Unpacked into an empty row folder, the row resumes as on the machine that
packed it: completed calls are cache hits and are not counted again. Cache entries are keyed by request digests and
hold only the model's answers: no prompt or dataset text is packed. Embedding vectors are left out (recomputed in
seconds; DSPy caches a whole batch's matrix per entry).
"""

from __future__ import annotations

import lzma
import pickle
from pathlib import Path
from typing import Any

import dspy.clients
import numpy as np
from dspy.clients.cache import Cache as DspyCache

from optimizer.cache import DB_NAME, Cache
from optimizer.lm import CACHE_NAMESPACE as LM_NAMESPACE

FORMAT = 1
SUFFIX = ".pkl.xz"


def pack_path(carry: Path, dataset: str, key: str) -> Path:
    return carry / dataset / f"{key}{SUFFIX}"


def _dspy_disk(folder: Path) -> Any:
    """DSPy's disk cache of a row folder, opened as `dspy.configure_cache` opens it (same shards and limit)."""
    return DspyCache(True, False, str(folder / "cache"), dspy.clients.DISK_CACHE_LIMIT).disk_cache


def _entries(folder: Path) -> tuple[str, list[tuple]]:
    """The cache kind of a row folder and its LM answers."""
    if (folder / "cache" / DB_NAME).exists():
        cache = Cache(folder / "cache")
        return "formfit", [(LM_NAMESPACE, key, cache.get(LM_NAMESPACE, key)) for key in cache.keys(LM_NAMESPACE)]
    disk = _dspy_disk(folder)
    return "dspy", [(key, value) for key, value in ((key, disk[key]) for key in disk)
                    if not isinstance(value, np.ndarray)]


def pack(folder: Path, target: Path, meter: dict[str, dict], record: dict | None) -> int:
    """Write `folder`'s cache, `meter` (tag -> counts) and `record` to `target`; returns the entries packed."""
    kind, entries = _entries(folder)
    payload = {"format": FORMAT, "kind": kind, "entries": entries, "meter": meter, "record": record}
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    with lzma.open(temporary, "wb") as stream:
        pickle.dump(payload, stream, protocol=pickle.HIGHEST_PROTOCOL)
    temporary.replace(target)
    return len(entries)


def unpack(source: Path, folder: Path) -> tuple[dict[str, dict], dict | None, int]:
    """Fill `folder`'s cache from `source`; returns the packed meter tags, record and number of entries."""
    with lzma.open(source, "rb") as stream:
        payload = pickle.load(stream)
    if payload.get("format") != FORMAT:
        raise SystemExit(f"{source}: carry format {payload.get('format')}, this script reads {FORMAT}")
    if payload["kind"] == "formfit":
        cache = Cache(folder / "cache")
        for namespace, key, value in payload["entries"]:
            cache.put(namespace, key, value)
    else:
        disk = _dspy_disk(folder)
        for key, value in payload["entries"]:
            disk[key] = value
    return payload["meter"], payload["record"], len(payload["entries"])
