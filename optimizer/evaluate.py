"""Running a prompt over examples in parallel: one scored row per example."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BudgetExhausted, PromptTooLong
from .lm import LM, LMResponse
from .metrics import get_metric
from .prompt import build_request, parse_output
from .select import DemoSource, NoDemos, demos_for_all
from .task import Example, Task

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EvalRow:
    """One example's outcome. `error_kind` is None for a perfect score, else a form error name, "too_long" (the
    prompt did not fit the context window) or "content"."""

    id: str
    inputs: Mapping[str, str]
    output: str
    prediction: Any
    gold: Any
    score: float
    error_kind: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": dict(self.inputs)}


@dataclass(frozen=True)
class EvalResult:
    """All rows of one evaluation. `stopped` says why it ended early (the budget), else None."""

    rows: tuple[EvalRow, ...]
    n_requested: int
    stopped: str | None = None
    wall_s: float = 0.0

    @property
    def score(self) -> float:
        return sum(row.score for row in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def failures(self) -> tuple[EvalRow, ...]:
        return tuple(row for row in self.rows if row.error_kind is not None)

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.n_requested

    def error_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.failures:
            counts[row.error_kind] = counts.get(row.error_kind, 0) + 1  # type: ignore[index]
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "n": len(self.rows),
            "n_requested": self.n_requested,
            "stopped": self.stopped,
            "prompt_tokens": sum(row.prompt_tokens for row in self.rows),
            "completion_tokens": sum(row.completion_tokens for row in self.rows),
            "error_counts": self.error_counts(),
            "wall_s": round(self.wall_s, 3),
        }


def evaluate(
    task: Task,
    instruction: str,
    lm: LM,
    examples: Sequence[Example],
    *,
    demos: DemoSource | None = None,
    seed: int = 0,
    constraint: Mapping[str, Any] | None = None,
    on_progress: Progress | None = None,
    whole: bool = False,
) -> EvalResult:
    """Score `instruction` (with demos from `demos`, sampling under `constraint`) on `examples`, in their order.

    If the budget runs out, the rows finished so far are returned with `stopped` set; nothing is lost. With `whole`,
    an evaluation the call budget cannot finish (counting only requests it has not charged yet) makes no call and
    returns no rows, `stopped` saying how many calls it needed.
    """
    start = time.perf_counter()
    source = demos or NoDemos()
    metric = get_metric(task)
    mode = lm.mode
    requests = [
        build_request(task, instruction, demos, ex.inputs, mode, seed, constraint)
        for ex, demos in zip(examples, demos_for_all(source, examples))
    ]
    remaining = lm.budget.remaining
    needed = lm.budget.uncharged(lm.key(request) for request in requests) if whole else 0
    if remaining is not None and needed > remaining:
        return EvalResult((), len(examples), f"{remaining} calls left, {needed} needed", time.perf_counter() - start)
    rows: dict[int, EvalRow] = {}

    lock = threading.Lock()  # rows arrive from the LM's worker threads: count them one at a time

    def keep(index: int, row: EvalRow) -> None:
        with lock:
            rows[index] = row
            if on_progress is not None:
                on_progress(len(rows), len(examples))

    def answered(index: int, response: LMResponse) -> None:
        keep(index, _score_row(task, metric, examples[index], response))

    def too_long(index: int, _: PromptTooLong) -> None:
        keep(index, _too_long_row(examples[index]))

    stopped = None
    try:
        lm.map(requests, on_result=answered, on_too_long=too_long)
    except BudgetExhausted as exc:
        stopped = str(exc)
    ordered = tuple(rows[index] for index in sorted(rows))
    return EvalResult(ordered, len(examples), stopped, time.perf_counter() - start)


def _too_long_row(example: Example) -> EvalRow:
    """A failure of kind `too_long`: the prompt did not fit the context window, so the model was never asked."""
    return EvalRow(id=example.id, inputs=example.inputs, output="", prediction=None, gold=example.gold, score=0.0,
                   error_kind="too_long", prompt_tokens=0, completion_tokens=0, latency_s=0.0, cached=False)


def _score_row(task: Task, metric, example: Example, response: LMResponse) -> EvalRow:
    parsed = parse_output(task, response.text)
    score = metric(parsed.value, example.gold, example) if parsed.value is not None else 0.0
    return EvalRow(
        id=example.id,
        inputs=example.inputs,
        output=response.text,
        prediction=parsed.value,
        gold=example.gold,
        score=score,
        error_kind=None if score >= 1.0 else (parsed.form_error or "content"),
        prompt_tokens=response.prompt_tokens,
        completion_tokens=response.completion_tokens,
        latency_s=response.latency_s,
        cached=response.cached,
    )
