"""`formfit optimize` against the prompt-only baselines, with the real local model.

For each task: test score of zero-shot (the task's instruction), random-k and knn-k (TF-IDF) demos, and of the
program `optimize` finds at each budget; the share of the optimize run's wall time not spent inside LM calls; and a
warm-cache rerun's wall time as a ratio of the first run. Datasets come from ../shared/datasets (never copied;
seeded shuffle, pool = train, test and dev = disjoint held-out rows); built-in tasks use their own splits.
LM answers are cached in --cache-dir, so an interrupted benchmark resumes.

    .venv/bin/python bench/optimize.py --tasks trec,sst2 --budgets 300,1000 --out bench/results/optimize.json
    .venv/bin/python bench/optimize.py --report bench/results/optimize.json     # markdown table
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from optimizer.cache import Cache  # noqa: E402
from optimizer.evaluate import evaluate  # noqa: E402
from optimizer.lm import LM, Budget  # noqa: E402
from optimizer.search import SearchConfig, optimize  # noqa: E402
from optimizer.select import demo_source  # noqa: E402
from optimizer.task import Task, load_task  # noqa: E402
from selector import SPECS, build_task  # noqa: E402

BUILTIN = ("support_intent", "order_extract", "fictional_facts")


def bench_task(name: str, dev_size: int, test_size: int, seed: int) -> Task:
    """A built-in task as it is (dev cut to `dev_size`), or a dataset whose whole train split is the pool (as in
    bench/selector.py, so their answers are shared through the cache), test its first `test_size` shuffled test
    rows and dev the next `dev_size` ones: disjoint from test, never seen by the pool."""
    if name in BUILTIN:
        task = load_task(name)
        return replace(task, splits={**task.splits, "dev": task.split("dev")[:dev_size]})
    task = build_task(name, 3000 if name == "banking77" else None, test_size + dev_size, seed)
    held_out = task.split("test")
    return replace(task, splits={"train": task.split("train"), "dev": held_out[test_size:],
                                 "test": held_out[:test_size]})


def baselines(task: Task, lm: LM, k: int, seed: int) -> dict[str, float]:
    scores = {}
    for name, strategy, demos_k in (("zero-shot", "random", 0), (f"random-{k}", "random", k), (f"knn-{k}", "knn", k)):
        source = demo_source(task, task.split("train"), demos_k, strategy, seed=seed, embedder="tfidf")
        scores[name] = evaluate(task, task.instruction, lm, task.split("test"), demos=source, seed=seed).score
    return scores


def optimize_run(task: Task, model: str, cache: Cache, budget: int, seed: int) -> dict:
    lm = LM(model, threads=1, cache=cache, budget=Budget(budget, charge_cache_hits=True))
    test_lm = lm.with_budget(Budget())
    start = time.perf_counter()
    config = SearchConfig(dev_size=len(task.split("dev")), embedder="tfidf")  # as the baselines and published rows
    result = optimize(task, lm, config=config, seed=seed, test_lm=test_lm)
    wall = time.perf_counter() - start
    call_seconds = lm.usage.call_seconds + test_lm.usage.call_seconds
    cache_hits = lm.usage.cache_hits + test_lm.usage.cache_hits
    return {"test": result.test_scores["best"], "test_baseline": result.test_scores["baseline"],
            "dev": result.dev_scores, "best": result.best.to_dict(), "calls": result.calls,
            "real_calls": lm.usage.calls + test_lm.usage.calls, "cache_hits": cache_hits,
            "call_seconds": call_seconds, "wall_s": wall,
            "overhead_share": max(0.0, wall - call_seconds) / wall, "stopped": result.stopped,
            "rounds": [(r.round, r.accepted, r.dev_after) for r in result.rounds],
            "accepted": [c.origin for c in result.candidates if c.accepted]}


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"meta": {}, "tasks": {}}
    data["meta"].update(model=args.model, seed=args.seed, dev_size=args.dev_size, test_size=args.test_size,
                        k=args.k, date=dt.date.today().isoformat())
    cache = Cache(args.cache_dir)
    for name in args.tasks:
        task = bench_task(name, args.dev_size, args.test_size, args.seed)
        block = data["tasks"].setdefault(name, {})
        block["sizes"] = {split: len(examples) for split, examples in task.splits.items()}
        if "baselines" not in block:
            block["baselines"] = baselines(task, LM(args.model, threads=1, cache=cache), args.k, args.seed)
            _save(out, data)
        print(name, "baselines", block["baselines"], flush=True)
        for budget in args.budgets:
            key = f"optimize-{budget}"
            if key not in block:
                block[key] = cold = optimize_run(task, args.model, cache, budget, args.seed)
                cold["warm_ratio"] = optimize_run(task, args.model, cache, budget, args.seed)["wall_s"] / cold["wall_s"]
                _save(out, data)
            print(name, key, {k: block[key][k] for k in ("test", "calls", "overhead_share", "warm_ratio")}, flush=True)
    return data


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def report(data: dict) -> str:
    budgets = sorted({int(key.split("-")[1]) for block in data["tasks"].values() for key in block
                      if key.startswith("optimize-")})
    k = data["meta"]["k"]
    head = ["task", "test n", "zero-shot", f"random-{k}", f"knn-{k}"] + [f"optimize@{b}" for b in budgets]
    head += [f"gain@{b} (pts)" for b in budgets] + ["non-LM time", "warm/cold"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, block in data["tasks"].items():
        base = block["baselines"]
        best_base = max(base.values())
        runs = [block.get(f"optimize-{b}") for b in budgets]
        cells = [name, str(block["sizes"]["test"]), *(f"{base[key]:.3f}" for key in base)]
        cells += [f"{r['test']:.3f}" if r else "-" for r in runs]
        cells += [f"{100 * (r['test'] - best_base):+.1f}" if r else "-" for r in runs]
        cells += _timing_cells([r for r in runs if r])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _timing_cells(runs: list[dict]) -> list[str]:
    """Non-LM share and warm/cold ratio of the run that measures them best. A run that found answers in the cache
    (a resumed run, or test answers the baselines already gave) was faster than a cold one, so both numbers are
    upper bounds there ("<="); an exact cold run is preferred, then the tightest bound."""
    if not runs:
        return ["-", "-"]
    best = min(runs, key=lambda r: (r.get("cache_hits", 1) > 0, r["overhead_share"]))
    mark = "<= " if best.get("cache_hits", 1) else ""
    return [f"{mark}{best['overhead_share']:.1%}", f"{mark}{best['warm_ratio']:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="support_intent,order_extract,fictional_facts,trec,sst2,banking77",
                        type=lambda text: text.split(","))
    parser.add_argument("--budgets", default="300,1000", type=lambda text: [int(b) for b in text.split(",")])
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument("--dev-size", type=int, default=50)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(ROOT / "cache" / "bench"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "optimize.json"))
    parser.add_argument("--report", metavar="JSON", help="Print the markdown table of a finished run and exit.")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    unknown = [name for name in args.tasks if name not in BUILTIN and name not in SPECS]
    if unknown:
        parser.error(f"unknown task(s): {', '.join(unknown)}")
    run(args)
    print(report(json.loads(Path(args.out).read_text())))


if __name__ == "__main__":
    main()
