"""Fine-tune or not, measured on the task's own data.

`measure()` runs the prompt-only approaches on the test split (seeded sample of `limit` examples, pool = train):
accuracy against the number of demos (random and knn, k doubling up to what the context window holds), against
the pool size at the best k, the best prompt-only program (the better, on the same examples, of the best demo-curve
point and the program given or optimized by a budgeted `optimize`), that program with constrained output and with
the task's context shown (oracle retrieval), and the error taxonomy of the best program. Every score carries a
bootstrap interval over the examples. A verdict needs every measurement, so `measure` refuses a budget below its
`plan()` (an upper bound on its LM requests) before the first call.

`decide()` turns the measurements into one verdict with its reasons as numbers, the expected gain as an interval
(a measured bootstrap interval, or for fine-tune for form an assumption, marked as such; none for a pilot) and the cost
break-even. The rules and their thresholds are module constants, in the order they are tried:

1. *add retrieval, do not fine-tune for this*: showing the context gains >= CONTEXT_GAIN (interval above 0) and
   either closes >= FACT_SHARE of the gap between the best score and a perfect one, or is the lever that moves the
   score (its interval lies above that of every prompt-only lever: more demos, more data, constrained output).
   Fine-tuning does not teach facts (Ovadia et al. 2023, Gekhman et al. 2024).
2. *prompt-only is enough*: the best program is at CEILING, or the demo and pool curves are flat (< PLATEAU per
   doubling) at a usable score (>= PLATEAU_FLOOR; flat curves lower down fall through to the rules below) --
   unless the break-even says a distilled fine-tune pays for itself at the user's monthly calls (0 calls never
   do): *fine-tune (distill) for cost or latency*.
3. *fine-tune for form*: form errors remain on >= FORM_RATE of the examples after the best prompt and constrained
   output does not remove them (or the best program already constrains its output), or the task has >= MANY_LABELS
   labels and the demo curve still rises (>= RISING per doubling): label boundaries in-context learning does not
   reach (LongICLBench).
4. *collect more data first*: the pool curve gains >= MORE_DATA per doubling (interval above 0).
5. otherwise *run a pilot fine-tune to confirm*.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .analyze import FIXED_SCORE, FORM_KINDS, analyze, fixed_by_context
from .costs import BreakEven, Prices, break_even
from .embed import Embedder, make_embedder
from .embedder_choice import task_embedder
from .errors import BudgetExhausted, ConfigError
from .evaluate import EvalResult
from .lm import LM
from .prompt import MAX_TOKENS, Prompt, output_constraint, render_gold, render_inputs
from .search import SearchConfig, context_probe, default_dev_size, evaluate_prompt, optimize, split_dev
from .select import demo_source, prompt_demos
from .stats import Estimate, difference, mean, slope_per_doubling
from .task import Example, Task

CONTEXT_GAIN = 0.10
FACT_SHARE = 0.25
CEILING = 0.95
PLATEAU = 0.01
PLATEAU_FLOOR = 0.8
FORM_RATE = 0.10
MANY_LABELS = 20
RISING = 0.02
MORE_DATA = 0.03
CHARS_PER_TOKEN = 3.5
CONTEXT_USE = 0.75  # share of the context window the demos may fill

VERDICTS = {
    "add_retrieval": "Add retrieval; do not fine-tune for this",
    "prompt_only": "Prompt-only is enough",
    "fine_tune_cost": "Fine-tune (distill) for cost or latency",
    "fine_tune_form": "Fine-tune for form",
    "collect_data": "Collect more data first",
    "pilot": "Run a pilot fine-tune to confirm",
}
Event = Callable[[dict[str, Any]], None]
ZERO_SHOT = ("zero-shot", 0)
YOUR_PROGRAM, OPTIMIZED_PROGRAM = "your program", "the program optimized here"


@dataclass(frozen=True)
class AdviseConfig:
    """What `measure` runs: `limit` test examples, k values (capped by pool and context), pool fractions."""

    limit: int = 60
    ks: tuple[int, ...] = (0, 1, 2, 4, 8, 16)
    strategies: tuple[str, ...] = ("random", "knn")
    pool_fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    seed: int = 0
    embedder: str = "auto"


@dataclass(frozen=True)
class CurvePoint:
    """One point of a curve: x (k, or pool size), the score with its interval, mean prompt tokens per call."""

    x: int
    score: Estimate
    prompt_tokens: float

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "score": self.score.to_dict(), "prompt_tokens": self.prompt_tokens}


@dataclass(frozen=True)
class Measurements:
    """Everything `decide` looks at. Gains are paired differences on the same examples. `best_origin` names the best
    prompt-only program: a curve point ("knn demos, k=4", "zero-shot") or `program_origin`, the program given or
    optimized (`program` is its score, None without one)."""

    task: str
    model: str
    output_type: str
    n_labels: int
    n_pool: int
    n_eval: int
    demo_curves: dict[str, tuple[CurvePoint, ...]]
    best_k: int
    pool_curve: tuple[CurvePoint, ...]
    pool_gain: Estimate | None
    demo_gain: Estimate | None
    best_prompt: Prompt
    best_origin: str
    best: Estimate
    constrained_gain: Estimate | None
    can_constrain: bool
    context_gain: Estimate | None
    kinds: dict[str, int]
    shares: dict[str, float]
    form_rate: float
    prompt_tokens_now: float
    prompt_tokens_tuned: float
    completion_tokens: float
    training_tokens: float
    calls: int = 0
    program: Estimate | None = None
    program_origin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["demo_curves"] = {name: [p.to_dict() for p in points] for name, points in self.demo_curves.items()}
        data["pool_curve"] = [p.to_dict() for p in self.pool_curve]
        data["best_prompt"] = self.best_prompt.to_dict()
        return data


@dataclass(frozen=True)
class Plan:
    """An upper bound on the LM requests `measure` makes, by stage: every evaluation counted whole, cached or not
    (advise's budget charges only real calls, so a budget of `calls` never runs out)."""

    stages: tuple[tuple[str, int], ...]

    @property
    def calls(self) -> int:
        return sum(count for _, count in self.stages)

    def text(self) -> str:
        """`230 calls (curves 160, pool 40, probes 30)`."""
        return f"{self.calls} calls ({', '.join(f'{name} {count}' for name, count in self.stages if count)})"


@dataclass(frozen=True)
class Advice:
    """The verdict, its reasons (each with numbers), the expected gain as an interval, and the cost break-even.
    `gain_note` says how the expected gain was obtained when it is an assumption rather than a bootstrap interval."""

    verdict: str
    title: str
    reasons: tuple[str, ...]
    expected_gain: Estimate | None
    break_even: BreakEven
    prices: Prices
    monthly_calls: int | None
    months: float
    measurements: Measurements = field(repr=False)
    gain_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "title": self.title, "reasons": list(self.reasons),
                "expected_gain": self.expected_gain.to_dict() if self.expected_gain else None,
                "expected_gain_note": self.gain_note, "break_even": self.break_even.to_dict(),
                "break_even_monthly_calls": self.break_even.monthly(self.months),
                "prices": self.prices.to_dict(), "monthly_calls": self.monthly_calls, "months": self.months,
                "measurements": self.measurements.to_dict()}


# --- measuring -------------------------------------------------------------------------------------------------


def measure(task: Task, lm: LM, *, program: Prompt | None = None, optimize_budget: int | None = None,
            config: AdviseConfig | None = None, on_event: Event | None = None) -> Measurements:
    """Run every measurement `decide` needs. `program`: the best prompt from an earlier `optimize`; else, with
    `optimize_budget`, one is optimized here (dev split, its own budget). The best prompt-only program is that
    program unless the best curve point scores higher on the same examples (without one, the best curve point).
    Raises ConfigError, before any call, when the budget left cannot cover `plan()`."""
    config = config or AdviseConfig()
    check_budgets(task, lm, config, program=program, optimize_budget=optimize_budget)
    run = _Runner(task, lm, config, on_event or (lambda event: None))
    curves = {strategy: run.curve(strategy) for strategy in config.strategies}
    scored = [(run.results[_key(s, p.x)].score, -p.x, s) for s, points in curves.items() for p in points]
    _, fewest, best_strategy = max(scored)  # ties go to fewer demos
    best_k = -fewest
    pool_curve = run.pool_curve(best_k) if best_k else ()
    best_prompt, best = Prompt(task.instruction, best_k, best_strategy), run.results[_key(best_strategy, best_k)]
    origin, own, own_origin, own_score = _curve_name(best_strategy, best_k), program, YOUR_PROGRAM, None
    if own is None and optimize_budget:
        own, own_origin = run.optimized(optimize_budget), OPTIMIZED_PROGRAM
    if own is not None:
        result = run.prompt(own, "program")
        own_score = mean(_scores(result), config.seed)
        if result.score >= best.score:  # the program stays the best unless a curve point beats it
            best_prompt, best, origin = own, result, own_origin
    constrained, can_constrain = None, output_constraint(task, lm.backend_kind) is not None
    if can_constrain and not best_prompt.constrain:
        constrained = difference(_scores(run.prompt(replace(best_prompt, constrain=True), "constrained")),
                                 _scores(best), config.seed)
    context_gain, fixed = None, set()
    if task.context_field:
        shown = run.step("context", lambda: context_probe(task, best_prompt, run.pool, run.examples, lm, config.seed,
                                                          run.embedder))
        context_gain = difference(_scores(shown), _scores(best), config.seed)
        fixed = fixed_by_context(best.rows, shown.rows)
    analysis = analyze(task, best, run.embedder, context_fixed=fixed, seed=config.seed)
    form = sum(count for kind, count in analysis.kinds.items() if kind in FORM_KINDS)
    zero_shot = run.results[ZERO_SHOT]
    tuned_tokens = _mean(row.prompt_tokens for row in zero_shot.rows)
    completion = _mean(row.completion_tokens for row in best.rows)
    demo_strategy = "knn" if "knn" in curves else config.strategies[-1]
    return Measurements(
        task=task.name, model=lm.model, output_type=task.output_type, n_labels=len(task.labels),
        n_pool=len(run.pool), n_eval=len(run.examples), demo_curves=curves, best_k=best_k, pool_curve=pool_curve,
        pool_gain=run.pool_gain(pool_curve), demo_gain=run.last_doubling(demo_strategy, curves[demo_strategy]),
        best_prompt=best_prompt, best_origin=origin, best=mean(_scores(best), config.seed),
        constrained_gain=constrained, can_constrain=can_constrain, context_gain=context_gain,
        kinds=dict(analysis.kinds), shares=analysis.shares(), form_rate=form / max(1, len(best.rows)),
        prompt_tokens_now=_mean(row.prompt_tokens for row in best.rows), prompt_tokens_tuned=tuned_tokens,
        completion_tokens=completion, training_tokens=len(run.pool) * (tuned_tokens + completion),
        calls=lm.usage.calls, program=own_score, program_origin=own_origin if own is not None else None,
    )


def plan(task: Task, lm: LM, config: AdviseConfig, *, program: Prompt | None = None,
         optimize_budget: int | None = None) -> Plan:
    """The LM requests `measure` may make with these arguments (an upper bound: the pool curve as at the k with
    the most pool sizes, both probes wherever they may run)."""
    pool = task.split("train")
    n = min(config.limit, len(task.split("test")))
    ks = fitting_ks(task, pool, lm.context_window, config.ks)
    curves = (1 + len(config.strategies) * (len(ks) - 1)) * n
    pool_points = max((len(pool_sizes(len(pool), k, config.pool_fractions)) for k in ks if k), default=0)
    judged = program is not None or bool(optimize_budget)
    probes = (output_constraint(task, lm.backend_kind) is not None) + bool(task.context_field)
    return Plan((("curves", curves), ("pool", pool_points * n), ("optimize", 0 if program else optimize_budget or 0),
                 ("program", n * judged), ("probes", probes * n)))


def check_budgets(task: Task, lm: LM, config: AdviseConfig, *, program: Prompt | None = None,
                  optimize_budget: int | None = None) -> None:
    """Refuse (ConfigError), before any call, a budget short of `plan()`, and an optimize stage that cannot pay for
    the search's baseline dev evaluation: either would stop `measure` after calls that no verdict uses."""
    needed = plan(task, lm, config, program=program, optimize_budget=optimize_budget)
    remaining = lm.budget.remaining
    if remaining is not None and remaining < needed.calls:
        raise ConfigError(f"--budget {remaining} cannot cover advise's plan: {needed.text()}; raise --budget or lower "
                          "--limit/--max-k")
    if optimize_budget:
        dev = len(split_dev(task, default_dev_size(optimize_budget), config.seed)[1])
        if optimize_budget < dev:
            raise ConfigError(f"--optimize-budget {optimize_budget} cannot cover the baseline's evaluation on {dev} "
                              "dev examples; raise --optimize-budget")


def fitting_ks(task: Task, pool: Sequence[Example], context_window: int, ks: Sequence[int]) -> list[int]:
    """0 and the k values of `ks` that fit the pool and CONTEXT_USE of the context window (token counts estimated
    from characters: an input is about one demo long, plus 64 tokens of template)."""
    per_demo = _mean(len(render_inputs(task, e.inputs)) + len(render_gold(task, e.gold)) + 20
                     for e in pool[:50]) / CHARS_PER_TOKEN
    prompt = len(task.instruction) / CHARS_PER_TOKEN + per_demo + 64
    room = context_window * CONTEXT_USE - prompt - MAX_TOKENS[task.output_type]
    return [0] + [k for k in ks if 0 < k <= len(pool) and k * per_demo <= room]


def pool_sizes(n_pool: int, k: int, fractions: Sequence[float]) -> list[int]:
    """The pool sizes of the pool curve at k demos: each fraction of the pool (at least k), repeats dropped."""
    sizes: list[int] = []
    for fraction in fractions:
        size = max(k, round(n_pool * fraction))
        if not sizes or size != sizes[-1]:
            sizes.append(size)
    return sizes


def _key(strategy: str, k: int) -> tuple[str, int]:
    """The key of a demo-curve point's result; k = 0 (zero-shot) is one point for every strategy."""
    return (strategy, k) if k else ZERO_SHOT


def _curve_name(strategy: str, k: int) -> str:
    return f"{strategy} demos, k={k}" if k else "zero-shot"


class _Runner:
    """The evaluations of one `measure` call, each kept by (strategy, k) or name."""

    def __init__(self, task: Task, lm: LM, config: AdviseConfig, on_event: Event) -> None:
        self.task, self.lm, self.config, self.on_event = task, lm, config, on_event
        self.pool = list(task.split("train"))
        test = list(task.split("test"))
        random.Random(config.seed).shuffle(test)
        self.examples = test[: config.limit]
        name = task_embedder(config.embedder, task, self.pool, cache=lm.cache, seed=config.seed)
        self.embedder: Embedder = make_embedder(name, api_base=lm.api_base, cache=lm.cache)
        self.results: dict[Any, EvalResult] = {}
        self.ks = fitting_ks(task, self.pool, lm.context_window, config.ks)

    def step(self, name: str, work: Callable[[], EvalResult]) -> EvalResult:
        self.on_event({"stage": name, "calls": self.lm.usage.calls})
        result = work()
        if not result.complete:  # the call budget covers the plan, so this is --max-dollars
            raise BudgetExhausted(f"{result.stopped} while measuring {name} after {self.lm.usage.calls} calls; a "
                                  "verdict needs every measurement: rerun with a larger --max-dollars (completed "
                                  "calls are cached)")
        return result

    def curve(self, strategy: str) -> tuple[CurvePoint, ...]:
        """Scores over k for one strategy; k = 0 (zero-shot) is measured once for all strategies."""
        points = []
        for k in self.ks:
            key = _key(strategy, k)
            if key not in self.results:
                source = demo_source(self.task, self.pool, k, strategy, seed=self.config.seed, embedder=self.embedder)
                prompt = Prompt(self.task.instruction, k, strategy)
                self.results[key] = self.step("zero-shot" if k == 0 else f"{strategy} k={k}", lambda: evaluate_prompt(
                    self.task, prompt, self.lm, self.examples, source, self.config.seed))
            points.append(self._point(k, self.results[key]))
        return tuple(points)

    def pool_curve(self, k: int) -> tuple[CurvePoint, ...]:
        shuffled = list(self.pool)
        random.Random(self.config.seed).shuffle(shuffled)
        points = []
        for size in pool_sizes(len(shuffled), k, self.config.pool_fractions):
            source = demo_source(self.task, shuffled[:size], k, "knn", seed=self.config.seed, embedder=self.embedder)
            prompt = Prompt(self.task.instruction, k, "knn")
            self.results[("pool", size)] = self.step(f"pool {size}", lambda: evaluate_prompt(
                self.task, prompt, self.lm, self.examples, source, self.config.seed))
            points.append(self._point(size, self.results[("pool", size)]))
        return tuple(points)

    def pool_gain(self, points: Sequence[CurvePoint]) -> Estimate | None:
        if len(points) < 2:
            return None
        columns = [_scores(self.results[("pool", p.x)]) for p in points]
        return slope_per_doubling(columns, [p.x for p in points], self.config.seed)

    def last_doubling(self, strategy: str, points: Sequence[CurvePoint]) -> Estimate | None:
        """Gain from half the largest k to the largest k (the curve's last doubling), on the same examples."""
        if len(points) < 3:
            return None
        return difference(_scores(self.results[(strategy, points[-1].x)]),
                          _scores(self.results[(strategy, points[-2].x)]), self.config.seed)

    def optimized(self, budget: int) -> Prompt:
        """The best prompt `optimize` finds with at most `budget` calls, within the command's budget; its calls
        count in the command's usage."""
        self.on_event({"stage": "optimize", "calls": self.lm.usage.calls})
        config = SearchConfig(dev_size=default_dev_size(budget), embedder=self.config.embedder)
        result = optimize(self.task, self.lm.stage(budget), config=config,
                          seed=self.config.seed, embedder=self.embedder,
                          on_event=lambda event: self.on_event({"stage": f"optimize round {event['round']}",
                                                                "calls": self.lm.usage.calls}))
        return result.best

    def prompt(self, prompt: Prompt, name: str) -> EvalResult:
        source = prompt_demos(self.task, self.pool, prompt, seed=self.config.seed, embedder=self.embedder)
        return self.step(name, lambda: evaluate_prompt(self.task, prompt, self.lm, self.examples, source,
                                                       self.config.seed))

    def _point(self, x: int, result: EvalResult) -> CurvePoint:
        return CurvePoint(x, mean(_scores(result), self.config.seed), _mean(r.prompt_tokens for r in result.rows))


def _scores(result: EvalResult) -> list[float]:
    return [row.score for row in result.rows]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# --- deciding --------------------------------------------------------------------------------------------------


def decide(m: Measurements, prices: Prices, *, monthly_calls: int | None = None, months: float = 12.0) -> Advice:
    """The verdict for measurements `m` (rules in the module docstring)."""
    cost = break_even(prices, prompt_tokens_now=m.prompt_tokens_now, prompt_tokens_tuned=m.prompt_tokens_tuned,
                      completion_tokens=m.completion_tokens, training_tokens=m.training_tokens)
    verdict, reasons, gain, note = _rule(m, cost, monthly_calls, months)
    reasons += _context(m, cost, months)
    return Advice(verdict, VERDICTS[verdict], tuple(reasons), gain, cost, prices, monthly_calls, months, m, note)


def _rule(m: Measurements, cost: BreakEven, monthly_calls: int | None,
          months: float) -> tuple[str, list[str], Estimate | None, str]:
    """The verdict, its reasons, the expected gain and, when that gain is assumed, a note saying so."""
    best = f"the best prompt-only program scores {m.best.text()} ({_describe(m)})" + (
        f"; {m.program_origin} scores {m.program.text()} on the same examples"
        if m.program is not None and m.best_origin != m.program_origin else "")
    gap = max(1e-9, 1.0 - m.best.value)
    levers = {"more demos": m.demo_gain, "more data": m.pool_gain, "constrained output": m.constrained_gain}
    others = {name: gain for name, gain in levers.items() if gain is not None}
    if m.context_gain and m.context_gain.low > 0 and m.context_gain.value >= CONTEXT_GAIN and (
            m.context_gain.value >= FACT_SHARE * gap or _leads(m.context_gain, others)):
        return "add_retrieval", [
            best,
            f"showing the task's context changes the score by {m.context_gain.text(points=True)}: it closes "
            f"{m.context_gain.value / gap:.0%} of the gap to a perfect score",
            _levers(m.context_gain, others),
            f"{m.shares['fact']:.0%} of the failures are fact errors that the context fixes outright "
            f"(score >= {FIXED_SCORE} with it)",
            "fine-tuning does not reliably add facts and can raise hallucination (Gekhman et al. 2024); "
            "retrieval beat fine-tuning for new facts (Ovadia et al. 2023)",
        ], m.context_gain, ""
    flat = _flat(m)
    if m.best.value >= CEILING or flat:
        why = [best, f"at or above the {CEILING:.0%} ceiling" if m.best.value >= CEILING else
               f"more demos ({_gain(m.demo_gain)} for the last doubling of k) and more data "
               f"({_gain(m.pool_gain)} per doubling of the pool) no longer help: the curves are flat"]
        payback = _payback_months(cost, monthly_calls)
        if payback is not None and payback <= months:
            return "fine_tune_cost", why + [
                f"a fine-tuned model would need {m.prompt_tokens_tuned:.0f} prompt tokens per call instead of "
                f"{m.prompt_tokens_now:.0f}; at {monthly_calls:,} calls a month it pays back its "
                f"${cost.training_cost:,.2f} training in {payback:.1f} months"
            ], None, ""
        return "prompt_only", why, None, ""
    if m.form_rate >= FORM_RATE and not (m.constrained_gain and m.constrained_gain.value >= m.form_rate / 2):
        low, high = m.form_rate / 2, m.form_rate
        return "fine_tune_form", [
            best, f"form errors remain on {m.form_rate:.0%} of the examples after the best prompt "
                  f"({_kinds(m)})",
            _constraining(m),
            "form is what fine-tuning teaches well (output format, structure, label boundaries)",
        ], Estimate((low + high) / 2, low, high, m.n_eval), (
            f"assumed, not a bootstrap interval: a fine-tune fixes half to all of the {m.form_rate:.0%} of "
            "examples with form errors")
    if m.n_labels >= MANY_LABELS and m.demo_gain and m.demo_gain.value >= RISING:
        return "fine_tune_form", [
            best, f"{m.n_labels} labels, and the demo curve still rises ({_gain(m.demo_gain)} for the last doubling "
                  f"of k): the prompt cannot hold enough examples of every label boundary",
            "with many labels, fine-tuning learns boundaries that in-context examples do not reach (LongICLBench)",
        ], m.demo_gain, ("assumed, not measured for a fine-tune: the last doubling of k's gain, what one more step "
                         "of examples per label bought in the prompt")
    if m.pool_gain and m.pool_gain.low > 0 and m.pool_gain.value >= MORE_DATA:
        return "collect_data", [
            best, f"each doubling of the demo pool adds {_gain(m.pool_gain)} (pool of {m.n_pool})",
            "a fine-tune would need that data too; collect it, then measure again",
        ], m.pool_gain, ""
    return "pilot", [
        best, f"the last doubling of k changed the score by {_gain(m.demo_gain)}, a doubling of the pool by "
              f"{_gain(m.pool_gain)}: {_trend(m)}",
        f"fact errors {m.shares['fact']:.0%}, form errors on {m.form_rate:.0%} of examples: no single cause",
        "a pilot fine-tune on the train split, scored on the same test examples, settles it and measures its gain "
        "(none is estimated here)",
    ], None, ""


def _leads(gain: Estimate, others: dict[str, Estimate]) -> bool:
    """Whether `gain`'s interval lies above every other interval."""
    return all(gain.low > other.high for other in others.values())


def _levers(context: Estimate, others: dict[str, Estimate]) -> str:
    """The prompt-only levers next to the context's gain; "none comes close" only when the context's interval lies
    above all of theirs."""
    if not others:
        return "no prompt-only lever was measured"
    listed = ", ".join(f"{name} {_gain(gain)}" for name, gain in others.items())
    return ("no prompt-only lever comes close: " if _leads(context, others) else "the prompt-only levers: ") + listed


def _payback_months(cost: BreakEven, monthly_calls: int | None) -> float | None:
    """Months until a fine-tune repays its training at `monthly_calls`; None when it never does (a tuned call is not
    cheaper, or there are no calls: None or 0)."""
    if monthly_calls is None or monthly_calls == 0 or cost.calls_to_break_even is None:
        return None
    return cost.calls_to_break_even / monthly_calls


def _constraining(m: Measurements) -> str:
    """What constrained output did about the form errors that remain."""
    if not m.can_constrain:
        return "constrained output does not remove them (this backend cannot constrain the output)"
    if m.best_prompt.constrain:
        return "the best program already constrains its output, and the form errors remain"
    return f"constrained output does not remove them ({_gain(m.constrained_gain)})"


def _trend(m: Measurements) -> str:
    """The demo and pool curves in words, for the pilot: flat, clearly rising (interval above 0), or neither."""
    gains = {"more demos": m.demo_gain, "more data": m.pool_gain}
    measured = {name: gain for name, gain in gains.items() if gain is not None}
    if not measured:
        return "too few points to read the curves"
    if all(gain.value < PLATEAU for gain in measured.values()):
        low = m.best.value < PLATEAU_FLOOR
        return f"the curves are flat (under {100 * PLATEAU:.0f} pt per doubling)" + (
            f", but below the {PLATEAU_FLOOR:.2f} at which flat curves mean prompt-only is enough" if low else "")
    rising = [name for name, gain in measured.items() if gain.low > 0 and gain.value >= RISING]
    if rising:
        return (" and ".join(rising) + f" still raise the score (at least {100 * RISING:.0f} pts per doubling, "
                "interval above 0)")
    return "neither flat nor clearly rising"


def _flat(m: Measurements) -> bool:
    curves = [gain for gain in (m.demo_gain, m.pool_gain) if gain is not None]
    return bool(curves) and all(gain.value < PLATEAU for gain in curves) and m.form_rate < FORM_RATE \
        and m.best.value >= PLATEAU_FLOOR


def _context(m: Measurements, cost: BreakEven, months: float) -> list[str]:
    notes = [f"prompt tokens per call: {m.prompt_tokens_now:.0f} now, about {m.prompt_tokens_tuned:.0f} for a "
             f"fine-tuned model (instruction and input only)"]
    monthly = cost.monthly(months)
    if monthly is not None:
        notes.append(f"a fine-tune (training ${cost.training_cost:,.2f}) pays for itself above {monthly:,.0f} calls "
                     f"a month over {months:g} months (per call ${cost.cost_per_call_now:.6f} now, "
                     f"${cost.cost_per_call_tuned:.6f} tuned)")
    else:
        notes.append("with these prices a fine-tuned call is not cheaper in dollars; any saving is latency "
                     "(shorter prompts)")
    return notes


def _describe(m: Measurements) -> str:
    """Where the best program comes from: a curve point by name, or the program given or optimized with its demos
    and its constrained output where the backend applies it."""
    if m.best_origin != m.program_origin:
        return m.best_origin
    prompt = m.best_prompt
    demos = f"{prompt.k} {prompt.strategy} demos" if prompt.k else "no demos"
    return f"{m.best_origin}: " + demos + (", constrained output" if prompt.constrain and m.can_constrain else "")


def _gain(estimate: Estimate | None) -> str:
    return estimate.text(points=True) if estimate else "n/a"


def _kinds(m: Measurements) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in m.kinds.items() if kind in FORM_KINDS) or "none"
