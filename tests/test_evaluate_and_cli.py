"""Evaluation on a scripted model, and CLI basics (the bad-input cases are in test_bad_input.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import cli
from conftest import ScriptedBackend, last_user_text, write_task
from optimizer.evaluate import evaluate
from optimizer.errors import ConfigError
from optimizer.lm import LM, Budget
from optimizer.prompt import Prompt
from optimizer.select import RandomDemos, fixed_draw, prompt_demos
from optimizer.task import Example, load_task


def judge(request) -> str:
    text = last_user_text(request)
    if "item 9" in text:
        return "maybe"
    return "Sure! The answer is yes." if "good" in text else "no"


def test_evaluate_scores_and_classifies_failures(tmp_path: Path, scripted_lm) -> None:
    task = load_task(write_task(tmp_path / "t"))
    result = evaluate(task, task.instruction, scripted_lm(judge), task.split("test"))
    assert [row.id for row in result.rows] == ["r6", "r7", "r8", "r9"]
    assert [row.score for row in result.rows] == [1.0, 1.0, 1.0, 0.0]
    assert result.score == 0.75
    assert result.failures[0].error_kind == "label_outside_set"
    assert result.rows[1].prediction == "yes"


def test_wrong_but_well_formed_is_a_content_error(tmp_path: Path, scripted_lm) -> None:
    task = load_task(write_task(tmp_path / "t"))
    result = evaluate(task, task.instruction, scripted_lm(lambda r: "no"), task.split("test"))
    assert {row.error_kind for row in result.failures} == {"content"}


class SlowBackend(ScriptedBackend):
    """Takes a moment per call, so that parallel calls overlap."""

    def call(self, request, timeout):
        time.sleep(0.05)
        return super().call(request, timeout)


@pytest.mark.parametrize("budget", [None, 3])
def test_a_repeated_input_is_asked_once_even_with_parallel_calls(tmp_path: Path, cache, budget: int | None) -> None:
    """Eight test rows with the same text (real datasets repeat inputs) and eight calls in parallel: the one request
    is made once and the seven others are answered by the cache, as one call at a time would; the budget of real
    calls holds (it charges a request once, so parallel copies went past it)."""
    rows = [{"id": f"t{i}", "text": "the same ticket", "label": "yes"} for i in range(8)]
    train = [{**row, "id": f"p{i}"} for i, row in enumerate(rows[:2])]
    task = load_task(write_task(tmp_path / "t", files={"train.jsonl": jsonl_text(train),
                                                       "test.jsonl": jsonl_text(rows)}))
    backend = SlowBackend(lambda request: "yes")
    lm = LM("fake/x", cache=cache, budget=Budget(budget), backend=backend, concurrency=8)
    result = evaluate(task, task.instruction, lm, task.split("test"))
    assert backend.calls == 1 and lm.usage.to_dict()["cache_hits"] == 7
    assert [row.score for row in result.rows] == [1.0] * 8 and result.stopped is None


def test_a_whole_evaluation_counts_only_the_requests_not_yet_charged(tmp_path: Path, cache) -> None:
    """`whole=True` (the search's evaluations): requests this budget already charged cost nothing again, so 8 old
    rows and 2 new ones fit in the 2 calls left; 3 new ones do not, and then nothing is asked."""
    rows = [{"id": f"t{i}", "text": f"ticket {i}", "label": "yes"} for i in range(11)]
    train = [{**row, "id": f"p{i}"} for i, row in enumerate(rows[:2])]
    task = load_task(write_task(tmp_path / "t", files={"train.jsonl": jsonl_text(train),
                                                       "test.jsonl": jsonl_text(rows)}))
    backend = ScriptedBackend(lambda request: "yes")
    lm = LM("fake/x", cache=cache, budget=Budget(10, charge_cache_hits=True), backend=backend)
    test = task.split("test")
    assert evaluate(task, task.instruction, lm, test[:8], whole=True).complete
    short = evaluate(task, task.instruction, lm, test, whole=True)
    assert short.rows == () and short.stopped == "2 calls left, 3 needed" and backend.calls == 8
    done = evaluate(task, task.instruction, lm, test[:10], whole=True)
    assert done.complete and backend.calls == 10 and lm.budget.remaining == 0


def jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_random_demos_are_seeded_and_exclude_the_query(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path / "t"))
    pool = task.split("train")
    picks = [d.id for d in RandomDemos(pool, 3, seed=1).demos_for(pool[0])]
    assert picks == [d.id for d in RandomDemos(pool, 3, seed=1).demos_for(pool[0])]
    assert pool[0].id not in picks and len(picks) == 3


def test_random_demos_for_app_inputs_are_drawn_per_input(tmp_path: Path) -> None:
    """An app's inputs carry no id: each input still gets its own (reproducible) draw, as each example did in the
    search, not one draw shared by all."""
    task = load_task(write_task(tmp_path / "t"))
    source = RandomDemos(task.split("train"), 3, seed=0)

    def draw(text: str) -> list[str]:
        return [d.id for d in source.demos_for(Example(id="", inputs={"text": text}, gold=None))]

    draws = [draw(f"input {i}") for i in range(10)]
    assert len({tuple(d) for d in draws}) > 1 and draws[3] == draw("input 3")


def test_fixed_demos_are_the_same_for_every_input_and_found_by_id(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path / "t"))
    pool = task.split("train")
    source = prompt_demos(task, pool, Prompt("x", k=3, strategy="fixed", demo_ids=("r4", "r0", "r2")))
    assert [d.id for d in source.demos_for(pool[1])] == ["r4", "r0", "r2"] == [d.id for d in source.demos_for(pool[3])]
    assert [d.id for d in source.demos_for(pool[0])] == ["r4", "r2"]  # an input is never its own demo
    with pytest.raises(ConfigError, match="fixed demo id.*'r9'"):
        prompt_demos(task, pool, Prompt("x", k=1, strategy="fixed", demo_ids=("r9",)))


def test_fixed_draws_are_seeded_subsets_of_the_pool(tmp_path: Path) -> None:
    pool = load_task(write_task(tmp_path / "t")).split("train")
    draw = fixed_draw(pool, 4, "0-0")
    assert draw == fixed_draw(pool, 4, "0-0") and len(set(draw)) == 4 and set(draw) <= {d.id for d in pool}
    assert len({fixed_draw(pool, 4, f"0-{n}") for n in range(5)}) > 1
    with pytest.raises(ConfigError, match="larger than the demo pool"):
        fixed_draw(pool, 7, "0-0")


def test_prompt_demo_ids_survive_json_and_leave_other_keys_alone() -> None:
    fixed = Prompt("x", k=2, strategy="fixed", demo_ids=("a", "b"))
    assert Prompt(**json.loads(json.dumps(fixed.to_dict()))) == fixed
    assert "demo_ids" not in Prompt("x", k=2, strategy="knn").to_dict()
    assert fixed.key() != Prompt("x", k=2, strategy="fixed", demo_ids=("b", "a")).key()


def test_budget_stop_keeps_finished_rows(tmp_path: Path, scripted_lm) -> None:
    task = load_task(write_task(tmp_path / "t"))
    result = evaluate(task, task.instruction, scripted_lm(judge, budget=2), task.split("test"))
    assert len(result.rows) == 2 and not result.complete and "budget" in result.stopped


def _one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and expected in lines[0], err


def test_cli_missing_task(run_cli) -> None:
    _one_line_error(*run_cli("eval", "no_such_task")[::2], "no such task folder or built-in task")


def test_cli_tasks_and_cache(run_cli, tmp_path: Path) -> None:
    code, out, _ = run_cli("tasks", "--json")
    names = {row["name"] for row in json.loads(out)["tasks"]}
    assert code == 0 and {"support_intent", "order_extract", "fictional_facts"} <= names
    code, out, _ = run_cli("tasks", str(write_task(tmp_path / "mine")), "--json")
    assert code == 0 and [(row["name"], row["n_train"]) for row in json.loads(out)["tasks"]] == [("mini", 6)]
    code, out, _ = run_cli("cache", "stats", "--json")
    assert code == 0 and json.loads(out)["entries"] == {}
    code, out, _ = run_cli("cache", "clear", "--json")
    assert code == 0 and json.loads(out) == {"deleted": 0}


def test_cli_eval_shows_model_output_as_text_not_rich_markup(run_cli, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """rich reads `[...]` as markup: `[/INST]` in an answer used to crash the failures table (MarkupError)."""
    answer = "[/INST] [bold]maybe\\"
    monkeypatch.setattr(cli, "LM", lambda model, **kwargs: LM(model, backend=ScriptedBackend(lambda _: answer),
                                                              **kwargs))
    code, out, err = run_cli("eval", str(write_task(tmp_path / "t")), "--model", "fake/x", "--limit", "1")
    assert code == 0, err
    assert answer in out and answer + "\\" not in out and "label_outside_set 1" in out


def test_eval_and_run_a_saved_program_on_many_inputs(planted, run_cli, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval --program RUN` scores what `formfit run` would answer (the optimized instruction and demos), not the
    task's instruction; `--rows` keeps every scored row."""
    from test_search import RecordingBackend

    monkeypatch.setattr(cli, "LM", lambda name, **options: LM(name, backend=RecordingBackend(), **options))
    run, rows = tmp_path / "run", tmp_path / "rows.jsonl"
    code, out, err = run_cli("optimize", str(planted.root), "--model", "fake/planted", "--budget", "300",
                             "--embedder", "tfidf", "--no-test", "--out", str(run), "--json")
    assert code == 0, err
    best = json.loads(out)["best"]
    code, out, err = run_cli("eval", str(planted.root), "--model", "fake/planted", "--program", str(run),
                             "--rows", str(rows), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["score"] == 1.0 and (summary["k"], summary["select"]) == (best["k"], best["strategy"])
    assert json.loads(run_cli("eval", str(planted.root), "--model", "fake/planted", "--json")[1])["score"] < 1.0
    written = [json.loads(line) for line in rows.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in written] == [example.id for example in planted.split("test")]
    assert all(row["score"] == 1.0 and row["prediction"] == row["gold"] for row in written)
    code, _, err = run_cli("eval", str(planted.root), "--program", str(run), "--k", "2", "--instruction", "x")
    assert code == 2 and "--program sets the instruction and demos; drop --k, --instruction" in err

    monkeypatch.setattr("optimizer.program.LM", lambda name, **options: LM(name, backend=RecordingBackend(),
                                                                             **options))
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"id": "a", "text": "item 300 is about beta"}\n{"id": "b", "text": "item 302 is about gamma"}\n')
    code, out, err = run_cli("run", str(run / "program"), "--file", str(inputs), "--json")
    assert code == 0, err
    assert [(p["id"], p["value"]) for p in json.loads(out)["predictions"]] == [("a", "beta"), ("b", "gamma")]
    assert run_cli("run", str(run / "program"), "--file", str(inputs))[1] == "beta\ngamma\n"
    assert run_cli("run", str(run), "--file", str(inputs))[1] == "beta\ngamma\n"  # the run folder, as eval takes it
    inputs.write_text('{"id": "a", "text": "item 300 is about beta"}\n{"txt": "item 302"}\n')
    code, _, err = run_cli("run", str(run / "program"), "--file", str(inputs))
    assert code == 2 and f"{inputs}:2: record has no field 'text'" in err
    inputs.write_text('{"id": "a", "text": "item 300 is about beta"}\n{"text": null}\n')  # was asked as "None"
    code, _, err = run_cli("run", str(run / "program"), "--file", str(inputs))
    assert code == 2 and err.strip().splitlines() == [
        f"formfit: error: {inputs}: record 2: program 'planted': input field 'text' has an unsupported value nothing"]
    inputs.write_text("")
    code, _, err = run_cli("run", str(run / "program"), "--file", str(inputs))
    assert code == 2 and err.strip().splitlines() == [f"formfit: error: {inputs}: the file has no records"]


@pytest.mark.parametrize("option, expected", [((), "http://127.0.0.1:9/v1"), (("--proposer-api-base", "none"), None),
                                              (("--proposer-api-base", "http://h:2/v1"), "http://h:2/v1")])
def test_the_proposer_reaches_its_own_server_when_told(planted, run_cli, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, option: tuple[str, ...],
                                                       expected: str | None) -> None:
    from test_search import RecordingBackend

    built: dict[str, str | None] = {}

    def make(name: str, **options) -> LM:
        built[name] = options.get("api_base")
        return LM(name, backend=RecordingBackend(), **options)

    monkeypatch.setattr(cli, "LM", make)
    code, _, err = run_cli("optimize", str(planted.root), "--model", "fake/planted", "--api-base",
                           "http://127.0.0.1:9/v1", "--proposer-model", "fake/proposer", *option, "--budget", "40",
                           "--rounds", "1", "--embedder", "tfidf", "--no-test", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert built == {"fake/planted": "http://127.0.0.1:9/v1", "fake/proposer": expected}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["proposer_api_base"] == expected
