"""Fine-tune-or-not: bootstrap intervals, curve slopes, cost break-even, and each decision rule on constructed
measurements (every verdict reachable, thresholds respected)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from conftest import ScriptedBackend
from optimizer.advice_report import markdown, measurement_rows
from optimizer.advise import (
    CEILING,
    CONTEXT_GAIN,
    FORM_RATE,
    MANY_LABELS,
    PLATEAU_FLOOR,
    RISING,
    AdviseConfig,
    CurvePoint,
    Measurements,
    decide,
    measure,
)
from optimizer.cache import Cache
from optimizer.costs import Prices, break_even, model_prices
from optimizer.errors import BudgetExhausted, ConfigError
from optimizer.lm import LM, Budget
from optimizer.prompt import Prompt
from optimizer.stats import Estimate, difference, mean, slope_per_doubling
from optimizer.task import Example, Task


def est(value: float, spread: float = 0.03) -> Estimate:
    return Estimate(value, value - spread, value + spread, 100)


FREE = Prices(0.0, 0.0, 0.0, 0.0, 0.0, "test")
HOSTED = Prices(input=1e-6, output=2e-6, ft_input=2e-6, ft_output=4e-6, ft_train=2e-5, source="test")
BASE = Measurements(
    task="t", model="m", output_type="label", n_labels=5, n_pool=800, n_eval=100,
    demo_curves={"knn": (CurvePoint(0, est(0.3), 80), CurvePoint(4, est(0.6), 300), CurvePoint(8, est(0.7), 500))},
    best_k=8, pool_curve=(CurvePoint(100, est(0.6), 500), CurvePoint(800, est(0.7), 500)),
    pool_gain=est(0.005, 0.01), demo_gain=est(0.005, 0.01), best_prompt=Prompt("x", 8, "knn"),
    best_origin="knn demos, k=8",
    best=est(0.85), constrained_gain=est(0.0, 0.01), can_constrain=True, context_gain=None, kinds={"content": 30},
    shares={"form": 0.0, "content": 1.0, "fact": 0.0}, form_rate=0.0, prompt_tokens_now=500.0,
    prompt_tokens_tuned=80.0, completion_tokens=5.0, training_tokens=800 * 85.0,
)


def verdict(m: Measurements, prices: Prices = FREE, **options) -> str:
    return decide(m, prices, **options).verdict


def test_facts_that_the_context_fixes_mean_retrieval() -> None:
    facts = replace(BASE, best=est(0.5), context_gain=est(0.4), shares={"form": 0.0, "content": 0.2, "fact": 0.8})
    advice = decide(facts, FREE)
    assert advice.verdict == "add_retrieval" and advice.expected_gain == facts.context_gain
    assert any("+40.0 [+37.0, +43.0] pts: it closes 80% of the gap" in reason for reason in advice.reasons)
    assert verdict(replace(facts, context_gain=est(CONTEXT_GAIN - 0.01, 0.005))) != "add_retrieval"
    assert verdict(replace(facts, context_gain=est(0.3, 0.35))) != "add_retrieval"  # interval reaches 0
    # closing under a quarter of the gap is enough only when no prompt-only lever does as well
    low = replace(facts, best=est(0.2), context_gain=est(0.19, 0.02), demo_gain=est(0.15, 0.04))
    assert verdict(low) != "add_retrieval" and verdict(replace(low, context_gain=est(0.21, 0.02))) == "add_retrieval"
    assert verdict(replace(low, demo_gain=est(0.10, 0.02))) == "add_retrieval"  # context [0.17, 0.21] > demos' 0.12
    assert verdict(replace(low, demo_gain=est(0.10, 0.02), pool_gain=est(0.16, 0.02))) != "add_retrieval"
    assert verdict(replace(low, demo_gain=None, pool_gain=None, constrained_gain=None)) == "add_retrieval"


def test_retrieval_says_no_lever_comes_close_only_when_none_does() -> None:
    facts = replace(BASE, best=est(0.5), context_gain=est(0.15), shares={"form": 0.0, "content": 0.5, "fact": 0.5})
    ahead = decide(facts, FREE).reasons
    assert "no prompt-only lever comes close: more demos +0.5 [-0.5, +1.5] pts" in ahead[2]
    behind = decide(replace(facts, demo_gain=est(0.30)), FREE)  # fires on the gap share, demos gain more
    assert behind.verdict == "add_retrieval" and "comes close" not in " ".join(behind.reasons)
    assert behind.reasons[2].startswith("the prompt-only levers: more demos +30.0 [+27.0, +33.0] pts")


def test_ceiling_or_flat_curves_mean_prompt_only() -> None:
    assert verdict(replace(BASE, best=est(CEILING), demo_gain=est(0.05))) == "prompt_only"
    assert verdict(BASE) == "prompt_only"  # both curves gain under a point per doubling
    assert verdict(replace(BASE, demo_gain=est(0.05))) == "pilot"
    assert verdict(replace(BASE, best=est(PLATEAU_FLOOR - 0.01))) == "pilot"  # flat, but too low to be enough


def test_distill_when_the_break_even_is_below_the_monthly_calls() -> None:
    cost = decide(BASE, HOSTED).break_even
    assert cost.calls_to_break_even == pytest.approx(cost.training_cost / (cost.cost_per_call_now - cost.cost_per_call_tuned))
    monthly = cost.monthly(12)
    assert verdict(BASE, HOSTED, monthly_calls=int(monthly) + 1) == "fine_tune_cost"
    assert verdict(BASE, HOSTED, monthly_calls=int(monthly) - 1) == "prompt_only"
    assert verdict(BASE, FREE, monthly_calls=10**9) == "prompt_only"  # no dollar saving with free prices


def test_free_training_and_zero_monthly_calls_are_numbers_not_missing() -> None:
    free_training = replace(HOSTED, ft_train=0.0)  # the tuned call is cheaper and training costs nothing
    assert verdict(BASE, free_training, monthly_calls=0) == "prompt_only"  # 0 calls a month never repay it (no crash)
    advice = decide(BASE, free_training, monthly_calls=1000)
    assert advice.verdict == "fine_tune_cost" and "pays back its $0.00 training in 0.0 months" in advice.reasons[2]
    assert ["break-even calls per month", "0 over 12 months"] in measurement_rows(advice)


def test_remaining_form_errors_mean_fine_tune_for_form() -> None:
    form = replace(BASE, best=est(0.6), demo_gain=est(0.05), form_rate=FORM_RATE,
                   shares={"form": 0.5, "content": 0.5, "fact": 0.0}, kinds={"invalid_json": 10, "content": 10})
    advice = decide(form, FREE)
    assert advice.verdict == "fine_tune_form"
    assert advice.expected_gain.low == pytest.approx(FORM_RATE / 2) and advice.expected_gain.high == FORM_RATE
    assert verdict(replace(form, form_rate=FORM_RATE - 0.01)) != "fine_tune_form"
    assert verdict(replace(form, constrained_gain=est(0.08))) != "fine_tune_form"  # constraining fixes them
    assert "assumed, not a bootstrap interval" in advice.gain_note
    assert advice.to_dict()["expected_gain_note"] == advice.gain_note
    assert f"Expected gain: +7.5 [+5.0, +10.0] pts ({advice.gain_note})." in markdown(advice)
    hostile = markdown(decide(replace(form, model="fake/<b>x</b>"), FREE))
    assert "<b>" not in hostile and "Model fake/&lt;b&gt;x&lt;/b&gt;." in hostile  # shown as written


def test_form_errors_under_an_already_constrained_program_are_not_blamed_on_the_backend() -> None:
    form = replace(BASE, best=est(0.6), demo_gain=est(0.05), form_rate=0.3, best_prompt=Prompt("x", 8, "knn", True),
                   best_origin="your program", program=est(0.6), program_origin="your program",
                   constrained_gain=None, kinds={"invalid_json": 30},
                   shares={"form": 1.0, "content": 0.0, "fact": 0.0})
    reasons = decide(form, FREE).reasons
    assert "the best program already constrains its output, and the form errors remain" in reasons
    assert "(your program: 8 knn demos, constrained output)" in reasons[0] and "cannot" not in " ".join(reasons)
    unable = decide(replace(form, can_constrain=False), FREE).reasons  # a saved program's flag the backend ignores
    assert "constrained output does not remove them (this backend cannot constrain the output)" in unable
    assert "(your program: 8 knn demos)" in unable[0]


def test_many_labels_with_a_rising_curve_mean_fine_tune_for_form() -> None:
    rising = replace(BASE, n_labels=MANY_LABELS, demo_gain=est(0.06), best=est(0.5))
    assert verdict(rising) == "fine_tune_form"
    assert verdict(replace(rising, n_labels=MANY_LABELS - 1)) == "pilot"
    advice = decide(rising, FREE)  # the gain shown is the demo curve's, and the report says it is assumed
    assert advice.expected_gain == rising.demo_gain and advice.gain_note.startswith("assumed, not measured")


def test_the_pilot_names_the_curves_as_measured_and_gives_no_expected_gain() -> None:
    def why(m: Measurements) -> str:
        advice = decide(m, FREE)
        assert advice.verdict == "pilot" and advice.expected_gain is None
        return advice.reasons[1]
    assert why(replace(BASE, best=est(PLATEAU_FLOOR - 0.2))).endswith(
        f"the curves are flat (under 1 pt per doubling), but below the {PLATEAU_FLOOR:.2f} at which flat curves "
        "mean prompt-only is enough")
    assert why(replace(BASE, best=est(0.6), demo_gain=est(0.12))).endswith(
        f"more demos still raise the score (at least {100 * RISING:.0f} pts per doubling, interval above 0)")
    assert why(replace(BASE, best=est(0.6), demo_gain=est(0.10, 0.10))).endswith("neither flat nor clearly rising")


def test_a_pool_curve_still_rising_means_collect_data() -> None:
    more = replace(BASE, pool_gain=est(0.05, 0.02), demo_gain=est(0.03))
    assert verdict(more) == "collect_data"
    assert verdict(replace(more, pool_gain=est(0.05, 0.06))) == "pilot"  # interval reaches 0


def test_bootstrap_intervals_contain_the_value_and_shrink_with_n() -> None:
    small, large = mean([1.0, 0.0] * 10), mean([1.0, 0.0] * 500)
    assert small.value == large.value == 0.5
    assert small.low < 0.5 < small.high and (large.high - large.low) < (small.high - small.low) / 3
    same = difference([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert same.value == same.low == same.high == 0.0


def test_slope_per_doubling_recovers_a_linear_curve() -> None:
    sizes = [100, 200, 400, 800]
    columns = [[0.5 + 0.1 * i] * 40 for i in range(4)]
    slope = slope_per_doubling(columns, sizes)
    assert slope.value == pytest.approx(0.1) and slope.low == pytest.approx(0.1)


def test_break_even_and_prices() -> None:
    prices = model_prices("openai/gpt-4o-mini")
    assert prices.input == pytest.approx(0.15e-6) and prices.ft_input == pytest.approx(0.3e-6)
    assert model_prices("local/smollm2-135m").input == 0.0
    assert model_prices("openai/gpt-4o-mini", ft_train=3.0).ft_train == pytest.approx(3e-6)
    never = break_even(HOSTED, prompt_tokens_now=100, prompt_tokens_tuned=100, completion_tokens=5,
                       training_tokens=1000)
    assert never.calls_to_break_even is None and never.monthly(12) is None


def test_fine_tuned_prices_are_the_models_own_not_a_longer_namesakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ft:gpt-4o-mini-2024-07-18` sorts after `ft:gpt-4o-2024-11-20`: gpt-4o got the mini's tuned prices, 12x too
    cheap, and a fine-tune looked like a saving."""
    import litellm

    table = {"acme/m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
             "ft:m-2024-01-01": {"input_cost_per_token": 3e-6, "output_cost_per_token": 4e-6},
             "ft:m-2024-06-01": {"input_cost_per_token": 5e-6, "output_cost_per_token": 6e-6},
             "ft:m-mini-2024-09-01": {"input_cost_per_token": 0.1e-6, "output_cost_per_token": 0.2e-6}}
    monkeypatch.setattr(litellm, "model_cost", table)
    prices = model_prices("acme/m")
    assert (prices.ft_input, prices.ft_output) == (5e-6, 6e-6)  # the latest snapshot of m itself
    assert model_prices("acme/m-mini").ft_input == 0.1e-6


def colors_task(n_train: int, n_test: int = 20) -> Task:
    """"item N is red/blue", labelled with its colour."""
    rows = [Example(id=f"e{i}", inputs={"text": f"item {i} is {('red', 'blue')[i % 2]}"},
                    gold=("red", "blue")[i % 2]) for i in range(n_train + n_test)]
    return Task(name="colors", description="Say the colour.", inputs=("text",), output="label", output_type="label",
                metric="label_match", instruction="Say the colour.", labels=("red", "blue"),
                splits={"train": tuple(rows[:n_train]), "test": tuple(rows[n_train:])})


def two_demo_model(request) -> str:
    """Right only when it sees at least two demos."""
    return request.messages[-1]["content"].split()[-1] if len(request.messages) >= 6 else "green"


def test_measure_runs_the_curves_on_a_scripted_model(tmp_path) -> None:
    lm = LM("fake/colors", cache=Cache(tmp_path), backend=ScriptedBackend(two_demo_model))
    m = measure(colors_task(60), lm, config=AdviseConfig(limit=20, ks=(0, 1, 2, 4)))
    assert [p.x for p in m.demo_curves["knn"]] == [0, 1, 2, 4]
    assert [p.score.value for p in m.demo_curves["random"]] == [0.0, 0.0, 1.0, 1.0]
    assert m.best_k == 2 and m.best.value == 1.0 and m.form_rate == 0.0
    assert not m.can_constrain and m.constrained_gain is None  # labels are not constrained through LiteLLM
    assert [p.x for p in m.pool_curve] == [8, 15, 30, 60]
    assert decide(m, FREE).verdict == "prompt_only"


def test_optimizing_inside_advise_counts_its_calls_and_keeps_to_the_budget(tmp_path) -> None:
    task, events = colors_task(120), []
    backend = ScriptedBackend(two_demo_model)
    lm = LM("fake/colors", cache=Cache(tmp_path / "a"), backend=backend)
    m = measure(task, lm, optimize_budget=300, config=AdviseConfig(limit=20, ks=(0, 1, 2)), on_event=events.append)
    assert m.program_origin == "the program optimized here" and m.calls == backend.calls == lm.usage.calls
    optimizing = [event["calls"] for event in events if event["stage"].startswith("optimize round")]
    assert optimizing and optimizing[-1] > optimizing[0]  # progress moves while it optimizes
    # the plan: curves (zero-shot, random and knn at k 1, 2) 100, pool 80, optimize 300, the optimized program 20
    plan = "500 calls (curves 100, pool 80, optimize 300, program 20)"
    short = LM("fake/colors", cache=Cache(tmp_path / "b"), budget=Budget(499), backend=ScriptedBackend(two_demo_model))
    with pytest.raises(ConfigError, match=re.escape(f"--budget 499 cannot cover advise's plan: {plan}")):
        measure(task, short, optimize_budget=300, config=AdviseConfig(limit=20, ks=(0, 1, 2)))
    assert short.backend.calls == 0  # refused before any call
    capped = LM("fake/colors", cache=Cache(tmp_path / "c"), budget=Budget(500), backend=ScriptedBackend(two_demo_model))
    measure(task, capped, optimize_budget=300, config=AdviseConfig(limit=20, ks=(0, 1, 2)))
    assert capped.backend.calls <= 500  # a budget that covers the plan is never reached, optimize stage included


def test_a_budget_below_the_plan_is_refused_before_any_call_and_the_plan_is_a_bound(tmp_path) -> None:
    """advise needs every measurement for its verdict: a budget short of its plan (every evaluation counted whole,
    cached or not) is refused before the first call; a budget equal to it always suffices."""
    task, config = colors_task(60), AdviseConfig(limit=20, ks=(0, 1, 2, 4))
    short = LM("fake/colors", cache=Cache(tmp_path / "a"), budget=Budget(219), backend=ScriptedBackend(two_demo_model))
    with pytest.raises(ConfigError, match=re.escape("--budget 219 cannot cover advise's plan: 220 calls (curves 140, "
                                                    "pool 80); raise --budget or lower --limit/--max-k")):
        measure(task, short, config=config)
    assert short.backend.calls == 0
    enough = LM("fake/colors", cache=Cache(tmp_path / "a"), budget=Budget(220), backend=ScriptedBackend(two_demo_model))
    assert measure(task, enough, config=config).calls == enough.backend.calls <= 220
    with pytest.raises(ConfigError, match=re.escape("--optimize-budget 5 cannot cover the baseline's evaluation on "
                                                    "12 dev examples; raise --optimize-budget")):
        measure(task, LM("fake/colors", cache=Cache(tmp_path / "b"), backend=ScriptedBackend(two_demo_model)),
                optimize_budget=5, config=config)


def test_a_dollar_cap_that_stops_advise_says_which_budget_ran_out(tmp_path) -> None:
    lm = LM("fake/colors", cache=Cache(tmp_path), budget=Budget(max_dollars=0.05),
            backend=ScriptedBackend(two_demo_model))
    with pytest.raises(BudgetExhausted, match=r"budget of \$0\.05 is spent.*--max-dollars"):
        measure(colors_task(60), lm, config=AdviseConfig(limit=20, ks=(0, 1, 2)))


def test_the_best_prompt_only_program_is_the_best_measured_not_the_saved_one(tmp_path) -> None:
    """A saved program that scores below a demo-curve point on the same examples is not the best prompt-only
    program: the comparison with a fine-tune is against the strongest option, named, and the probes and the error
    analysis are of that option."""
    task, config = colors_task(60), AdviseConfig(limit=20, ks=(0, 1, 2, 4))
    lm = LM("fake/colors", cache=Cache(tmp_path), backend=ScriptedBackend(two_demo_model))
    m = measure(task, lm, program=Prompt("Say the colour.", 1, "knn"), config=config)  # one demo: always wrong
    assert m.best.value == 1.0 and m.best_origin == "random demos, k=2"  # ties go to the fewest demos
    assert m.best_prompt == Prompt("Say the colour.", 2, "random") and m.form_rate == 0.0
    assert m.program.value == 0.0 and m.program_origin == "your program"
    first = decide(m, FREE).reasons[0]
    assert first == ("the best prompt-only program scores 1.000 [1.000, 1.000] (random demos, k=2); your program "
                     "scores 0.000 [0.000, 0.000] on the same examples")
    rows = measurement_rows(decide(m, FREE))
    assert rows[:2] == [["best prompt-only program", "1.000 [1.000, 1.000] (random demos, k=2)"],
                        ["your program", "0.000 [0.000, 0.000]"]]
    kept = measure(task, lm, program=Prompt("Say the colour.", 4, "knn"), config=config)  # as good: it stays
    assert kept.best_origin == "your program" and kept.best_prompt == Prompt("Say the colour.", 4, "knn")
    assert decide(kept, FREE).reasons[0] == ("the best prompt-only program scores 1.000 [1.000, 1.000] (your program: "
                                             "4 knn demos)")
