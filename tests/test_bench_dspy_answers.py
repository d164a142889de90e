"""Replaying a DSPy row's test answers from its cache (bench/dspy_answers.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("dspy")

import dspy  # noqa: E402
import dspy_answers  # noqa: E402

from optimizer.task import Example, Task  # noqa: E402

TASK = Task("t", "d", ("text",), "label", "label", "label_match", "Classify.", labels=("positive", "negative"))


def test_answers_are_counted_by_parser_kind_and_score() -> None:
    rows = [{"answer": "positive", "score": 1.0, "parsed_by": "ChatAdapter"},
            {"answer": "{'title': 'A film'}", "score": 0.0, "parsed_by": "JSONAdapter retry"},
            {"answer": "{'title': 'Another'}", "score": 0.0, "parsed_by": "JSONAdapter retry"},
            {"answer": "I liked it", "score": 0.0, "parsed_by": "JSONAdapter retry"},
            {"answer": None, "score": 0.0, "parsed_by": "JSONAdapter retry"}]
    result = dspy_answers.summary(TASK, rows)
    assert result["score"] == 0.2 and result["n"] == 5
    assert result["answers"][0] == {"parsed_by": "JSONAdapter retry", "answer": "a JSON/dict object", "score": 0.0,
                                    "rows": 2}
    assert {(a["answer"], a["rows"]) for a in result["answers"][1:]} == {("a label", 1), ("other text", 1),
                                                                         ("none", 1)}
    assert result["examples"] == ["{'title': 'A film'}", "{'title': 'Another'}", "I liked it"]


def test_a_request_missing_from_the_cache_fails_instead_of_reaching_a_model(tmp_path) -> None:
    (tmp_path / "cache").mkdir()
    rows = [Example(id=f"r{i}", inputs={"text": f"a {'fine' if i % 2 else 'dull'} film {i}"},
                    gold=("negative", "positive")[i % 2]) for i in range(8)]
    task = replace(TASK, splits={"train": tuple(rows[:4]), "dev": tuple(rows[4:6]), "test": tuple(rows[6:])})
    with pytest.raises(dspy.utils.exceptions.LMError):
        dspy_answers.replay(task, "labeled", "chat", tmp_path, 0, "tfidf")
