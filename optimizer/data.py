"""Reading labelled records from JSONL / CSV / JSON files, and seeded splits."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from .errors import DataError, located

Record = dict[str, object]
Row = tuple[int, Record]  # (line number in the file where the record starts, record)
MAX_FIELD_CHARS = 100_000
SUFFIXES = (".jsonl", ".csv", ".json")
T = TypeVar("T")


def read_records(path: str | Path) -> list[Record]:
    """Read every record of a .jsonl, .csv or .json (a list of objects) file, with errors naming file:line."""
    return [record for _, record in read_rows(path)]


def read_rows(path: str | Path) -> list[Row]:
    """Like `read_records`, keeping each record's line number for later error messages."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported data file type {path.suffix!r} (use {', '.join(SUFFIXES)})")
    text = _read_text(path)
    reader = {".jsonl": _jsonl, ".csv": _csv, ".json": _json}[path.suffix]
    records = reader(path, text)
    for line, record in records:
        _check_sizes(path, line, record)
    return records


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read data file ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{located(path, line)}: not valid UTF-8 (byte {raw[exc.start]:#x})") from None


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text, split at \\n only: `str.splitlines()` would also cut at U+2028, \\x0c, ... which
    JSON strings may hold raw (`json.dumps(..., ensure_ascii=False)` writes them so). No empty last line."""
    return text.removesuffix("\n").split("\n") if text else []


def _jsonl(path: Path, text: str) -> list[Row]:
    records = []
    for number, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:  # also integers too long to convert, nesting too deep
            raise DataError(f"{located(path, number)}: broken JSON line ({_json_problem(exc)})") from None
        if not isinstance(value, dict):
            raise DataError(f"{located(path, number)}: expected a JSON object, got {type(value).__name__}")
        records.append((number, value))
    return records


def _csv(path: Path, text: str) -> list[Row]:
    rows = csv.reader(io.StringIO(text, newline=""))  # keeps line breaks inside quoted fields
    try:
        header = next(rows)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise DataError(f"{located(path, 1)}: malformed CSV ({exc})") from None
    header = [name.strip() for name in header]  # `text, label` names the columns text and label
    if len(set(header)) != len(header) or not all(header):
        raise DataError(f"{located(path, 1)}: CSV header has empty or duplicate column names")
    records = []
    start = rows.line_num + 1
    try:
        for row in rows:
            number, start = start, rows.line_num + 1  # a quoted field may span lines: a record is named by its first
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{located(path, number)}: expected {len(header)} columns, found {len(row)}")
            records.append((number, dict(zip(header, row))))
    except csv.Error as exc:
        raise DataError(f"{located(path, rows.line_num)}: malformed CSV ({exc})") from None
    return records


def _json(path: Path, text: str) -> list[Row]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # also integers too long to convert, nesting too deep
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
        raise DataError(f"{located(path, line)}: broken JSON ({_json_problem(exc)})") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise DataError(f"{path}: expected a JSON list of objects")
    return list(zip(_item_lines(text), value))


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _item_lines(text: str) -> list[int]:
    """The line on which each item of a valid JSON list starts (json.loads keeps no positions)."""
    decoder = json.JSONDecoder()
    lines: list[int] = []
    line, counted = 1, 0
    index = _WHITESPACE.match(text).end() + 1  # just after the opening [
    while True:
        index = _WHITESPACE.match(text, index).end()
        if text[index] == "]":
            return lines
        line, counted = line + text.count("\n", counted, index), index
        lines.append(line)
        _, index = decoder.raw_decode(text, index)
        index = _WHITESPACE.match(text, index).end()
        if text[index] == ",":
            index += 1


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(":")[0]


def _check_sizes(path: Path, line: int, record: Record) -> None:
    for key, value in record.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise DataError(
                f"{located(path, line)}: field {key!r} has {len(value):,} characters (limit {MAX_FIELD_CHARS:,})"
            )


def split_records(records: Sequence[T], fractions: dict[str, float], seed: int) -> dict[str, list[T]]:
    """Shuffle with `seed` and cut into named splits by fraction (the last split takes the remainder)."""
    if not fractions:
        raise DataError("no split fractions given")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    names = list(fractions)
    total = sum(fractions.values())
    splits: dict[str, list[T]] = {}
    start = 0
    for index, name in enumerate(names):
        end = len(shuffled) if index == len(names) - 1 else start + round(len(shuffled) * fractions[name] / total)
        splits[name] = shuffled[start:end]
        start = end
    return splits
