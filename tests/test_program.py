"""Saved programs: what `load_program` gives an app sends the requests the search sent for the same examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ScriptedBackend, write_task
from optimizer.cache import Cache
from optimizer.embed import make_embedder
from optimizer.errors import ConfigError
from optimizer.lm import LM, Budget
from optimizer.program import load_program, save_program
from optimizer.prompt import Prompt
from optimizer.retry import RetryPolicy
from optimizer.search import evaluate_prompt, optimize, split_dev
from optimizer.select import prompt_demos
from optimizer.task import load_task
from test_search import CONFIG, RecordingBackend, model


@pytest.mark.parametrize("seed", [0, 1])
def test_a_saved_program_scores_the_test_split_from_the_searchs_cache(planted, tmp_path: Path, seed: int) -> None:
    """`Program.evaluate` on the test split, and `predict` on each test input alone, repeat the search's requests
    exactly: the same demos in the same order (a lone query's float32 product rounded otherwise than the search's
    batch and reordered tied TF-IDF neighbours of 4 of these 30 inputs) and the search's seed (seed 0 was sent
    before: 30 new calls at seed 1). So every answer is a cache hit and the score is the search's."""
    backend = RecordingBackend()
    lm = model(Cache(tmp_path / "c"), 600, backend)
    result = optimize(planted, lm, config=CONFIG, seed=seed, test_lm=lm.with_budget(Budget()))
    assert result.best.k and result.best.strategy == "knn"
    program = load_program(result.save(tmp_path / "prog", planted, lm), lm=lm.with_budget(Budget()))
    before = len(backend.seen)
    scored = program.evaluate(planted.split("test"))
    assert len(backend.seen) == before and all(row.cached for row in scored.rows)
    assert scored.score == result.test_scores["best"]
    for example in planted.split("test"):
        program.predict(**example.inputs)
    assert len(backend.seen) == before


def test_a_random_demo_program_draws_the_searchs_demos(planted, tmp_path: Path) -> None:
    """A program showing random demos draws them with the search's seed (it drew with seed 0 before)."""
    backend = RecordingBackend()
    lm = model(Cache(tmp_path / "c"), None, backend)
    prompt, test = Prompt("Say what the item is about.", k=4, strategy="random"), planted.split("test")
    pool, _ = split_dev(planted, 20, 3)
    evaluate_prompt(planted, prompt, lm, test, prompt_demos(planted, pool, prompt, seed=3), 3)
    program = load_program(save_program(tmp_path / "prog", planted, prompt, pool, lm, make_embedder("tfidf"), {},
                                        seed=3), lm=lm)
    before = len(backend.seen)
    assert all(row.cached for row in program.evaluate(test).rows) and len(backend.seen) == before


def test_predict_renders_an_object_input_as_the_data_file_gave_it(tmp_path: Path) -> None:
    """An object or list input reaches the model as JSON with sorted keys, as a data file's does (Python's repr,
    `{'b': 2, 'a': 1}`, before); a null input is a one-line error, as in a data file."""
    rows = [{"id": f"r{i}", "order": {"qty": i, "item": "pen"}, "label": "yes" if i % 2 else "no"} for i in range(6)]
    spec = {"name": "orders", "description": "Orders.", "inputs": ["order"], "output": "label", "output_type": "label", "labels": ["yes", "no"],
            "metric": "label_match", "instruction": "Is the quantity odd?",
            "data": {"train": "train.jsonl", "test": "test.jsonl"}}
    task = load_task(write_task(tmp_path / "t", spec, {"train.jsonl": "".join(json.dumps(r) + "\n" for r in rows[:4]),
                                                       "test.jsonl": "".join(json.dumps(r) + "\n" for r in rows[4:])}))
    seen: list[str] = []
    backend = ScriptedBackend(lambda request: seen.append(request.messages[-1]["content"]) or "no")
    lm = LM("fake/orders", cache=Cache(tmp_path / "c"), budget=Budget(None), backend=backend,
            retry=RetryPolicy(base_s=0.001))
    prompt = Prompt(task.instruction)
    evaluate_prompt(task, prompt, lm, task.split("test"), prompt_demos(task, task.split("train"), prompt), 0)
    program = load_program(save_program(tmp_path / "prog", task, prompt, task.split("train"), lm,
                                        make_embedder("tfidf"), {}), lm=lm)
    assert program(order={"qty": 4, "item": "pen"}) == "no"
    assert backend.calls == 2 and seen == ['Order: {"item": "pen", "qty": 4}', 'Order: {"item": "pen", "qty": 5}']
    with pytest.raises(ConfigError, match="program 'orders': input field 'order' has an unsupported value nothing"):
        program(order=None)


def test_a_program_without_its_selector_folder_is_refused(planted, tmp_path: Path) -> None:
    """A program that shows demos cannot run without its demo pool: loading says so (it ran zero-shot before)."""
    lm = model(Cache(tmp_path / "c"), None, RecordingBackend())
    prompt = Prompt("Say what the item is about.", k=4, strategy="knn")
    saved = save_program(tmp_path / "prog", planted, prompt, planted.split("train"), lm, make_embedder("tfidf"), {})
    shutil.rmtree(saved / "selector")
    with pytest.raises(ConfigError, match=r"prog/selector: missing; the program shows 4 demos from it"):
        load_program(saved, lm=lm)
