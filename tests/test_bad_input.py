"""Bad input through the CLI: every malformed task, data file or option stops with exit code 2 and exactly one
line on stderr, `formfit: error: ...`, naming the problem and where it is (file:line, the file, or the option).

Every case fails before any LM call: nothing here loads the local llama.cpp model (it loads lazily, on the first
call). One case reaches LiteLLM, against a closed port on 127.0.0.1, with a short retry backoff.

A second part checks that an evaluation stopped by its budget or by a failing model keeps every call it
completed: rerunning it makes only the missing calls.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cli
from conftest import SPEC, ScriptedBackend, free_port, last_user_text, write_task
from optimizer.lm import LM
from optimizer.retry import RetryPolicy

ROW = {"id": "a", "text": "x", "label": "yes"}


def jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": f"item {i}", "label": "yes" if i % 2 else "no"} for i in range(start, start + n)]


def spec_line(root: Path, key: str) -> int:
    """The line of `key:` in a task.yaml that write_task wrote."""
    lines = (root / "task.yaml").read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if line.startswith(f"{key}:"))


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in SPEC.items() if k != key}


# A case builds its input under `tmp` and returns (CLI arguments, fragments the error line must contain).
Case = Callable[[Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(build: Case) -> Case:
        assert name not in CASES
        CASES[name] = build
        return build

    return register


def task_case(name: str, spec: dict[str, Any], key: str | None, *fragments: str,
              files: dict[str, str] | None = None) -> None:
    """A task.yaml problem: the error names task.yaml, and the line of `key` when given."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        root = write_task(tmp / "t", spec, files)
        place = f"task.yaml:{spec_line(root, key)}:" if key else "task.yaml:"
        return ["eval", str(root)], [place, *fragments]

    case(name)(build)


# --- task.yaml --------------------------------------------------------------------------------------------------

for _key in ("name", "description", "inputs", "output", "output_type", "metric", "instruction", "data"):
    task_case(f"task-missing-{_key}", without(_key), None, f"missing required key '{_key}'")

WRONG_TYPES = {
    "name": (42, "'name' must be a non-empty string, got int 42"),
    "description": (["a", "b"], "'description' must be a non-empty string, got list"),
    "inputs": ("text", "'inputs' must be a list of non-empty strings, got str 'text'"),
    "output": (3, "'output' must be a non-empty string, got int 3"),
    "output_type": (["label"], "'output_type' must be a non-empty string, got list"),
    "metric": (5, "'metric' must be a non-empty string, got int 5"),
    "instruction": ({"a": 1}, "'instruction' must be a non-empty string, got dict"),
    "data": (7, "data file names must be non-empty strings without NUL, got int 7"),
}
for _key, (_value, _message) in WRONG_TYPES.items():
    task_case(f"task-wrong-type-{_key}", {**SPEC, _key: _value}, _key, _message)

task_case("task-empty-instruction", {**SPEC, "instruction": "   "}, "instruction", "'instruction' must be a non-empty")
task_case("task-unknown-metric", {**SPEC, "metric": "bleu"}, "metric", "unknown metric 'bleu'")
task_case("task-unknown-output-type", {**SPEC, "output_type": "image"}, "output_type", "unknown output_type 'image'")
task_case("task-unknown-key", {**SPEC, "colour": "red"}, "colour", "unknown key 'colour'")
task_case("task-duplicate-labels", {**SPEC, "labels": ["yes", "no", "yes"]}, "labels", "'labels' has duplicates")
task_case("task-output-also-an-input", {**SPEC, "inputs": ["text", "label"]}, "output",
          "output field 'label' is also an input")
task_case("task-context-is-an-input", {**SPEC, "context_field": "text"}, "context_field",
          "context_field 'text' is also an input or the output")
task_case("task-labels-not-a-list", {**SPEC, "labels": "yes,no"}, "labels", "'labels' must be a list")
task_case("task-label-task-without-labels", without("labels"), "output_type", "needs a non-empty 'labels' list")
task_case("task-bad-name", {**SPEC, "name": "Bad Name"}, "name", "must use only a-z, 0-9 and _")
task_case("task-bad-schema-type", {**SPEC, "output_type": "json", "output_schema": {"a": "date"}}, "output_schema",
          "type of 'a' must be one of")
task_case("task-unknown-split-name", {**SPEC, "data": {"validation": "train.jsonl"}}, "data", "'data' maps split names")
task_case("task-split-with-split-files", {**SPEC, "split": {"train": 0.5, "test": 0.5}}, "split",
          "'split' only applies when 'data' is a single file")
task_case("task-infinite-split-fraction", {**SPEC, "data": "train.jsonl", "split": {"train": float("inf"), "test": 1}},
          "split", "'split' maps split names to positive fractions")
task_case("task-seed-not-int", {**SPEC, "data": "train.jsonl", "seed": "seven"}, "seed", "'seed' must be an integer")
task_case("task-nul-in-file-name", {**SPEC, "data": {"train": "tr\0ain.jsonl", "test": "test.jsonl"}}, "data",
          "without NUL")


def metric_case(name: str, metric: str, source: str | None, *fragments: str) -> None:
    """A custom metric `metric` that cannot be loaded; `source` is the text of the task folder's `metric.py`."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        root = write_task(tmp / "t", {**SPEC, "metric": metric})
        if source is not None:
            (root / "metric.py").write_text(source)
        return ["eval", str(root)], list(fragments)

    case(name)(build)


metric_case("task-metric-syntax-error", "metric:score", "def score(p, g, e):\n  return 1.0\n  )\n",
            "metric.py: cannot load metric 'metric:score'", "SyntaxError")
metric_case("task-metric-import-fails", "metric:score", "import no_such_module_here\n",
            "metric.py: cannot load metric 'metric:score'", "No module named 'no_such_module_here'")
metric_case("task-metric-no-such-function", "metric:scroe", "def score(p, g, e):\n  return 1.0\n",
            "metric.py: cannot load metric 'metric:scroe'", "has no attribute 'scroe'")
metric_case("task-metric-no-such-module", "no_metric_module_here:score", None,
            "task.yaml: cannot load metric 'no_metric_module_here:score'")


@case("task-labels-not-matching-data")
def _(tmp: Path):
    root = write_task(tmp / "t", {**SPEC, "labels": ["yes", "maybe"]})  # train.jsonl line 1 is labelled 'no'
    return ["eval", str(root)], ["train.jsonl:1:", "label 'no' is not in the task's labels"]


@case("task-bad-yaml")
def _(tmp: Path):
    root = tmp / "t"
    root.mkdir()
    (root / "task.yaml").write_text("name: mini\ndescription: fine\ninputs: [text\noutput: label\n")
    return ["eval", str(root)], ["task.yaml:4:"]


@case("task-yaml-not-a-mapping")
def _(tmp: Path):
    root = tmp / "t"
    root.mkdir()
    (root / "task.yaml").write_text("- name\n- mini\n")
    return ["eval", str(root)], ["task.yaml:1:", "must be a mapping"]


@case("task-yaml-nested-too-deeply")
def _(tmp: Path):
    root = tmp / "t"
    root.mkdir()
    (root / "task.yaml").write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    return ["eval", str(root)], ["task.yaml", "nested too deeply"]


@case("task-yaml-bad-encoding")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (root / "task.yaml").write_bytes(b"name: mini\ndescription: caf\xe9\n")
    return ["eval", str(root)], ["task.yaml", "cannot read task.yaml"]


@case("task-folder-without-task-yaml")
def _(tmp: Path):
    (tmp / "empty").mkdir()
    return ["eval", str(tmp / "empty")], ["task.yaml", "task.yaml not found"]


@case("task-no-such-task")
def _(tmp: Path):
    return ["eval", str(tmp / "nowhere")], ["nowhere", "no such task folder or built-in task"]


@case("task-path-escape-dotdot")
def _(tmp: Path):
    (tmp / "outside.jsonl").write_text(jsonl(ROW))
    root = write_task(tmp / "t", {**SPEC, "data": {"train": "../outside.jsonl", "test": "test.jsonl"}})
    return ["eval", str(root)], [f"task.yaml:{spec_line(root, 'data')}:", "'../outside.jsonl' is outside the task"]


@case("task-path-escape-absolute")
def _(tmp: Path):
    (tmp / "outside.jsonl").write_text(jsonl(ROW))
    target = str(tmp / "outside.jsonl")
    root = write_task(tmp / "t", {**SPEC, "data": {"train": target, "test": "test.jsonl"}})
    return ["eval", str(root)], [f"task.yaml:{spec_line(root, 'data')}:", f"{target!r} is outside the task folder"]


@case("task-path-escape-symlink")
def _(tmp: Path):
    (tmp / "outside.jsonl").write_text(jsonl(ROW))
    root = write_task(tmp / "t", files={"test.jsonl": jsonl(*rows(2))})
    (root / "train.jsonl").symlink_to(tmp / "outside.jsonl")
    return ["eval", str(root)], [f"task.yaml:{spec_line(root, 'data')}:", "'train.jsonl' is outside the task folder"]


# --- data files -------------------------------------------------------------------------------------------------


def data_case(name: str, files: dict[str, str | bytes], *fragments: str, spec: dict[str, Any] | None = None) -> None:
    """A data-file problem; `files` are written over the default valid task's files."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        root = write_task(tmp / "t", spec or SPEC)
        for file_name, content in files.items():
            target = root / file_name
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["eval", str(root)], list(fragments)

    case(name)(build)


GOOD = jsonl(*rows(3))
data_case("data-bad-encoding", {"train.jsonl": GOOD.encode() + b'{"id": "z", "text": "caf\xe9", "label": "no"}\n'},
          "train.jsonl:4:", "not valid UTF-8")
data_case("data-broken-json-line", {"train.jsonl": jsonl(ROW) + '{"id": "b", "text": \n'},
          "train.jsonl:2:", "broken JSON line")
data_case("data-non-object-line", {"train.jsonl": jsonl(ROW) + "[1, 2]\n"}, "train.jsonl:2:", "expected a JSON object")
data_case("data-string-line", {"train.jsonl": jsonl(ROW) + '"just text"\n'}, "train.jsonl:2:", "expected a JSON object")
data_case("data-missing-input-field", {"test.jsonl": jsonl({"id": "c", "label": "yes"})},
          "test.jsonl:1:", "record has no field 'text'")
data_case("data-missing-output-field", {"test.jsonl": jsonl(*rows(2, 10), {"id": "c", "text": "t"})},
          "test.jsonl:3:", "record has no field 'label'")
data_case("data-null-field", {"test.jsonl": jsonl({"id": "c", "text": None, "label": "yes"})},
          "test.jsonl:1:", "record has no field 'text'")
data_case("data-null-label", {"test.jsonl": '{"id": "c", "text": "t", "label": null}\n'},
          "test.jsonl:1:", "record has no field 'label'")
data_case("data-empty-split", {"test.jsonl": "\n\n"}, "test.jsonl", "split 'test' is empty")
data_case("data-duplicate-ids-across-splits", {"test.jsonl": jsonl(*rows(1, 20), {**ROW, "id": "r1"})},
          "test.jsonl:2", "duplicate example id 'r1'", "first at", "train.jsonl:2")
data_case("data-duplicate-ids-in-a-file", {"train.jsonl": jsonl(*rows(3), {**ROW, "id": "r0"})},
          "train.jsonl:4", "duplicate example id 'r0'", "first at", "train.jsonl:1")
data_case("data-huge-field", {"train.jsonl": GOOD + jsonl({**ROW, "text": "a" * 100_001})},
          "train.jsonl:4:", "field 'text' has 100,001 characters (limit 100,000)")
data_case("data-integer-too-long", {"train.jsonl": GOOD + '{"id": "z", "text": ' + "9" * 5000 + ', "label": "no"}\n'},
          "train.jsonl:4:", "broken JSON line")
data_case("data-nested-too-deeply", {"train.jsonl": GOOD + "[" * 100_000 + "\n"}, "train.jsonl:4:", "nested too deeply")
data_case("data-csv-column-mismatch", {"train.csv": "id,text,label\nr1,fine,yes\nr2,no label\n"},
          "train.csv:3:", "expected 3 columns, found 2",
          spec={**SPEC, "data": {"train": "train.csv", "test": "test.jsonl"}})
data_case("data-csv-duplicate-header", {"train.csv": "id,text,text\nr1,a,b\n"},
          "train.csv:1:", "CSV header has empty or duplicate column names",
          spec={**SPEC, "data": {"train": "train.csv", "test": "test.jsonl"}})
data_case("data-csv-error-at-the-first-line-of-a-quoted-record",
          {"train.csv": 'id, text, label\nr1,"one\ntwo\nthree",maybe\n'}, "train.csv:2:", "label 'maybe' is not in",
          spec={**SPEC, "data": {"train": "train.csv", "test": "test.jsonl"}})
data_case("data-json-not-a-list", {"train.json": '{"id": "a", "text": "x", "label": "yes"}'},
          "train.json", "expected a JSON list of objects",
          spec={**SPEC, "data": {"train": "train.json", "test": "test.jsonl"}})
data_case("data-json-list-record-lacks-a-field",
          {"train.json": '[\n  {"id": "a", "text": "x", "label": "yes"},\n  {"id": "b",\n   "label": "no"}\n]'},
          "train.json:3:", "record has no field 'text'",
          spec={**SPEC, "data": {"train": "train.json", "test": "test.jsonl"}})
data_case("data-json-broken", {"train.json": '[\n{"id": "a",\n "text": }\n]'}, "train.json:3:", "broken JSON",
          spec={**SPEC, "data": {"train": "train.json", "test": "test.jsonl"}})
data_case("data-unsupported-suffix", {"train.txt": "hello\n"}, "train.txt", "unsupported data file type '.txt'",
          spec={**SPEC, "data": {"train": "train.txt", "test": "test.jsonl"}})
data_case("data-json-output-not-json", {"train.jsonl": jsonl({"id": "j", "text": "t", "label": "{not json"})},
          "train.jsonl:1:", "output field 'label' is not valid JSON",
          spec={**without("labels"), "output_type": "json", "metric": "json_match"})


@case("data-missing-file")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (root / "train.jsonl").unlink()
    return ["eval", str(root)], ["train.jsonl", "data file not found"]


@case("data-unreadable-directory")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (root / "test.jsonl").unlink()
    (root / "test.jsonl").mkdir()  # a directory where the file should be: unreadable even for root
    return ["eval", str(root)], ["test.jsonl", "cannot read data file"]


@case("data-unreadable-chmod-000")
def _(tmp: Path):
    root = write_task(tmp / "t")
    target = root / "test.jsonl"
    target.chmod(0)
    if os.access(target, os.R_OK):
        pytest.skip("this user (root) reads a file whatever its mode; data-unreadable-directory covers the case")
    return ["eval", str(root)], ["test.jsonl", "cannot read data file"]


# --- options ----------------------------------------------------------------------------------------------------


def option_case(name: str, command: str, args: list[str], *fragments: str) -> None:
    """A bad option on a valid task."""

    def build(tmp: Path) -> tuple[list[str], list[str]]:
        root = write_task(tmp / "t")
        out = ["--out", str(tmp / "run")] if command == "optimize" else []
        return [command, str(root), *args, *out], list(fragments)

    case(name)(build)


for _command in ("eval", "optimize"):
    option_case(f"{_command}-limit-or-rounds-zero", _command, ["--limit" if _command == "eval" else "--rounds", "0"],
                f"Invalid value for '{'--limit' if _command == 'eval' else '--rounds'}'", "0 is not in the range")
    option_case(f"{_command}-threads-zero", _command, ["--threads", "0"], "Invalid value for '--threads'")
    option_case(f"{_command}-threads-not-a-number", _command, ["--threads", "two"], "Invalid value for '--threads'",
                "'two' is not a valid integer")
    option_case(f"{_command}-budget-negative", _command, ["--budget", "-1"], "Invalid value for '--budget'")
    option_case(f"{_command}-timeout-zero", _command, ["--timeout", "0"], "Invalid value for '--timeout'")
    option_case(f"{_command}-concurrency-zero", _command, ["--concurrency", "0"], "Invalid value for '--concurrency'")
option_case("optimize-demo-sets-negative", "optimize", ["--demo-sets", "-1"],
            "Invalid value for '--demo-sets'")
option_case("eval-limit-not-a-number", "eval", ["--limit", "ten"], "Invalid value for '--limit'", "'ten'")
option_case("eval-k-negative", "eval", ["--k", "-1"], "Invalid value for '--k'")
option_case("eval-k-larger-than-pool", "eval", ["--k", "99"], "k=99 is larger than the demo pool (6 examples)")
option_case("eval-budget-not-a-number", "eval", ["--budget", "lots"], "Invalid value for '--budget'", "'lots'")
option_case("eval-timeout-not-a-number", "eval", ["--timeout", "soon"], "Invalid value for '--timeout'", "'soon'")
option_case("eval-max-dollars-negative", "eval", ["--max-dollars", "-0.5"], "Invalid value for '--max-dollars'")
option_case("eval-unknown-select-strategy", "eval", ["--select", "psychic"], "Invalid value for '--select'",
            "'psychic' is not one of")
option_case("eval-unknown-split", "eval", ["--split", "dev"], "has no split 'dev'")
option_case("eval-unknown-option", "eval", ["--bogus"], "No such option '--bogus'")
option_case("eval-unknown-model", "eval", ["--model", "nosuch/model"], "unknown model 'nosuch/model'")
option_case("eval-unknown-local-model", "eval", ["--model", "local/nope"], "unknown local model 'local/nope'")
option_case("eval-missing-gguf-file", "eval", ["--model", "local/missing.gguf"], "missing.gguf: GGUF model file not found")
option_case("optimize-dev-size-zero", "optimize", ["--dev-size", "0"], "Invalid value for '--dev-size'")
option_case("optimize-unknown-model", "optimize", ["--model", "nosuch/model"], "unknown model 'nosuch/model'")
UNKNOWN_EMBEDDER = "unknown embedder 'minlm' (use auto, minilm, tfidf, or a LiteLLM embedding model"
option_case("eval-unknown-embedder", "eval", ["--embedder", "minlm"], UNKNOWN_EMBEDDER)
option_case("optimize-unknown-embedder", "optimize", ["--embedder", "minlm"], UNKNOWN_EMBEDDER)


@case("eval-gguf-path-to-another-file")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (tmp / "notes.gguf").write_text("a text file named like a model\n")
    return ["eval", str(root), "--model", f"local/{tmp}/notes.gguf"], ["notes.gguf: not a GGUF model file"]


@case("eval-unreachable-api-base")
def _(tmp: Path):
    root = write_task(tmp / "t")
    port = free_port()  # closed again at once: nothing listens there
    url = f"http://user:hunter2pw@127.0.0.1:{port}/v1"
    return (["eval", str(root), "--model", "openai/x", "--api-base", url, "--timeout", "1", "--limit", "1"],
            [f"cannot reach http://127.0.0.1:{port}/v1"])


@case("optimize-out-under-a-regular-file")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (tmp / "plain").write_text("not a folder")
    return ["optimize", str(root), "--out", str(tmp / "plain" / "run")], [
        str(tmp / "plain" / "run"), "cannot write the run folder (Not a directory)"]


@case("optimize-out-is-a-regular-file")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (tmp / "plain").write_text("not a folder")
    return ["optimize", str(root), "--out", str(tmp / "plain")], ["Invalid value for '--out'", "is a file"]


@case("optimize-resume-nothing")
def _(tmp: Path):
    root = write_task(tmp / "t")
    return ["optimize", str(root), "--out", str(tmp / "run"), "--resume"], [
        str(tmp / "run"), "nothing to resume (no run.json)"]


def resuming(tmp: Path, run_json: str) -> list[str]:
    """`optimize --resume` of a task in `tmp` whose run folder holds `run_json` as its run.json (`{root}`: the task
    folder)."""
    root = write_task(tmp / "t")
    (tmp / "run").mkdir()
    (tmp / "run" / "run.json").write_text(run_json.replace("{root}", str(root)))
    return ["optimize", str(root), "--out", str(tmp / "run"), "--resume"]


@case("optimize-resume-different-settings")
def _(tmp: Path):
    return resuming(tmp, '{"task": "{root}", "seed": 5}'), ["run.json", "--resume with a different seed"]


@case("optimize-resume-another-cache")
def _(tmp: Path):
    return resuming(tmp, '{"task": "{root}", "cache": "/elsewhere/cache"}'), [
        "run.json", "--resume with a different cache ('/elsewhere/cache' ->"]


@case("optimize-resume-corrupt-run-json")
def _(tmp: Path):
    return resuming(tmp, '{"task": '), [
        f"{tmp / 'run' / 'run.json'}: cannot read the run's settings (Expecting value"]


@case("optimize-resume-run-json-not-an-object")
def _(tmp: Path):
    return resuming(tmp, "[1, 2]"), [f"{tmp / 'run' / 'run.json'}: cannot read the run's settings (not a JSON object)"]


def finished_run(tmp: Path) -> Path:
    """The two files `formfit export` reads of a finished optimize run."""
    root = write_task(tmp / "t")
    (tmp / "run" / "program").mkdir(parents=True)
    (tmp / "run" / "run.json").write_text(json.dumps({"task": str(root)}))
    (tmp / "run" / "program" / "program.json").write_text(json.dumps({"prompt": {"instruction": "Say yes or no."}}))
    return tmp / "run"


@case("export-out-under-a-regular-file")
def _(tmp: Path):
    run = finished_run(tmp)
    (tmp / "plain").write_text("not a folder")
    out = tmp / "plain" / "train.jsonl"
    return ["export", str(run), "--format", "openai-jsonl", "--out", str(out)], [
        f"{out}: cannot write the export ("]


@case("advise-out-under-a-regular-file")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (tmp / "plain").write_text("not a folder")  # checked before measuring: the local-model stub is never reached
    return ["advise", str(root), "--out", str(tmp / "plain" / "advice")], [
        f"{tmp / 'plain' / 'advice'}: cannot write the advice report (Not a directory)"]


@case("optimize-out-holds-a-run")
def _(tmp: Path):
    root = write_task(tmp / "t")
    (tmp / "run").mkdir()
    (tmp / "run" / "run.json").write_text("{}")
    return ["optimize", str(root), "--out", str(tmp / "run")], [str(tmp / "run"), "holds a run already"]


@case("run-folder-not-a-program")
def _(tmp: Path):
    root = write_task(tmp / "t")
    return ["run", str(root), "hello"], [str(root), "not a saved formfit program"]


@case("run-program-json-without-model")
def _(tmp: Path):
    from optimizer.prompt import Prompt
    from optimizer.task import load_task

    task = load_task(write_task(tmp / "t"))
    (tmp / "program").mkdir()
    spec = {"format": 1, "task": task.to_dict(), "prompt": Prompt(task.instruction).to_dict()}
    (tmp / "program" / "program.json").write_text(json.dumps(spec))
    return ["run", str(tmp / "program"), "hello"], [str(tmp / "program"), "not a saved formfit program (KeyError"]


@case("run-program-json-broken")
def _(tmp: Path):
    (tmp / "program").mkdir()
    (tmp / "program" / "program.json").write_text('{"task": ')
    return ["run", str(tmp / "program"), "hello"], [str(tmp / "program"), "not a saved formfit program"]


@case("run-input-without-equals")
def _(tmp: Path):
    return ["run", str(tmp), "--input", "text"], ["Invalid value for '--input'", "'text' is not KEY=VALUE"]


@case("run-program-from-a-newer-formfit")
def _(tmp: Path):
    (tmp / "program").mkdir()
    (tmp / "program" / "program.json").write_text(json.dumps({"format": 2, "task": {"a": "newer layout"}}))
    return ["run", str(tmp / "program"), "hello"], [
        f"{tmp / 'program' / 'program.json'}: saved by a newer formfit (format 2; this one reads up to 1)"]


@case("run-no-such-path")
def _(tmp: Path):
    return ["run", str(tmp / "nothing"), "hello"], ["Invalid value for 'PROGRAM'", "does not exist"]


@case("select-k-larger-than-pool")
def _(tmp: Path):
    root = write_task(tmp / "t")
    return ["select", str(root), "item 3", "-k", "99"], ["k=99 is larger than the demo pool (6 examples)"]


@case("select-k-zero")
def _(tmp: Path):
    root = write_task(tmp / "t")
    return ["select", str(root), "item 3", "-k", "0"], ["Invalid value for '-k'"]


@case("select-unknown-strategy")
def _(tmp: Path):
    root = write_task(tmp / "t")
    return ["select", str(root), "item 3", "--strategy", "psychic"], ["Invalid value for '--strategy'"]


@case("select-empty-pool-file")
def _(tmp: Path):
    (tmp / "pool.jsonl").write_text("\n")
    return ["select", str(tmp / "pool.jsonl"), "item 3"], ["pool.jsonl", "the file has no records"]


@case("select-unknown-embedder")
def _(tmp: Path):
    root = write_task(tmp / "t")
    return ["select", str(root), "item 3", "--embedder", "minlm"], [UNKNOWN_EMBEDDER]


@case("select-pool-record-lacks-an-input-field")
def _(tmp: Path):
    (tmp / "pool.jsonl").write_text(jsonl(ROW, {"id": "b", "label": "no"}))
    return ["select", str(tmp / "pool.jsonl"), "item 3"], ["pool.jsonl:2:", "record has no field 'text'"]


@case("select-several-inputs-without-the-others")
def _(tmp: Path):
    (tmp / "pool.jsonl").write_text(jsonl({"question": "q", "context": "c", "label": "yes"}))
    return ["select", str(tmp / "pool.jsonl"), "a question", "-k", "1"], [
        "the pool's input fields are question, context: give context with --input KEY=VALUE"]


@case("select-unlabelled-pool-names-label-key")
def _(tmp: Path):
    (tmp / "pool.jsonl").write_text(jsonl({"question": "q", "context": "c", "answer": "yes"}))
    return ["select", str(tmp / "pool.jsonl"), "a question", "--input", "context=c"], [
        "give answer with --input KEY=VALUE; no label field was found: name it with --label-key"]


@case("select-label-key-not-in-the-pool")
def _(tmp: Path):
    (tmp / "pool.jsonl").write_text(jsonl({"question": "q", "answer": "yes"}))
    return ["select", str(tmp / "pool.jsonl"), "a question", "--label-key", "nope"], [
        "pool.jsonl:1: no label field 'nope' (fields: question, answer)"]


@case("select-broken-pool-file")
def _(tmp: Path):
    (tmp / "pool.jsonl").write_text(jsonl(ROW) + "{oops\n")
    return ["select", str(tmp / "pool.jsonl"), "item 3"], ["pool.jsonl:2:", "broken JSON line"]


@case("cache-clear-unknown-kind")
def _(tmp: Path):
    return ["cache", "clear", "--kind", "lms"], ["Invalid value for '--kind'", "'lms' is not one of 'lm', 'embedding'"]


@pytest.fixture
def no_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a llama.cpp model is a test failure here: every case must fail before the first call."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail("a bad-input case loaded the local model")  # not an Exception: the backend cannot wrap it

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=refuse, LlamaGrammar=refuse))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(name: str, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      no_local_model: None) -> None:
    monkeypatch.setenv("FORMFIT_RETRY_BASE_S", "0.01")  # the unreachable-server case retries with a short backoff
    monkeypatch.chdir(tmp_path)  # a default run folder or ./cache would land here
    (tmp_path / "case").mkdir()
    args, fragments = CASES[name](tmp_path / "case")
    code, out, err = run_cli(*args)
    assert_one_line_error(code, out, err, *fragments)
    assert out == ""  # nothing else is printed (LiteLLM's banner would break --json)
    assert "hunter2pw" not in err + out  # a password in --api-base is never echoed


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit code 2, one line `formfit: error: ...` on stderr holding every fragment, no traceback."""
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("formfit: error: "), err
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_there_are_many_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("args", [["--model", "nosuch/model"], ["--model", "local/nope"],
                                  ["--model", "local/missing.gguf"], ["--proposer-model", "nosuch/model"],
                                  ["--model", "local/{tmp}/notes.gguf"], ["--embedder", "minlm"]],
                         ids=lambda args: " ".join(args))
def test_a_mistyped_model_or_embedder_leaves_no_run_behind(args: list[str], run_cli, tmp_path: Path,
                                                           fake_model, no_local_model: None) -> None:
    """Nothing is written before the models and the embedder are checked (a GGUF path by its first bytes), so the
    corrected command just runs."""
    root = write_task(tmp_path / "t", files={"train.jsonl": jsonl(*rows(30)), "test.jsonl": jsonl(*rows(4, 30))})
    (tmp_path / "notes.gguf").write_text("a text file named like a model\n")
    out_dir = tmp_path / "run"
    args = [arg.format(tmp=tmp_path) for arg in args]
    code, out, err = run_cli("optimize", str(root), "--out", str(out_dir), *args)
    assert_one_line_error(code, out, err)
    assert not (out_dir / "run.json").exists()
    fake_model(FlakyBackend())
    code, _, err = run_cli("optimize", str(root), "--out", str(out_dir), "--model", "fake/x", "--budget", "20",
                           "--rounds", "1", "--demo-sets", "0", "--no-test", "--json")
    assert code == 0, err


def test_a_budget_below_the_baseline_dev_evaluation_leaves_no_run_behind(run_cli, tmp_path: Path,
                                                                         fake_model) -> None:
    """A --budget that cannot pay for the baseline's dev evaluation is a bad option, found before run.json is
    written: the corrected command (a larger budget, or a smaller dev set) runs in the same --out."""
    root = write_task(tmp_path / "t", files={"train.jsonl": jsonl(*rows(30)), "test.jsonl": jsonl(*rows(4, 30))})
    out_dir = tmp_path / "run"
    backend = FlakyBackend()
    fake_model(backend)
    command = ["optimize", str(root), "--out", str(out_dir), "--model", "fake/x", "--dev-size", "6"]
    code, out, err = run_cli(*command, "--budget", "5")
    assert_one_line_error(code, out, err, "--budget 5 cannot cover the baseline's evaluation on 6 dev examples",
                          "--dev-size")
    assert not (out_dir / "run.json").exists() and backend.calls == 0
    code, _, err = run_cli(*command, "--budget", "20", "--rounds", "1", "--demo-sets", "0", "--no-test", "--json")
    assert code == 0, err
    assert "--budget 20 leaves no room for a round of the search here (one needs 44 calls)" in err  # 6 + 24 + 8 + 6


def test_an_advise_budget_below_its_plan_is_refused_before_any_call(run_cli, tmp_path: Path, fake_model) -> None:
    """advise needs every measurement for a verdict, so a --budget (or --optimize-budget) that cannot pay for its
    plan is a bad option, refused before any call; a --budget equal to the plan runs and writes the advice."""
    root = write_task(tmp_path / "t", files={"train.jsonl": jsonl(*rows(40)), "test.jsonl": jsonl(*rows(20, 100))})
    out_dir = tmp_path / "advice"
    backend = FlakyBackend()
    fake_model(backend)
    command = ["advise", str(root), "--model", "fake/x", "--limit", "10", "--max-k", "2", "--out", str(out_dir)]
    code, out, err = run_cli(*command, "--budget", "89")  # curves: zero-shot, random and knn at k 1, 2; pool: 4 sizes
    assert_one_line_error(code, out, err, "--budget 89 cannot cover advise's plan: 90 calls (curves 50, pool 40); "
                                          "raise --budget or lower --limit/--max-k")
    assert backend.calls == 0 and not out_dir.exists()  # refused before --out is made
    code, out, err = run_cli(*command, "--optimize-budget", "5")  # dev: a fifth of the 40 train rows
    assert_one_line_error(code, out, err, "--optimize-budget 5 cannot cover the baseline's evaluation on 8 dev "
                                          "examples; raise --optimize-budget")
    assert backend.calls == 0
    code, out, err = run_cli(*command, "--budget", "90", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["lm_calls"] == backend.calls <= 90 and (out_dir / "advice.json").exists()
    assert summary["best_origin"] == "zero-shot"  # this model is right without demos


def test_a_gguf_file_llama_cpp_cannot_load_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:
    """The real llama.cpp, on a file that is no GGUF model (it fails at once, before any call)."""
    root = write_task(tmp_path / "t")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF not a model")
    code, out, err = run_cli("eval", str(root), "--model", f"local/{bad}", "--limit", "1")
    assert_one_line_error(code, out, err, f"{bad}: cannot load GGUF model (")
    assert out == ""


# --- nothing computed is lost -----------------------------------------------------------------------------------


class FlakyBackend(ScriptedBackend):
    """Answers 'yes'/'no' from the input; raises once it has answered `fail_after` requests. Records what it saw."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(lambda request: "yes" if int(re.search(r"item (\d+)", last_user_text(request))[1]) % 2 else "no")
        self.fail_after, self.seen = fail_after, []

    def call(self, request, timeout):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise ValueError("the model server fell over")
        self.seen.append(last_user_text(request))
        return super().call(request, timeout)


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> Callable[[FlakyBackend], None]:
    """Make the CLI build its LM on a given backend (model strings starting with fake/)."""

    def use(backend: FlakyBackend) -> None:
        def make(model: str, **kwargs: Any) -> LM:
            return LM(model, backend=backend, retry=RetryPolicy(max_retries=0), **kwargs)

        monkeypatch.setattr(cli, "LM", make)

    return use


class CtrlCBackend(FlakyBackend):
    """Like FlakyBackend, but wrong on every third item (so the search has failures to fix) and, with `after`, the
    user presses Ctrl-C during call number `after + 1`."""

    def __init__(self, after: int | None = None) -> None:
        super().__init__()
        right, self.after = self.reply, after
        self.reply = lambda request: "maybe" if int(re.search(r"item (\d+)", last_user_text(request))[1]) % 3 == 0 \
            else right(request)

    def call(self, request, timeout):
        if self.after is not None and len(self.seen) >= self.after:
            raise KeyboardInterrupt
        return super().call(request, timeout)


def test_an_interrupted_optimize_says_how_to_resume_it(run_cli, tmp_path: Path, fake_model) -> None:
    """Ctrl-C mid-search: exit 130 and one line that names --resume (the same command without it is refused, as the
    run folder is taken); with it, the run ends without repeating a completed call."""
    root = write_task(tmp_path / "t", files={"train.jsonl": jsonl(*rows(30)), "test.jsonl": jsonl(*rows(4, 30))})
    command = ["optimize", str(root), "--out", str(tmp_path / "run"), "--model", "fake/x", "--budget", "40",
               "--rounds", "1", "--demo-sets", "0", "--concurrency", "1", "--json"]
    first = CtrlCBackend(after=10)
    fake_model(first)
    code, out, err = run_cli(*command)
    last = err.strip().splitlines()[-1]  # after the note that 40 calls leave no room for a round
    assert code == 130 and out == "" and last.startswith("formfit: error: interrupted") and "--resume" in last
    assert "Traceback" not in err
    second = CtrlCBackend()
    fake_model(second)
    code, _, err = run_cli(*command, "--resume")
    assert code == 0, err
    assert len(first.seen) == 10 and not set(first.seen) & set(second.seen)


def eval_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "t", files={"train.jsonl": jsonl(*rows(4)), "test.jsonl": jsonl(*rows(8, 10))})


@pytest.mark.parametrize("body, message", [
    ("return len(p) / 0", "custom metric 'metric:score' failed on example 'r8': ZeroDivisionError"),
    ("return 2", "custom metric 'metric:score' returned 2 on example 'r8'; a score must be a number in [0, 1]"),
])
def test_a_failing_custom_metric_is_one_line_exit_2(body: str, message: str, run_cli, tmp_path: Path,
                                                    fake_model) -> None:
    root = write_task(tmp_path / "t", {**SPEC, "metric": "metric:score"},
                      files={"train.jsonl": jsonl(*rows(4)), "test.jsonl": jsonl(*rows(1, 8))})
    (root / "metric.py").write_text(f"def score(p, g, e):\n    {body}\n")
    fake_model(FlakyBackend())
    code, out, err = run_cli("eval", str(root), "--model", "fake/x")
    assert_one_line_error(code, out, err, message)


def test_eval_stopped_by_the_budget_keeps_its_calls(run_cli, tmp_path: Path, fake_model) -> None:
    root = eval_task(tmp_path)
    first = FlakyBackend()
    fake_model(first)
    code, out, err = run_cli("eval", str(root), "--model", "fake/x", "--budget", "3", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["lm_calls"] == 3 and summary["n"] == 3 and "budget" in summary["stopped"]
    assert "stopped early" in err and "Traceback" not in err
    assert json.loads(run_cli("cache", "stats", "--json")[1])["entries"] == {"lm": 3}

    second = FlakyBackend()
    fake_model(second)
    code, out, _ = run_cli("eval", str(root), "--model", "fake/x", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["n"] == 8 and summary["stopped"] is None
    assert summary["cache_hits"] == 3 and summary["lm_calls"] == 5 == len(second.seen)
    assert not set(first.seen) & set(second.seen)  # no completed call was made again


def test_eval_json_names_the_embedder_its_demos_were_chosen_with(run_cli, tmp_path: Path, fake_model) -> None:
    fake_model(FlakyBackend())
    root = eval_task(tmp_path)
    knn = json.loads(run_cli("eval", str(root), "--model", "fake/x", "--k", "2", "--select", "knn", "--json")[1])
    assert knn["embedder"] == "tfidf"  # `auto`, decided on the pool (conftest: the TF-IDF fallback)
    assert json.loads(run_cli("eval", str(root), "--model", "fake/x", "--k", "2", "--json")[1])["embedder"] is None


def test_eval_stopped_by_a_failing_model_keeps_its_calls(run_cli, tmp_path: Path, fake_model) -> None:
    root = eval_task(tmp_path)
    first = FlakyBackend(fail_after=5)
    fake_model(first)
    code, out, err = run_cli("eval", str(root), "--model", "fake/x", "--concurrency", "1")
    assert code == 1 and out == ""
    assert err.splitlines() == [err.strip()] and err.startswith("formfit: error: fake/x: call failed")
    assert "the model server fell over" in err and "Traceback" not in err
    assert json.loads(run_cli("cache", "stats", "--json")[1])["entries"] == {"lm": 5}

    second = FlakyBackend()
    fake_model(second)
    code, out, _ = run_cli("eval", str(root), "--model", "fake/x", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["n"] == 8 and summary["score"] == 1.0
    assert summary["cache_hits"] == 5 and len(second.seen) == 3
    assert not set(first.seen) & set(second.seen)
