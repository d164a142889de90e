"""Integration tests with the real embedded models: in-process llama.cpp, and llama-cpp-python's own
OpenAI-compatible server on 127.0.0.1 reached through the LiteLLM backend. Small limits keep them quick."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import free_port
from optimizer.cache import Cache
from optimizer.evaluate import evaluate
from optimizer.lm import LM, Budget, LMRequest
from optimizer.task import load_task


def test_cli_eval_twice_second_run_is_all_cache(run_cli) -> None:
    args = ("eval", "support_intent", "--limit", "6", "--k", "2", "--json")
    code, out, err = run_cli(*args)
    assert code == 0, err
    first = json.loads(out)
    assert first["n"] == 6 and first["lm_calls"] == 6 and 0.0 <= first["score"] <= 1.0
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    code, out, err = run_cli(*args)
    second = json.loads(out)
    assert second["lm_calls"] == 0 and second["cache_hits"] == 6
    assert second["score"] == first["score"]


def test_json_task_end_to_end(tmp_path: Path) -> None:
    task = load_task("order_extract")
    lm = LM("local/smollm2-135m", cache=Cache(tmp_path))
    result = evaluate(task, task.instruction, lm, task.split("test")[:3])
    assert len(result.rows) == 3
    assert all(0.0 <= row.score <= 1.0 for row in result.rows)
    assert all(row.error_kind in (None, "content", "invalid_json", "missing_keys", "extra_text", "empty")
               for row in result.rows)


def test_gemma_base_model_in_completion_mode(tmp_path: Path) -> None:
    lm = LM("local/gemma3-270m", cache=Cache(tmp_path), budget=Budget(2))
    assert lm.mode == "completion"
    response = lm(LMRequest(prompt="Question: What is the capital of France?\nAnswer:", max_tokens=8, stop=("\n",)))
    assert response.text.strip() and response.prompt_tokens > 5 and response.completion_tokens >= 1


def test_litellm_backend_against_local_server(server: str, tmp_path: Path) -> None:
    task = load_task("support_intent")
    lm = LM("openai/smollm2", api_base=server, cache=Cache(tmp_path), concurrency=2)
    result = evaluate(task, task.instruction, lm, task.split("test")[:4])
    assert len(result.rows) == 4 and lm.usage.calls == 4
    assert lm.usage.prompt_tokens > 0 and lm.usage.completion_tokens > 0
    assert all(row.output for row in result.rows)
    again = LM("openai/smollm2", api_base=server, cache=Cache(tmp_path))
    assert evaluate(task, task.instruction, again, task.split("test")[:4]).score == result.score
    assert again.usage.calls == 0


def test_cli_through_api_base(server: str, run_cli) -> None:
    code, out, err = run_cli("eval", "fictional_facts", "--model", "smollm2", "--api-base", server,
                             "--limit", "3", "--with-context", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["model"] == "openai/smollm2" and summary["n"] == 3 and summary["lm_calls"] == 3


def test_unreachable_api_base_is_a_clean_error(run_cli) -> None:
    code, _, err = run_cli("eval", "support_intent", "--model", "openai/x", "--api-base",
                           f"http://127.0.0.1:{free_port()}/v1", "--limit", "1", "--timeout", "2")
    assert code == 2 and "cannot reach" in err and len(err.strip().splitlines()) == 1


def test_optimize_end_to_end_with_the_local_model(run_cli, tmp_path: Path) -> None:
    """A small real run: the budget holds, the saved program answers, a rerun with --resume makes no new call."""
    args = ("optimize", "support_intent", "--budget", "120", "--rounds", "1", "--dev-size", "20",
            "--out", str(tmp_path / "run"), "--no-test", "--json")
    code, out, err = run_cli(*args)
    assert code == 0, err
    summary = json.loads(out)
    assert 0 < summary["calls"] <= 120
    assert 0.0 <= summary["dev"]["baseline"] <= summary["dev"]["best"] <= 1.0
    assert (tmp_path / "run" / "report.html").is_file()
    assert summary["embedder"] == json.loads((tmp_path / "run" / "run.json").read_text())["embedder"] == "tfidf"
    code, out, err = run_cli("run", summary["program"], "I was charged twice for my order.", "--json")
    assert code == 0, err
    prediction = json.loads(out)
    assert isinstance(prediction["value"], str) and prediction["text"]
    code, out, err = run_cli(*args, "--resume")
    assert code == 0, err
    again = json.loads(out)
    assert again["best"] == summary["best"] and again["usage"]["lm_calls"] == 0


def test_advise_says_retrieval_for_the_facts_task(run_cli, tmp_path: Path) -> None:
    """The built-in facts task: no demo helps, showing the context does -> add retrieval, do not fine-tune."""
    code, out, err = run_cli("advise", "fictional_facts", "--limit", "10", "--max-k", "1",
                             "--out", str(tmp_path / "advice"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["verdict"] == "add_retrieval", summary["reasons"]
    assert summary["expected_gain"]["low"] > 0
    saved = json.loads((tmp_path / "advice" / "advice.json").read_text())
    assert saved["measurements"]["context_gain"]["value"] >= 0.1
    assert (tmp_path / "advice" / "advice.html").read_text().count('<img class="plot"') == 2
