"""Exports of an optimize run: an OpenAI chat fine-tuning file, and a DSPy `Predict` state file.

`openai-jsonl`: one `{"messages": [system, user, assistant]}` line per training example, the system message being
the optimized instruction, user and assistant the input and gold rendered as formfit renders them; every line is
validated after writing. `dspy`: the state `dspy.Predict(signature).save()` writes (instruction and the program's
demos, static), loadable with `dspy.Predict("<inputs> -> <output>").load(path)`; per-input demo selection in DSPy
is `optimizer.interop.dspy.SimilarDemos`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import jsonl_lines
from .errors import ConfigError, DataError, TaskError, writing
from .program import SELECTOR_DIR
from .prompt import Prompt, render_gold, render_inputs
from .select import STRATEGIES, fixed_demos
from .task import Example, Task, load_task

FORMATS = ("openai-jsonl", "dspy")
ROLES = ("system", "user", "assistant")
OPENAI_MIN_EXAMPLES = 10


def load_run(run_dir: str | Path) -> tuple[Task, Prompt]:
    """The task (with its data) and the optimized prompt of a `formfit optimize` run folder."""
    run = Path(run_dir)
    try:
        task_ref = json.loads((run / "run.json").read_text(encoding="utf-8"))["task"]
        spec = json.loads((run / "program" / "program.json").read_text(encoding="utf-8"))
        prompt = Prompt(**spec["prompt"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run}: not a finished formfit optimize run ({exc})") from None
    try:
        return load_task(task_ref), prompt
    except TaskError as exc:  # the task folder moved since the run: say where its path came from
        raise TaskError(f"{run / 'run.json'}: its task {task_ref!r} cannot be loaded ({exc})") from None


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write the export of `run_dir` in format `fmt` to `out`; returns a summary (path, examples, how to load)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")
    task, prompt = load_run(run_dir)
    out = Path(out)
    with writing(out, "the export"):
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "openai-jsonl":
            count = write_openai_jsonl(task, prompt.instruction, task.split("train"), out)
            return {"format": fmt, "path": str(out), "examples": count,
                    "warning": None if count >= OPENAI_MIN_EXAMPLES else
                    f"OpenAI needs at least {OPENAI_MIN_EXAMPLES} examples, this file has {count}"}
        signature = write_dspy_state(task, prompt, task.split("train"), out)
        return {"format": fmt, "path": str(out), "demos": prompt.k,
                "load": f"dspy.Predict({signature!r}).load({str(out)!r})", "warning": dspy_warning(prompt, run_dir)}


def dspy_warning(prompt: Prompt, run_dir: str | Path) -> str | None:
    """What a `dspy.Predict` cannot hold of `prompt`: demos chosen per input, constrained output."""
    lost = []
    if prompt.k and prompt.strategy in STRATEGIES:
        selector = Path(run_dir) / "program" / SELECTOR_DIR
        lost.append(f"its {prompt.strategy} demos, chosen per input, are {prompt.k} static ones here (for per-input "
                    f"demos: optimizer.interop.dspy.SimilarDemos with ExampleSelector.load({str(selector)!r}))")
    elif prompt.k and prompt.strategy != "fixed":  # random: SimilarDemos would pick by similarity, not at random
        lost.append(f"its {prompt.strategy} demos, drawn per input, are {prompt.k} static ones here")
    if prompt.constrain:
        lost.append("its constrained output (grammar / JSON mode) is not part of a dspy.Predict")
    return "the program differs from this export: " + "; ".join(lost) if lost else None


def chat_example(task: Task, instruction: str, example: Example) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": instruction},
                         {"role": "user", "content": render_inputs(task, example.inputs)},
                         {"role": "assistant", "content": render_gold(task, example.gold)}]}


def write_openai_jsonl(task: Task, instruction: str, examples: Sequence[Example], path: Path) -> int:
    lines = [json.dumps(chat_example(task, instruction, example), ensure_ascii=False) for example in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return validate_openai_jsonl(path)


def validate_openai_jsonl(path: str | Path) -> int:
    """Check every line of a chat fine-tuning file; returns the number of examples, or raises `DataError`
    naming the line."""
    count = 0
    for number, line in enumerate(jsonl_lines(Path(path).read_text(encoding="utf-8")), start=1):
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or len(messages) != len(ROLES):
            raise DataError(f"{where}: expected 'messages' with a system, a user and an assistant message")
        for message, role in zip(messages, ROLES):
            if not isinstance(message, dict) or message.get("role") != role:
                raise DataError(f"{where}: expected a {role!r} message, got {message!r:.60}")
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                raise DataError(f"{where}: the {role} message is empty")
        count += 1
    return count


def write_dspy_state(task: Task, prompt: Prompt, pool: Sequence[Example], path: Path) -> str:
    """Save a `dspy.Predict` with the optimized instruction and `prompt.k` static demos (a fixed prompt's own, else
    `static_demos`); returns its signature."""
    import dspy

    signature = f"{', '.join(task.inputs)} -> {task.output}"
    predict = dspy.Predict(dspy.Signature(signature, prompt.instruction))
    predict.demos = [
        dspy.Example(**example.inputs, **{task.output: render_gold(task, example.gold)}).with_inputs(*task.inputs)
        for example in (fixed_demos(pool, prompt.demo_ids) if prompt.strategy == "fixed"
                        else static_demos(task, pool, prompt.k))
    ]
    predict.save(str(path))
    return signature


def static_demos(task: Task, pool: Sequence[Example], k: int, seed: int = 0) -> list[Example]:
    """`k` demos for a static prompt: labels in turn for label tasks (a balanced set), else a seeded sample."""
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    if task.output_type != "label":
        return shuffled[:k]
    by_label: dict[str, list[Example]] = {}
    for example in shuffled:
        by_label.setdefault(example.gold, []).append(example)
    chosen: list[Example] = []
    while len(chosen) < min(k, len(shuffled)):
        for examples in by_label.values():
            if examples and len(chosen) < k:
                chosen.append(examples.pop(0))
    return chosen
