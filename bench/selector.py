"""Few-shot selector benchmark: (A) speed of `ExampleSelector.select` against bare numpy, (B) demo quality with
the real local model on banking77, trec and sst2.

A. speed (no model): pools of 10k and 100k random unit float32 vectors (d=384), k=8, one query per call. The
   selector is built with the public API (`fit`) on a stub embedder that returns the precomputed vectors, so
   `select` runs its real path (text -> embedder -> exact matrix product -> argpartition -> strategy -> dicts).
   The baseline is bare numpy (matrix @ query, argpartition top-k, sort), timed in the same loop, alternating
   which runs first. Also: the faiss HNSW index (if installed) with its recall against exact search, bytes per
   example (stored matrix / n and RSS growth), and embedding throughput of TF-IDF and MiniLM on banking77 texts.

B. quality: zero-shot vs random-k vs knn/mmr/label_quota-k (k in 4, 8; embedders tfidf and minilm) through
   `optimizer.evaluate.evaluate` with a demo source, the product's own prompts and parsing, plus the kNN-vote
   classifier (majority label of the same k nearest demos, no LM). LM answers are cached in --cache-dir, so a
   rerun resumes. Data come from ../shared/datasets (never copied), shuffled with a fixed seed.

    .venv/bin/python bench/selector.py --part speed --json --out bench/results/selector_speed.json
    .venv/bin/python bench/selector.py --part quality --datasets trec,sst2,banking77 \
        --out bench/results/selector_quality.json
    .venv/bin/python bench/selector.py --part report      # markdown tables from the two JSON files
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

# One thread everywhere unless the caller says otherwise (a shared 2-core machine); must precede numpy's import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from optimizer.cache import Cache  # noqa: E402
from optimizer.embed import CachedEmbedder, LiteLLMEmbedder, MiniLMEmbedder, TfidfEmbedder  # noqa: E402
from optimizer.evaluate import evaluate  # noqa: E402
from optimizer.lm import LM  # noqa: E402
from optimizer.select import DEDUPE, ExampleSelector, demo_source  # noqa: E402
from optimizer.task import Example, Task  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results"
SPEED_JSON = RESULTS / "selector_speed.json"
QUALITY_JSON = RESULTS / "selector_quality.json"


# --- helpers -------------------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# --- A. speed ------------------------------------------------------------------------------------------------------


class StubEmbedder:
    """Returns precomputed vectors by text (pool and query texts are looked up in one table)."""

    id = "bench-stub-vectors"

    def __init__(self, table: dict[str, int], vectors: np.ndarray) -> None:
        self.table, self.vectors = table, vectors

    def embed(self, texts):
        if len(texts) == 1:  # a view, like the baseline's query row: no copy
            row = self.table[texts[0]]
            return self.vectors[row:row + 1]
        return self.vectors[[self.table[text] for text in texts]]

    def spec(self):
        return {"kind": "bench-stub"}


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    matrix = rng.standard_normal((n, d), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The bare baseline: scores, argpartition top-k, sort (best first)."""
    scores = matrix @ query
    top = np.argpartition(scores, -k)[-k:]
    return top[np.argsort(scores[top])[::-1]]


def time_pool(n: int, d: int, k: int, n_queries: int, warmup: int, seed: int, hnsw: bool) -> dict:
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, n + n_queries + warmup, d)
    pool_texts = [f"p{i}" for i in range(n)]
    query_texts = [f"q{j}" for j in range(n_queries + warmup)]
    table = {f"text: {text}": i for i, text in enumerate(pool_texts + query_texts)}  # what text_of() gives
    stub = StubEmbedder(table, vectors)
    examples = [{"id": i, "text": text, "label": f"L{i % 50}"} for i, text in enumerate(pool_texts)]
    queries = vectors[n:]

    gc.collect()
    rss0 = rss_bytes()
    start = time.perf_counter()
    selector = ExampleSelector(stub, k, input_keys=["text"]).fit(examples)
    fit_s = time.perf_counter() - start
    gc.collect()
    rss_fit = rss_bytes() - rss0
    matrix = selector.matrix  # the baseline scans the very same array

    base_ns: list[int] = []
    sel_ns: list[int] = []
    agree = 0
    clock = time.perf_counter_ns
    for j in range(n_queries + warmup):
        query = {"text": query_texts[j]}
        qvec = queries[j]
        if j % 2 == 0:
            t0 = clock(); ref = brute_force(matrix, qvec, k); t1 = clock()
            got = selector.select(query); t2 = clock()
            tb, ts = t1 - t0, t2 - t1
        else:
            t0 = clock(); got = selector.select(query); t1 = clock()
            ref = brute_force(matrix, qvec, k); t2 = clock()
            ts, tb = t1 - t0, t2 - t1
        if j >= warmup:
            base_ns.append(tb)
            sel_ns.append(ts)
            agree += [e["id"] for e in got][::-1] == [int(i) for i in ref]
    paired = [b / s for b, s in zip(base_ns, sel_ns)]
    row = {
        "n": n, "d": d, "k": k, "queries": n_queries,
        "fit_s": fit_s,
        "baseline_p50_ms": pct(base_ns, 50) / 1e6, "baseline_p99_ms": pct(base_ns, 99) / 1e6,
        "selector_p50_ms": pct(sel_ns, 50) / 1e6, "selector_p99_ms": pct(sel_ns, 99) / 1e6,
        "ratio_p50": pct(base_ns, 50) / pct(sel_ns, 50),
        "ratio_mean": float(np.mean(base_ns) / np.mean(sel_ns)),
        "ratio_paired_median": statistics.median(paired),
        "same_topk_as_baseline": agree / n_queries,
        "matrix_bytes_per_example": selector.matrix.nbytes / n,
        "rss_growth_fit_bytes_per_example": rss_fit / n,
    }
    log(f"exact n={n}: baseline p50 {row['baseline_p50_ms']:.3f} ms, selector p50 {row['selector_p50_ms']:.3f} ms,"
        f" ratio p50 {row['ratio_p50']:.3f}, paired {row['ratio_paired_median']:.3f}, agree {row['same_topk_as_baseline']:.3f}")

    row["breakdown_p50_ms"] = breakdown(selector, matrix, queries, query_texts, k, min(n_queries, 400))
    log(f"breakdown n={n}: {row['breakdown_p50_ms']}")
    if hnsw:
        row["hnsw"] = time_hnsw(selector, stub, examples, queries, query_texts, matrix, k, n_queries, warmup)
    del selector
    gc.collect()
    return row


def breakdown(selector: ExampleSelector, matrix: np.ndarray, queries: np.ndarray, query_texts: list[str], k: int,
              n_queries: int) -> dict:
    """Where select's time goes: each stage alone, p50 over the same queries (stages cycled per query)."""
    fetch = selector._fetch_size(k)
    deduping = copy.copy(selector)  # shares the pool matrix; only the config differs
    deduping.config = replace(selector.config, dedupe=DEDUPE)
    stages = {
        "numpy gemv matrix @ q": lambda j: matrix @ queries[j],
        "select's product q[None] @ matrix.T": lambda j: queries[j][None, :] @ matrix.T,
        "numpy baseline (gemv+argpartition+sort)": lambda j: brute_force(matrix, queries[j], k),
        "select's _nearest (product+top fetch)": lambda j: selector._nearest(queries[j][None, :], fetch),
        "embed (stub) + text_of": lambda j: selector.embedder.embed([selector.text_of({"text": query_texts[j]})]),
        "select (all)": lambda j: selector.select({"text": query_texts[j]}),
        f"select (all), dedupe={DEDUPE}": lambda j: deduping.select({"text": query_texts[j]}),
    }
    times: dict[str, list[int]] = {name: [] for name in stages}
    clock = time.perf_counter_ns
    for j in range(n_queries):
        names = list(stages)
        names = names[j % len(names):] + names[: j % len(names)]
        for name in names:
            t0 = clock(); stages[name](j); times[name].append(clock() - t0)
    return {name: round(pct(values[10:], 50) / 1e6, 4) for name, values in times.items()}


def time_hnsw(exact: ExampleSelector, stub, examples, queries, query_texts, matrix, k, n_queries, warmup) -> dict:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return {"available": False}
    ann = ExampleSelector(stub, k, input_keys=["text"], index="hnsw").fit(examples)
    gc.collect()
    rss0 = rss_bytes()
    start = time.perf_counter()
    ann.select({"text": query_texts[0]})  # builds the index
    build_s = time.perf_counter() - start
    gc.collect()
    rss_index = rss_bytes() - rss0
    ann_ns, base_ns, recall = [], [], []
    clock = time.perf_counter_ns
    for j in range(n_queries + warmup):
        query = {"text": query_texts[j]}
        if j % 2 == 0:
            t0 = clock(); ref = brute_force(matrix, queries[j], k); t1 = clock()
            got = ann.select(query); t2 = clock()
            tb, ta = t1 - t0, t2 - t1
        else:
            t0 = clock(); got = ann.select(query); t1 = clock()
            ref = brute_force(matrix, queries[j], k); t2 = clock()
            ta, tb = t1 - t0, t2 - t1
        if j >= warmup:
            ann_ns.append(ta)
            base_ns.append(tb)
            recall.append(len({e["id"] for e in got} & {int(i) for i in ref}) / k)
    out = {
        "available": True, "build_s": build_s, "rss_growth_index_bytes_per_example": rss_index / len(examples),
        "p50_ms": pct(ann_ns, 50) / 1e6, "p99_ms": pct(ann_ns, 99) / 1e6,
        "baseline_p50_ms": pct(base_ns, 50) / 1e6,
        "ratio_p50": pct(base_ns, 50) / pct(ann_ns, 50), "recall_at_k": float(np.mean(recall)),
    }
    log(f"hnsw n={len(examples)}: build {build_s:.1f}s p50 {out['p50_ms']:.3f} ms ratio {out['ratio_p50']:.2f} "
        f"recall {out['recall_at_k']:.3f}")
    return out


def embed_throughput(n_texts: int, seed: int, api_base: str | None = None, api_model: str = "smollm2") -> dict:
    rows = read_jsonl(DATA / "banking77" / "train.jsonl")
    random.Random(seed).shuffle(rows)
    texts = [f"text: {row['text']}" for row in rows[:n_texts]]  # what the selector embeds
    out: dict = {"n_texts": len(texts), "mean_chars": sum(map(len, texts)) / len(texts)}
    tfidf = TfidfEmbedder()
    start = time.perf_counter()
    tfidf.fit(texts)
    out["tfidf_fit_s"] = time.perf_counter() - start
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        tfidf.embed(texts)
        runs.append(time.perf_counter() - start)
    out["tfidf_texts_per_s"] = len(texts) / statistics.median(runs)
    log(f"tfidf: {out['tfidf_texts_per_s']:.0f} texts/s")
    try:
        import torch

        torch.set_num_threads(1)
        minilm = MiniLMEmbedder(threads=1)
        start = time.perf_counter()
        minilm.embed(texts[:8])
        out["minilm_load_s"] = time.perf_counter() - start
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            minilm.embed(texts)
            runs.append(time.perf_counter() - start)
        out["minilm_texts_per_s"] = len(texts) / statistics.median(runs)
        out["minilm_torch_threads"] = torch.get_num_threads()
        log(f"minilm: {out['minilm_texts_per_s']:.0f} texts/s")
    except Exception as exc:  # noqa: BLE001 - report, do not die
        out["minilm_error"] = repr(exc)
    if api_base:  # LiteLLM's embedding call against an OpenAI-compatible server (batches of 128, no cache)
        remote = LiteLLMEmbedder(api_model, api_base)
        start = time.perf_counter()
        remote.embed(texts)
        out["litellm_texts_per_s"] = len(texts) / (time.perf_counter() - start)
        out["litellm_model"] = f"{remote.model} at {api_base}"
        log(f"litellm: {out['litellm_texts_per_s']:.0f} texts/s")
    return out


def run_speed(args) -> dict:
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
              "python": platform.python_version(), "numpy": np.__version__,
              "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"), "pools": []}
    for n in args.sizes:
        n_queries = args.queries if n <= 20000 else max(100, args.queries // 4)
        result["pools"].append(time_pool(n, args.dim, args.k, n_queries, 20, args.seed, not args.no_hnsw))
    if not args.no_embed:
        result["embedding"] = embed_throughput(args.embed_texts, args.seed, args.embed_api_base)
    return result


# --- B. quality ----------------------------------------------------------------------------------------------------


def trec_spec():
    labels = ["abbreviation", "description", "entity", "human", "location", "numeric"]
    return labels, ("Classify the question by the type of answer it asks for, into one of: "
                    + ", ".join(labels) + ". Answer with the label only.")


def sst2_spec():
    labels = ["negative", "positive"]
    return labels, ("Classify the sentiment of the movie review sentence into one of: negative, positive. "
                    "Answer with the label only.")


def banking77_spec():
    labels = json.loads((DATA / "banking77" / "labels.json").read_text())
    return labels, ("Classify the bank customer's message into one of these intents: " + ", ".join(labels)
                    + ". Answer with the label only.")


SPECS = {"trec": trec_spec, "sst2": sst2_spec, "banking77": banking77_spec}


def build_task(name: str, pool_cap: int | None, test_size: int, seed: int) -> Task:
    labels, instruction = SPECS[name]()
    train = read_jsonl(DATA / name / "train.jsonl")
    test = read_jsonl(DATA / name / "test.jsonl")
    random.Random(f"{seed}-{name}-train").shuffle(train)
    random.Random(f"{seed}-{name}-test").shuffle(test)
    if pool_cap:
        train = train[:pool_cap]

    def examples(rows, split):
        return tuple(Example(id=f"{name}-{split}-{i}", inputs={"text": row["text"]}, gold=row["label"])
                     for i, row in enumerate(rows))

    return Task(name=name, description=f"{name} classification", inputs=("text",), output="label",
                output_type="label", metric="label_match", instruction=instruction, labels=tuple(labels),
                splits={"train": examples(train, "train"), "test": examples(test[:test_size], "test")})


class Recording:
    """Wraps a demo source and keeps the demos it gave, by example id."""

    def __init__(self, inner) -> None:
        self.inner, self.given = inner, {}

    def demos_for(self, example):
        demos = self.inner.demos_for(example)
        self.given[example.id] = demos
        return demos


def knn_vote(demos) -> str | None:
    """Majority label among the demos; ties go to the label of the most similar (demos come most similar last)."""
    if not demos:
        return None
    counts = Counter(demo.gold for demo in demos)
    last_seen = {demo.gold: position for position, demo in enumerate(demos)}
    return max(counts, key=lambda label: (counts[label], last_seen[label]))


def configs(ks: list[int]) -> list[tuple[str, int, str | None]]:
    out: list[tuple[str, int, str | None]] = [("zero-shot", 0, None)]
    out += [("random", k, None) for k in ks]
    for embedder in ("tfidf", "minilm"):
        out += [(strategy, k, embedder) for strategy in ("knn", "mmr", "label_quota") for k in ks]
    return out


def config_name(strategy: str, k: int, embedder: str | None) -> str:
    if strategy == "zero-shot":
        return "zero-shot"
    return f"{strategy}-{k}" + (f" ({embedder})" if embedder else "")


def run_quality(args) -> dict:
    import torch

    torch.set_num_threads(1)
    cache = Cache(args.cache_dir)
    lm = LM(args.model, threads=1, cache=cache)
    minilm = CachedEmbedder(MiniLMEmbedder(threads=1), cache)
    out_path = Path(args.out) if args.out else QUALITY_JSON
    result = json.loads(out_path.read_text()) if out_path.exists() and args.resume_json else {}
    result.setdefault("meta", {})
    result["meta"].update({"model": args.model, "test_size": args.test_size, "seed": args.seed,
                           "pool_caps": {"banking77": args.banking_pool}, "cache_dir": str(args.cache_dir),
                           "started": result["meta"].get("started") or dt.datetime.now().isoformat(timespec="seconds")})
    result.setdefault("datasets", {})
    for name in args.datasets:
        task = build_task(name, args.banking_pool if name == "banking77" else None, args.test_size, args.seed)
        pool, test = task.split("train"), task.split("test")
        log(f"== {name}: pool {len(pool)}, test {len(test)}, labels {len(task.labels)}")
        block = result["datasets"].setdefault(name, {"pool": len(pool), "test": len(test), "configs": {}, "vote": {}})
        block.update(pool=len(pool), test=len(test))
        for strategy, k, embedder_name in configs(args.ks):
            cname = config_name(strategy, k, embedder_name)
            start = time.perf_counter()
            embedder = minilm if embedder_name == "minilm" else "tfidf"
            source = demo_source(task, pool, k, "random" if strategy == "zero-shot" else strategy,
                                 seed=args.seed, embedder=embedder)
            setup_s = time.perf_counter() - start
            recording = Recording(source)
            before = lm.usage
            res = evaluate(task, task.instruction, lm, test, demos=recording, seed=args.seed)
            usage = lm.usage
            calls = usage.calls - before.calls
            call_s = usage.call_seconds - before.call_seconds
            row = {
                "strategy": strategy, "k": k, "embedder": embedder_name, "accuracy": res.score,
                "n": len(res.rows), "complete": res.complete, "errors": res.error_counts(),
                "lm_calls": calls, "cache_hits": usage.cache_hits - before.cache_hits,
                "call_seconds": call_s, "setup_s": setup_s, "wall_s": time.perf_counter() - start,
                "mean_prompt_tokens": sum(r.prompt_tokens for r in res.rows) / max(1, len(res.rows)),
            }
            if k:
                given = [recording.given[ex.id] for ex in test]
                row["gold_in_demos"] = sum(ex.gold in {d.gold for d in demos} for ex, demos in zip(test, given)) / len(test)
            if strategy == "knn":
                votes = [knn_vote(recording.given[ex.id]) for ex in test]
                block["vote"][f"vote-{k} ({embedder_name})"] = {
                    "k": k, "embedder": embedder_name,
                    "accuracy": sum(v == ex.gold for v, ex in zip(votes, test)) / len(test),
                }
            block["configs"][cname] = row
            block["done"] = len(block["configs"]) == len(configs(args.ks))
            result["meta"]["updated"] = dt.datetime.now().isoformat(timespec="seconds")
            write_json(out_path, result)
            rate = f", {calls / call_s:.2f} calls/s" if calls and call_s else ""
            log(f"{name} {cname}: acc {res.score:.3f} n={len(res.rows)} calls {calls}{rate} "
                f"prompt_tok {row['mean_prompt_tokens']:.0f} wall {row['wall_s']:.0f}s errors {row['errors']}")
    return result


def run_prewarm(args) -> dict:
    """Embed pools and test inputs with MiniLM into the cache (as the selector would), e.g. beside a quality run."""
    import torch

    torch.set_num_threads(1)
    minilm = CachedEmbedder(MiniLMEmbedder(threads=1), Cache(args.cache_dir))
    probe = ExampleSelector(minilm, 1, input_keys=["text"])
    for name in args.datasets:
        task = build_task(name, args.banking_pool if name == "banking77" else None, args.test_size, args.seed)
        texts = [probe.text_of(ex.inputs) for ex in (*task.split("train"), *task.split("test"))]
        start = time.perf_counter()
        minilm.embed(texts)
        log(f"prewarm {name}: {len(texts)} texts in {time.perf_counter() - start:.0f}s (misses {minilm.misses})")
    return {"hits": minilm.hits, "misses": minilm.misses}


# --- report --------------------------------------------------------------------------------------------------------


def report(speed_path: Path, quality_path: Path) -> str:
    lines: list[str] = []
    if speed_path.exists():
        speed = json.loads(speed_path.read_text())
        lines += [f"### Speed (run {speed['date']}, numpy {speed['numpy']}, BLAS threads {speed['blas_threads_env']})",
                  "",
                  "| pool n | queries | numpy p50 ms | numpy p99 ms | select p50 ms | select p99 ms | ratio p50 (numpy/select) "
                  "| ratio mean | paired median ratio | same top-k | matrix B/example | RSS growth B/example |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in speed["pools"]:
            lines.append(f"| {p['n']:,} | {p['queries']} | {p['baseline_p50_ms']:.3f} | {p['baseline_p99_ms']:.3f} | "
                         f"{p['selector_p50_ms']:.3f} | {p['selector_p99_ms']:.3f} | **{p['ratio_p50']:.3f}** | "
                         f"{p['ratio_mean']:.3f} | {p['ratio_paired_median']:.3f} | {p['same_topk_as_baseline']:.0%} | "
                         f"{p['matrix_bytes_per_example']:.0f} | {p['rss_growth_fit_bytes_per_example']:.0f} |")
        stages = list(speed["pools"][0].get("breakdown_p50_ms", {}))
        if stages:
            lines += ["", "Where select's time goes (each stage alone, p50 ms over the same queries, stages cycled):", "",
                      "| pool n | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
            lines += [f"| {p['n']:,} | " + " | ".join(f"{p['breakdown_p50_ms'].get(name, float('nan')):.3f}"
                                                       for name in stages) + " |" for p in speed["pools"]]
        hnsw = [p for p in speed["pools"] if p.get("hnsw", {}).get("available")]
        if hnsw:
            lines += ["", "| pool n | HNSW build s | HNSW p50 ms | HNSW p99 ms | numpy p50 ms | ratio p50 (numpy/HNSW) "
                          "| recall@k vs exact | index RSS growth B/example |", "|---|---|---|---|---|---|---|---|"]
            for p in hnsw:
                h = p["hnsw"]
                lines.append(f"| {p['n']:,} | {h['build_s']:.1f} | {h['p50_ms']:.3f} | {h['p99_ms']:.3f} | "
                             f"{h['baseline_p50_ms']:.3f} | {h['ratio_p50']:.2f} | {h['recall_at_k']:.3f} | "
                             f"{h['rss_growth_index_bytes_per_example']:.0f} |")
        emb = speed.get("embedding")
        if emb:
            lines += ["", f"Embedding throughput, {emb['n_texts']} banking77 texts (mean {emb['mean_chars']:.0f} chars), "
                          "1 thread:", "", "| embedder | texts/s |", "|---|---|",
                      f"| TF-IDF (hashed char 3-5-grams, 2048 d) | {emb['tfidf_texts_per_s']:,.0f} |"]
            if "minilm_texts_per_s" in emb:
                lines.append(f"| MiniLM-L6-v2 (384 d, torch threads {emb['minilm_torch_threads']}) | "
                             f"{emb['minilm_texts_per_s']:,.0f} |")
            else:
                lines.append(f"| MiniLM | failed: {emb.get('minilm_error')} |")
            if "litellm_texts_per_s" in emb:
                lines.append(f"| LiteLLM, {emb['litellm_model']} | {emb['litellm_texts_per_s']:,.0f} |")
        lines.append("")
    if quality_path.exists():
        quality = json.loads(quality_path.read_text())
        names = [n for n in ("trec", "sst2", "banking77") if n in quality["datasets"]]
        order = [config_name(*c) for c in configs([4, 8])]
        lines += [f"### Quality ({quality['meta']['model']}, {quality['meta']['test_size']} test examples per dataset, "
                  "accuracy)", "",
                  "| config | " + " | ".join(f"{n} (pool {quality['datasets'][n]['pool']:,})" for n in names) + " |",
                  "|---|" + "---|" * len(names)]
        for cname in order:
            cells = []
            for n in names:
                row = quality["datasets"][n]["configs"].get(cname)
                if row is None:
                    cells.append("not run")
                else:
                    gold = f" (gold in demos {row['gold_in_demos']:.0%})" if "gold_in_demos" in row else ""
                    partial = "" if row["complete"] else f" [{row['n']}/{quality['datasets'][n]['test']}]"
                    cells.append(f"{row['accuracy']:.3f}{partial}{gold}")
            lines.append(f"| {cname} | " + " | ".join(cells) + " |")
        for vname in [f"vote-{k} ({e})" for e in ("tfidf", "minilm") for k in (4, 8)]:
            cells = []
            for n in names:
                vote = quality["datasets"][n]["vote"].get(vname)
                cells.append(f"{vote['accuracy']:.3f}" if vote else "not run")
            lines.append(f"| kNN vote, no LM: {vname} | " + " | ".join(cells) + " |")
        for n in names:
            block = quality["datasets"][n]
            lines += ["", f"{n}: pool {block['pool']:,}, test {block['test']}, per config (errors = parser's error kinds"
                          " among the rows scored 0; `content` = well-formed but wrong label)", "",
                      "| config | accuracy | n | real LM calls | LM s/call | mean prompt tokens | gold label among demos "
                      "| errors |", "|---|---|---|---|---|---|---|---|"]
            for cname in order:
                row = block["configs"].get(cname)
                if row is None:
                    continue
                per_call = f"{row['call_seconds'] / row['lm_calls']:.2f}" if row["lm_calls"] else "cached"
                gold = f"{row['gold_in_demos']:.0%}" if "gold_in_demos" in row else "-"
                errors = ", ".join(f"{kind} {count}" for kind, count in row["errors"].items())
                lines.append(f"| {cname} | {row['accuracy']:.3f} | {row['n']} | {row['lm_calls']} | {per_call} | "
                             f"{row['mean_prompt_tokens']:.0f} | {gold} | {errors} |")
        lines.append("")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "quality", "prewarm", "report"], required=True)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--out", default=None, help="write the JSON result (report: the markdown) to this file")
    parser.add_argument("--seed", type=int, default=0)
    # speed
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--queries", type=int, default=2000, help="timed queries for 10k (a quarter for 100k)")
    parser.add_argument("--no-hnsw", action="store_true")
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--embed-texts", type=int, default=1000)
    parser.add_argument("--embed-api-base", default=None,
                        help="also time the LiteLLM embedder against this OpenAI-compatible server (model smollm2)")
    # quality
    parser.add_argument("--datasets", type=lambda s: s.split(","), default=["trec", "sst2", "banking77"])
    parser.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8])
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--banking-pool", type=int, default=3000, help="cap on the banking77 pool (0: all)")
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument("--cache-dir", default=str(ROOT / "cache" / "bench"))
    parser.add_argument("--resume-json", action="store_true", help="keep datasets already in --out")
    args = parser.parse_args(argv)

    if args.part == "speed":
        result = run_speed(args)
        write_json(Path(args.out) if args.out else SPEED_JSON, result)
    elif args.part == "quality":
        result = run_quality(args)
    elif args.part == "prewarm":
        result = run_prewarm(args)
    else:
        text = report(SPEED_JSON, QUALITY_JSON)
        if args.out:
            Path(args.out).write_text(text)
        print(text)
        return
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
