"""The optimization loop on a scripted model: it finds the planted fix, never exceeds the budget, and a run
that crashes resumes to the same program without repeating a completed call."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ScriptedBackend, write_greek_task
from optimizer.cache import Cache
from optimizer.errors import BudgetExhausted, ConfigError
from optimizer.lm import LM, Budget, LMRequest
from optimizer.program import load_program
from optimizer.prompt import Prompt
from optimizer.propose import demo_settings
from optimizer.retry import RetryPolicy
from optimizer.run import RunFolder
from optimizer.search import SearchConfig, optimize, race_cost, round_budget
from optimizer.task import load_task

CONFIG = SearchConfig(rounds=3, analysis_size=24, race_sizes=(8, 16), dev_size=20)


def planted_model(request: LMRequest) -> str:
    """Answers right when the instruction lists the labels; otherwise rambles on items with an even number."""
    system, user = request.messages[0]["content"], request.messages[-1]["content"]
    number = int(re.search(r"item (\d+)", user).group(1))
    label = re.search(r"about (\w+)", user).group(1)
    if "Reply with exactly one label from this list" in system or number % 2:
        return label
    return "I cannot tell."


class RecordingBackend(ScriptedBackend):
    """Remembers every request it answered; raises `Crash` once it has answered `crash_after` of them."""

    def __init__(self, crash_after: int | None = None) -> None:
        super().__init__(planted_model)
        self.crash_after, self.seen = crash_after, []

    def call(self, request, timeout):
        if self.crash_after is not None and len(self.seen) >= self.crash_after:
            raise Crash()
        self.seen.append(json.dumps(request.payload(), sort_keys=True))
        return super().call(request, timeout)


class Crash(BaseException):
    """Like a SIGKILL for the run: not an Exception, so nothing retries or catches it."""


def model(cache: Cache, budget: int | None, backend: RecordingBackend) -> LM:
    return LM("fake/planted", cache=cache, budget=Budget(budget, charge_cache_hits=True), backend=backend,
              retry=RetryPolicy(base_s=0.001))


def test_finds_the_planted_fix(planted, tmp_path: Path) -> None:
    lm = model(Cache(tmp_path / "c"), 600, RecordingBackend())
    result = optimize(planted, lm, config=CONFIG, seed=1, test_lm=lm.with_budget(Budget()))
    assert result.dev_scores["baseline"] == pytest.approx(0.5)
    assert result.dev_scores["best"] == 1.0 and result.test_scores["best"] == 1.0
    assert "Reply with exactly one label from this list" in result.best.instruction
    accepted = [c.origin for c in result.candidates if c.accepted and c.origin != "baseline"]
    assert accepted and accepted[0] in ("stacked", "rule:all", "rule:label_outside_set")
    before = result.analysis_before
    assert before.kinds == {"label_outside_set": 10} and before.groups[0].kind == "label_outside_set"
    assert result.analysis_after.n_failures == 0


@pytest.mark.parametrize("budget", [25, 60, 137, 600])
def test_budget_is_never_exceeded(planted, tmp_path: Path, budget: int) -> None:
    backend = RecordingBackend()
    lm = model(Cache(tmp_path / "c"), budget, backend)
    if budget < len(planted.split("dev")):
        with pytest.raises(BudgetExhausted):
            optimize(planted, lm, config=CONFIG, seed=1)
        return
    result = optimize(planted, lm, config=CONFIG, seed=1)
    assert result.calls <= budget and backend.calls <= budget and lm.budget.calls == result.calls
    if budget < 600 and result.dev_scores["best"] < 1.0:
        assert result.stopped and result.stopped.startswith("budget")


def test_the_library_sizes_dev_by_the_budget_as_the_cli_does(tmp_path: Path) -> None:
    """`SearchConfig()` without a dev size takes `default_dev_size` of the LM's budget, as `formfit optimize` does:
    with 100 calls, 20 of the 40 dev examples (100 would not leave room for a round)."""
    task = load_task(write_greek_task(tmp_path / "t", 90, 40, 10))
    result = optimize(task, model(Cache(tmp_path / "c"), 100, RecordingBackend()), seed=1)
    assert [trial.n for trial in result.trials if trial.stage == "dev"][0] == 20
    assert result.rounds and result.calls <= 100


def test_a_library_result_saves_the_program_formfit_optimize_would(planted, tmp_path: Path) -> None:
    """`OptimizeResult.save` writes what `RunFolder.finish` writes to `program/`; the program loads and answers."""
    lm = model(Cache(tmp_path / "c"), 300, RecordingBackend())
    result = optimize(planted, lm, config=CONFIG, seed=1)
    saved = load_program(result.save(tmp_path / "prog", planted, lm), lm=lm.with_budget(Budget()))
    assert saved.prompt == result.best and result.best.instruction != planted.instruction
    assert saved(text="item 200 is about beta") == "beta"
    with pytest.raises(ConfigError, match=r"needs input field\(s\): text \(given: txt\)"):
        saved(txt="item 200 is about beta")
    run = RunFolder.open(tmp_path / "run", False, {"dev_size": CONFIG.dev_size, "embedder": result.embedder})
    from_cli = Path(run.finish(planted, result, lm)["program"])
    assert (from_cli / "program.json").read_text() == (tmp_path / "prog" / "program.json").read_text()


def test_round_budget_is_the_fewest_calls_that_try_a_candidate(planted, tmp_path: Path) -> None:
    """`round_budget` (what `formfit optimize` warns below): one call fewer and no candidate is raced; with it, one
    is raced and checked on dev. Planted: dev 20 twice, analysis 48, the smallest race of one candidate 8 + 4."""
    config = SearchConfig(dev_size=20)
    assert round_budget(planted, config, 1) == 100
    short = optimize(planted, model(Cache(tmp_path / "a"), 99, RecordingBackend()), config=config, seed=1)
    assert not short.rounds and short.stopped.startswith("budget") and short.best == short.baseline
    enough = optimize(planted, model(Cache(tmp_path / "b"), 100, RecordingBackend()), config=config, seed=1)
    assert len(enough.rounds) == 1 and enough.rounds[0].winner_key is not None and enough.calls == 100


def test_a_perfect_dev_score_ends_the_search(planted, tmp_path: Path) -> None:
    """No candidate can beat 1.0 on dev (acceptance needs a higher score), so nothing more is spent: a model right
    from the start costs the baseline's dev evaluation only, and a found fix ends the search in its round."""
    backend = ScriptedBackend(lambda request: re.search(r"about (\w+)", request.messages[-1]["content"]).group(1))
    lm = LM("fake/right", cache=Cache(tmp_path / "c"), budget=Budget(1000, charge_cache_hits=True), backend=backend,
            retry=RetryPolicy(base_s=0.001))
    result = optimize(planted, lm, config=CONFIG, seed=1)
    assert result.stopped == "dev score 1.0: no candidate can beat it" and not result.rounds
    assert backend.calls == result.calls == len(planted.split("dev"))

    fixed = optimize(planted, model(Cache(tmp_path / "p"), 1000, RecordingBackend()), config=CONFIG, seed=1)
    assert fixed.dev_scores["best"] == 1.0 and fixed.stopped == "dev score 1.0: no candidate can beat it"
    assert len(fixed.rounds) == 1 and fixed.calls < 1000


def test_a_small_budget_still_races_and_confirms_a_fix(planted, tmp_path: Path) -> None:
    """The race shrinks to fit what is left after reserving the winner's dev check: 8 candidates do not fit in 90
    calls, but the best-first head of the list does, and its winner is checked on dev and accepted."""
    lm = model(Cache(tmp_path / "c"), 90, RecordingBackend())
    result = optimize(planted, lm, config=CONFIG, seed=1)
    assert result.calls <= 90
    assert result.dev_scores["best"] == 1.0 and result.rounds[0].accepted
    assert result.rounds[0].proposals < 8


def test_race_cost_counts_new_examples_of_survivors() -> None:
    assert race_cost(7, (16, 32)) == 7 * 16 + 4 * 16
    assert race_cost(1, (16, 32)) == 32 and race_cost(3, (8,)) == 24


def test_too_small_budget_says_so(planted, tmp_path: Path) -> None:
    with pytest.raises(BudgetExhausted, match="cannot cover the baseline's dev evaluation"):
        optimize(planted, model(Cache(tmp_path / "c"), 5, RecordingBackend()), config=CONFIG)


@pytest.mark.parametrize("crash_after", [3, 57, 140, 201])
def test_resume_after_crash_repeats_no_call(planted, tmp_path: Path, crash_after: int) -> None:
    clean = RecordingBackend()
    reference = optimize(planted, model(Cache(tmp_path / "clean"), 300, clean), config=CONFIG, seed=2)

    cache = Cache(tmp_path / "crashy")
    first = RecordingBackend(crash_after=crash_after)
    with pytest.raises(Crash):
        optimize(planted, model(cache, 300, first), config=CONFIG, seed=2)
    second = RecordingBackend()
    resumed = optimize(planted, model(cache, 300, second), config=CONFIG, seed=2)

    assert resumed.best == reference.best and resumed.dev_scores == reference.dev_scores
    assert resumed.calls == reference.calls
    assert not set(first.seen) & set(second.seen)  # no completed call made again
    assert len(first.seen) + len(second.seen) == len(clean.seen)


def opener_lm(planted, tmp_path: Path, origin: str) -> tuple[LM, str]:
    """A model that answers right only after one particular demo block: the fixed set `origin` that the first round
    draws. Returns it with that block's first demo."""
    train = {example.id: example for example in planted.split("train")}
    drawn = {p.origin: p.prompt for p in demo_settings(planted, Prompt(planted.instruction), planted.split("train"), 1,
                                                       draws=SearchConfig().demo_sets)}
    opener = train[drawn[origin].demo_ids[0]].inputs["text"]

    def opener_model(request: LMRequest) -> str:
        label = re.search(r"about (\w+)", request.messages[-1]["content"]).group(1)
        return label if len(request.messages) > 2 and opener in request.messages[1]["content"] else "I cannot tell."

    lm = LM("fake/fixed", cache=Cache(tmp_path / "c"), budget=Budget(600), backend=ScriptedBackend(opener_model),
            retry=RetryPolicy(base_s=0.001))
    return lm, opener


def test_a_fixed_demo_set_is_searched_saved_and_exported(planted, tmp_path: Path) -> None:
    """The first round races more fixed sets than later rounds: it finds the sixth, the saved program shows it to
    every input, and the DSPy export holds it."""
    import dspy

    from optimizer.export import write_dspy_state

    train = {example.id: example for example in planted.split("train")}
    lm, opener = opener_lm(planted, tmp_path, "demos:fixed-16#6")
    settings = {"task": str(planted.root), "model": "fake/fixed", "seed": 1, "budget": 600, "dev_size": 20,
                "embedder": "tfidf"}
    run = RunFolder.open(tmp_path / "run", False, settings)
    result = optimize(planted, lm, config=CONFIG, seed=1, checkpoint=run.checkpoint)
    best = result.best
    assert result.rounds[0].accepted and result.rounds[0].proposals > CONFIG.max_candidates
    assert (best.strategy, best.k, len(best.demo_ids)) == ("fixed", 16, 16)
    assert train[best.demo_ids[0]].inputs["text"] == opener
    assert result.dev_scores["best"] == 1.0 > result.dev_scores["baseline"]

    program = load_program(run.finish(planted, result, lm)["program"], lm=lm.with_budget(Budget()))
    for text in ("item 200 is about beta", "item 201 is about gamma"):
        assert program(text=text) == text.split()[-1]
    state = tmp_path / "dspy.json"
    write_dspy_state(planted, best, planted.split("train"), state)
    exported = dspy.Predict("text -> label")
    exported.load(str(state))
    assert [demo["text"] for demo in exported.demos] == [train[i].inputs["text"] for i in best.demo_ids]


def test_with_two_demo_sets_the_sixth_set_is_never_tried(planted, tmp_path: Path) -> None:
    """With `demo_sets=2` the sixth set is never drawn, so the model that needs it stays at its baseline."""
    lm, _ = opener_lm(planted, tmp_path, "demos:fixed-16#6")
    result = optimize(planted, lm, config=replace(CONFIG, demo_sets=2), seed=1)
    assert result.dev_scores["best"] == result.dev_scores["baseline"] == 0.0
    origins = [c.origin for c in result.candidates if c.prompt.strategy == "fixed"]
    assert origins and set(origins) <= {"demos:fixed-16#1", "demos:fixed-16#2"}


def test_run_folder_program_and_reports(planted, tmp_path: Path) -> None:
    settings = {"task": str(planted.root), "model": "fake/planted", "seed": 1, "budget": 600, "dev_size": 20,
                "embedder": "tfidf"}
    run = RunFolder.open(tmp_path / "run", False, settings)
    lm = model(Cache(tmp_path / "c"), 600, RecordingBackend())
    result = optimize(planted, lm, config=CONFIG, seed=1, checkpoint=run.checkpoint)
    paths = run.finish(planted, result, lm)
    assert json.loads(run.checkpoint.read_text())["trials"]
    assert result.embedder == "tfidf" and json.loads(Path(paths["result"]).read_text())["embedder"] == "tfidf"
    program = load_program(paths["program"], lm=lm)
    assert program(text="item 4 is about beta") == "beta"
    assert program.scores["dev"]["best"] == 1.0
    page = Path(paths["report_html"]).read_text()
    assert page.count("<img") == 3 and "Every candidate tried" in page
    assert "Reply with exactly one label" in Path(paths["report_md"]).read_text()
    with pytest.raises(Exception, match="holds a run already"):
        RunFolder.open(tmp_path / "run", False, settings)
    with pytest.raises(Exception, match="different seed"):
        RunFolder.open(tmp_path / "run", True, {**settings, "seed": 2})


def test_a_run_folder_that_cannot_take_the_results_is_a_one_line_error(planted, tmp_path: Path) -> None:
    """Writing the results fails (here a folder stands where report.html goes; a full disk alike): a ConfigError
    naming the run folder, not a traceback; the search itself is in the cache."""
    settings = {"task": str(planted.root), "seed": 1, "dev_size": 20, "embedder": "tfidf"}
    run = RunFolder.open(tmp_path / "run", False, settings)
    lm = model(Cache(tmp_path / "c"), 60, RecordingBackend())
    result = optimize(planted, lm, config=CONFIG, seed=1)
    (run.path / "report.html").mkdir()
    with pytest.raises(ConfigError, match=f"{run.path}: cannot write the run's result, program and reports"):
        run.finish(planted, result, lm)


def test_a_run_recorded_with_a_relative_task_path_resumes_from_its_folder(tmp_path: Path, monkeypatch) -> None:
    """Older formfit recorded the task as typed; a resume that names it absolutely (as formfit now does) matches."""
    (tmp_path / "t").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"task": "t", "seed": 1}))
    run = RunFolder.open(tmp_path / "run", True, {"task": str((tmp_path / "t").resolve()), "seed": 1})
    assert json.loads((run.path / "run.json").read_text())["task"] == str((tmp_path / "t").resolve())
    with pytest.raises(ConfigError, match="different task"):
        RunFolder.open(tmp_path / "run", True, {"task": str((tmp_path / "other").resolve()), "seed": 1})


def test_the_context_probe_leaves_the_search_embedder_as_it_was(tmp_path: Path) -> None:
    """The probe fits TF-IDF on the pool with the context shown; the demo sources the search cached (and scores
    the test split with) must keep embedding queries with the pool's own IDF."""
    from optimizer.embed import make_embedder
    from optimizer.search import context_probe
    from optimizer.select import demos_for_all, prompt_demos
    from optimizer.task import load_task

    task = load_task("fictional_facts")
    pool, queries = task.split("train")[:40], task.split("test")[:10]
    embedder = make_embedder("tfidf")
    prompt = Prompt(task.instruction, k=4, strategy="knn")
    source = prompt_demos(task, pool, prompt, embedder=embedder)
    idf, before = embedder.idf.copy(), demos_for_all(source, queries)
    lm = LM("fake/echo", cache=Cache(tmp_path), budget=Budget(), backend=ScriptedBackend(lambda request: "x"))
    context_probe(task, prompt, pool, queries, lm, 0, embedder)
    assert (embedder.idf == idf).all()
    assert demos_for_all(source, queries) == before


def test_a_dollar_cap_stops_the_search_on_whole_scores_and_a_resume_ends_the_same(planted, tmp_path: Path) -> None:
    """Each scripted call costs $0.001. The cap ends the run mid-batch; no partial evaluation is scored, and a
    rerun on the same cache charges the cached answers' cost, so it stops where the first run stopped. (One call at
    a time: with several in flight, which of them pass the cap first is down to timing.)"""
    def capped(cache_dir: Path, backend: RecordingBackend) -> LM:
        return LM("fake/planted", cache=Cache(cache_dir), backend=backend, retry=RetryPolicy(base_s=0.001),
                  budget=Budget(max_dollars=0.15, charge_cache_hits=True), concurrency=1)

    first_backend = RecordingBackend()
    first = optimize(planted, capped(tmp_path / "c", first_backend), config=CONFIG, seed=1)
    assert first.stopped is not None and "$0.15" in first.stopped
    sizes = {"dev": {CONFIG.dev_size}, "analysis": {CONFIG.analysis_size}}
    assert all(trial.n in sizes.get(trial.stage, set(CONFIG.race_sizes)) for trial in first.trials)
    assert 150 <= len(first_backend.seen) <= 151  # stops at the cap (one call at a time)
    again_backend = RecordingBackend()
    again = optimize(planted, capped(tmp_path / "c", again_backend), config=CONFIG, seed=1)
    assert again.best == first.best and again.trials == first.trials and again.stopped == first.stopped
    assert again_backend.seen == []


def test_progress_moves_with_every_example_and_never_goes_back(planted, tmp_path: Path) -> None:
    events: list[dict] = []
    lm = model(Cache(tmp_path / "c"), 300, RecordingBackend())
    optimize(planted, lm, config=CONFIG, seed=1, test_lm=lm.with_budget(Budget()), on_event=events.append)
    dev = [event["done"] for event in events if event["stage"] == "dev" and "done" in event][:CONFIG.dev_size]
    assert dev == list(range(1, CONFIG.dev_size + 1))  # one event per example of the baseline's dev pass
    test = [event for event in events if event["stage"] == "test" and "done" in event]
    assert len(test) == 2 * len(planted.split("test")) and test[-1]["total"] == len(planted.split("test"))
    calls = [event["calls"] for event in events]
    assert calls == sorted(calls) and calls[-1] == lm.budget.calls  # the test split does not restart the count


def test_the_proposer_models_calls_are_reported_beside_the_task_models(planted, tmp_path: Path) -> None:
    from optimizer.report import cost_rows

    lm = model(Cache(tmp_path / "c"), 300, RecordingBackend())
    proposer_backend = ScriptedBackend(lambda request: "Say what the item is about, in one word.")
    proposer = LM("fake/proposer", cache=lm.cache, budget=lm.budget, backend=proposer_backend)
    result = optimize(planted, lm, proposer=proposer, config=CONFIG, seed=1)
    usage = result.proposer_usage
    assert usage is not None and usage["lm_calls"] == proposer_backend.calls > 0
    assert usage["cost_usd"] == pytest.approx(0.001 * proposer_backend.calls)
    assert result.usage["lm_calls"] + usage["lm_calls"] == result.calls  # one budget, two models
    assert ["proposer: cost", f"${usage['cost_usd']:.4f}"] in cost_rows(result)
    assert optimize(planted, model(Cache(tmp_path / "d"), 300, RecordingBackend()), config=CONFIG,
                    seed=1).to_dict()["proposer_usage"] is None


def test_the_test_splits_calls_are_reported_beside_the_searchs(planted, tmp_path: Path) -> None:
    """The test split is scored outside the budget, by `test_lm`; its real calls, cost and call time are in the result
    and the report (the two together are every call the backend answered), not left out of them."""
    from optimizer.report import cost_rows

    class Timed(RecordingBackend):
        def call(self, request, timeout):
            return replace(super().call(request, timeout), latency_s=0.5)

    backend = Timed()
    lm = model(Cache(tmp_path / "c"), 300, backend)
    result = optimize(planted, lm, config=CONFIG, seed=1, test_lm=lm.with_budget(Budget()))
    usage, test_usage = result.usage, result.test_usage
    assert test_usage is not None and test_usage["lm_calls"] == 2 * len(planted.split("test"))
    assert usage["lm_calls"] + test_usage["lm_calls"] == backend.calls
    assert test_usage["cost_usd"] == pytest.approx(0.001 * test_usage["lm_calls"])
    assert result.to_dict()["test_usage"] == test_usage
    name = "test split and context probe (outside the budget)"
    assert [f"{name}: real LM calls / cache hits", f"{test_usage['lm_calls']} / 0"] in cost_rows(result)
    assert [f"{name}: cost", f"${test_usage['cost_usd']:.4f}"] in cost_rows(result)
    seconds = 0.5 * backend.calls  # all of them, not only the search's
    assert ["wall time", f"{result.wall_s:.1f} s (LM calls {seconds:.1f} s)"] in cost_rows(result)
    assert optimize(planted, model(Cache(tmp_path / "d"), 300, RecordingBackend()), config=CONFIG,
                    seed=1).test_usage is None


def test_a_litellm_embedder_reaches_the_api_base_in_optimize_and_advise(planted, tmp_path: Path, monkeypatch) -> None:
    """`--api-base` serves the embedder too (as in `eval`): the saved program's selector and advise's curves embed
    through it. LiteLLM's embedding call is replaced by one that records where it was sent."""
    from types import SimpleNamespace

    import litellm
    import numpy as np

    from optimizer.advise import AdviseConfig, measure

    sent: list[str | None] = []

    def embedding(**params):
        sent.append(params.get("api_base"))
        vectors = [np.random.default_rng(len(text)).random(8).tolist() for text in params["input"]]
        return SimpleNamespace(data=[{"index": i, "embedding": vector} for i, vector in enumerate(vectors)])

    monkeypatch.setattr(litellm, "embedding", embedding)
    base = "http://127.0.0.1:9/v1"
    lm = LM("fake/planted", api_base=base, cache=Cache(tmp_path / "c"), budget=Budget(600, charge_cache_hits=True),
            backend=RecordingBackend(), retry=RetryPolicy(base_s=0.001))
    settings = {"task": str(planted.root), "seed": 1, "dev_size": 20, "embedder": "openai/emb"}
    run = RunFolder.open(tmp_path / "run", False, settings)
    result = optimize(planted, lm, config=replace(CONFIG, embedder="openai/emb"), seed=1)
    assert sent and set(sent) == {base}
    sent.clear()
    run.finish(planted, result, LM("fake/planted", api_base=base, cache=Cache(tmp_path / "d"),
                                   backend=RecordingBackend()))
    assert sent and set(sent) == {base}
    sent.clear()
    fresh = LM("fake/planted", api_base=base, cache=Cache(tmp_path / "e"), backend=RecordingBackend())
    measure(planted, fresh, config=AdviseConfig(limit=10, ks=(0, 2), embedder="openai/emb"))
    assert sent and set(sent) == {base}
