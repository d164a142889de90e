"""The optimization loop: evaluate -> analyze -> propose -> race on minibatches -> confirm on dev, under a budget.

Each round evaluates the incumbent on a seeded sample of the train split, groups its failures, turns the groups
into candidate prompts, races the candidates on train minibatches (successive halving) and evaluates the winner on
the dev split; the incumbent is replaced only by a candidate with a better dev score. The first round also races
`demo_sets` fixed demo sets drawn from the pool (later rounds two of them), since which demos a small model sees
can move its score more than any instruction edit.

The budget counts every distinct LM request the search makes, answered by the cache or not, so a resumed run (all
its finished calls are in the cache) makes the same decisions and ends with the same program as an uninterrupted
one, without repeating a completed call.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .analyze import Analysis, analyze, fixed_by_context
from .cache import Cache
from .embed import Embedder, embedder_name, make_embedder
from .embedder_choice import task_embedder
from .errors import BudgetExhausted
from .evaluate import EvalResult, Progress, evaluate
from .lm import LM
from .program import save_program
from .prompt import Prompt, output_constraint
from .propose import FIXED_DRAWS, critique_groups, propose
from .select import DemoSource, prompt_demos
from .task import Example, Task, show_context

Event = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchConfig:
    """Sizes and limits of the search (the budget itself lives on the LM); `embedder` as in `make_embedder`."""

    rounds: int = 4
    analysis_size: int = 48
    race_sizes: tuple[int, ...] = (24, 48)
    max_candidates: int = 8
    dev_size: int | None = None  # None: `default_dev_size` of the LM's budget, as `formfit optimize` chooses
    patience: int = 2
    embedder: str = "auto"
    demo_sets: int = 8  # fixed demo sets raced in the first round, on top of max_candidates

    def for_budget(self, max_calls: int | None) -> SearchConfig:
        """This config with its dev size decided for a budget of `max_calls`."""
        return self if self.dev_size is not None else replace(self, dev_size=default_dev_size(max_calls))


@dataclass(frozen=True)
class Trial:
    """One evaluation of one prompt: at which round and stage, on how many examples, with what score."""

    round: int
    prompt_key: str
    stage: str
    n: int
    score: float


@dataclass(frozen=True)
class CandidateRecord:
    """A prompt the search tried, where it came from, and its dev score if it got that far."""

    key: str
    prompt: Prompt
    origin: str
    round: int
    dev_score: float | None = None
    accepted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prompt": self.prompt.to_dict()}


@dataclass(frozen=True)
class RoundRecord:
    """What one round saw and decided."""

    round: int
    analysis: Analysis
    proposals: int
    winner_key: str | None
    dev_before: float
    dev_after: float
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "analysis": self.analysis.to_dict()}


@dataclass(frozen=True)
class OptimizeResult:
    """Everything a run found: the baseline and best prompts, their scores, every candidate and trial, every round."""

    task: str
    model: str
    seed: int
    budget: int | None
    embedder: str
    dev_size: int  # dev examples candidates were accepted on
    baseline: Prompt
    best: Prompt
    dev_scores: dict[str, float]
    test_scores: dict[str, float]
    candidates: tuple[CandidateRecord, ...]
    trials: tuple[Trial, ...]
    rounds: tuple[RoundRecord, ...]
    analysis_before: Analysis
    analysis_after: Analysis
    calls: int
    usage: dict[str, Any]
    stopped: str | None
    wall_s: float
    test_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    proposer_usage: dict[str, Any] | None = None  # the proposer model's own calls, tokens and cost, when there is one
    test_usage: dict[str, Any] | None = None  # `test_lm`'s calls (test split, context probe), outside the budget

    def save(self, directory: str | Path, task: Task, lm: LM) -> Path:
        """Save the best prompt as a program folder for `load_program` (what `formfit optimize` writes to
        `program/`); `task` and `lm` are the ones it was optimized with."""
        pool, _ = split_dev(task, self.dev_size, self.seed)
        embedder = make_embedder(self.embedder, api_base=lm.api_base, cache=lm.cache)
        scores = {"dev": self.dev_scores, "test": self.test_scores}
        return save_program(directory, task, self.best, pool, lm, embedder, scores, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "model": self.model, "seed": self.seed, "budget": self.budget, "embedder": self.embedder,
            "dev_size": self.dev_size,
            "baseline": self.baseline.to_dict(), "best": self.best.to_dict(),
            "dev_scores": self.dev_scores, "test_scores": self.test_scores,
            "candidates": [c.to_dict() for c in self.candidates], "trials": [asdict(t) for t in self.trials],
            "rounds": [r.to_dict() for r in self.rounds],
            "analysis_before": self.analysis_before.to_dict(), "analysis_after": self.analysis_after.to_dict(),
            "calls": self.calls, "usage": self.usage, "proposer_usage": self.proposer_usage,
            "test_usage": self.test_usage,
            "stopped": self.stopped, "wall_s": round(self.wall_s, 3),
        }


MIN_RACE_SIZE = 8


def race_cost(candidates: int, sizes: Sequence[int]) -> int:
    """LM calls a successive-halving race makes: every candidate on the first batch, then the surviving half of
    the candidates on each further batch's new examples (the incumbent's answers are known already)."""
    cost, alive, done = 0, candidates, 0
    for size in sizes:
        cost += alive * max(0, size - done)
        done, alive = max(done, size), max(1, math.ceil(alive / 2))
    return cost


def race_shapes(race_sizes: Sequence[int], seen: int) -> list[tuple[int, ...]]:
    """The batch sizes a race may use, largest first: `race_sizes` (at most `seen`), then halved down to 8."""
    shapes = [tuple(min(size, seen) for size in race_sizes)]
    while shapes[-1][0] > MIN_RACE_SIZE:
        shapes.append(tuple(max(MIN_RACE_SIZE, size // 2) for size in shapes[-1]))
    return shapes


def round_budget(task: Task, config: SearchConfig, seed: int) -> int:
    """The fewest calls a search needs to try one candidate: the baseline's dev evaluation, one analysis sample, the
    smallest race of one candidate and the winner's dev check (`config.dev_size` decided)."""
    pool, dev = split_dev(task, config.for_budget(None).dev_size, seed)
    seen = min(config.analysis_size, len(pool))
    return 2 * len(dev) + seen + race_cost(1, race_shapes(config.race_sizes, seen)[-1])


class OutOfBudget(Exception):
    """Raised inside the search when the next evaluation would not fit in the budget."""


def default_dev_size(budget: int | None) -> int:
    """Dev examples used to accept a candidate: 100, or an eighth of a small budget (at least 20)."""
    return 100 if budget is None else min(100, max(20, budget // 8))


def split_dev(task: Task, dev_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(pool, dev): the train split and at most `dev_size` dev examples; without a dev split, dev is carved from
    a seeded shuffle of train (20%, at most `dev_size`) and removed from the pool."""
    train = list(task.split("train"))
    if "dev" in task.splits:
        return train, list(task.split("dev"))[:dev_size]
    random.Random(seed).shuffle(train)
    cut = min(dev_size, max(1, len(train) // 5))
    return train[cut:], train[:cut]


class _Search:
    """One run's state; `optimize()` is its public face."""

    def __init__(self, task: Task, lm: LM, *, proposer: LM | None, config: SearchConfig, seed: int,
                 on_event: Event | None, checkpoint: Path | None, embedder: Embedder) -> None:
        self.task, self.lm, self.proposer, self.config, self.seed = task, lm, proposer, config, seed
        self.on_event, self.checkpoint, self.embedder = on_event or (lambda event: None), checkpoint, embedder
        self.pool, self.dev = split_dev(task, config.for_budget(lm.budget.max_calls).dev_size, seed)
        heldout = [*self.dev, *(example for split in ("dev", "test") if split in task.splits
                                for example in task.splits[split])]  # self.dev: carved from train without a dev split
        self.heldout = sorted({text for example in heldout for text in example.inputs.values()})
        self.trials: list[Trial] = []
        self.candidates: dict[str, CandidateRecord] = {}
        self.rounds: list[RoundRecord] = []
        self._demos: dict[tuple[int, str, tuple[str, ...]], DemoSource] = {}
        self._dev: dict[str, EvalResult] = {}
        self._round = 0

    # --- evaluation under the budget ---------------------------------------------------------------------

    def demos(self, prompt: Prompt) -> DemoSource:
        key = (prompt.k, prompt.strategy, prompt.demo_ids)
        if key not in self._demos:
            self._demos[key] = prompt_demos(self.task, self.pool, prompt, seed=self.seed, embedder=self.embedder)
        return self._demos[key]

    def evaluate(self, prompt: Prompt, examples: Sequence[Example], stage: str, task: Task | None = None,
                 lm: LM | None = None) -> EvalResult:
        result = evaluate_prompt(task or self.task, prompt, lm or self.lm, examples, self.demos(prompt), self.seed,
                                 on_progress=lambda done, total: self._emit(stage, done=done, total=total), whole=True)
        if not result.complete:  # short of calls (nothing asked) or the dollar cap: a partial score decides nothing
            raise OutOfBudget(f"{result.stopped or 'stopped'} for {stage} after {len(result.rows)} of {len(examples)}")
        self.trials.append(Trial(self._round, prompt.key(), stage, len(result.rows), result.score))
        self._save_checkpoint()
        self._emit(stage, score=result.score)
        return result

    def _emit(self, stage: str, **details: Any) -> None:
        """Tell `on_event` where the search is: stage and round, calls charged of the budget, best dev score so far,
        and `details` (examples done of total while an evaluation runs, its score when it ends)."""
        self.on_event({"stage": stage, "round": self._round, "calls": self.lm.budget.calls,
                       "budget": self.lm.budget.max_calls, "best_dev": self._best_dev(), **details})

    def dev_score(self, prompt: Prompt) -> float:
        if prompt.key() not in self._dev:
            self._dev[prompt.key()] = self.evaluate(prompt, self.dev, "dev")
        return self._dev[prompt.key()].score

    def _best_dev(self) -> float | None:
        return max((r.score for r in self._dev.values()), default=None)

    def sample(self, size: int, salt: str) -> list[Example]:
        rng = random.Random(f"{self.seed}-{self._round}-{salt}")
        return rng.sample(self.pool, min(size, len(self.pool)))

    # --- the loop ----------------------------------------------------------------------------------------

    def run(self, baseline: Prompt) -> tuple[Prompt, str | None]:
        self._record(baseline, "baseline")
        try:
            self.dev_score(baseline)
        except OutOfBudget as exc:
            raise BudgetExhausted(f"the budget cannot cover the baseline's dev evaluation ({exc})") from None
        self._mark(baseline, accepted=True)
        incumbent, stopped, stale = baseline, None, 0
        try:
            for self._round in range(1, self.config.rounds + 1):
                if self.dev_score(incumbent) >= 1.0:
                    stopped = "dev score 1.0: no candidate can beat it"
                    break
                incumbent, accepted = self.round(incumbent)
                stale = 0 if accepted else stale + 1
                if stale >= self.config.patience:
                    stopped = f"no dev improvement in {stale} rounds"
                    break
        except OutOfBudget as exc:
            stopped = f"budget: {exc}"
        return incumbent, stopped

    def round(self, incumbent: Prompt) -> tuple[Prompt, bool]:
        before = self.dev_score(incumbent)
        seen_examples = self.sample(self.config.analysis_size, "analysis")
        seen = self.evaluate(incumbent, seen_examples, "analysis")
        analysis = analyze(self.task, seen, self.embedder, seed=self.seed)
        first = self._round == 1
        draws = self.config.demo_sets if first else min(FIXED_DRAWS, self.config.demo_sets)
        try:
            if self.proposer is not None:
                analysis = critique_groups(self.task, incumbent, analysis, self.proposer)
            proposals = propose(self.task, incumbent, analysis, self.pool, backend=self.lm.backend_kind,
                                proposer=self.proposer, heldout=self.heldout, seed=self.seed, tried=self.candidates,
                                draws=draws)
        except BudgetExhausted as exc:  # the proposer's calls share the budget
            raise OutOfBudget(str(exc)) from None
        limit = self.config.max_candidates + (self.config.demo_sets if first else 0)
        count, sizes = self.plan(min(len(proposals), limit), len(seen_examples))
        if proposals and not count:
            raise OutOfBudget(f"{self.lm.budget.remaining} calls left: too few to race a candidate and check it on dev")
        proposals = proposals[:count]
        for proposal in proposals:
            self._record(proposal.prompt, proposal.origin)
        winner = self.race(incumbent, [p.prompt for p in proposals], seen_examples, sizes) if proposals else None
        accepted = winner is not None and self.dev_score(winner) > before
        if winner is not None:
            self._mark(winner, accepted=accepted)
        after = self.dev_score(winner) if accepted else before  # type: ignore[arg-type]
        self.rounds.append(RoundRecord(self._round, analysis, len(proposals), winner.key() if winner else None,
                                       before, after, accepted))
        self._save_checkpoint()
        return (winner if accepted else incumbent), accepted  # type: ignore[return-value]

    def plan(self, candidates: int, seen: int) -> tuple[int, tuple[int, ...]]:
        """How many candidates to race, on which batch sizes, so that the race and the winner's dev check fit in
        the budget: fewer candidates first (proposals come best-first), then halved batches (down to 8)."""
        shapes = race_shapes(self.config.race_sizes, seen)
        remaining = self.lm.budget.remaining
        if remaining is None:
            return candidates, shapes[0]
        available = remaining - len(self.dev)
        for sizes in shapes:
            for count in range(candidates, 0, -1):
                if race_cost(count, sizes) <= available:
                    return count, sizes
        return 0, shapes[-1]

    def race(self, incumbent: Prompt, contenders: list[Prompt], seen: Sequence[Example],
             sizes: Sequence[int]) -> Prompt | None:
        """Successive halving on nested prefixes of the analysis sample, where the incumbent's answers are known
        already (no new call); each stage adds examples and keeps the better half. Returns the best contender if it
        beats the incumbent on the examples both saw, else None."""
        done = 0
        totals = {p.key(): 0.0 for p in [incumbent, *contenders]}
        for stage, size in enumerate(sizes, start=1):
            batch = list(seen[done:size])
            if not batch:
                continue
            for prompt in [incumbent, *contenders]:
                totals[prompt.key()] += self.evaluate(prompt, batch, f"race-{stage}").score * len(batch)
            done = size
            if stage < len(sizes):
                ranked = sorted(contenders, key=lambda p: -totals[p.key()])
                contenders = ranked[: max(1, math.ceil(len(ranked) / 2))]
        best = max(contenders, key=lambda p: totals[p.key()])
        return best if totals[best.key()] > totals[incumbent.key()] else None

    # --- records -----------------------------------------------------------------------------------------

    def _record(self, prompt: Prompt, origin: str) -> None:
        self.candidates.setdefault(prompt.key(), CandidateRecord(prompt.key(), prompt, origin, self._round))

    def _mark(self, prompt: Prompt, accepted: bool) -> None:
        record = self.candidates[prompt.key()]
        self.candidates[prompt.key()] = CandidateRecord(record.key, record.prompt, record.origin, record.round,
                                                        self.dev_score(prompt), accepted)

    def _save_checkpoint(self) -> None:
        """Progress after every batch of calls (the cache holds the calls themselves; see the module docstring)."""
        if self.checkpoint is None:
            return
        state = {"round": self._round, "calls": self.lm.budget.calls, "trials": [asdict(t) for t in self.trials],
                 "candidates": [c.to_dict() for c in self.candidates.values()]}
        temporary = self.checkpoint.with_suffix(".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        temporary.replace(self.checkpoint)


def optimize(task: Task, lm: LM, *, proposer: LM | None = None, config: SearchConfig | None = None, seed: int = 0,
             test_lm: LM | None = None, on_event: Event | None = None, checkpoint: str | Path | None = None,
             embedder: Embedder | None = None) -> OptimizeResult:
    """Search for a better prompt for `task` with `lm` (whose Budget should charge cache hits, see above).

    `test_lm` (the same model, outside the budget) scores baseline and best on the test split and runs the context
    probe when given; its own usage counters (see `LM.with_budget`) become `test_usage`.
    """
    start = time.perf_counter()
    config = (config or SearchConfig()).for_budget(lm.budget.max_calls)
    embedder = embedder or make_embedder(search_embedder(task, config, seed, lm.cache), api_base=lm.api_base,
                                         cache=lm.cache)
    search = _Search(task, lm, proposer=proposer, config=config, seed=seed, on_event=on_event,
                     checkpoint=Path(checkpoint) if checkpoint else None, embedder=embedder)
    baseline = Prompt(task.instruction)
    best, stopped = search.run(baseline)
    before = _dev_analysis(search, baseline, test_lm)
    after = _dev_analysis(search, best, test_lm)
    test_scores, test_rows = {}, {}
    if test_lm is not None and "test" in task.splits:
        for name, prompt in (("baseline", baseline), ("best", best)):
            result = search.evaluate(prompt, task.split("test"), "test", lm=test_lm)
            test_scores[name], test_rows[name] = result.score, [row.to_dict() for row in result.rows]
    dev = {"baseline": search._dev[baseline.key()].score, "best": search._dev[best.key()].score}
    return OptimizeResult(
        task=task.name, model=lm.model, seed=seed, budget=lm.budget.max_calls, embedder=embedder_name(embedder),
        dev_size=len(search.dev),
        baseline=baseline, best=best,
        dev_scores=dev, test_scores=test_scores, candidates=tuple(search.candidates.values()),
        trials=tuple(search.trials), rounds=tuple(search.rounds), analysis_before=before, analysis_after=after,
        calls=lm.budget.calls, usage=lm.usage.to_dict(), stopped=stopped, wall_s=time.perf_counter() - start,
        test_rows=test_rows, proposer_usage=proposer.usage.to_dict() if proposer is not None else None,
        test_usage=test_lm.usage.to_dict() if test_lm is not None else None,
    )


def search_embedder(task: Task, config: SearchConfig, seed: int, cache: Cache | None = None) -> str:
    """The embedder a search with `config` uses: `config.embedder`, `auto` decided on the search's pool."""
    pool = split_dev(task, config.for_budget(None).dev_size, seed)[0]  # without a budget, the largest dev split
    return task_embedder(config.embedder, task, pool, cache=cache, seed=seed)


def _dev_analysis(search: _Search, prompt: Prompt, probe_lm: LM | None) -> Analysis:
    """The dev failures of `prompt`, grouped; with `probe_lm` and a context field, content failures that the
    context fixes are counted as fact errors (one call per such failure, outside the search budget)."""
    result = search._dev[prompt.key()]
    content = [example for example, row in zip(search.dev, result.rows) if row.error_kind == "content"]
    fixed: set[str] = set()
    if probe_lm is not None and search.task.context_field and content:
        probe = context_probe(search.task, prompt, search.pool, content, probe_lm, search.seed, search.embedder)
        fixed = fixed_by_context(result.rows, probe.rows)
    return analyze(search.task, result, search.embedder, context_fixed=fixed, seed=search.seed)


def context_probe(task: Task, prompt: Prompt, pool: Sequence[Example], examples: Sequence[Example], lm: LM,
                  seed: int, embedder: Embedder) -> EvalResult:
    """`prompt` on `examples` with the context field shown (demos too): the oracle-retrieval probe. Its selector
    fits a copy of `embedder` (TF-IDF learns IDF on the pool it is fitted to), so the search's embedder keeps the
    IDF of its own pool, which `analyze` embeds failures with."""
    shown = task.with_context()
    field_name = task.context_field or ""
    demos = prompt_demos(shown, [show_context(e, field_name) for e in pool], prompt, seed=seed,
                         embedder=copy.copy(embedder))
    return evaluate_prompt(shown, prompt, lm, [show_context(e, field_name) for e in examples], demos, seed)


def evaluate_prompt(task: Task, prompt: Prompt, lm: LM, examples: Sequence[Example], demos: DemoSource,
                    seed: int, on_progress: Progress | None = None, whole: bool = False) -> EvalResult:
    """`evaluate` for a `Prompt`: its instruction, the given demo source, and its output constraint if any."""
    constraint = output_constraint(task, lm.backend_kind) if prompt.constrain else None
    return evaluate(task, prompt.instruction, lm, examples, demos=demos, seed=seed, constraint=constraint,
                    on_progress=on_progress, whole=whole)
