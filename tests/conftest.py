"""Shared fixtures: a scripted backend for unit tests, task folders written on the fly, and a CLI runner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from optimizer.cache import Cache
from optimizer.lm import LM, LOCAL_MODELS, Budget, LMRequest, LMResponse
from optimizer.retry import RetryPolicy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # the benchmarks' helpers: tests/fault_proxy.py builds on one
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


class ScriptedBackend:
    """A backend whose answer is computed by `reply(request)`; it may raise to simulate faults. Counts calls."""

    def __init__(self, reply: Callable[[LMRequest], str], mode: str = "chat") -> None:
        self.reply, self.mode = reply, mode
        self.calls = 0
        self._lock = threading.Lock()

    def call(self, request: LMRequest, timeout: float) -> LMResponse:
        with self._lock:
            self.calls += 1
        return LMResponse(text=self.reply(request), prompt_tokens=10, completion_tokens=2, cost=0.001)


@pytest.fixture(autouse=True)
def auto_embedder_is_tfidf(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `auto` embedder resolves to the TF-IDF fallback (fast, no torch), except in test_embed_real.py, which
    checks the real choice (MiniLM: `make install` installs the minilm extra)."""
    if request.path.name != "test_embed_real.py":
        monkeypatch.setattr("optimizer.embed.minilm_installed", lambda: False)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture
def scripted_lm(cache: Cache) -> Callable[..., LM]:
    def make(reply: Callable[[LMRequest], str], budget: int | None = None, **kwargs: Any) -> LM:
        kwargs.setdefault("retry", RetryPolicy(base_s=0.001))
        return LM("fake/scripted", cache=cache, budget=Budget(budget), backend=ScriptedBackend(reply), **kwargs)

    return make


def last_user_text(request: LMRequest) -> str:
    return request.messages[-1]["content"] if request.messages else (request.prompt or "")


SPEC = {
    "name": "mini",
    "description": "A tiny task for tests.",
    "inputs": ["text"],
    "output": "label",
    "output_type": "label",
    "labels": ["yes", "no"],
    "metric": "label_match",
    "instruction": "Answer yes or no.",
    "data": {"train": "train.jsonl", "test": "test.jsonl"},
}


def write_task(root: Path, spec: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> Path:
    """Write a task folder; defaults to a valid two-label task with 6 train and 4 test rows."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(yaml.safe_dump(SPEC if spec is None else spec, sort_keys=False))
    if files is None:
        rows = [{"id": f"r{i}", "text": f"item {i} is {'good' if i % 2 else 'bad'}", "label": "yes" if i % 2 else "no"}
                for i in range(10)]
        files = {"train.jsonl": _jsonl(rows[:6]), "test.jsonl": _jsonl(rows[6:])}
    for name, text in files.items():
        (root / name).write_text(text)
    return root


GREEK = ["alpha", "beta", "gamma"]
GREEK_SPEC = {
    "name": "planted", "description": "Say which greek letter the item is about.", "inputs": ["text"],
    "output": "label", "output_type": "label", "labels": GREEK, "metric": "label_match",
    "instruction": "Say what the item is about.",
    "data": {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"},
}


def greek_rows(start: int, n: int) -> str:
    """JSONL rows `item N is about <letter>` labelled with that letter, ids p<N>."""
    return _jsonl([{"id": f"p{i}", "text": f"item {i} is about {GREEK[i % 3]}", "label": GREEK[i % 3]}
                   for i in range(start, start + n)])


def write_greek_task(root: Path, train: int, dev: int, test: int) -> Path:
    """The greek-letter task of the loop, report and secrets tests, with splits of the given sizes."""
    return write_task(root, GREEK_SPEC, {"train.jsonl": greek_rows(0, train),
                                         "dev.jsonl": greek_rows(train, dev),
                                         "test.jsonl": greek_rows(train + dev, test)})


@pytest.fixture
def planted(tmp_path: Path):
    """The greek-letter task: 90 train, 20 dev, 30 test rows."""
    from optimizer.task import load_task

    return load_task(write_greek_task(tmp_path / "planted", 90, 20, 30))


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `formfit ARGS` in-process; returns (exit code, stdout, stderr). The cache goes to a temp folder."""
    from cli import main

    monkeypatch.setenv("FORMFIT_CACHE_DIR", str(tmp_path / "cli-cache"))

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """Start llama-cpp-python's OpenAI-compatible server with SmolLM2 on 127.0.0.1: `llama_server(alias, *args)`
    returns its base URL (`http://127.0.0.1:PORT/v1`); every server started is stopped at the end of the session."""
    processes: list[subprocess.Popen] = []

    def start(alias: str, *extra: str) -> str:
        model_path = LOCAL_MODELS["local/smollm2-135m"].locate(tmp_path_factory.mktemp("models"))
        port = free_port()
        log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--model_alias", alias, *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
        processes.append(process)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"http://127.0.0.1:{port}/v1"
            except OSError:
                assert process.poll() is None, f"server exited early: {log.name}"
                time.sleep(0.5)
        raise TimeoutError("llama-cpp-python server did not start in 120 s")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def server(llama_server) -> str:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2 (chat), on a free loopback port."""
    return llama_server("smollm2")
