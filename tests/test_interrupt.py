"""Interruption: a search killed at any LM call (SIGKILL) or interrupted (SIGINT) and resumed ends exactly like an
uninterrupted run, and no call that completed before the kill is made again.

Each run is its own process with a scripted instant model, `Budget(charge_cache_hits=True)`, a Cache and a
RunFolder with a checkpoint; its backend appends the sha256 of every request it answers to a log file (flushed
before the answer is returned) and, at a chosen call, sends itself SIGKILL or SIGINT. One call at a time, so a kill
at the start of call N+1 comes after the first N answers were committed to the cache.

The processes are forked by a server process (`RUNNER`, written to a temp folder) that imported everything once:
starting Python with numpy and sklearn takes 5-10 s on a busy 2-core machine, a fork a few ms. The runs skip the
HTML/Markdown reports (plots are half a run's time); result.json and the program are written and compared.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_greek_task

RUNNER = r'''
import hashlib, json, os, re, signal, sys, threading, time, traceback
from optimizer.cache import Cache
from optimizer.lm import LM, Budget, LMResponse
from optimizer.retry import RetryPolicy
from optimizer.run import RunFolder
from optimizer.search import SearchConfig, optimize
from optimizer.task import load_task
import optimizer.run, sklearn.cluster, sklearn.feature_extraction.text, sklearn.metrics

# The reports (matplotlib plots: half of a run's time) are not what this test is about; result.json and the
# program are still written by RunFolder.finish.
optimizer.run.write_reports = lambda result, folder: (folder / "report.md", folder / "report.html")
SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT}
# A shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it: restore Ctrl-C's default,
# noting when the main thread takes it.
INTERRUPTED = threading.Event()


def on_sigint(signum, frame):
    INTERRUPTED.set()
    signal.default_int_handler(signum, frame)


signal.signal(signal.SIGINT, on_sigint)


class Backend:
    """Right when the instruction lists the labels, else rambles on even-numbered items (as in test_search)."""

    mode = "chat"

    def __init__(self, log_path, kill_after, how):
        self.calls, self.kill_after, self.how = 0, kill_after, how
        self.log = open(log_path, "a", encoding="utf-8")

    def call(self, request, timeout):
        if self.calls == self.kill_after:
            os.kill(os.getpid(), SIGNALS[self.how])  # SIGKILL: gone now; SIGINT: KeyboardInterrupt in the main thread
            # Ctrl-C lands while this call is still running, as with a real model: the call ends only after the main
            # thread took it (however late a loaded machine schedules it), then leaves it time to cancel queued calls.
            INTERRUPTED.wait(30)
            time.sleep(0.2)
        self.calls += 1
        system, user = request.messages[0]["content"], request.messages[-1]["content"]
        number = int(re.search(r"item (\d+)", user).group(1))
        label = re.search(r"about (\w+)", user).group(1)
        listed = "Reply with exactly one label from this list" in system
        text = label if listed or number % 2 else "I cannot tell."
        digest = hashlib.sha256(json.dumps(request.payload(), sort_keys=True).encode()).hexdigest()
        self.log.write(digest + "\n")
        self.log.flush()
        return LMResponse(text=text, prompt_tokens=10, completion_tokens=2, cost=0.0)


def scenario(task_dir, cache_dir, run_dir, log_path, kill_after, how, resume):
    task = load_task(task_dir)
    settings = {"task": task_dir, "model": "fake/planted", "seed": 2, "budget": 300, "dev_size": 20,
                "embedder": "tfidf"}
    config = SearchConfig(rounds=3, analysis_size=24, race_sizes=(8, 16), dev_size=20, embedder="tfidf")
    try:
        run = RunFolder.open(run_dir, resume, settings)
        lm = LM("fake/planted", cache=Cache(cache_dir), budget=Budget(300, charge_cache_hits=True),
                backend=Backend(log_path, kill_after, how), concurrency=1, retry=RetryPolicy(base_s=0.001))
        result = optimize(task, lm, config=config, seed=2, checkpoint=run.checkpoint)
        run.finish(task, result, lm)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps({"calls": result.calls, "usage": result.usage}))
    return 0


# One JSON job per stdin line -> a forked child runs it (stdout/stderr to files) -> one JSON line: its exit status.
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            code = scenario(*job["args"])
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class Outcome:
    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = status, stdout, stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("interrupt")
    task = write_greek_task(root / "planted", 90, 20, 30)
    runner = root / "runner.py"
    runner.write_text(RUNNER)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, str(runner)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    yield {"root": root, "task": task, "server": server}
    server.stdin.close()
    server.wait(timeout=60)


def run(setup: dict[str, Any], name: str, kill_after: int = -1, how: str = "kill", resume: bool = False) -> Outcome:
    """Run (or resume) the search in folder `name` in a fresh process; `kill_after` real calls, then signal `how`."""
    folder = setup["root"] / name
    folder.mkdir(exist_ok=True)
    attempt = len(list(folder.glob("calls-*.log")))
    job = {"args": [str(setup["task"]), str(folder / "cache"), str(folder / "run"), str(folder / f"calls-{attempt}.log"),
                    kill_after, how, resume],
           "stdout": str(folder / f"out-{attempt}.txt"), "stderr": str(folder / f"err-{attempt}.txt")}
    server = setup["server"]
    server.stdin.write(json.dumps(job) + "\n")
    server.stdin.flush()
    status = json.loads(server.stdout.readline())["status"]
    return Outcome(status, Path(job["stdout"]).read_text(), Path(job["stderr"]).read_text())


def logs(setup: dict[str, Any], name: str) -> list[list[str]]:
    """The calls each attempt of a run answered, in order (one list per process)."""
    folder = setup["root"] / name
    return [path.read_text().split() for path in sorted(folder.glob("calls-*.log"), key=lambda p: int(p.stem[6:]))]


def outcome(setup: dict[str, Any], name: str) -> dict[str, Any]:
    """What a finished run decided: result.json (without timings and usage) and the saved program."""
    folder = setup["root"] / name / "run"
    result = json.loads((folder / "result.json").read_text())
    program = json.loads((folder / "program" / "program.json").read_text())
    return {"result": {key: value for key, value in result.items() if key not in ("wall_s", "usage")},
            "program": program}


@pytest.fixture(scope="module")
def reference(setup: dict[str, Any]) -> dict[str, Any]:
    done = run(setup, "reference")
    assert done.returncode == 0, done.stderr
    calls = logs(setup, "reference")[0]
    summary = json.loads(done.stdout)
    assert summary["calls"] == len(calls) == len(set(calls)) and summary["usage"]["cache_hits"] > 0
    found = outcome(setup, "reference")
    assert found["result"]["dev_scores"] == {"baseline": 0.5, "best": 1.0}
    assert "Reply with exactly one label from this list" in found["result"]["best"]["instruction"]
    return {"calls": calls, "outcome": found}


def kill_points(total: int) -> list[int]:
    """22 kill points: the first and last call, and 20 seeded ones in between."""
    return sorted({0, total - 1, *random.Random(20261125).sample(range(1, total - 1), 20)})


def check_resumed(setup: dict[str, Any], name: str, reference: dict[str, Any]) -> list[list[str]]:
    assert outcome(setup, name) == reference["outcome"]
    attempts = logs(setup, name)
    union = [call for attempt in attempts for call in attempt]
    assert len(union) == len(set(union)), "a completed call was made again"
    assert Counter(union) == Counter(reference["calls"])
    return attempts


def test_sigkill_at_any_call_then_resume_ends_like_the_reference(setup, reference) -> None:
    total = len(reference["calls"])
    points = kill_points(total)
    assert len(points) >= 20
    start = time.monotonic()
    for point in points:
        name = f"kill-{point}"
        killed = run(setup, name, kill_after=point)
        assert killed.returncode == -9, killed.stderr
        assert not (setup["root"] / name / "run" / "result.json").exists()
        resumed = run(setup, name, resume=True)
        assert resumed.returncode == 0, resumed.stderr
        first, second = check_resumed(setup, name, reference)
        assert len(first) == point and len(second) == total - point
    print(f"\n{len(points)} SIGKILL points survived ({total} calls compared each) in {time.monotonic() - start:.1f}s")


def test_repeated_kills_then_resume(setup, reference) -> None:
    """Killed three times in a row (each resumed run killed again), then resumed to the end."""
    total, rng = len(reference["calls"]), random.Random(7)
    for chain in range(2):
        name = f"chain-{chain}"
        assert run(setup, name, kill_after=rng.randrange(1, total // 3)).returncode == -9
        for _ in range(2):
            killed = run(setup, name, kill_after=rng.randrange(1, total // 3), resume=True)
            assert killed.returncode == -9, killed.stderr
        assert run(setup, name, resume=True).returncode == 0
        assert len(check_resumed(setup, name, reference)) == 4


@pytest.mark.parametrize("point", [0, 37, 121])
def test_sigint_exits_cleanly_and_resumes(setup, reference, point: int) -> None:
    """Ctrl-C at a call: KeyboardInterrupt, exit 130 with one line and no traceback, promptly (the call in flight
    may finish and be kept, nothing after it starts); the resumed run ends like the reference."""
    name = f"int-{point}"
    interrupted = run(setup, name, kill_after=point, how="int")
    assert interrupted.returncode == 130, interrupted.stderr
    assert interrupted.stderr.strip() == "interrupted"
    assert len(logs(setup, name)[0]) in (point, point + 1)
    assert run(setup, name, resume=True).returncode == 0
    check_resumed(setup, name, reference)
