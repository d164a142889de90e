"""Proposals from error groups: rule patches, best-first order, and LLM critique -> rewrite with a proposer model
that never gets to copy dev or test inputs into the instruction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ScriptedBackend
from optimizer.analyze import Analysis, ErrorGroup
from optimizer.cache import Cache
from optimizer.lm import LM, Budget, LMRequest
from optimizer.prompt import Prompt
from optimizer.propose import contrast_rule, critique_groups, demo_settings, form_rule, leaks, propose
from optimizer.retry import RetryPolicy
from optimizer.task import Example, Task

TASK = Task(name="t", description="Say which letter.", inputs=("text",), output="label", output_type="label",
            metric="label_match", instruction="Say which letter.", labels=("alpha", "beta"))
POOL = [Example(id=f"p{i}", inputs={"text": f"train item {i}"}, gold=("alpha", "beta")[i % 2]) for i in range(10)]
HELDOUT = "this dev input must never be quoted"


def group(kind: str, confusions=()) -> ErrorGroup:
    example = {"inputs": {"text": "train item 3"}, "output": "gamma", "gold": "beta"}
    return ErrorGroup(kind=kind, size=4, row_ids=("p3",), confusions=tuple(confusions), examples=(example,),
                      summary=f"template summary of {kind}")


ANALYSIS = Analysis(n=10, kinds={"label_outside_set": 4, "content": 4},
                    groups=(group("label_outside_set"), group("content", [("alpha", "beta", 4)])))


def proposer(answers: dict[str, str], cache_dir: Path) -> LM:
    def answer(request: LMRequest) -> str:
        text = request.messages[-1]["content"]
        return next(reply for start, reply in answers.items() if text.startswith(start))

    return LM("fake/proposer", cache=Cache(cache_dir), budget=Budget(),
              backend=ScriptedBackend(answer), retry=RetryPolicy(base_s=0.001))


def test_rules_need_no_model_and_come_best_first() -> None:
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local")
    origins = [p.origin for p in proposals]
    assert origins[:3] == ["stacked", "rule:all", "constrain"] and origins[3].startswith("demos:")
    stacked = proposals[0].prompt
    assert stacked.constrain and (stacked.k, stacked.strategy) == (8, "knn")
    assert stacked.instruction == proposals[1].prompt.instruction
    assert {"rule:label_outside_set", "rule:content"} <= set(origins)
    everything = proposals[1].prompt.instruction
    assert "Reply with exactly one label from this list and nothing else: alpha, beta." in everything
    assert 'Do not confuse alpha with beta.' in everything and '"train item' in everything
    assert len({p.prompt.key() for p in proposals}) == len(proposals)


def test_every_confused_pair_gets_one_contrast_rule() -> None:
    """Two content groups confusing different pairs give two rules; a pair confused both ways gives one."""
    task = replace(TASK, labels=("alpha", "beta", "gamma"))
    pool = [*POOL, Example(id="g", inputs={"text": "train item g"}, gold="gamma")]
    groups = (group("content", [("beta", "alpha", 3)]), group("content", [("alpha", "gamma", 2)]),
              group("content", [("alpha", "beta", 2)]))
    proposals = propose(task, Prompt(task.instruction), Analysis(10, {"content": 7}, groups), pool, backend="local")
    rules = {p.origin: p.prompt.instruction for p in proposals if p.origin.startswith("rule:")}
    assert list(rules) == ["rule:all", "rule:content", "rule:content#2"]
    everything = rules["rule:all"]
    assert everything.count("Do not confuse alpha with beta.") == 1 and "with alpha" not in everything
    assert "Do not confuse alpha with gamma." in everything


def test_labels_with_commas_are_quoted_in_the_label_list() -> None:
    assert form_rule(TASK).endswith("from this list and nothing else: alpha, beta.")
    assert form_rule(replace(TASK, labels=("yes, clearly", "no"))).endswith('nothing else: "yes, clearly", "no".')


def test_a_small_pool_gives_fixed_sets_that_differ() -> None:
    """A pool of 16 or fewer gives fixed sets of half of it: draws of the whole pool would be one set reordered."""
    fixed = [p.prompt.demo_ids for p in demo_settings(TASK, Prompt(TASK.instruction), POOL, 0, draws=8)
             if p.prompt.strategy == "fixed"]
    assert len(fixed) == 8 and {len(ids) for ids in fixed} == {5}
    assert len({frozenset(ids) for ids in fixed}) > 1


def test_a_contrast_rule_quotes_a_long_example_cut_between_words() -> None:
    words = " ".join(f"word{i}" for i in range(60))  # 479 characters
    pool = [Example(id="a", inputs={"text": words}, gold="alpha"), Example(id="b", inputs={"text": "short"}, gold="beta")]
    rule = contrast_rule(TASK, "alpha", "beta", pool, seed=0)
    quoted = rule.split('"')[1]
    assert len(quoted) <= 160 and quoted.endswith(" ...")
    assert words.startswith(quoted.removesuffix(" ...") + " ")  # ends on a whole word, not a cut one
    assert rule.endswith('"short" is beta.')


def test_already_tried_prompts_are_not_proposed_again() -> None:
    first = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local")
    again = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local",
                    tried={p.prompt.key() for p in first[:3]})
    assert [p.origin for p in again] == [p.origin for p in first[3:]]


def test_litellm_backends_get_no_label_constraint() -> None:
    origins = [p.origin for p in propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="litellm")]
    assert "constrain" not in origins


def test_proposer_critiques_groups_then_rewrites(tmp_path: Path) -> None:
    lm = proposer({"You improve instructions": "It answers with words outside the label set.",
                   "Current instruction": "Say which letter. Answer alpha or beta only."}, tmp_path)
    analysis = critique_groups(TASK, Prompt(TASK.instruction), ANALYSIS, lm)
    assert [g.summary for g in analysis.groups] == ["It answers with words outside the label set."] * 2
    proposals = propose(TASK, Prompt(TASK.instruction), analysis, POOL, backend="local", proposer=lm,
                        heldout=[HELDOUT])
    rewrites = [p for p in proposals if p.origin.startswith("llm:")]
    assert rewrites and rewrites[0].prompt.instruction == "Say which letter. Answer alpha or beta only."
    assert proposals.index(rewrites[0]) == 2  # right after the stacked and the combined rule patch
    assert lm.usage.calls == 3  # two critiques, one edit (the second edit is the same request, cached)


def test_rewrites_quoting_heldout_inputs_are_dropped(tmp_path: Path) -> None:
    lm = proposer({"You improve instructions": "Memorise the dev set.",
                   "Current instruction": f'Say which letter. "{HELDOUT}" is alpha.'}, tmp_path)
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local", proposer=lm,
                        heldout=[HELDOUT])
    assert not [p for p in proposals if p.origin.startswith("llm:")]
    assert leaks(f"x {HELDOUT} y", [HELDOUT]) and not leaks("short", ["short"])


@pytest.mark.parametrize("reply, instruction", [
    ("<<<\nName the letter, in one word.\n>>>", "Name the letter, in one word."),
    ("<task>Say which letter.</task> Answer in <answer></answer>",
     "<task>Say which letter.</task> Answer in <answer></answer>"),
])
def test_a_rewrite_loses_only_the_echoed_delimiters(reply: str, instruction: str, tmp_path: Path) -> None:
    lm = proposer({"You improve instructions": "It rambles.", "Current instruction": reply}, tmp_path)
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local", proposer=lm,
                        heldout=[HELDOUT])
    assert {p.prompt.instruction for p in proposals if p.origin.startswith("llm:")} == {instruction}


def test_no_proposal_asks_for_more_demos_than_a_small_pool_holds(tmp_path: Path) -> None:
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL[:3], backend="local")
    demos = [proposal.prompt.k for proposal in proposals if proposal.prompt.k]
    assert demos and max(demos) == 3
    assert not [p for p in propose(TASK, Prompt(TASK.instruction), ANALYSIS, [], backend="local") if p.prompt.k]


def test_optimize_runs_on_a_task_of_five_examples(tmp_path: Path) -> None:
    from conftest import write_greek_task
    from optimizer.search import SearchConfig, optimize
    from optimizer.task import load_task
    from test_search import RecordingBackend

    task = load_task(write_greek_task(tmp_path / "tiny", 5, 2, 2))
    lm = LM("fake/tiny", cache=Cache(tmp_path / "c"), budget=Budget(200, charge_cache_hits=True),
            backend=RecordingBackend(), retry=RetryPolicy(base_s=0.001))
    result = optimize(task, lm, config=SearchConfig(analysis_size=5, race_sizes=(5,), dev_size=2), seed=1)
    assert result.dev_scores["best"] >= result.dev_scores["baseline"] and result.best.k <= 5


def test_a_contrast_rule_quotes_text_without_spaces_cut_mid_word() -> None:
    chinese = "这部电影的剧情非常精彩演员的表演也很出色" * 12  # 240 characters, no space to cut at
    pool = [Example(id="a", inputs={"text": chinese}, gold="alpha"), Example(id="b", inputs={"text": " "}, gold="beta")]
    rule = contrast_rule(TASK, "alpha", "beta", pool, seed=0)
    assert rule == f'Do not confuse alpha with beta. "{chinese[:156]} ..." is alpha.'  # an empty input is not quoted


def test_a_contrast_rule_never_quotes_a_train_example_that_is_a_heldout_input() -> None:
    duplicate = "this sentence is in train and in test"
    pool = [Example(id="a", inputs={"text": duplicate}, gold="alpha"),
            Example(id="b", inputs={"text": "another alpha example"}, gold="alpha")]
    rule = contrast_rule(TASK, "alpha", "beta", pool, seed=0, heldout=[duplicate.replace(" in ", "\n in ")])
    assert rule == 'Do not confuse alpha with beta. "another alpha example" is alpha.'
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, pool, backend="local", heldout=[duplicate])
    assert not [p for p in proposals if leaks(p.prompt.instruction, [duplicate])]


def test_a_rewrite_quoting_a_heldout_input_with_other_whitespace_leaks() -> None:
    assert leaks("Examples: this dev input must never\nbe   quoted.", [HELDOUT])
    assert leaks(f"x {HELDOUT} y", ["this dev input\n  must never be quoted"])


def test_a_rewrite_equal_to_the_incumbent_is_not_proposed(tmp_path: Path) -> None:
    lm = proposer({"You improve instructions": "Fine as it is.", "Current instruction": TASK.instruction}, tmp_path)
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local", proposer=lm)
    assert Prompt(TASK.instruction).key() not in {p.prompt.key() for p in proposals}


def test_dev_carved_from_train_counts_as_heldout(tmp_path: Path) -> None:
    from conftest import GREEK_SPEC, greek_rows, write_task
    from optimizer.embed import make_embedder
    from optimizer.search import SearchConfig, _Search
    from optimizer.task import load_task

    spec = {**GREEK_SPEC, "data": {"train": "train.jsonl", "test": "test.jsonl"}}
    task = load_task(write_task(tmp_path / "t", spec, {"train.jsonl": greek_rows(0, 30),
                                                      "test.jsonl": greek_rows(30, 5)}))
    lm = LM("fake/x", cache=Cache(tmp_path / "c"), budget=Budget(), backend=ScriptedBackend(lambda r: "alpha"))
    search = _Search(task, lm, proposer=None, config=SearchConfig(dev_size=6), seed=0, on_event=None,
                     checkpoint=None, embedder=make_embedder("tfidf"))
    assert search.dev and {e.inputs["text"] for e in search.dev} <= set(search.heldout)
    assert {e.inputs["text"] for e in task.split("test")} <= set(search.heldout)
