"""The saved artifact of an optimization: a callable program an app loads with `load_program(path)`.

A program folder holds `program.json` (task spec, prompt, model, the search's seed, scores) and, when the prompt uses
demos, `selector/` (the demo pool with its embeddings, so loading never embeds the pool again; a "fixed" prompt's demos
are taken from it by id). A program sends the requests the search sent for the same input: same demos, rendering and
seed, so its answers on the search's examples come from the cache.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import Cache
from .embed import Embedder
from .errors import ConfigError, check_format, public_url
from .evaluate import EvalResult, Progress, evaluate
from .lm import LM
from .prompt import Prompt, build_request, output_constraint, parse_output
from .select import DEDUPE, STRATEGIES, DemoSource, ExampleSelector, NoDemos, example_record, prompt_demos
from .task import Example, Task, input_text

PROGRAM_FILE = "program.json"
SELECTOR_DIR = "selector"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Prediction:
    """A program's answer: the parsed value, the raw model text, and the form problem seen, if any."""

    value: Any
    text: str
    form_error: str | None


class Program:
    """`program(text="...")` -> the parsed answer, with the optimized instruction and per-input demos."""

    def __init__(self, task: Task, prompt: Prompt, lm: LM, selector: ExampleSelector | None = None,
                 scores: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        self.task, self.prompt, self.lm, self.selector, self.seed = task, prompt, lm, selector, seed
        self.scores = dict(scores or {})
        self._source = self._demos()

    def __call__(self, **inputs: Any) -> Any:
        return self.predict(**inputs).value

    def predict(self, **inputs: Any) -> Prediction:
        missing = [key for key in self.task.inputs if key not in inputs]
        if missing:
            given = f" (given: {', '.join(inputs)})" if inputs else ""
            raise ConfigError(f"program {self.task.name!r} needs input field(s): {', '.join(missing)}{given}")
        values = {key: self._text(key, inputs[key]) for key in self.task.inputs}
        demos = self._source.demos_for(Example(id="", inputs=values, gold=None))
        constraint = output_constraint(self.task, self.lm.backend_kind) if self.prompt.constrain else None
        request = build_request(self.task, self.prompt.instruction, demos, values, self.lm.mode, self.seed,
                                constraint)
        text = self.lm(request).text
        parsed = parse_output(self.task, text)
        return Prediction(parsed.value, text, parsed.form_error)

    def evaluate(self, examples: Sequence[Example], *, task: Task | None = None,
                 on_progress: Progress | None = None) -> EvalResult:
        """This program (instruction, demos, output constraint) scored on `examples` of `task` (by default its own
        saved spec; give the loaded task for a custom metric file), which must have the program's fields."""
        task = task or self.task
        if (task.inputs, task.output) != (self.task.inputs, self.task.output):
            raise ConfigError(f"program {self.task.name!r} maps {', '.join(self.task.inputs)} -> {self.task.output}; "
                              f"task {task.name!r} maps {', '.join(task.inputs)} -> {task.output}")
        constraint = output_constraint(task, self.lm.backend_kind) if self.prompt.constrain else None
        return evaluate(task, self.prompt.instruction, self.lm, examples, demos=self._source, seed=self.seed,
                        constraint=constraint, on_progress=on_progress)

    def _text(self, key: str, value: Any) -> str:
        """An input as the task's data files give it to the model (an object or a list as JSON)."""
        try:
            return input_text(value)
        except ValueError as exc:
            raise ConfigError(f"program {self.task.name!r}: input field {key!r} has an {exc}") from None

    def _demos(self) -> DemoSource:
        if not self.prompt.k or self.selector is None:
            return NoDemos()
        if self.prompt.strategy in STRATEGIES:
            return _SelectedDemos(self.task, self.selector)
        return prompt_demos(self.task, self._pool(), self.prompt, seed=self.seed)  # random or fixed, saved pool

    def _pool(self) -> list[Example]:
        return [record_example(self.task, record) for record in self.selector.examples]  # type: ignore[union-attr]


class _SelectedDemos:
    def __init__(self, task: Task, selector: ExampleSelector) -> None:
        self.task, self.selector = task, selector

    def demos_for(self, example: Example) -> list[Example]:
        return self.demos_for_many([example])[0]

    def demos_for_many(self, examples: Sequence[Example]) -> list[list[Example]]:
        """The demos of many inputs in one batch; a pool example is never its own demo."""
        chosen = self.selector.select_batch([example.inputs for example in examples],
                                            exclude_ids=[example.id or None for example in examples])
        return [[record_example(self.task, selected.example) for selected in demos] for demos in chosen]


def record_example(task: Task, record: Mapping[str, Any]) -> Example:
    """The inverse of `select.example_record`."""
    return Example(id=str(record.get("id", "")), inputs={key: str(record[key]) for key in task.inputs},
                   gold=record[task.output])


def save_program(directory: str | Path, task: Task, prompt: Prompt, pool: Sequence[Example], lm: LM,
                 embedder: Embedder, scores: Mapping[str, Any], seed: int = 0) -> Path:
    """Write a program folder. The demo pool and its selector are saved when the prompt shows demos; `seed` is the
    search's (its requests' sampling seed, and a random prompt's draws)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if prompt.k:
        strategy = prompt.strategy if prompt.strategy in STRATEGIES else "knn"
        label_key = task.output if task.output_type == "label" else None
        selector = ExampleSelector(embedder, prompt.k, input_keys=task.inputs, strategy=strategy, label_key=label_key,
                                   dedupe=DEDUPE)
        selector.fit([example_record(task, example) for example in pool]).save(directory / SELECTOR_DIR)
    spec = {"format": FORMAT_VERSION, "task": task.to_dict(), "prompt": prompt.to_dict(), "model": lm.model,
            "api_base": public_url(lm.api_base), "seed": seed, "scores": dict(scores)}
    (directory / PROGRAM_FILE).write_text(json.dumps(spec, indent=2, ensure_ascii=False), encoding="utf-8")
    return directory


def load_program(path: str | Path, *, model: str | None = None, api_base: str | None = None,
                 cache: Cache | None = None, lm: LM | None = None, threads: int | None = None) -> Program:
    """Load a saved program; it runs on the model it was optimized for unless `model` / `lm` say otherwise."""
    directory = Path(path)
    if directory.name == PROGRAM_FILE:
        directory = directory.parent
    try:
        spec = json.loads((directory / PROGRAM_FILE).read_text(encoding="utf-8"))
        check_format(directory / PROGRAM_FILE, spec, FORMAT_VERSION)
        task, prompt, saved_model = Task.from_dict(spec["task"]), Prompt(**spec["prompt"]), str(spec["model"])
        seed = int(spec.get("seed", 0))  # older programs: the default seed
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{directory}: not a saved formfit program ({type(exc).__name__}: {exc})") from None
    selector_dir = directory / SELECTOR_DIR
    if prompt.k and not selector_dir.is_dir():
        raise ConfigError(f"{selector_dir}: missing; the program shows {prompt.k} demos from it (copy the whole "
                          "program folder)")
    if lm is None:
        same_model = model is None
        lm = LM(model or saved_model, api_base=api_base if api_base or not same_model else spec.get("api_base"),
                cache=cache, threads=threads)
    selector = ExampleSelector.load(selector_dir, cache=lm.cache) if prompt.k else None
    return Program(task, prompt, lm, selector, spec.get("scores"), seed)
