"""Prompts: instruction + demos rendered as chat messages or completion text, and parsing of model outputs."""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cache import cache_key
from .lm import LMRequest
from .task import Example, Task

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Prompt:
    """What the optimizer searches over: the instruction, how many demos and how they are chosen, and whether the
    output is constrained (label choice or JSON schema) where the backend supports it.

    `strategy` is "random" (a fresh draw per input), a selector strategy ("knn", "mmr", "label_quota": per input,
    by similarity) or "fixed": the pool examples `demo_ids`, in that order, for every input."""

    instruction: str
    k: int = 0
    strategy: str = "random"
    constrain: bool = False
    demo_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "demo_ids", tuple(str(i) for i in self.demo_ids))  # from JSON: a list

    def key(self) -> str:
        return cache_key(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        spec = {"instruction": self.instruction, "k": self.k, "strategy": self.strategy, "constrain": self.constrain}
        return spec | ({"demo_ids": list(self.demo_ids)} if self.demo_ids else {})  # older keys stay valid


@dataclass(frozen=True)
class Parsed:
    """A model output parsed for the task: the value to score, and the form problem seen, if any."""

    value: Any
    form_error: str | None = None


def field_title(name: str) -> str:
    """`order_text` -> `Order text`: how a field is named in prompts."""
    return name.replace("_", " ").strip().capitalize()


def render_inputs(task: Task, inputs: Mapping[str, str]) -> str:
    return "\n".join(f"{field_title(key)}: {inputs[key]}" for key in task.inputs)


def render_gold(task: Task, gold: Any) -> str:
    if task.output_type == "json":
        return json.dumps(gold, ensure_ascii=False, sort_keys=True)
    return str(gold)


def render_messages(task: Task, instruction: str, demos: Sequence[Example], inputs: Mapping[str, str]) -> Messages:
    """Chat form: the instruction as system message, each demo as a user/assistant turn, then the input."""
    messages = [{"role": "system", "content": instruction}]
    for demo in demos:
        messages.append({"role": "user", "content": render_inputs(task, demo.inputs)})
        messages.append({"role": "assistant", "content": render_gold(task, demo.gold)})
    messages.append({"role": "user", "content": render_inputs(task, inputs)})
    return messages


def render_completion(task: Task, instruction: str, demos: Sequence[Example], inputs: Mapping[str, str]) -> str:
    """Completion form for base models: instruction, demos as `Field: value` blocks, then the open output field."""
    answer = f"{field_title(task.output)}:"
    blocks = [instruction.strip()]
    blocks += [f"{render_inputs(task, demo.inputs)}\n{answer} {render_gold(task, demo.gold)}" for demo in demos]
    blocks.append(f"{render_inputs(task, inputs)}\n{answer}")
    return "\n\n".join(blocks)


def completion_stops(task: Task) -> list[str]:
    """Where a completion model's answer ends: a blank line or the next example's first field."""
    return ["\n\n", f"\n{field_title(task.inputs[0])}:"]


def parse_output(task: Task, text: str) -> Parsed:
    """Extract the answer from raw model text; note form problems (empty, extra text, outside label set, bad JSON)."""
    cleaned = _strip_wrappers(task, text)
    if not cleaned:
        return Parsed(None, "empty")
    parser = {"label": _parse_label, "json": _parse_json, "sql": _parse_sql}.get(task.output_type, _parse_text)
    return parser(task, cleaned)


def _strip_wrappers(task: Task, text: str) -> str:
    text = (text or "").strip()
    fence = re.match(r"^```[\w-]*\s*\n?(.*?)\n?```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    prefix = re.match(rf"^\s*(?:{re.escape(field_title(task.output))}|answer|output)\s*:\s*", text, re.I)
    return text[prefix.end():].strip() if prefix else text


def normalize_label(text: str) -> str:
    """Case, spaces, hyphens and underscores do not distinguish labels."""
    return re.sub(r"[\s_\-]+", "_", text.strip().strip(".\"'`*").lower()).strip("_")


def _parse_label(task: Task, text: str) -> Parsed:
    """The label the text is, else the first label it names in prose (the longest at one place), else its first line."""
    exact, patterns = _label_matchers(tuple(task.labels))
    if normalize_label(text) in exact:
        return Parsed(exact[normalize_label(text)])
    found = [(match.start(), match.start() - match.end(), label)
             for pattern, label in patterns if (match := pattern.search(text))]
    if found:
        return Parsed(min(found)[2], "extra_text")
    return Parsed(text.splitlines()[0][:200], "label_outside_set")


# One-letter English words: as labels (answer letters), "A good question" or "I think" is not an answer.
_ONE_LETTER_WORDS = frozenset("ai")


@functools.lru_cache(maxsize=32)
def _label_matchers(labels: tuple[str, ...]) -> tuple[dict[str, str], list[tuple[re.Pattern[str], str]]]:
    """Normalized forms that are a label, and a pattern per form that finds the label inside prose.

    A label's form keeps its punctuation ("C#", "reverted_card_payment?"); where it ends or starts in punctuation,
    the form without it counts too, unless that is another label's. One-character labels match in prose only in
    their own case."""
    strict = {normalize_label(label): label for label in labels}
    loose: dict[str, list[str]] = {}
    for key, label in strict.items():
        bare = re.sub(r"^\W+|\W+$", "", key)
        if bare and bare != key and bare not in strict:
            loose.setdefault(bare, []).append(label)
    forms = {**strict, **{bare: found[0] for bare, found in loose.items() if len(found) == 1}}
    return forms, [(_label_pattern(key, label), label) for key, label in forms.items()]


def _label_pattern(key: str, label: str) -> re.Pattern[str]:
    """`key` as whole words (underscores separate words), its underscores matching any run of other characters."""
    start = r"(?<![^\W_])" if key[0].isalnum() else ""
    end = r"(?![^\W_])" if key[-1].isalnum() else ""
    if len(key) > 1:
        return re.compile(start + r"[\W_]+".join(re.escape(part) for part in key.split("_")) + end, re.I)
    char = next(c for c in label if c.lower() == key)
    word = r"(?!\s+[a-z])" if key in _ONE_LETTER_WORDS else ""
    return re.compile(rf"{start}{re.escape(char)}{end}(?!['\u2019]\w){word}")  # not the I of "I'd"


def _parse_json(task: Task, text: str) -> Parsed:
    start = text.find("{")
    if start < 0:
        return Parsed(None, "invalid_json")
    try:
        value, end = json.JSONDecoder().raw_decode(text[start:])
    except (ValueError, RecursionError):  # also integers too long to convert, nesting too deep
        return Parsed(None, "invalid_json")
    if not isinstance(value, dict):
        return Parsed(None, "invalid_json")
    missing = [key for key in (task.output_schema or {}) if key not in value]
    if missing:
        return Parsed(value, "missing_keys")
    extra = text[:start].strip() or text[start + end :].strip()
    return Parsed(value, "extra_text" if extra else None)


# A query starts at SELECT, or at WITH when a common table expression follows: `WITH [RECURSIVE] name [(cols)] AS (`.
_SQL_START = re.compile(r'\bselect\b|\bwith\s+(?:recursive\s+)?(?:"[^"]+"|\w+)\s*(?:\([^)]*\)\s*)?as\s*\(', re.I)


def _parse_sql(task: Task, text: str) -> Parsed:
    match = _SQL_START.search(text)
    if not match:
        return Parsed(text.split(";")[0].strip(), "sql_error")
    return Parsed(_first_statement(text[match.start():]), "extra_text" if match.start() else None)


_UNCHECKABLE = re.compile("[\x00\ud800-\udfff]")


def _first_statement(sql: str) -> str:
    """`sql` up to the `;` that ends its first statement (one inside a string literal or a comment does not)."""
    checkable = _UNCHECKABLE.sub(" ", sql)  # sqlite3 refuses NUL and lone surrogates; one space each keeps the indices
    ends = (end for end, char in enumerate(sql) if char == ";" and sqlite3.complete_statement(checkable[: end + 1]))
    return sql[: next(ends, len(sql))].strip()


def _parse_text(task: Task, text: str) -> Parsed:
    return Parsed(text)


MAX_TOKENS = {"label": 24, "text": 48, "json": 160, "sql": 160}


def build_request(
    task: Task, instruction: str, demos: Sequence[Example], inputs: Mapping[str, str], mode: str, seed: int = 0,
    constraint: Mapping[str, Any] | None = None,
) -> LMRequest:
    """The LM request for one input, in the model's mode ("chat" or "completion"), optionally constrained."""
    extra = dict(constraint or {})
    if mode == "completion":
        return LMRequest(
            prompt=render_completion(task, instruction, demos, inputs),
            max_tokens=MAX_TOKENS[task.output_type],
            stop=tuple(completion_stops(task)),
            seed=seed,
            extra=extra,
        )
    return LMRequest(
        messages=tuple(render_messages(task, instruction, demos, inputs)),
        max_tokens=MAX_TOKENS[task.output_type],
        seed=seed,
        extra=extra,
    )


def output_constraint(task: Task, backend: str) -> dict[str, Any] | None:
    """Sampling parameters that force a well-formed answer, or None where the backend cannot.

    Local llama.cpp: a GBNF choice among the labels, or a grammar from the JSON schema. LiteLLM: JSON mode for
    JSON tasks (OpenAI-style `response_format`); labels are not constrained there.
    """
    if backend == "local" and task.output_type == "label":
        return {"grammar": "root ::= " + " | ".join(json.dumps(label) for label in task.labels)}
    if task.output_type == "json" and task.output_schema:
        if backend == "local":
            return {"json_schema": json_schema(task)}
        return {"response_format": {"type": "json_object"}}
    return None


def json_schema(task: Task) -> dict[str, Any]:
    """The JSON schema of a task's `output_schema` (`string?` is nullable)."""
    def one(kind: str) -> dict[str, Any]:
        base = {"type": kind.rstrip("?")}
        return {"type": [base["type"], "null"]} if kind.endswith("?") else base

    schema = task.output_schema or {}
    return {"type": "object", "properties": {key: one(kind) for key, kind in schema.items()},
            "required": list(schema)}
