"""Fault injection on the LiteLLM path: the real SmolLM2 server (llama-cpp-python) behind `FaultProxy`.

Every fault kind (429 with Retry-After, 500, 503, timeout, truncated body, garbage body, connection reset) is
retried and leaves the result exactly as a clean run's; a server that goes down mid-run stops the command with one
line and exit 1, and rerunning (`--resume` for optimize) after it is back ends like a clean run, without any call
that reached the server and completed being made again (counted at the proxy).

Calls run one at a time (`--concurrency 1`) so the server sees the same requests in the same order in every run
(an injected fault never reaches it), and the clean and faulted runs share the proxy's URL, so the same requests
have the same cache keys; each run has its own cache folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import write_task
from fault_proxy import FAULT_KINDS, FaultProxy
from optimizer.cache import Cache
from optimizer.errors import ConfigError
from optimizer.lm import CACHE_NAMESPACE, LM, LMRequest
from optimizer.retry import RetryPolicy

TIMEOUT_S = 30.0  # the eval's --timeout: a real call takes 2-8 s on a busy 2-core machine; the "timeout" fault
#                   sleeps longer than this
EVAL = ("eval", "support_intent", "--limit", "4", "--k", "2", "--json")
# Two faults before each of the first three calls, one before the fourth: every kind once, 4 calls, 7 retries.
EVAL_PLAN = dict(zip((1, 2, 4, 5, 7, 8, 10, 11), FAULT_KINDS))


@pytest.fixture(scope="module")
def proxy(llama_server) -> Iterator[FaultProxy]:
    upstream = llama_server("smollm2")
    warm_up = LM("openai/smollm2", api_base=upstream, cache=Cache(tempfile.mkdtemp()), timeout=120)
    warm_up(LMRequest(messages=({"role": "user", "content": "Hello"},), max_tokens=4))  # a cold first call is slow
    with FaultProxy(upstream, timeout_s=TIMEOUT_S + 1, retry_after="1") as fault_proxy:
        yield fault_proxy


@pytest.fixture(scope="module", autouse=True)
def short_backoff() -> Iterator[None]:
    """Short retry backoff (the CLI reads FORMFIT_RETRY_BASE_S); Retry-After from the proxy is still honoured."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORMFIT_RETRY_BASE_S", "0.02")
        yield


def test_retry_backoff_base_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RetryPolicy().base_s == 0.02 and RetryPolicy(base_s=1.0).base_s == 1.0
    monkeypatch.delenv("FORMFIT_RETRY_BASE_S")
    assert RetryPolicy().base_s == 0.5
    monkeypatch.setenv("FORMFIT_RETRY_BASE_S", "soon")
    with pytest.raises(ConfigError, match="FORMFIT_RETRY_BASE_S"):
        RetryPolicy()


def formfit(*args: str) -> tuple[int, str, str]:
    """`formfit ARGS` in-process: (exit code, stdout, stderr)."""
    from cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def lm_args(proxy: FaultProxy, cache_dir: Path, timeout: float = TIMEOUT_S) -> tuple[str, ...]:
    return ("--model", "openai/smollm2", "--api-base", proxy.url, "--concurrency", "1",
            "--timeout", str(timeout), "--cache-dir", str(cache_dir))


def answers(cache_dir: Path) -> dict[str, str]:
    """Every cached LM answer by cache key (model + api_base + full request)."""
    cache = Cache(cache_dir)
    return {key: cache.get_json(CACHE_NAMESPACE, key)["text"] for key in cache.keys(CACHE_NAMESPACE)}


def hashes(bodies: list[bytes]) -> list[str]:
    return [hashlib.sha256(body).hexdigest() for body in bodies]


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("formfit: error: ")
    return lines[0]


def same_eval(summary: dict[str, Any], reference: dict[str, Any]) -> None:
    for key in ("score", "n", "error_counts", "prompt_tokens", "completion_tokens"):
        assert summary[key] == reference[key], key


@pytest.fixture(scope="module")
def clean_eval(proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache_dir = tmp_path_factory.mktemp("clean-eval")
    proxy.schedule()
    proxy.reset_counts()
    code, out, err = formfit(*EVAL, *lm_args(proxy, cache_dir))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n"] == 4 and summary["lm_calls"] == 4 and summary["retries"] == 0
    assert proxy.completed == 4 and not proxy.injected
    return {"summary": summary, "answers": answers(cache_dir), "calls": hashes(proxy.completed_bodies)}


def test_eval_with_every_fault_kind_equals_the_clean_run(proxy: FaultProxy, clean_eval, tmp_path: Path) -> None:
    proxy.schedule(plan=EVAL_PLAN)
    proxy.reset_counts()
    cache_dir = tmp_path / "cache"
    try:
        start = time.monotonic()
        code, out, err = formfit(*EVAL, *lm_args(proxy, cache_dir))
        wall = time.monotonic() - start
    finally:
        proxy.schedule()
    assert code == 0, err
    summary = json.loads(out)
    assert proxy.injected == Counter({kind: 1 for kind in FAULT_KINDS})
    same_eval(summary, clean_eval["summary"])
    assert answers(cache_dir) == clean_eval["answers"]
    assert summary["retries"] == len(FAULT_KINDS) and summary["lm_calls"] == 4
    assert hashes(proxy.completed_bodies) == clean_eval["calls"]  # the server saw exactly the clean run's calls
    assert wall >= TIMEOUT_S + 1  # the timeout fault waited for the client's timeout, Retry-After for 1 s


def test_eval_stops_when_the_server_dies_and_a_rerun_completes_it(proxy: FaultProxy, clean_eval,
                                                                  tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    proxy.reset_counts()
    proxy.down_after(2)  # killed after answering 2 calls; stays down
    try:
        code, out, err = formfit(*EVAL, *lm_args(proxy, cache_dir))
    finally:
        proxy.down_after(None)
    assert code == 1 and out == ""
    line = one_line_error(err)
    assert "call failed after 6 attempts" in line
    assert not proxy.is_up
    first = hashes(proxy.completed_bodies)
    assert len(first) == 2

    proxy.up()  # restarted
    proxy.reset_counts()
    code, out, err = formfit(*EVAL, *lm_args(proxy, cache_dir))
    assert code == 0, err
    summary = json.loads(out)
    same_eval(summary, clean_eval["summary"])
    assert answers(cache_dir) == clean_eval["answers"]
    second = hashes(proxy.completed_bodies)
    assert summary["cache_hits"] == 2 and summary["lm_calls"] == 2
    assert not set(first) & set(second)  # no completed call made again
    assert Counter(first + second) == Counter(clean_eval["calls"])


def test_a_server_that_never_answered_is_unreachable(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.down()
    try:
        code, out, err = formfit(*EVAL, *lm_args(proxy, tmp_path / "cache"))
    finally:
        proxy.up()
    assert code == 2 and out == ""
    assert "cannot reach" in one_line_error(err)


# --- optimize ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def intent_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """support_intent with 8 train, 4 dev and 4 test rows: a 24-call search that races one candidate."""
    source = Path(__file__).resolve().parent.parent / "tasks" / "support_intent"
    spec = yaml.safe_load((source / "task.yaml").read_text())
    files = {}
    for split, n in (("train", 8), ("dev", 4), ("test", 4)):
        files[f"{split}.jsonl"] = "".join((source / f"{split}.jsonl").read_text().splitlines(keepends=True)[:n])
    spec["data"] = {split: f"{split}.jsonl" for split in ("train", "dev", "test")}
    return write_task(tmp_path_factory.mktemp("intent") / "support_intent_slice", spec, files)


def optimize_args(task: Path, proxy: FaultProxy, root: Path) -> tuple[str, ...]:
    """A long --timeout: the search's prompts (demos, label lists) can take 20 s and more on a busy machine, and a
    real timeout would retry a call the server completed. The eval tests cover the timeout fault."""
    return ("optimize", str(task), "--budget", "24", "--dev-size", "4", "--rounds", "1", "--no-test", "--json",
            "--out", str(root / "run"), *lm_args(proxy, root / "cache", timeout=600))


def same_result(summary: dict[str, Any], reference: dict[str, Any]) -> None:
    for key in ("best", "dev", "calls", "stopped"):
        assert summary[key] == reference[key], key
    result = json.loads(Path(summary["result"]).read_text())
    expected = json.loads(Path(reference["result"]).read_text())
    for key in ("best", "dev_scores", "candidates", "trials", "calls"):
        assert result[key] == expected[key], key


@pytest.mark.slow
def test_optimize_with_faults_and_a_dead_server_ends_like_a_clean_run(proxy: FaultProxy, intent_slice: Path,
                                                                     tmp_path: Path) -> None:
    proxy.reset_counts()
    code, out, err = formfit(*optimize_args(intent_slice, proxy, tmp_path / "clean"))
    assert code == 0, err
    clean = json.loads(out)
    clean_calls = hashes(proxy.completed_bodies)
    assert clean["usage"]["retries"] == 0 and 0 < clean["calls"] <= 24 and len(clean_calls) == clean["calls"]
    assert len(clean["best"]) and any(t["stage"].startswith("race") for t in
                                      json.loads(Path(clean["result"]).read_text())["trials"])

    # A seeded schedule: about 1 request in 5 fails, with every kind but the timeout (see optimize_args).
    proxy.reset_counts()
    proxy.schedule(rate=0.2, kinds=[k for k in FAULT_KINDS if k != "timeout"], seed=11)
    try:
        code, out, err = formfit(*optimize_args(intent_slice, proxy, tmp_path / "faulty"))
    finally:
        proxy.schedule()
    assert code == 0, err
    faulty = json.loads(out)
    injected = dict(proxy.injected)
    same_result(faulty, clean)
    assert faulty["usage"]["retries"] == sum(injected.values()) >= 4 and len(injected) >= 4
    assert hashes(proxy.completed_bodies) == clean_calls

    # The server dies after 10 answered calls and stays down: exit 1, one line; back up, --resume finishes.
    proxy.reset_counts()
    proxy.down_after(10)
    args = optimize_args(intent_slice, proxy, tmp_path / "killed")
    try:
        code, out, err = formfit(*args)
    finally:
        proxy.down_after(None)
    assert code == 1 and out == "" and "call failed after 6 attempts" in one_line_error(err)
    first = hashes(proxy.completed_bodies)
    code, out, err = formfit(*args, "--resume")  # still down: this process never had an answer from it
    assert code == 2 and "cannot reach" in one_line_error(err)
    assert hashes(proxy.completed_bodies) == first
    proxy.up()
    proxy.reset_counts()
    code, out, err = formfit(*args, "--resume")
    assert code == 0, err
    resumed = json.loads(out)
    second = hashes(proxy.completed_bodies)
    same_result(resumed, clean)
    assert len(first) == 10 and not set(first) & set(second)
    assert Counter(first + second) == Counter(clean_calls)
    assert resumed["usage"]["lm_calls"] == len(second)
    assert resumed["usage"]["cache_hits"] == clean["usage"]["cache_hits"] + 10
    print(f"\noptimize: {clean['calls']} calls; injected {injected}; killed after 10, resumed with {len(second)}")


# --- advise ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def facts_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fictional_facts with 8 train and 10 test rows: an advice of about 40 calls."""
    source = Path(__file__).resolve().parent.parent / "tasks" / "fictional_facts"
    spec = yaml.safe_load((source / "task.yaml").read_text())
    files = {f"{split}.jsonl": "".join((source / f"{split}.jsonl").read_text().splitlines(keepends=True)[:n])
             for split, n in (("train", 8), ("test", 10))}
    spec["data"] = {split: f"{split}.jsonl" for split in ("train", "test")}
    return write_task(tmp_path_factory.mktemp("facts") / "facts_slice", spec, files)


@pytest.mark.slow
def test_advise_with_faults_and_a_dead_server_ends_like_a_clean_run(proxy: FaultProxy, facts_slice: Path,
                                                                   tmp_path: Path) -> None:
    def advise(root: Path) -> tuple[int, str, str]:
        return formfit("advise", str(facts_slice), "--limit", "10", "--max-k", "1", "--json",
                       "--out", str(root / "advice"), *lm_args(proxy, root / "cache", timeout=600))

    def advice(root: Path) -> dict[str, Any]:
        """The advice and every measurement, less the count of calls this process made."""
        saved = json.loads((root / "advice" / "advice.json").read_text())
        saved["measurements"].pop("calls")
        return saved

    proxy.schedule()
    proxy.reset_counts()
    code, out, err = advise(tmp_path / "clean")
    assert code == 0, err
    clean_calls = hashes(proxy.completed_bodies)
    assert json.loads(out)["retries"] == 0 and len(clean_calls) == json.loads(out)["lm_calls"] > 20

    proxy.reset_counts()
    proxy.schedule(rate=0.2, kinds=[k for k in FAULT_KINDS if k != "timeout"], seed=5)
    try:
        code, out, err = advise(tmp_path / "faulty")
    finally:
        proxy.schedule()
    assert code == 0, err
    assert json.loads(out)["retries"] == sum(proxy.injected.values()) >= 3
    assert advice(tmp_path / "faulty") == advice(tmp_path / "clean")
    assert hashes(proxy.completed_bodies) == clean_calls

    proxy.reset_counts()
    proxy.down_after(12)
    try:
        code, out, err = advise(tmp_path / "killed")
    finally:
        proxy.down_after(None)
        proxy.up()
    assert code == 1 and "call failed after 6 attempts" in one_line_error(err)
    first = hashes(proxy.completed_bodies)
    proxy.reset_counts()
    code, out, err = advise(tmp_path / "killed")  # the rerun replays the 12 cached calls
    assert code == 0, err
    second = hashes(proxy.completed_bodies)
    assert advice(tmp_path / "killed") == advice(tmp_path / "clean")
    assert len(first) == 12 and not set(first) & set(second)
    assert Counter(first + second) == Counter(clean_calls)
