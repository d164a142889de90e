"""Metrics: every one maps (prediction, gold, example) to a float in [0, 1]."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import numbers
import re
import sqlite3
import string
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .errors import TaskError
from .prompt import normalize_label
from .task import Example, Task

Metric = Callable[[Any, Any, Example], float]
SQL_TIME_LIMIT_S = 2.0
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: Any) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def label_match(pred: Any, gold: Any, example: Example | None = None) -> float:
    return float(pred is not None and normalize_label(str(pred)) == normalize_label(str(gold)))


def exact_match(pred: Any, gold: Any, example: Example | None = None) -> float:
    return float(pred is not None and normalize_answer(pred) == normalize_answer(gold))


def token_f1(pred: Any, gold: Any, example: Example | None = None) -> float:
    pred_tokens = normalize_answer(pred).split() if pred is not None else []
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def json_match(pred: Any, gold: Any, example: Example | None = None) -> float:
    """Share of the gold object's keys whose values the prediction matches (as `_same_value` compares them)."""
    if not isinstance(pred, dict) or not isinstance(gold, dict) or not gold:
        return float(_same_value(pred, gold))
    return sum(_same_value(pred.get(key, _MISSING), value) for key, value in gold.items()) / len(gold)


_MISSING = object()


def _same_value(pred: Any, gold: Any) -> bool:
    """JSON values compared recursively: objects by their keys, lists element-wise, numbers by value (a bool is no
    number: it equals only the same bool), a gold string with the prediction's text, both normalised."""
    if isinstance(gold, dict):
        return (isinstance(pred, dict) and pred.keys() == gold.keys()
                and all(_same_value(pred[key], value) for key, value in gold.items()))
    if isinstance(gold, list):
        return isinstance(pred, list) and len(pred) == len(gold) and all(map(_same_value, pred, gold))
    if pred is _MISSING:
        return False
    if gold is None or isinstance(gold, bool):
        return pred is gold
    if isinstance(gold, (int, float)):
        try:
            return not isinstance(pred, bool) and float(pred) == float(gold)
        except (TypeError, ValueError, OverflowError):
            return False
    return normalize_answer(pred) == normalize_answer(gold)


def sql_exec(pred: Any, gold: Any, example: Example | None = None) -> float:
    """Run both queries on an in-memory database built from the example's CREATE TABLE text; compare results.

    On a database without rows, every query returns nothing, so the queries must then also match as text.
    """
    if not isinstance(pred, str) or not pred.strip():
        return 0.0
    schema = _schema_text(example)
    try:
        gold_rows, has_rows = run_sql(schema, str(gold))
    except sqlite3.Error:
        return 0.0
    try:
        pred_rows, _ = run_sql(schema, pred)
    except sqlite3.Error:
        return 0.0
    if Counter(gold_rows) != Counter(pred_rows):
        return 0.0
    return float(has_rows or _sql_text(pred) == _sql_text(str(gold)))


def _schema_text(example: Example | None) -> str:
    if example is None:
        return ""
    texts = [*example.inputs.values(), example.context or ""]
    return next((text for text in texts if re.search(r"\bcreate\s+table\b", text, re.I)), "")


def _sql_text(sql: str) -> str:
    return " ".join(sql.replace("'", '"').strip().rstrip(";").lower().split())


_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def run_sql(schema: str, query: str, time_limit_s: float = SQL_TIME_LIMIT_S) -> tuple[list[tuple], bool]:
    """Run `query` read-only on a fresh in-memory database made from `schema`; no ATTACH, no files, time-limited.

    Returns the rows (as hashable tuples) and whether the database holds any row at all.
    """
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(schema)
        has_rows = any(
            connection.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone()
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        )
        connection.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _READ_ONLY else sqlite3.SQLITE_DENY)
        deadline = time.monotonic() + time_limit_s
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        rows = connection.execute(query).fetchmany(10_000)
        return [tuple(map(_hashable, row)) for row in rows], has_rows
    finally:
        connection.close()


def _hashable(value: Any) -> Any:
    return value if not isinstance(value, (bytes, bytearray)) else bytes(value)


BUILTIN: dict[str, Metric] = {
    "label_match": label_match,
    "exact_match": exact_match,
    "token_f1": token_f1,
    "json_match": json_match,
    "sql_exec": sql_exec,
}


def get_metric(task: Task) -> Metric:
    """The task's metric function; `module:function` is read from `module.py` in the task folder when it is there
    (as a module private to that folder), else imported by name."""
    if task.metric in BUILTIN:
        return BUILTIN[task.metric]
    module_name, _, function_name = task.metric.partition(":")
    file = task.root / f"{module_name.replace('.', '/')}.py" if task.root is not None else None
    path = file if file is not None and file.is_file() else None
    try:
        function = getattr(_load_file(path, task.root) if path else importlib.import_module(module_name), function_name)
    except Exception as exc:  # a syntax error, a failing import, any error while the module runs
        where = path or f"{task.root}/task.yaml"
        raise TaskError(f"{where}: cannot load metric {task.metric!r} ({type(exc).__name__}: {exc})") from None
    return _checked(function, task.metric)


def _load_file(path: Path, folder: Path) -> ModuleType:
    """Run `path` as a module named after its resolved path, so same-named files in two task folders stay apart.

    `folder` is on the import path only while the module runs (for its imports of files in the task folder)."""
    resolved = path.resolve()
    name = f"_formfit_metric_{hashlib.sha256(str(resolved).encode()).hexdigest()[:16]}_{resolved.stem}"
    if name in sys.modules:  # every evaluation asks for the metric: the file runs once, as an import would
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(folder))
    return module


def _checked(function: Callable[..., Any], name: str) -> Metric:
    def metric(pred: Any, gold: Any, example: Example) -> float:
        where = f" on example {example.id!r}" if example is not None else ""
        try:
            value = function(pred, gold, example)
        except Exception as exc:
            raise TaskError(f"custom metric {name!r} failed{where}: {type(exc).__name__}: {exc}") from None
        if not isinstance(value, (numbers.Real, np.bool_)) or not 0 <= value <= 1:
            raise TaskError(f"custom metric {name!r} returned {value!r}{where}; a score must be a number in [0, 1]")
        return float(value)

    return metric
