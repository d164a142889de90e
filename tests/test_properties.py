"""Property tests (hypothesis): the data readers, the task loader and the output parsers on arbitrary input.

Readers and the loader either succeed or raise one of formfit's own errors (`FormfitError`), never anything
else; well-formed data round-trips exactly; `parse_output` never raises, whatever the model says.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import SPEC, write_task
from optimizer.data import MAX_FIELD_CHARS, read_records, read_rows
from optimizer.errors import FormfitError
from optimizer.prompt import Parsed, parse_output
from optimizer.task import Task, load_task

EXAMPLES = 200
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# JSON values, finite floats only (NaN != NaN would break the round trips, not the readers)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
json_record = st.dictionaries(st.text(max_size=12), json_value, max_size=5)

# Inputs known to break naive readers: raw U+2028 inside a string, integers past Python's 4300-digit limit,
# nesting deeper than the recursion limit, a BOM, NUL bytes, lone CRs, a quoted field with a line break.
TRICKY = [
    '{"x": "a\u2028b"}\n'.encode(),
    b'{"x": ' + b"9" * 5000 + b"}\n",
    b"[" * 100_000,
    b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "\ufeff".encode() + b'{"x": 1}\n',
    b'{"x": "\x00"}\n\x00',
    b'{"x": 1}\r{"y": 2}\r\n',
    b'a,b\n"1\n2",3\n',
    b'a,b\n"unterminated\n',
    b"a," + b"x" * 200_000 + b"\n",
    b"\xff\xfe\x00",
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


def read_or_formfit_error(path: Path, content: bytes) -> list[dict[str, Any]] | None:
    path.write_bytes(content)
    try:
        records = read_records(path)
    except FormfitError as exc:
        assert "\n" not in str(exc) and str(path.name) in str(exc)
        return None
    assert isinstance(records, list) and all(isinstance(record, dict) for record in records)
    return records


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_readers_on_arbitrary_bytes_raise_only_formfit_errors(scratch: Path, suffix: str) -> None:
    @SETTINGS
    @given(content=st.binary(max_size=400) | st.text(max_size=300).map(str.encode) | st.sampled_from(TRICKY))
    def check(content: bytes) -> None:
        read_or_formfit_error(scratch / f"data{suffix}", content)

    for content in TRICKY:
        read_or_formfit_error(scratch / f"data{suffix}", content)
    check()


@SETTINGS
@given(records=st.lists(json_record, max_size=6))
@example(records=[{"x": "a\u2028b\u2029c\x0b\x0c\x1c\x85d"}])
@example(records=[{"x": "line\nbreak", "y": "\r"}])
def test_jsonl_round_trips(scratch: Path, records: list[dict[str, Any]]) -> None:
    path = scratch / "round.jsonl"
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    assert read_records(path) == records


@SETTINGS
@given(records=st.lists(json_record, max_size=6))
def test_json_list_round_trips(scratch: Path, records: list[dict[str, Any]]) -> None:
    path = scratch / "round.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    assert read_records(path) == records


@SETTINGS
@given(records=st.lists(json_record, max_size=6), compact=st.booleans())
def test_json_list_rows_carry_the_line_their_record_starts_on(scratch: Path, records: list[dict[str, Any]],
                                                              compact: bool) -> None:
    items = [json.dumps(record, ensure_ascii=False, indent=None if compact else 2) for record in records]
    path = scratch / "lines.json"
    path.write_text(" [\n" + "\n ,\n".join(items) + "]", encoding="utf-8")
    starts = [2 + sum(item.count("\n") + 2 for item in items[:n]) for n in range(len(items))]
    assert read_rows(path) == list(zip(starts, records))


cell = st.text(st.characters(exclude_characters="\ufeff", exclude_categories=["Cs"]), max_size=15)


@st.composite
def csv_table(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    header = draw(st.lists(cell.filter(lambda name: name.strip()), min_size=1, max_size=4, unique_by=str.strip))
    rows = draw(st.lists(st.lists(cell, min_size=len(header), max_size=len(header)), max_size=6))
    return header, [row for row in rows if any(value.strip() for value in row)]  # blank rows are skipped


@SETTINGS
@given(table=csv_table())
@example(table=(["a", "b"], [["line\nbreak", "x\u2028y"], ["\r", "q,\"uoted\""]]))
def test_csv_round_trips(scratch: Path, table: tuple[list[str], list[list[str]]]) -> None:
    header, rows = table
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path = scratch / "round.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    names = [name.strip() for name in header]  # a header `text, label` names the columns text and label
    assert read_records(path) == [dict(zip(names, row)) for row in rows]


def test_field_size_limit_is_exact(scratch: Path) -> None:
    path = scratch / "limit.jsonl"
    path.write_text(json.dumps({"x": "a" * MAX_FIELD_CHARS}) + "\n")
    assert len(read_records(path)[0]["x"]) == MAX_FIELD_CHARS
    path.write_text(json.dumps({"x": "a" * (MAX_FIELD_CHARS + 1)}) + "\n")
    with pytest.raises(FormfitError, match="limit.jsonl:1: field 'x' has 100,001 characters"):
        read_records(path)


# --- task.yaml --------------------------------------------------------------------------------------------------

DELETE = object()
yaml_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
yaml_value = st.recursive(yaml_scalar, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
file_ref = st.sampled_from(["train.jsonl", "test.jsonl", "all.jsonl", "all.csv", "../outside.jsonl", "/etc/passwd",
                            "a\0b.jsonl", "", ".", "nope.jsonl", "train.txt", "sub/../train.jsonl", "x" * 300])
split_name = st.sampled_from(["train", "dev", "test", "validation"])
special = {
    "data": file_ref | st.dictionaries(split_name, file_ref, max_size=3),
    "split": st.dictionaries(split_name, st.floats() | st.integers(-2, 5), max_size=3),
    "seed": st.integers() | st.floats() | st.text(max_size=5),
    "labels": st.lists(st.sampled_from(["yes", "no", "maybe", "", " yes "]), max_size=4),
    "output_type": st.sampled_from(["label", "text", "json", "sql", "image"]),
    "metric": st.sampled_from(["label_match", "exact_match", "token_f1", "json_match", "sql_exec", "bleu",
                               "os:system", "module:function"]),
    "output_schema": st.dictionaries(st.text(max_size=5), st.sampled_from(["string", "integer?", "date", 3])),
    "inputs": st.lists(st.sampled_from(["text", "label", "context", "", "missing"]), max_size=3),
    "output": st.sampled_from(["label", "text", "id", "missing"]),
    "context_field": st.sampled_from(["text", "context", "missing"]),
}
KEYS = tuple(SPEC) + ("split", "seed", "context_field", "output_schema", "colour")


@st.composite
def mutated_spec(draw: st.DrawFn) -> str:
    """The valid test spec with a few keys deleted or replaced (by a plausible or an arbitrary value), as YAML;
    one in five cut short at an arbitrary character."""
    spec: dict[str, Any] = dict(SPEC)
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
        choice = draw(st.sampled_from(["delete", "special", "any"]))
        if choice == "delete":
            spec.pop(key, None)
        else:
            spec[key] = draw(special[key] if choice == "special" and key in special else yaml_value)
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


# mostly specs with a few keys changed (they reach the data files), also free text and YAML oddities
yaml_text = mutated_spec() | mutated_spec() | mutated_spec() | st.text(max_size=300) | st.lists(
    st.sampled_from(["name: x", "- a", "? [a]\n: b", "&a [*a]", "!!python/object:os.system {}", "data: {", "\t",
                     "key: 'unterminated", "<<: {a: 1}", "---", "...", "%YAML 1.1", "*nope", "{a: 1, a: 2}"]),
    max_size=6).map("\n".join)


@pytest.fixture(scope="module")
def task_dir(scratch: Path) -> Path:
    rows = "".join(json.dumps({"id": f"x{i}", "text": f"t {i}", "label": "yes" if i % 2 else "no",
                               "context": "c"}) + "\n" for i in range(10))
    root = write_task(scratch / "task", files={"train.jsonl": rows, "test.jsonl": rows.replace('"x', '"y'),
                                               "all.jsonl": rows, "all.csv": "id,text,label\nz,t,yes\n"})
    (scratch / "outside.jsonl").write_text(rows)
    return root


def load_or_formfit_error(root: Path, text: str) -> Task | None:
    (root / "task.yaml").write_text(text, encoding="utf-8")
    try:
        task = load_task(root)
    except FormfitError as exc:
        assert "\n" not in str(exc)
        return None
    assert task.splits and all(task.splits.values())
    return task


@SETTINGS
@given(text=yaml_text)
@example(text="name: " + "[" * 5000)
@example(text=yaml.safe_dump({**SPEC, "data": "all.jsonl", "split": {"train": math.inf, "test": 1}}))
@example(text=yaml.safe_dump({**SPEC, "data": {"train": "tr\0ain.jsonl", "test": "test.jsonl"}}))
@example(text=yaml.safe_dump({**SPEC, "data": "all.jsonl", "seed": True}))
def test_load_task_on_arbitrary_yaml_raises_only_formfit_errors(task_dir: Path, text: str) -> None:
    load_or_formfit_error(task_dir, text)


def test_the_unmutated_spec_loads(task_dir: Path) -> None:
    assert load_or_formfit_error(task_dir, yaml.safe_dump(SPEC, sort_keys=False)) is not None


# --- output parsers ---------------------------------------------------------------------------------------------

LABELS = ("refund_request", "track_order", "yes", "no")
TASKS = {
    "label": Task("l", "d", ("text",), "label", "label", "label_match", "i", labels=LABELS),
    "text": Task("t", "d", ("question",), "answer", "text", "exact_match", "i"),
    "json": Task("j", "d", ("text",), "order", "json", "json_match", "i",
                 output_schema={"product": "string", "quantity": "integer"}),
    "sql": Task("s", "d", ("question",), "sql", "sql", "sql_exec", "i"),
}
FORM_ERRORS = {None, "empty", "extra_text", "label_outside_set", "invalid_json", "missing_keys", "sql_error"}

model_text = st.text(max_size=300) | st.builds(
    lambda parts: "".join(parts),
    st.lists(st.sampled_from(["```json\n", "```", "Label:", "Answer: ", "Order:", "{", "}", '"product": "x"',
                              '"quantity": 2', ",", "[", "]", "refund request", "Track-Order", "YES.", " ", "\n",
                              "select * from t", ";", "WITH x AS", "\u2028", "\x00", "9" * 5000, "null"]),
             max_size=12))


@pytest.mark.parametrize("output_type", list(TASKS))
def test_parse_output_never_raises(output_type: str) -> None:
    task = TASKS[output_type]

    @SETTINGS
    @given(text=model_text)
    @example(text='{"product": ' + "[" * 100_000 + "]" * 100_000 + "}")
    @example(text='{"quantity": ' + "9" * 5000 + "}")
    @example(text="```\n```")
    @example(text="Label: \u2028")
    def check(text: str) -> None:
        parsed = parse_output(task, text)
        assert isinstance(parsed, Parsed) and parsed.form_error in FORM_ERRORS
        if output_type == "label" and parsed.form_error in (None, "extra_text"):
            assert parsed.value in LABELS
        if output_type == "json" and parsed.form_error in (None, "extra_text", "missing_keys"):
            assert isinstance(parsed.value, dict)
        if parsed.form_error is None:
            assert parsed.value is not None

    check()


@SETTINGS
@given(label=st.sampled_from(LABELS), wrap=st.sampled_from(["{}", "{}.", "Label: {}", " {} \n", "`{}`"]))
def test_a_bare_label_parses_without_form_error(label: str, wrap: str) -> None:
    assert parse_output(TASKS["label"], wrap.format(label)) == Parsed(label, None)


@SETTINGS
@given(value=st.dictionaries(st.sampled_from(["product", "quantity", "size", "x"]), json_value, max_size=4))
def test_json_output_round_trips(value: dict[str, Any]) -> None:
    parsed = parse_output(TASKS["json"], json.dumps(value, ensure_ascii=False))
    assert parsed.value == value
    assert parsed.form_error == (None if {"product", "quantity"} <= set(value) else "missing_keys")
