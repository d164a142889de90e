"""Reading data files and task folders: good input loads, bad input names the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SPEC, write_task
from optimizer.data import read_records, split_records
from optimizer.errors import DataError, TaskError
from optimizer.task import BUILTIN_DIR, load_task


def test_reads_jsonl_csv_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    (tmp_path / "a.csv").write_text('x,y\n1,"a, b"\n2,c\n')
    (tmp_path / "a.json").write_text(json.dumps([{"x": 1}, {"x": 2}]))
    assert read_records(tmp_path / "a.jsonl") == [{"x": 1}, {"x": 2}]
    assert read_records(tmp_path / "a.csv") == [{"x": "1", "y": "a, b"}, {"x": "2", "y": "c"}]
    assert read_records(tmp_path / "a.json") == [{"x": 1}, {"x": 2}]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.jsonl", b'{"x": 1}\n{"x": \n', "bad.jsonl:2: broken JSON line"),
        ("list.jsonl", b'{"x": 1}\n[1, 2]\n', "list.jsonl:2: expected a JSON object"),
        ("enc.jsonl", b'{"x": 1}\n{"x": "\xff\xfe"}\n', "enc.jsonl:2: not valid UTF-8"),
        ("cols.csv", b"x,y\n1,2\n3\n", "cols.csv:3: expected 2 columns, found 1"),
        ("dup.csv", b"x,x\n1,2\n", "dup.csv:1: CSV header has empty or duplicate"),
        ("data.txt", b"hello", "unsupported data file type '.txt'"),
        ("big.jsonl", b'{"x": "' + b"a" * 100_001 + b'"}\n', "big.jsonl:1: field 'x' has 100,001 characters"),
    ],
)
def test_bad_data_files_name_file_and_line(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        read_records(tmp_path / name)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        read_records(tmp_path / "nope.jsonl")


def test_split_is_seeded_and_complete() -> None:
    records = list(range(100))
    a = split_records(records, {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=3)
    b = split_records(records, {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=3)
    c = split_records(records, {"train": 0.6, "dev": 0.2, "test": 0.2}, seed=4)
    assert a == b and a != c
    assert [len(a[s]) for s in ("train", "dev", "test")] == [60, 20, 20]
    assert sorted(a["train"] + a["dev"] + a["test"]) == records


def test_every_builtin_task_loads() -> None:
    folders = [p for p in BUILTIN_DIR.iterdir() if (p / "task.yaml").is_file()]
    assert len(folders) >= 3
    for folder in folders:
        task = load_task(folder)
        assert task.name == folder.name
        assert {"train", "test"} <= set(task.splits)


def test_builtin_tasks_meet_their_sizes() -> None:
    intent, extract, facts = (load_task(name) for name in ("support_intent", "order_extract", "fictional_facts"))
    assert len(intent.labels) >= 12 and sum(map(len, intent.splits.values())) >= 150
    assert extract.output_type == "json" and sum(map(len, extract.splits.values())) >= 100
    assert facts.context_field and sum(map(len, facts.splits.values())) >= 80
    assert all(ex.context for ex in facts.split("test"))


def test_single_file_is_split_with_seed(tmp_path: Path) -> None:
    rows = "".join(json.dumps({"text": f"t{i}", "label": "yes"}) + "\n" for i in range(50))
    spec = {**SPEC, "data": "all.jsonl", "split": {"train": 0.5, "test": 0.5}, "seed": 7}
    task = load_task(write_task(tmp_path / "t", spec, {"all.jsonl": rows}))
    assert len(task.split("train")) == 25 and len(task.split("test")) == 25
    assert task.split("train")[0].id.startswith("all-")


def test_split_files_of_the_same_name_get_ids_apart(tmp_path: Path) -> None:
    """Records without ids are numbered per file; two files named data.jsonl are told apart by their folders."""
    rows = lambda n: "".join(json.dumps({"text": f"t{i}", "label": "yes"}) + "\n" for i in range(n))  # noqa: E731
    for folder in ("t/train", "t/test"):
        (tmp_path / folder).mkdir(parents=True)
    root = write_task(tmp_path / "t", {**SPEC, "data": {"train": "train/data.jsonl", "test": "test/data.jsonl"}},
                      {"train/data.jsonl": rows(3), "test/data.jsonl": rows(2)})
    task = load_task(root)
    assert [e.id for e in task.split("train")] == ["train/data-1", "train/data-2", "train/data-3"]
    assert [e.id for e in task.split("test")] == ["test/data-1", "test/data-2"]
    other = write_task(tmp_path / "u", {**SPEC, "data": {"train": "train.jsonl", "test": "test.jsonl"}},
                       {"train.jsonl": rows(2), "test.jsonl": rows(1)})
    assert [e.id for e in load_task(other).split("test")] == ["test-1"]  # a unique stem keeps the short id


def test_with_context_shows_the_context_first(tmp_path: Path) -> None:
    facts = load_task("fictional_facts")
    probe = facts.with_context()
    assert probe.inputs[0] == facts.context_field
    example = probe.split("test")[0]
    assert example.inputs[facts.context_field] == facts.split("test")[0].context


BAD_TASKS = [
    ({k: v for k, v in SPEC.items() if k != "metric"}, None, "task.yaml: missing required key 'metric'"),
    ({**SPEC, "metric": "bleu"}, None, "unknown metric 'bleu'"),
    ({**SPEC, "output_type": "image"}, None, "unknown output_type 'image'"),
    ({**SPEC, "inputs": "text"}, None, "'inputs' must be a list of non-empty strings"),
    ({**SPEC, "labels": []}, None, "needs a non-empty 'labels' list"),
    ({**SPEC, "labels": ["yes"]}, None, "label 'no' is not in the task's labels"),
    ({**SPEC, "colour": "red"}, None, "unknown key 'colour'"),
    ({**SPEC, "name": "Bad Name"}, None, "must use only a-z, 0-9 and _"),
    ({**SPEC, "data": {"train": "../x.jsonl"}}, None, "is outside the task folder"),
    ({**SPEC, "data": {"train": "/etc/passwd.jsonl"}}, None, "is outside the task folder"),
    ({**SPEC, "data": {"validation": "train.jsonl"}}, None, "'data' maps split names"),
    (SPEC, {"train.jsonl": '{"id": "a", "text": "x", "label": "yes"}\n', "test.jsonl": ""}, "split 'test' is empty"),
    (SPEC, {"train.jsonl": '{"id": "a", "text": "x"}\n', "test.jsonl": ""}, "train.jsonl:1: record has no field 'label'"),
    (
        SPEC,
        {"train.jsonl": '{"id": "a", "text": "x", "label": "yes"}\n', "test.jsonl": '{"id": "a", "text": "y", "label": "no"}\n'},
        "duplicate example id 'a'",
    ),
    ({**SPEC, "output_type": "json", "output_schema": {"a": "date"}}, None, "type of 'a' must be one of"),
]


@pytest.mark.parametrize(("spec", "files", "expected"), BAD_TASKS)
def test_bad_task_gives_one_line_error(tmp_path: Path, spec, files, expected: str) -> None:
    root = write_task(tmp_path / "t", spec, files)
    with pytest.raises((TaskError, DataError)) as info:
        load_task(root)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_errors_carry_the_line(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "task.yaml").write_text("name: x\ndescription: [unclosed\n")
    with pytest.raises(TaskError, match=r"task\.yaml:\d"):
        load_task(root)


def test_wrong_type_names_the_line_of_the_key(tmp_path: Path) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "instruction": 42})
    line = (root / "task.yaml").read_text().splitlines().index("instruction: 42") + 1
    with pytest.raises(TaskError, match=rf"task\.yaml:{line}: 'instruction' must be a non-empty string"):
        load_task(root)
