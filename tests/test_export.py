"""Exports of a finished run: a chat fine-tuning JSONL validated line by line, and a DSPy `Predict` state that DSPy
itself loads and runs (against llama-cpp-python's server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli
from optimizer.errors import ConfigError, DataError
from optimizer.export import dspy_warning, static_demos, validate_openai_jsonl
from optimizer.prompt import Prompt
from optimizer.lm import LM
from optimizer.task import load_task
from test_search import CONFIG, RecordingBackend, model
from optimizer.cache import Cache
from optimizer.run import RunFolder
from optimizer.search import optimize


@pytest.fixture
def finished_run(planted, tmp_path: Path) -> Path:
    settings = {"task": str(planted.root), "model": "fake/planted", "seed": 1, "budget": 600, "dev_size": 20,
                "embedder": "tfidf"}
    run = RunFolder.open(tmp_path / "run", False, settings)
    lm = model(Cache(tmp_path / "c"), 600, RecordingBackend())
    run.finish(planted, optimize(planted, lm, config=CONFIG, seed=1, checkpoint=run.checkpoint), lm)
    return run.path


def test_openai_jsonl_has_one_valid_chat_per_train_example(finished_run: Path, run_cli) -> None:
    code, out, err = run_cli("export", str(finished_run), "--format", "openai-jsonl", "--json")
    assert code == 0, err
    summary = json.loads(out)
    lines = Path(summary["path"]).read_text().splitlines()
    assert summary["examples"] == len(lines) == len(load_task(json.loads((finished_run / "run.json").read_text())["task"]).split("train"))
    first = json.loads(lines[0])["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert "Reply with exactly one label" in first[0]["content"]
    assert first[1]["content"].startswith("Text: item ") and first[2]["content"] in ("alpha", "beta", "gamma")


@pytest.mark.parametrize(("line", "problem"), [
    ("not json", "not valid JSON"),
    ('{"messages": []}', "expected 'messages' with a system"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, '
     '{"role": "assistant", "content": "c"}]}', "expected a 'system' message"),
    ('{"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": " "}, '
     '{"role": "assistant", "content": "c"}]}', "the user message is empty"),
])
def test_validation_names_the_line(tmp_path: Path, line: str, problem: str) -> None:
    good = json.dumps({"messages": [{"role": r, "content": "x"} for r in ("system", "user", "assistant")]})
    path = tmp_path / "train.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"train\.jsonl:2: {problem}"):
        validate_openai_jsonl(path)


def test_a_line_separator_inside_a_text_is_no_line_break(tmp_path: Path) -> None:
    """U+2028 is valid raw inside a JSON string (ensure_ascii=False writes it so); only \\n ends a JSONL line."""
    chat = {"messages": [{"role": r, "content": f"x\u2028y\u0085z {r}"} for r in ("system", "user", "assistant")]}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(chat, ensure_ascii=False) + "\n", encoding="utf-8")
    assert validate_openai_jsonl(path) == 1


def test_export_finds_a_task_optimized_by_a_relative_path_from_another_folder(planted, run_cli, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "LM", lambda name, **options: LM(name, backend=RecordingBackend(), **options))
    monkeypatch.chdir(planted.root.parent)
    run = tmp_path / "run"
    code, _, err = run_cli("optimize", planted.root.name, "--model", "fake/planted", "--budget", "60", "--rounds", "1",
                           "--demo-sets", "0", "--embedder", "tfidf", "--no-test", "--out", str(run), "--json")
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["task"] == str(planted.root.resolve())
    monkeypatch.chdir(run)
    code, out, err = run_cli("export", str(run), "--format", "openai-jsonl", "--json")
    assert code == 0, err
    assert json.loads(out)["examples"] == len(planted.split("train"))


def test_bad_run_and_format_are_one_line_errors(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli("export", str(tmp_path), "--format", "openai-jsonl")
    assert code == 2 and "not a finished formfit optimize run" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("export", str(tmp_path), "--format", "csv")
    assert code == 2 and "'csv' is not one of" in err
    with pytest.raises(ConfigError):
        from optimizer.export import export_run
        export_run(tmp_path, "yaml", tmp_path / "x")


def test_a_run_whose_task_folder_moved_names_its_run_json(finished_run: Path, planted, run_cli) -> None:
    planted.root.rename(planted.root.with_name("moved"))
    code, _, err = run_cli("export", str(finished_run), "--format", "openai-jsonl")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{finished_run / 'run.json'}: its task '{planted.root}' cannot be loaded" in err


def test_the_dspy_export_says_what_a_predict_cannot_hold(tmp_path: Path) -> None:
    assert dspy_warning(Prompt("x", k=16, strategy="fixed", demo_ids=("a",)), tmp_path) is None
    assert dspy_warning(Prompt("x"), tmp_path) is None
    knn = dspy_warning(Prompt("x", k=4, strategy="knn", constrain=True), tmp_path)
    assert "knn demos, chosen per input, are 4 static ones" in knn and "constrained output" in knn
    assert f"ExampleSelector.load({str(tmp_path / 'program' / 'selector')!r})" in knn
    random = dspy_warning(Prompt("x", k=8, strategy="random"), tmp_path)  # SimilarDemos would choose by similarity
    assert "random demos, drawn per input, are 8 static ones here" in random and "SimilarDemos" not in random


def test_static_demos_take_labels_in_turn(planted) -> None:
    demos = static_demos(planted, planted.split("train"), 6)
    assert len(demos) == 6 and sorted(d.gold for d in demos) == ["alpha", "alpha", "beta", "beta", "gamma", "gamma"]


def test_dspy_loads_and_runs_the_export(finished_run: Path, run_cli, server: str) -> None:
    import dspy

    code, out, err = run_cli("export", str(finished_run), "--format", "dspy", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["load"] == f"dspy.Predict('text -> label').load({summary['path']!r})"
    program = dspy.Predict("text -> label")
    program.load(summary["path"])
    assert "Reply with exactly one label" in program.signature.instructions
    spec = json.loads((finished_run / "program" / "program.json").read_text())
    assert len(program.demos) == spec["prompt"]["k"]
    lm = dspy.LM("openai/smollm2", api_base=server, api_key="none", max_tokens=16, cache=False)
    with dspy.context(lm=lm):
        try:
            answer = program(text="item 7 is about beta").label
        except dspy.utils.exceptions.AdapterParseError:
            answer = None  # a 135M model may not keep DSPy's output format; the call went through DSPy all the same
    sent = lm.history[0]["messages"]
    assert "Reply with exactly one label" in sent[0]["content"] and "item 7 is about beta" in sent[-1]["content"]
    assert sum("item" in m["content"] for m in sent if m["role"] == "user") == len(program.demos) + 1
    assert answer is None or isinstance(answer, str)
