"""Rendering prompts, parsing outputs, and every metric's edge cases."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import SPEC, write_task
from optimizer.errors import TaskError
from optimizer.metrics import exact_match, get_metric, json_match, label_match, run_sql, sql_exec, token_f1
from optimizer.prompt import build_request, parse_output, render_completion, render_messages
from optimizer.task import Example, Task, load_task

LABELS = Task("t", "d", ("text",), "label", "label", "label_match", "Classify.", labels=("card_lost", "refund", "other"))
JSON = Task("j", "d", ("text",), "output", "json", "json_match", "Extract.", output_schema={"a": "string", "b": "integer"})
SQL = Task("s", "d", ("question", "schema"), "sql", "sql", "sql_exec", "Write SQL.")


def demo(i: int, label: str) -> Example:
    return Example(id=f"d{i}", inputs={"text": f"demo {i}"}, gold=label)


def test_chat_rendering_puts_demos_as_turns() -> None:
    messages = render_messages(LABELS, "Classify.", [demo(1, "refund")], {"text": "hi"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Text: demo 1" and messages[2]["content"] == "refund"
    assert messages[-1]["content"] == "Text: hi"


def test_completion_rendering_ends_with_the_open_field() -> None:
    text = render_completion(LABELS, "Classify.", [demo(1, "refund")], {"text": "hi"})
    assert text == "Classify.\n\nText: demo 1\nLabel: refund\n\nText: hi\nLabel:"
    request = build_request(LABELS, "Classify.", [], {"text": "hi"}, "completion")
    assert request.prompt and request.messages is None and "\n\n" in request.stop


@pytest.mark.parametrize(
    ("text", "value", "form_error"),
    [
        ("refund", "refund", None),
        ("  Refund. ", "refund", None),
        ("Label: card lost", "card_lost", None),
        ("The answer is card_lost because the card is gone.", "card_lost", "extra_text"),
        ("I think it is a refund, not other", "refund", "extra_text"),
        ("banana", "banana", "label_outside_set"),
        ("", None, "empty"),
        ("```\nrefund\n```", "refund", None),
    ],
)
def test_label_parsing(text: str, value, form_error) -> None:
    parsed = parse_output(LABELS, text)
    assert (parsed.value, parsed.form_error) == (value, form_error)


PUNCTUATED = Task("p", "d", ("text",), "label", "label", "label_match", "Classify.",
                  labels=("reverted_card_payment?", "card_payment", "card_payment_fee_charged", "C#", "C"))
LETTERS = Task("l", "d", ("text",), "label", "label", "label_match", "Choose.", labels=("A", "B", "C", "D", "I"))


@pytest.mark.parametrize(
    ("task", "text", "value", "form_error"),
    [
        (PUNCTUATED, "reverted_card_payment?", "reverted_card_payment?", None),
        (PUNCTUATED, "Reverted card payment", "reverted_card_payment?", None),
        (PUNCTUATED, "It looks like a reverted card payment.", "reverted_card_payment?", "extra_text"),
        (PUNCTUATED, "Most likely: card payment fee charged.", "card_payment_fee_charged", "extra_text"),
        (PUNCTUATED, "a card-payment, not a fee", "card_payment", "extra_text"),
        (PUNCTUATED, "This is C# code", "C#", "extra_text"),
        (PUNCTUATED, "Plain C, not C#", "C", "extra_text"),
        (LETTERS, "A good question; the answer is B.", "B", "extra_text"),
        (LETTERS, "I think it is C", "C", "extra_text"),
        (LETTERS, "I", "I", None),
        (LETTERS, "a", "A", None),
        (LETTERS, "(D) Paris", "D", "extra_text"),
        (LETTERS, "I'd say it is a tough one", "I'd say it is a tough one", "label_outside_set"),
    ],
)
def test_labels_with_punctuation_or_one_letter_are_found_in_prose(task: Task, text: str, value, form_error) -> None:
    """A label keeps its punctuation in prose; at one place the longest label wins; one letter is not an article."""
    parsed = parse_output(task, text)
    assert (parsed.value, parsed.form_error) == (value, form_error)


@pytest.mark.parametrize(
    ("text", "value", "form_error"),
    [
        ('{"a": "x", "b": 2}', {"a": "x", "b": 2}, None),
        ('Here: {"a": "x", "b": 2} done', {"a": "x", "b": 2}, "extra_text"),
        ('```json\n{"a": "x", "b": 2}\n```', {"a": "x", "b": 2}, None),
        ('{"a": "x"}', {"a": "x"}, "missing_keys"),
        ('{"a": "x", ', None, "invalid_json"),
        ("no json here", None, "invalid_json"),
    ],
)
def test_json_parsing(text: str, value, form_error) -> None:
    parsed = parse_output(JSON, text)
    assert (parsed.value, parsed.form_error) == (value, form_error)


def test_sql_parsing_strips_prose() -> None:
    assert parse_output(SQL, "SQL: SELECT a FROM t;").value == "SELECT a FROM t"
    assert parse_output(SQL, "Sure! select a from t").form_error == "extra_text"
    assert parse_output(SQL, "I cannot").form_error == "sql_error"


@pytest.mark.parametrize("text, query", [
    ("SELECT n FROM t WHERE name = 'a;b'; SELECT 1", "SELECT n FROM t WHERE name = 'a;b'"),
    ("SELECT n FROM t -- first; then\nWHERE n > 1; DROP TABLE t", "SELECT n FROM t -- first; then\nWHERE n > 1"),
    ("Here is the query with a filter: SELECT n FROM t WHERE n = 1", "SELECT n FROM t WHERE n = 1"),
    ("Done with it; SELECT n FROM t", "SELECT n FROM t"),
    ("The query: WITH big AS (SELECT n FROM t) SELECT * FROM big;", "WITH big AS (SELECT n FROM t) SELECT * FROM big"),
    ("with recursive c(x) as (select 1) select x from c", "with recursive c(x) as (select 1) select x from c"),
    ("SELECT '\x00\ud800;'; SELECT 2", "SELECT '\x00\ud800;'"),  # characters sqlite3 refuses to check
])
def test_sql_parsing_takes_the_first_whole_statement(text: str, query: str) -> None:
    """A `;` in a string literal or a comment does not end the query; prose `with` does not start it, a CTE does."""
    assert parse_output(SQL, text).value == query


def test_text_metrics() -> None:
    assert label_match("Card Lost", "card_lost") == 1.0 and label_match(None, "x") == 0.0
    assert exact_match("The Paris.", "paris") == 1.0 and exact_match("Lyon", "Paris") == 0.0
    assert token_f1("Ostra Kell", "Ostra Kell") == 1.0
    assert token_f1("it was Ostra", "Ostra Kell") == pytest.approx(0.4)
    assert token_f1("nothing", "Ostra Kell") == 0.0


def test_json_match_scores_keys() -> None:
    gold = {"a": "Red", "b": 2, "c": None, "d": True}
    assert json_match({"a": "red", "b": 2.0, "c": None, "d": True}, gold) == 1.0
    assert json_match({"a": "red", "b": "3", "d": "true"}, gold) == 0.25
    assert json_match("not a dict", gold) == 0.0


@pytest.mark.parametrize("pred, gold, same", [
    ({"zip": "75", "city": "paris"}, {"city": "Paris", "zip": "75"}, True),  # key order does not matter
    ([1.0, 2], [1, 2.0], True),
    ({"a": [{"b": 1.0}]}, {"a": [{"b": 1}]}, True),
    ([2, 1], [1, 2], False),
    ([1, 2, 3], [1, 2], False),
    ({"city": "Paris", "zip": "75"}, {"city": "Paris"}, False),  # a nested object needs the same keys
    ({"city": "Paris"}, {"city": "Paris", "zip": None}, False),
    (True, 1, False),
    (1, True, False),
    ([True], [1], False),
    ([0], [False], False),
    ([None], [0], False),
    ({"n": "2"}, {"n": 2}, True),  # a number may come as its text, as at the top level
])
def test_json_match_compares_nested_values(pred, gold, same: bool) -> None:
    assert json_match({"v": pred}, {"v": gold}) == float(same)


SCHEMA = "CREATE TABLE t (name TEXT, n INTEGER); INSERT INTO t VALUES ('a', 1), ('b', 2);"


def sql_example(schema: str = SCHEMA) -> Example:
    return Example(id="q", inputs={"question": "?", "schema": schema}, gold="")


def test_sql_exec_compares_results() -> None:
    example = sql_example()
    assert sql_exec("SELECT n FROM t WHERE name = 'b'", "SELECT n FROM t WHERE n > 1", example) == 1.0
    assert sql_exec("SELECT n FROM t", "SELECT n FROM t WHERE n > 1", example) == 0.0
    assert sql_exec("SELEC nonsense", "SELECT n FROM t", example) == 0.0


def test_sql_exec_on_empty_tables_needs_matching_text() -> None:
    example = sql_example("CREATE TABLE t (name TEXT, n INTEGER);")
    assert sql_exec("select n from t where name = 'x'", 'SELECT n FROM t WHERE name = "x"', example) == 1.0
    assert sql_exec("SELECT name FROM t", "SELECT n FROM t", example) == 0.0


def test_sql_is_read_only_and_time_limited(tmp_path: Path) -> None:
    for query in (
        f"ATTACH DATABASE '{tmp_path / 'x.db'}' AS x",
        "DELETE FROM t",
        "INSERT INTO t VALUES ('c', 3)",
        "PRAGMA table_info(t)",
        "DROP TABLE t",
    ):
        with pytest.raises(sqlite3.Error):
            run_sql(SCHEMA, query)
    assert not (tmp_path / "x.db").exists()
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        run_sql(SCHEMA, slow, time_limit_s=0.2)


def test_custom_metric_from_the_task_folder(tmp_path: Path) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "my_metric:first_letter"})
    (root / "my_metric.py").write_text("def first_letter(pred, gold, example):\n    return float(str(pred)[:1] == gold[:1])\n")
    metric = get_metric(load_task(root))
    assert metric("yes", "yes", None) == 1.0 and metric("no", "yes", None) == 0.0


def test_custom_metrics_in_files_of_the_same_name_stay_apart(tmp_path: Path) -> None:
    metrics = []
    for name, score in (("a", 1.0), ("b", 0.0)):
        root = write_task(tmp_path / name, {**SPEC, "metric": "metric:score"})
        (root / "metric.py").write_text(f"def score(pred, gold, example):\n    return {score}\n")
        metrics.append(get_metric(load_task(root)))
        assert str(root) not in sys.path
    assert [metric("yes", "yes", None) for metric in metrics] == [1.0, 0.0]


def test_custom_metric_imports_files_beside_it(tmp_path: Path) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "metric:score"})
    (root / "helper_beside_the_metric.py").write_text("HALF = 0.5\n")
    (root / "metric.py").write_text("from helper_beside_the_metric import HALF\n\n"
                                    "def score(pred, gold, example):\n    return HALF\n")
    assert get_metric(load_task(root))("a", "b", None) == 0.5


@pytest.mark.parametrize("value, score", [("np.float32(0.25)", 0.25), ("np.bool_(True)", 1.0), ("np.int64(0)", 0.0),
                                          ("Fraction(1, 2)", 0.5), ("True", 1.0)])
def test_custom_metric_may_return_any_real_number(tmp_path: Path, value: str, score: float) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "real_metric:score"})
    (root / "real_metric.py").write_text("from fractions import Fraction\n\nimport numpy as np\n\n"
                                         f"def score(pred, gold, example):\n    return {value}\n")
    result = get_metric(load_task(root))("a", "b", None)
    assert result == score and type(result) is float


@pytest.mark.parametrize("value", ["np.float32(1.5)", "float('nan')", "'1'", "None", "np.array([1.0])"])
def test_custom_metric_refuses_anything_but_a_number_in_0_1(tmp_path: Path, value: str) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "real_metric:score"})
    (root / "real_metric.py").write_text(f"import numpy as np\n\ndef score(pred, gold, example):\n    return {value}\n")
    with pytest.raises(TaskError, match=r"on example 'q'; a score must be a number in \[0, 1\]"):
        get_metric(load_task(root))("a", "b", Example("q", {"text": "x"}, "yes"))


def test_custom_metric_that_raises_names_the_example(tmp_path: Path) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "raising_metric:score"})
    (root / "raising_metric.py").write_text("def score(pred, gold, example):\n    return {}[pred]\n")
    with pytest.raises(TaskError, match=r"^custom metric 'raising_metric:score' failed on example 'q': KeyError: 'a'$"):
        get_metric(load_task(root))("a", "b", Example("q", {"text": "x"}, "yes"))


def test_custom_metric_out_of_range_is_an_error(tmp_path: Path) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "bad_metric:score"})
    (root / "bad_metric.py").write_text("def score(pred, gold, example):\n    return 7\n")
    with pytest.raises(TaskError, match=r"returned 7; a score must be a number in \[0, 1\]"):
        get_metric(load_task(root))("a", "b", None)


@pytest.mark.parametrize("output_type", ["label", "text", "json", "sql"])
def test_model_output_is_never_run_as_code(tmp_path: Path, output_type: str) -> None:
    """Parsing and scoring treat model output as data: a payload that would write a file if evaluated does not."""
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    task = Task(name="t", description="d", inputs=("text",), output="out", output_type=output_type,
                metric={"label": "label_match", "text": "exact_match", "json": "json_match", "sql": "exact_match"}
                [output_type], instruction="i", labels=("a", "b") if output_type == "label" else ())
    for text in (payload, f'{{"out": {payload}}}', f"```python\n{payload}\n```", f"SELECT {payload}"):
        parsed = parse_output(task, text)
        get_metric(task)(parsed.value, "a" if output_type == "label" else {"out": 1} if output_type == "json" else "x")
    assert not marker.exists()
