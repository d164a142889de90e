"""Prompts longer than the model's context window: one failed row of kind `too_long`, never a stopped run; no
instruction patch or rewrite is spent on them; the search moves on to demo settings that fit. Real llama.cpp, in
process and behind its OpenAI-compatible server, gives the errors this recognises."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ScriptedBackend
from optimizer.analyze import analyze
from optimizer.cache import Cache
from optimizer.embed import make_embedder
from optimizer.errors import PromptTooLong
from optimizer.evaluate import evaluate
from optimizer.lm import LM, Budget, LMRequest
from optimizer.prompt import Prompt
from optimizer.propose import propose
from optimizer.retry import RetryPolicy
from optimizer.search import SearchConfig, optimize
from optimizer.task import Example, Task
from test_propose import ANALYSIS, POOL, TASK, group, proposer
from test_search import planted_model


class ContextWindowExceededError(Exception):
    """Shaped like LiteLLM's error for an OpenAI-compatible server's "maximum context length" 400."""

    status_code = 400


LLAMA_CPP = ValueError("Requested tokens (431) exceed context window of 256")
LITELLM = ContextWindowExceededError("OpenAIException - This model's maximum context length is 256 tokens.")


def overflowing(limit: int, reply=lambda request: "yes"):
    """A model whose context holds at most `limit` characters of user text; longer prompts raise llama.cpp's error."""
    def answer(request: LMRequest) -> str:
        if sum(len(message["content"]) for message in request.messages) > limit:
            raise LLAMA_CPP
        return reply(request)

    return answer


def scripted(reply, cache_dir: Path) -> LM:
    return LM("fake/small", cache=Cache(cache_dir), budget=Budget(), backend=ScriptedBackend(reply),
              retry=RetryPolicy(base_s=0.001))


@pytest.mark.parametrize("error", [LLAMA_CPP, LITELLM], ids=["llama.cpp", "litellm"])
def test_a_context_overflow_is_prompt_too_long_at_once_and_not_cached(error: Exception, tmp_path: Path) -> None:
    def reply(request: LMRequest) -> str:
        raise error

    lm = scripted(reply, tmp_path)
    with pytest.raises(PromptTooLong, match="context window"):
        lm(LMRequest(messages=({"role": "user", "content": "x"},)))
    assert lm.backend.calls == 1 and lm.usage.retries == 0
    with pytest.raises(PromptTooLong):
        lm(LMRequest(messages=({"role": "user", "content": "x"},)))
    assert lm.backend.calls == 2  # a refusal is no answer: nothing was cached


def test_evaluate_scores_a_prompt_too_long_as_a_form_failure_and_goes_on(tmp_path: Path) -> None:
    examples = [Example(id=f"e{i}", inputs={"text": ("long " * 50 if i % 3 == 0 else "short") + f" {i}"},
                        gold="yes") for i in range(9)]
    lm = scripted(overflowing(200), tmp_path)
    result = evaluate(TASK, "Say yes or no.", lm, examples)
    assert [row.id for row in result.rows] == [example.id for example in examples] and result.stopped is None
    too_long = [row.id for row in result.rows if row.error_kind == "too_long"]
    assert too_long == ["e0", "e3", "e6"] and result.score == pytest.approx(6 / 9)
    assert all(row.output == "" and row.score == 0.0 for row in result.rows if row.error_kind == "too_long")
    analysis = analyze(TASK, result, make_embedder("tfidf"))
    assert analysis.kinds == {"too_long": 3} and analysis.shares()["form"] == 1.0
    assert "context window" in analysis.groups[0].summary


def test_no_patch_or_rewrite_is_spent_on_a_too_long_group(tmp_path: Path) -> None:
    lm = proposer({"You improve instructions": "critique", "Current instruction": "Say which letter, briefly."},
                  tmp_path)
    analysis = type(ANALYSIS)(n=10, kinds={"too_long": 4, "content": 4},
                              groups=(group("too_long"), group("content", [("alpha", "beta", 4)])))
    proposals = propose(TASK, Prompt(TASK.instruction), analysis, POOL, backend="local", proposer=lm)
    origins = [proposal.origin for proposal in proposals]
    assert "rule:content" in origins and "llm:content" in origins
    assert not [origin for origin in origins if origin.endswith("too_long")]
    assert lm.usage.calls == 1  # one edit, for the content group only


def test_a_proposer_question_too_long_for_its_context_is_skipped(tmp_path: Path) -> None:
    lm = scripted(overflowing(10), tmp_path)
    proposals = propose(TASK, Prompt(TASK.instruction), ANALYSIS, POOL, backend="local", proposer=lm)
    assert proposals and not [proposal for proposal in proposals if proposal.origin.startswith("llm:")]


def test_the_search_finishes_when_its_largest_demo_sets_do_not_fit(planted, tmp_path: Path) -> None:
    """Prompts with more than 8 demos overflow: knn-16 and the fixed sets of 16 fail as `too_long`; the search
    still finds the planted fix and keeps a prompt that fits."""
    def answer(request: LMRequest) -> str:
        if len(request.messages) > 2 * 8 + 2:
            raise LLAMA_CPP
        return planted_model(request)

    lm = LM("fake/planted", cache=Cache(tmp_path / "c"), budget=Budget(600), backend=ScriptedBackend(answer),
            retry=RetryPolicy(base_s=0.001))
    config = SearchConfig(rounds=3, analysis_size=24, race_sizes=(8, 16), dev_size=20)
    result = optimize(planted, lm, config=config, seed=1, test_lm=lm.with_budget(Budget()))
    assert result.dev_scores["best"] == 1.0 and result.best.k <= 8
    tried = {candidate.origin for candidate in result.candidates}
    assert "demos:knn-16" in tried  # it was tried, scored as failures, and lost


def test_real_llama_cpp_in_process_overflow_is_one_failed_row(tmp_path: Path) -> None:
    task = Task(name="t", description="Say yes or no.", inputs=("text",), output="label", output_type="label",
                metric="label_match", instruction="Say yes or no.", labels=("yes", "no"))
    examples = [Example(id="long", inputs={"text": "word " * 400}, gold="yes"),
                Example(id="short", inputs={"text": "Is water wet?"}, gold="yes")]
    lm = LM("local/smollm2-135m", cache=Cache(tmp_path), n_ctx=256)
    result = evaluate(task, task.instruction, lm, examples)
    assert [row.error_kind for row in result.rows][0] == "too_long"
    assert result.rows[1].output and result.rows[1].error_kind != "too_long" and lm.usage.calls == 1


def test_real_server_overflow_through_litellm_is_prompt_too_long(server: str, tmp_path: Path) -> None:
    lm = LM("openai/smollm2", api_base=server, cache=Cache(tmp_path))
    with pytest.raises(PromptTooLong, match="context window"):
        lm(LMRequest(messages=({"role": "user", "content": "word " * 5000},), max_tokens=4))
    answer = lm(LMRequest(messages=({"role": "user", "content": "Say yes."},), max_tokens=4))
    assert answer.text and lm.usage.calls == 1  # the refusal was no call; the server still answers
