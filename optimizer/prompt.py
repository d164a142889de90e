"""Prompts: instruction + demos rendered as chat messages or completion text, and parsing of model outputs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .lm import LMRequest
from .task import Example, Task

Messages = list[dict[str, str]]


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
    by_norm = {normalize_label(label): label for label in task.labels}
    if normalize_label(text) in by_norm:
        return Parsed(by_norm[normalize_label(text)])
    words = " " + " ".join(re.sub(r"[\W_]+", " ", text.lower()).split()) + " "
    found = sorted(
        (words.find(f" {key.replace('_', ' ')} "), label)
        for key, label in by_norm.items()
        if f" {key.replace('_', ' ')} " in words
    )
    if found:
        return Parsed(found[0][1], "extra_text")
    return Parsed(text.splitlines()[0][:200], "label_outside_set")


def _parse_json(task: Task, text: str) -> Parsed:
    start = text.find("{")
    if start < 0:
        return Parsed(None, "invalid_json")
    try:
        value, end = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return Parsed(None, "invalid_json")
    if not isinstance(value, dict):
        return Parsed(None, "invalid_json")
    missing = [key for key in (task.output_schema or {}) if key not in value]
    if missing:
        return Parsed(value, "missing_keys")
    extra = text[:start].strip() or text[start + end :].strip()
    return Parsed(value, "extra_text" if extra else None)


def _parse_sql(task: Task, text: str) -> Parsed:
    statement = text.split(";")[0].strip()
    match = re.search(r"\b(select|with)\b", statement, re.I)
    if not match:
        return Parsed(statement, "sql_error")
    return Parsed(statement[match.start():], "extra_text" if match.start() else None)


def _parse_text(task: Task, text: str) -> Parsed:
    return Parsed(text)


MAX_TOKENS = {"label": 24, "text": 48, "json": 160, "sql": 160}


def build_request(
    task: Task, instruction: str, demos: Sequence[Example], inputs: Mapping[str, str], mode: str, seed: int = 0
) -> LMRequest:
    """The LM request for one input, in the model's mode ("chat" or "completion")."""
    if mode == "completion":
        return LMRequest(
            prompt=render_completion(task, instruction, demos, inputs),
            max_tokens=MAX_TOKENS[task.output_type],
            stop=tuple(completion_stops(task)),
            seed=seed,
        )
    return LMRequest(
        messages=tuple(render_messages(task, instruction, demos, inputs)),
        max_tokens=MAX_TOKENS[task.output_type],
        seed=seed,
    )
