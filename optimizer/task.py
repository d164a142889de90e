"""`Task`: what to predict from what, how to score it, and the labelled data; `load_task` validates a task folder."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .data import Row, read_rows, split_records
from .errors import TaskError, located

OUTPUT_TYPES = ("label", "text", "json", "sql")
METRICS = ("label_match", "exact_match", "token_f1", "json_match", "sql_exec")
SCHEMA_TYPES = ("string", "integer", "number", "boolean")
SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = {"train": 0.6, "dev": 0.2, "test": 0.2}


def _builtin_dir() -> Path:
    """Installed, the built-in tasks are package data (optimizer/builtin_tasks); in a checkout, tasks/ beside
    optimizer/ (pyproject.toml maps one onto the other)."""
    package = Path(__file__).resolve().parent
    installed = package / "builtin_tasks"
    return installed if installed.is_dir() else package.parent / "tasks"


BUILTIN_DIR = _builtin_dir()
_NAME = re.compile(r"^[a-z0-9_]+$")
_CUSTOM_METRIC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_REQUIRED = ("name", "description", "inputs", "output", "output_type", "metric", "instruction", "data")
_OPTIONAL = ("labels", "context_field", "output_schema", "split", "seed")


@dataclass(frozen=True)
class Example:
    """One labelled record: the inputs the model sees, the gold output, and the optional supporting context."""

    id: str
    inputs: Mapping[str, str]
    gold: Any
    context: str | None = None


@dataclass(frozen=True)
class Task:
    """A task spec plus its data splits. Build it with `load_task`."""

    name: str
    description: str
    inputs: tuple[str, ...]
    output: str
    output_type: str
    metric: str
    instruction: str
    labels: tuple[str, ...] = ()
    context_field: str | None = None
    output_schema: Mapping[str, str] | None = None
    splits: Mapping[str, tuple[Example, ...]] = field(default_factory=dict)
    root: Path | None = None

    def split(self, name: str) -> tuple[Example, ...]:
        """The examples of split `name`; a TaskError names the splits there are."""
        if name not in self.splits:
            raise TaskError(f"task {self.name!r} has no split {name!r} (it has: {', '.join(self.splits)})")
        return self.splits[name]

    def with_context(self) -> Task:
        """The same task with the context field shown as its first input: the oracle-retrieval probe."""
        if not self.context_field:
            raise TaskError(f"task {self.name!r} has no context_field")
        splits = {
            name: tuple(show_context(example, self.context_field) for example in examples)
            for name, examples in self.splits.items()
        }
        return replace(self, inputs=(self.context_field, *self.inputs), splits=splits)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Task:
        """A task spec (no data) as `to_dict` wrote it."""
        return cls(**{**spec, "inputs": tuple(spec["inputs"]), "labels": tuple(spec.get("labels") or ())})

    def to_dict(self) -> dict[str, Any]:
        """The spec without data, as written into saved programs and reports."""
        return {
            "name": self.name,
            "description": self.description,
            "inputs": list(self.inputs),
            "output": self.output,
            "output_type": self.output_type,
            "metric": self.metric,
            "instruction": self.instruction,
            "labels": list(self.labels),
            "context_field": self.context_field,
            "output_schema": dict(self.output_schema) if self.output_schema else None,
        }


def show_context(example: Example, field_name: str) -> Example:
    """The example with its context as the first input field."""
    return replace(example, inputs={field_name: example.context or "", **example.inputs})


def resolve_task_path(ref: str | Path) -> Path:
    """A task folder, its task.yaml, or the name of a built-in task -> the task folder."""
    path = Path(ref)
    if path.name == "task.yaml":
        path = path.parent
    if path.is_dir():
        return path
    if _NAME.match(str(ref)) and (BUILTIN_DIR / str(ref)).is_dir():
        return BUILTIN_DIR / str(ref)
    raise TaskError(f"{ref}: no such task folder or built-in task (see `formfit tasks`)")


def builtin_tasks() -> list[Task]:
    """The built-in tasks, by name (none when the folder is missing from a broken install)."""
    folders = sorted(BUILTIN_DIR.iterdir()) if BUILTIN_DIR.is_dir() else []
    return [load_task(folder) for folder in folders if (folder / "task.yaml").is_file()]


def load_task(ref: str | Path) -> Task:
    """Load and validate a task folder; every problem is a one-line TaskError/DataError naming file and line."""
    root = resolve_task_path(ref)
    spec_path = root / "task.yaml"
    spec, lines = _read_spec(spec_path)
    where = lambda key: located(spec_path, lines.get(key))  # noqa: E731
    _check_keys(spec, spec_path, where)
    output_type = _choice(spec, "output_type", OUTPUT_TYPES, where)
    metric = _metric(spec, where)
    labels = tuple(_str_list(spec, "labels", where)) if "labels" in spec else ()
    if output_type == "label" and not labels:
        raise TaskError(f"{where('output_type')}: output_type 'label' needs a non-empty 'labels' list")
    if len(set(labels)) != len(labels):
        raise TaskError(f"{where('labels')}: 'labels' has duplicates")
    task = Task(
        name=_name(spec, where),
        description=_string(spec, "description", where),
        inputs=tuple(_str_list(spec, "inputs", where)),
        output=_string(spec, "output", where),
        output_type=output_type,
        metric=metric,
        instruction=_string(spec, "instruction", where),
        labels=labels,
        context_field=_string(spec, "context_field", where) if spec.get("context_field") is not None else None,
        output_schema=_schema(spec, where),
        root=root,
    )
    if not task.inputs:
        raise TaskError(f"{where('inputs')}: 'inputs' must list at least one field")
    _check_fields_apart(task, where)
    rows = _split_rows(spec, root, where)
    splits = {name: (path, tuple(_examples(task, path, found))) for name, (path, found) in rows.items()}
    for name, (path, examples) in splits.items():
        if not examples:
            raise TaskError(f"{path}: split {name!r} is empty")
    splits = {name: examples for name, (_, examples) in splits.items()}
    _check_unique_ids(rows)
    return replace(task, splits=splits)


def _check_fields_apart(task: Task, where: Callable[[str], str]) -> None:
    """The answer and the context are never also inputs: every prompt would show them."""
    if task.output in task.inputs:
        raise TaskError(f"{where('output')}: output field {task.output!r} is also an input (the model would see the "
                        "answer)")
    if task.context_field in (*task.inputs, task.output):
        raise TaskError(f"{where('context_field')}: context_field {task.context_field!r} is also an input or the "
                        "output (it is shown only with --with-context)")


def _read_spec(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskError(f"{path}: task.yaml not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: cannot read task.yaml ({exc})") from None
    try:
        node = yaml.compose(text)
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TaskError(f"{located(path, mark.line + 1 if mark else None)}: {problem}") from None
    except RecursionError:
        raise TaskError(f"{path}: YAML nested too deeply") from None
    if not isinstance(spec, dict):
        raise TaskError(f"{located(path, 1)}: task.yaml must be a mapping of keys to values")
    lines = {key.value: key.start_mark.line + 1 for key, _ in node.value} if node is not None else {}
    return spec, lines


def _check_keys(spec: dict[str, Any], path: Path, where) -> None:
    for key in _REQUIRED:
        if key not in spec:
            raise TaskError(f"{path}: missing required key {key!r}")
    for key in spec:
        if key not in _REQUIRED + _OPTIONAL:
            raise TaskError(f"{where(key)}: unknown key {key!r} (allowed: {', '.join(_REQUIRED + _OPTIONAL)})")


def _string(spec: dict[str, Any], key: str, where) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TaskError(f"{where(key)}: {key!r} must be a non-empty string, got {_kind(value)}")
    return value.strip()


def _name(spec: dict[str, Any], where) -> str:
    name = _string(spec, "name", where)
    if not _NAME.match(name):
        raise TaskError(f"{where('name')}: task name {name!r} must use only a-z, 0-9 and _")
    return name


def _str_list(spec: dict[str, Any], key: str, where) -> list[str]:
    value = spec.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise TaskError(f"{where(key)}: {key!r} must be a list of non-empty strings, got {_kind(value)}")
    return [item.strip() for item in value]


def _choice(spec: dict[str, Any], key: str, allowed: tuple[str, ...], where) -> str:
    value = _string(spec, key, where)
    if value not in allowed:
        raise TaskError(f"{where(key)}: unknown {key} {value!r} (allowed: {', '.join(allowed)})")
    return value


def _metric(spec: dict[str, Any], where) -> str:
    value = _string(spec, "metric", where)
    if value not in METRICS and not _CUSTOM_METRIC.match(value):
        raise TaskError(f"{where('metric')}: unknown metric {value!r} (use {', '.join(METRICS)} or module:function)")
    return value


def _schema(spec: dict[str, Any], where) -> dict[str, str] | None:
    schema = spec.get("output_schema")
    if schema is None:
        return None
    if not isinstance(schema, dict) or not schema:
        raise TaskError(f"{where('output_schema')}: 'output_schema' must map keys to types")
    for key, kind in schema.items():
        if not isinstance(kind, str) or kind.rstrip("?") not in SCHEMA_TYPES:
            raise TaskError(
                f"{where('output_schema')}: type of {key!r} must be one of {', '.join(SCHEMA_TYPES)} "
                f"(a trailing ? allows null), got {kind!r}"
            )
    return {str(key): kind for key, kind in schema.items()}


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _data_path(root: Path, ref: Any, where) -> Path:
    if not isinstance(ref, str) or not ref.strip() or "\0" in ref:
        raise TaskError(
            f"{where('data')}: data file names must be non-empty strings without NUL, got {_kind(ref)}"
        )
    path = (root / ref).resolve()
    if Path(ref).is_absolute() or not path.is_relative_to(root.resolve()):
        raise TaskError(f"{where('data')}: data file {ref!r} is outside the task folder")
    return root / ref


def _split_rows(spec: dict[str, Any], root: Path, where) -> dict[str, tuple[Path, list[Row]]]:
    data = spec["data"]
    if isinstance(data, dict):
        unknown = [name for name in data if name not in SPLITS]
        if unknown or not data:
            raise TaskError(f"{where('data')}: 'data' maps split names ({', '.join(SPLITS)}) to files")
        if "split" in spec:
            raise TaskError(f"{where('split')}: 'split' only applies when 'data' is a single file")
        paths = {name: _data_path(root, ref, where) for name, ref in data.items()}
        prefixes = _id_prefixes(root, paths.values())
        splits = {name: (path, _with_ids(prefixes[path], read_rows(path))) for name, path in paths.items()}
    else:
        path = _data_path(root, data, where)
        fractions = _fractions(spec.get("split", DEFAULT_FRACTIONS), where)
        seed = spec.get("seed", 0)
        if not isinstance(seed, int):
            raise TaskError(f"{where('seed')}: 'seed' must be an integer, got {_kind(seed)}")
        cut = split_records(_with_ids(path.stem, read_rows(path)), fractions, seed)
        splits = {name: (path, rows) for name, rows in cut.items()}
    return splits


def _id_prefixes(root: Path, paths: Collection[Path]) -> dict[Path, str]:
    """What generated ids start with: the file's stem, or its path in the task folder when two files share a stem
    (train/data.jsonl and test/data.jsonl)."""
    stems = Counter(path.stem for path in set(paths))
    return {path: path.stem if stems[path.stem] == 1 else path.relative_to(root).with_suffix("").as_posix()
            for path in paths}


def _with_ids(prefix: str, rows: list[Row]) -> list[Row]:
    """Give records without an `id` one from their place in the file, before any split reorders them."""
    return [(line, {"id": f"{prefix}-{n}", **record}) for n, (line, record) in enumerate(rows, start=1)]


def _fractions(value: Any, where) -> dict[str, float]:
    if (
        not isinstance(value, dict)
        or not value
        or any(name not in SPLITS for name in value)
        or not all(isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in value.values())
    ):
        raise TaskError(f"{where('split')}: 'split' maps split names to positive fractions, e.g. {DEFAULT_FRACTIONS}")
    return {name: float(v) for name, v in value.items()}


def _examples(task: Task, path: Path, rows: list[Row]):
    for line, record in rows:
        place = located(path, line)
        for key in (*task.inputs, task.output, *([task.context_field] if task.context_field else [])):
            if key not in record or record[key] is None:
                raise TaskError(f"{place}: record has no field {key!r}")
        yield Example(
            id=str(record["id"]),
            inputs={key: _text(record[key], place, key) for key in task.inputs},
            gold=_gold(task, record[task.output], place),
            context=_text(record[task.context_field], place, task.context_field) if task.context_field else None,
        )


def _text(value: Any, place: str, key: str) -> str:
    try:
        return input_text(value)
    except ValueError:
        raise TaskError(f"{place}: field {key!r} has an unsupported value {_kind(value)}") from None


def input_text(value: Any) -> str:
    """A field's value as the model sees it: JSON (keys sorted) for an object or a list, else `str`; a ValueError
    for any other value (null, ...). Data files and a program's inputs go through it alike."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    raise ValueError(f"unsupported value {_kind(value)}")


def _gold(task: Task, value: Any, place: str) -> Any:
    if task.output_type == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise TaskError(f"{place}: output field {task.output!r} is not valid JSON") from None
        if not isinstance(value, dict):
            raise TaskError(f"{place}: output field {task.output!r} must be a JSON object")
        return value
    gold = _text(value, place, task.output)
    if task.output_type == "label" and gold not in task.labels:
        raise TaskError(f"{place}: label {gold!r} is not in the task's labels")
    return gold


def _check_unique_ids(splits: dict[str, tuple[Path, list[Row]]]) -> None:
    """Example ids are unique across splits; the error names the second occurrence's file:line and the first."""
    seen: dict[str, str] = {}
    for name, (path, rows) in splits.items():
        for line, record in rows:
            example_id, place = str(record["id"]), f"{located(path, line)} ({name})"
            if example_id in seen:
                raise TaskError(f"{place}: duplicate example id {example_id!r} (first at {seen[example_id]})")
            seen[example_id] = place
