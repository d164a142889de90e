"""The LM front: cache first, retries with backoff, a hard budget, accounting, concurrency; secrets stay out."""

from __future__ import annotations

import itertools
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest

from conftest import last_user_text
from optimizer.errors import BudgetExhausted, ConfigError, LMCallError, ModelError
from optimizer.lm import LM, Budget, LMRequest, LMResponse
from optimizer.retry import RetryPolicy, is_retryable


class HTTPError(Exception):
    def __init__(self, status: int, retry_after: str | None = None, **headers: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        headers = {name.replace("_", "-"): value for name, value in headers.items()}
        self.response = type("R", (), {"headers": {"retry-after": retry_after, **headers} if retry_after else headers})()


def ask(text: str, **kw) -> LMRequest:
    return LMRequest(messages=({"role": "user", "content": text},), **kw)


def test_cache_hit_makes_no_call(scripted_lm) -> None:
    lm = scripted_lm(lambda r: last_user_text(r).upper())
    assert lm(ask("hi")).text == "HI"
    again = lm(ask("hi"))
    assert again.text == "HI" and again.cached
    assert lm.backend.calls == 1
    assert (lm.usage.calls, lm.usage.cache_hits) == (1, 1)


def test_every_sampling_parameter_is_in_the_key(scripted_lm) -> None:
    lm = scripted_lm(lambda r: "x")
    base = ask("hi")
    variants = [ask("hi", temperature=0.5), ask("hi", max_tokens=7), ask("hi", stop=("\n",)), ask("hi", seed=3),
                ask("hi", extra={"top_p": 0.9}), ask("hello")]
    keys = {lm.key(r) for r in [base, *variants]}
    assert len(keys) == 1 + len(variants)
    other_base = LM("openai/x", api_base="http://127.0.0.1:9/v1", cache=lm.cache, backend=lm.backend)
    assert other_base.key(base) != lm.key(base)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retries_transient_errors_then_succeeds(scripted_lm, status: int) -> None:
    failures = iter([HTTPError(status), HTTPError(status)])

    def reply(request):
        error = next(failures, None)
        if error:
            raise error
        return "ok"

    lm = scripted_lm(reply)
    assert lm(ask("x")).text == "ok"
    assert lm.usage.retries == 2 and lm.usage.calls == 1


def test_timeouts_are_retried(scripted_lm) -> None:
    attempts = itertools.count()

    def reply(request):
        if next(attempts) < 1:
            raise TimeoutError("slow")
        return "ok"

    assert scripted_lm(reply)(ask("x")).text == "ok"


def test_gives_up_cleanly_after_max_retries(scripted_lm) -> None:
    def reply(request):
        raise HTTPError(503)

    lm = scripted_lm(reply, retry=RetryPolicy(max_retries=3, base_s=0.001))
    with pytest.raises(LMCallError, match="after 4 attempts"):
        lm(ask("x"))
    assert lm.backend.calls == 4


def test_a_server_that_dies_after_answering_is_a_failed_call_for_every_twin(scripted_lm) -> None:
    """`optimize` scores test with `lm.with_budget(Budget())`, made before the search: a server that answered the
    search and then died is a failed call (exit 1), not "cannot reach" (exit 2, bad input), for that twin too."""
    up = [True]

    def reply(request):
        if not up[0]:
            raise ConnectionRefusedError("connection refused")
        return "ok"

    lm = scripted_lm(reply)
    test_lm = lm.with_budget(Budget())
    lm(ask("search"))
    up[0] = False
    with pytest.raises(LMCallError, match="call failed after 6 attempts"):
        test_lm(ask("test"))


@pytest.mark.parametrize(("status", "error"), [(400, LMCallError), (401, ConfigError), (404, ModelError)])
def test_client_errors_are_not_retried(scripted_lm, status: int, error: type) -> None:
    def reply(request):
        raise HTTPError(status)

    lm = scripted_lm(reply)
    with pytest.raises(error):
        lm(ask("x"))
    assert lm.backend.calls == 1


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "gemini/gemini-1.5-flash"])
def test_a_missing_api_key_is_a_config_error_at_once(model: str, tmp_path, monkeypatch) -> None:
    """The real LiteLLM client with no key in the environment raises before any request, wrapped as a 500
    (OpenAI) or a connection error (Gemini): it was retried 6 times, then "call failed" (exit 1) or "cannot reach"."""
    from optimizer.cache import Cache

    for name in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    lm = LM(model, cache=Cache(tmp_path), retry=RetryPolicy(base_s=0.001))
    with pytest.raises(ConfigError, match=r"not authorised \(no API key\); set the provider's API key"):
        lm(ask("hello"))
    assert lm.usage.retries == 0


def test_retry_after_is_honoured(scripted_lm, monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("optimizer.retry.time.sleep", slept.append)
    failures = iter([HTTPError(429, retry_after="2")])

    def reply(request):
        error = next(failures, None)
        if error:
            raise error
        return "ok"

    scripted_lm(reply)(ask("x"))
    assert slept == [2.0]


def test_retry_after_as_an_http_date_or_in_milliseconds_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9110 allows an HTTP date; OpenAI and Azure send `retry-after-ms`. Unreadable, NaN or past values fall
    back to the backoff, huge ones are capped."""
    monkeypatch.setattr(random, "uniform", lambda low, high: 0.0)
    monkeypatch.setattr("optimizer.retry.time.time", lambda: 1_800_000_000.0)
    policy = RetryPolicy(base_s=1.0, cap_s=30.0)
    in_20_s = formatdate(1_800_000_020, usegmt=True)
    assert policy.delay(0, HTTPError(429, retry_after=in_20_s)) == pytest.approx(20.0)
    assert policy.delay(0, HTTPError(429, retry_after_ms="7000")) == 7.0
    assert policy.delay(0, HTTPError(429, retry_after="2", retry_after_ms="2500")) == 2.5
    assert policy.delay(0, HTTPError(503, retry_after=formatdate(1_799_999_000, usegmt=True))) == 0.0
    for unusable in ("soon", "nan", "-3", "Mon, 99 Foo 2026 25:61:00 GMT"):
        assert policy.delay(0, HTTPError(429, retry_after=unusable)) == 0.0, unusable
    assert policy.delay(0, HTTPError(429, retry_after="1e300")) == 30.0


def test_backoff_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter: a uniform draw from 0 to base * 2**attempt, capped; drawn at the top, the delays double."""
    ranges: list[tuple[float, float]] = []
    monkeypatch.setattr(random, "uniform", lambda low, high: ranges.append((low, high)) or high)
    policy = RetryPolicy(base_s=1.0, cap_s=5.0)
    assert [policy.delay(attempt, Exception()) for attempt in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert [low for low, _ in ranges] == [0] * 6


def test_budget_is_never_exceeded_and_cache_hits_are_free(scripted_lm) -> None:
    lm = scripted_lm(lambda r: "x", budget=3)
    for i in range(3):
        lm(ask(str(i)))
    lm(ask("0"))  # a cache hit costs nothing
    with pytest.raises(BudgetExhausted):
        lm(ask("new"))
    assert lm.backend.calls == 3 and lm.budget.remaining == 0


def test_a_stage_spends_within_the_command_budget_and_counts_in_its_usage(scripted_lm) -> None:
    lm = scripted_lm(lambda r: "x", budget=5)
    lm(ask("before"))
    stage = lm.stage(100)
    for i in range(4):
        stage(ask(str(i)))
    stage(ask("0"))  # a cache hit: charged to the stage (it replays decisions), free for the command
    assert (stage.budget.calls, lm.budget.calls, lm.budget.remaining, stage.budget.remaining) == (4, 5, 0, 0)
    with pytest.raises(BudgetExhausted, match="budget of 5"):
        stage(ask("one too many"))
    assert lm.backend.calls == 5 and stage.usage.calls == 4 and stage.usage.cache_hits == 1
    assert lm.usage.calls == 5 and lm.usage.cache_hits == 1  # the stage's calls count in the command's usage
    small = scripted_lm(lambda r: "x").stage(2)
    small(ask("a")), small(ask("b"))
    with pytest.raises(BudgetExhausted, match="budget of 2"):
        small(ask("c"))


def test_dollar_budget(scripted_lm, cache) -> None:
    lm = scripted_lm(lambda r: "x")
    lm.budget = Budget(max_dollars=0.0025)
    lm(ask("a")), lm(ask("b")), lm(ask("c"))
    with pytest.raises(BudgetExhausted, match=r"\$0\.00"):
        lm(ask("d"))


def test_a_dollar_cap_on_a_model_without_a_price_is_refused_and_keeps_the_answer(cache) -> None:
    """LiteLLM knows no price for most models behind --api-base (cost None): a dollar cap could never bind, so the
    first answer is kept in the cache and the run stops with a ConfigError instead of spending without a limit."""

    class Unpriced:
        mode, calls = "chat", 0

        def call(self, request, timeout):
            self.calls += 1
            return LMResponse(text="x", prompt_tokens=5, completion_tokens=1, cost=None)

    lm = LM("fake/unpriced", cache=cache, budget=Budget(max_dollars=5.0), backend=Unpriced())
    with pytest.raises(ConfigError, match=r"--max-dollars 5 cannot be kept: the price .* is unknown"):
        lm(ask("a"))
    assert lm.backend.calls == 1 and len(cache.keys("lm")) == 1
    assert LM("fake/unpriced", cache=cache, backend=Unpriced())(ask("a")).cached  # no cap: the answer is kept
    stage = LM("fake/unpriced", cache=cache, budget=Budget(max_dollars=5.0), backend=Unpriced()).stage(10)
    with pytest.raises(ConfigError):  # the cap of the command a stage runs within
        stage(ask("b"))


def test_map_runs_concurrently_and_keeps_order(scripted_lm) -> None:
    lm = scripted_lm(lambda r: last_user_text(r) * 2, concurrency=8)
    seen = []
    results = lm.map([ask(str(i)) for i in range(50)], on_result=lambda i, r: seen.append(i))
    assert [r.text for r in results] == [str(i) * 2 for i in range(50)]
    assert sorted(seen) == list(range(50))


@pytest.fixture
def ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C raises KeyboardInterrupt in the main thread, whatever pytest started with (a shell's background job
    ignores SIGINT); the event is set once the main thread took it."""
    taken = threading.Event()

    def on_sigint(signum, frame):
        taken.set()
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, on_sigint)
    yield taken
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_map_stops_the_retries_of_running_calls(scripted_lm, ctrl_c) -> None:
    """A server that never answers: after Ctrl-C the two running calls end at their current try instead of making
    all 31 (a Ctrl-C took max_retries x --timeout to take effect: 35 s at --timeout 4, minutes at the default)."""
    main = threading.get_ident()
    tries = itertools.count(1)

    def reply(request):
        if next(tries) == 3:
            signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C, while the main thread waits in map
        raise TimeoutError("no answer")

    lm = scripted_lm(reply, concurrency=2, retry=RetryPolicy(max_retries=30, base_s=0.01, cap_s=0.01))
    with pytest.raises(KeyboardInterrupt):
        lm.map([ask(str(i)) for i in range(4)])
    assert lm.backend.calls <= 6  # without the stop: 2 x 31


def test_ctrl_c_taken_by_a_worker_thread_stops_map_at_once(scripted_lm, ctrl_c) -> None:
    """The kernel may hand a process's SIGINT to any thread; when a worker took it, the main thread slept in map
    until every queued call had run (test_interrupt saw 20 and 44 calls under load). Now no call starts after it."""
    def reply(request):
        if last_user_text(request) == "3":
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # Ctrl-C, delivered to this worker thread
            assert ctrl_c.wait(10), "the main thread did not take the Ctrl-C while the call ran"
        return "x"

    lm = scripted_lm(reply, concurrency=1)
    with pytest.raises(KeyboardInterrupt):
        lm.map([ask(str(i)) for i in range(20)])
    assert lm.backend.calls == 4 and len(lm.cache.keys("lm")) == 4  # 0-3: the call in flight ends and is kept


def test_duplicate_requests_in_flight_are_sent_once_and_within_the_budget(scripted_lm) -> None:
    """The same input twice in one `map` (a dataset's duplicate rows, k=0): the copies started while the first was
    in flight each made a real call the budget did not charge (a key is charged once), so budget 2 made 5 calls."""
    sent: list[str] = []
    another_call = threading.Event()

    def reply(request):
        sent.append(last_user_text(request))
        if len(sent) == 1:
            another_call.wait(1.0)  # the first "a" is still in flight when its duplicates start
        another_call.set()
        return "ok"

    lm = scripted_lm(reply, budget=2, concurrency=4)
    results = lm.map([ask(text) for text in ["a", "a", "a", "a", "b"]])
    assert sent == ["a", "b"]  # before: a, a, a, a, b: 5 real calls on a budget of 2
    assert [r.cached for r in results].count(True) == 3 and lm.usage.calls == 2 and lm.budget.calls == 2


def test_map_stops_at_the_budget_and_keeps_what_finished(scripted_lm) -> None:
    lm = scripted_lm(lambda r: "x", budget=5, concurrency=2)
    with pytest.raises(BudgetExhausted):
        lm.map([ask(str(i)) for i in range(20)])
    assert lm.backend.calls == 5
    assert len(lm.cache.keys("lm")) == 5


def test_a_gguf_path_in_two_folders_is_two_models_in_the_cache(cache, tmp_path, monkeypatch) -> None:
    """`--model local/m.gguf` run in folder a, then in folder b (another file of the same name) on one cache: b's
    model must answer, not a's cached answers."""
    from conftest import ScriptedBackend

    answers = {}
    for folder, content in (("a", b"GGUF model a"), ("b", b"GGUF model b, larger")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.gguf").write_bytes(content)
        monkeypatch.chdir(tmp_path / folder)
        backend = ScriptedBackend(lambda request, folder=folder: f"from {folder}")
        answers[folder] = LM("local/m.gguf", cache=cache, backend=backend)(ask("same question"))
        assert backend.calls == 1
    assert answers["b"].text == "from b" and not answers["b"].cached
    assert LM("local/smollm2-135m").identity() == {"model": "local/smollm2-135m", "api_base": None}


def test_unknown_models_are_refused() -> None:
    with pytest.raises(ModelError, match="unknown local model 'local/nope'"):
        LM("local/nope").mode
    with pytest.raises(ModelError, match="unknown model"):
        LM("nosuchprovider/some-model")


def test_a_hugging_face_style_name_on_an_api_base_is_a_model_not_a_provider(llama_server, tmp_path) -> None:
    """vLLM, TGI and llama.cpp servers name models `org/name`; with --api-base that is the model on that server
    (LiteLLM's openai/ route), while a LiteLLM provider prefix such as hosted_vllm/ is kept."""
    from optimizer.cache import Cache
    from optimizer.embed import LiteLLMEmbedder

    name = "HuggingFaceTB/SmolLM2-135M-Instruct"
    url = llama_server(name)
    lm = LM(name, api_base=url, cache=Cache(tmp_path), timeout=120)
    assert lm.backend.model == f"openai/{name}"
    assert lm(ask("Say hi", max_tokens=4)).completion_tokens > 0
    assert LM(f"hosted_vllm/{name}", api_base=url, cache=Cache(tmp_path)).backend.model == f"hosted_vllm/{name}"
    assert LiteLLMEmbedder("BAAI/bge-small-en-v1.5", api_base=url).model == "openai/BAAI/bge-small-en-v1.5"


def test_api_key_never_reaches_the_cache(scripted_lm, monkeypatch) -> None:
    sentinel = "sk-SENTINEL-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", sentinel)
    lm = scripted_lm(lambda r: "fine")
    lm(ask("hello"))
    assert sentinel.encode() not in lm.cache.path.read_bytes()
    assert sentinel not in json.dumps(lm.identity())


def test_error_messages_redact_keys(scripted_lm, monkeypatch) -> None:
    sentinel = "sk-SENTINEL-abcdefghij"
    monkeypatch.setenv("MY_PROVIDER_API_KEY", sentinel)

    def reply(request):
        raise ValueError(f"bad request with key {sentinel}")

    with pytest.raises(LMCallError) as info:
        scripted_lm(reply)(ask("x"))
    assert sentinel not in str(info.value) and "***" in str(info.value)


def test_retryable_classification() -> None:
    assert is_retryable(TimeoutError()) and is_retryable(HTTPError(429)) and is_retryable(HTTPError(503))
    assert not is_retryable(HTTPError(400)) and not is_retryable(ValueError())


def test_the_context_window_of_an_unknown_model_is_a_default_and_prints_nothing(scripted_lm, capsys) -> None:
    assert scripted_lm(lambda r: "x").context_window == 8192
    assert capsys.readouterr().out == ""  # LiteLLM's "Provider List" banner would break --json


def test_a_local_calls_latency_leaves_out_its_wait_for_another_calls_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local calls are serialised; `latency_s` (and so `call_seconds`) is the call's own time. A fake clock moves one
    second per llama.cpp call; a second call is asked while the first runs, and the first waits (up to 1 s) for the
    second to read the clock, which it did before the fix, outside the lock."""
    from optimizer.lm import LocalBackend

    clock, reads, entered = [0.0], [], threading.Event()

    def perf_counter() -> float:
        reads.append(clock[0])
        return clock[0]

    class Llama:
        def create_chat_completion(self, **_: object) -> dict:
            if not entered.is_set():
                entered.set()
                deadline = time.monotonic() + 1.0
                while len(reads) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
            clock[0] += 1.0
            return {"choices": [{"message": {"content": "ok"}}], "usage": {}}

    monkeypatch.setattr("optimizer.lm.time.perf_counter", perf_counter)
    backend = LocalBackend.__new__(LocalBackend)
    backend._lock, backend._llama, backend.mode = threading.Lock(), Llama(), "chat"
    request = LMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=4)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(backend.call, request, 1.0)
        assert entered.wait(5)
        second = pool.submit(backend.call, request, 1.0)
        assert [first.result().latency_s, second.result().latency_s] == [1.0, 1.0]
