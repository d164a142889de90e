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


ROWS = [Example(id=f"r{i}", inputs={"text": f"a {'fine' if i % 2 else 'dull'} film {i}"},
                gold=("negative", "positive")[i % 2]) for i in range(8)]
SPLIT = replace(TASK, splits={"train": tuple(ROWS[:4]), "dev": tuple(ROWS[4:6]), "test": tuple(ROWS[6:])})


def test_a_request_missing_from_the_cache_fails_instead_of_reaching_a_model(tmp_path) -> None:
    (tmp_path / "cache").mkdir()
    with pytest.raises(dspy.utils.exceptions.LMError):
        dspy_answers.replay(SPLIT, "labeled", "chat", tmp_path, 0, "tfidf")


def test_an_answer_unparseable_even_on_the_json_retry_is_a_failed_prediction(tmp_path, monkeypatch) -> None:
    """As in the row: DSPy raises after its JSONAdapter retry, and the prediction counts as failed (score 0)."""
    from dspy.utils.dummies import DummyLM

    replies = DummyLM({"a dull film 6": {"label": "negative"}, "a fine film 7": {"verdict": "positive"}})
    monkeypatch.setattr(dspy_answers, "dspy_lm", lambda *args: replies)
    (tmp_path / "cache").mkdir()
    rows = dspy_answers.replay(SPLIT, "labeled", "chat", tmp_path, 0, "tfidf")
    assert [(row["answer"], row["score"], row["parsed_by"]) for row in rows] == [
        ("negative", 1.0, "ChatAdapter"), (None, 0.0, "raised AdapterParseError")]
