"""Throughput of the local llama.cpp backend: 1 vs 2 llama.cpp threads, and a cold vs a warm cache.

The requests are the real ones `formfit eval support_intent --k 4` makes (test split, 4 random demos each, seeded),
so prompt lengths are realistic. Each repetition runs every thread count (interleaved, order alternating ABBA, so
the background load of a shared machine hits both sides alike), each in a fresh process with a fresh temporary
cache folder, then a second pass over the same requests through a new `LM` on the same cache folder (warm: it
must make 0 LM calls).

    .venv/bin/python bench/lm_throughput.py                       # smollm2, n=30, 3 repetitions
    .venv/bin/python bench/lm_throughput.py --n 20 --reps 5 --json --out bench/results/lm_throughput.md

Model loading and one warm-up request per process are not measured. Prints a markdown table of medians with the paired ratios 2t/1t and warm/cold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _llama_probe import build_info, prepare  # noqa: E402
from optimizer.cache import Cache  # noqa: E402
from optimizer.evaluate import evaluate  # noqa: E402
from optimizer.lm import LM, LocalBackend  # noqa: E402
from optimizer.select import RandomDemos  # noqa: E402
from optimizer.task import load_task  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument("--task", default="support_intent", help="built-in task whose test split gives the requests")
    parser.add_argument("--n", type=int, default=30, help="requests per repetition (default 30)")
    parser.add_argument("--k", type=int, default=4, help="random demos per request (default 4)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each condition (default 3)")
    parser.add_argument("--threads", default="1,2", help="thread counts to compare, comma-separated (default 1,2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", default=None,
                        help="where a chunked model (gemma) is assembled; default a folder under the temp dir")
    parser.add_argument("--amx-workaround", choices=("auto", "on", "off"), default="auto",
                        help="load models with use_extra_bufts=false if an unpatched call crashes (see _llama_probe.py)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="also print all raw measurements as one JSON object")
    parser.add_argument("--out", default=None, help="also write the markdown report to this file")
    return parser.parse_args(argv)


def one_pass(model: str, threads: int, backend: LocalBackend, cache_dir: Path, task, instruction, examples,
             demos, seed: int) -> dict:
    """One evaluation pass through a new `LM` (new usage counters) on `cache_dir`."""
    lm = LM(model, threads=threads, cache=Cache(cache_dir), backend=backend)
    start = time.perf_counter()
    result = evaluate(task, instruction, lm, examples, demos=demos, seed=seed)
    wall = time.perf_counter() - start
    usage = lm.usage
    return {
        "threads": threads,
        "requests": len(result.rows),
        "lm_calls": usage.calls,
        "cache_hits": usage.cache_hits,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "call_seconds": usage.call_seconds,
        "wall_s": wall,
        "score": result.score,
        "requests_per_s": len(result.rows) / wall if wall else float("inf"),
        "calls_per_s": usage.calls / wall if wall else 0.0,
        "prompt_tok_per_s": usage.prompt_tokens / wall if wall else 0.0,
        "outputs": [row.output for row in result.rows],
    }


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def worker(args: argparse.Namespace, threads: int) -> dict:
    """One condition in this (fresh) process: load the model, warm up, then a cold and a warm pass."""
    task = load_task(args.task)
    examples = task.split("test")[: args.n]
    demos = RandomDemos(task.split("train"), args.k, seed=args.seed)
    model_dir = Path(args.model_dir) if args.model_dir else Path(tempfile.gettempdir()) / "formfit-bench-models"
    start = time.perf_counter()
    backend = LocalBackend(args.model, threads=threads, n_ctx=4096, cache_dir=model_dir)
    load_s = time.perf_counter() - start
    # Warm-up: one request outside the measurement (first-call allocations), on a throwaway cache.
    with tempfile.TemporaryDirectory(prefix="formfit-bench-") as tmp:
        one_pass(args.model, threads, backend, Path(tmp), task, task.instruction, examples[:1], demos, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="formfit-bench-"))
    try:
        cold = one_pass(args.model, threads, backend, tmp, task, task.instruction, examples, demos, args.seed)
        warm = one_pass(args.model, threads, backend, tmp, task, task.instruction, examples, demos, args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"load_s": load_s, "cold": cold, "warm": warm}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        prepare("on" if args.amx_workaround == "on" else "off")
        print(json.dumps(worker(args, args.worker)))
        return 0
    thread_counts = [int(t) for t in args.threads.split(",")]
    args.llama_note = prepare(args.amx_workaround)
    print(args.llama_note, file=sys.stderr, flush=True)
    worker_flags = ["--model", args.model, "--task", args.task, "--n", str(args.n), "--k", str(args.k),
                    "--seed", str(args.seed), "--amx-workaround",
                    "on" if "use_extra_bufts=false" in args.llama_note else "off"]
    if args.model_dir:
        worker_flags += ["--model-dir", args.model_dir]

    runs: list[dict] = []
    load_s: dict[int, list[float]] = {t: [] for t in thread_counts}
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    for rep in range(args.reps):
        order = thread_counts if rep % 2 == 0 else list(reversed(thread_counts))
        for threads in order:
            # A fresh process per condition: no llama.cpp/OpenMP state shared between thread counts.
            done = subprocess.run([sys.executable, __file__, *worker_flags, "--worker", str(threads)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"worker threads={threads} failed with return code {done.returncode}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            cold, warm = result["cold"], result["warm"]
            load_s[threads].append(result["load_s"])
            for phase, run in (("cold", cold), ("warm", warm)):
                runs.append({"rep": rep, "phase": phase, **run})
            print(f"rep {rep + 1}/{args.reps} threads={threads}: cold {cold['wall_s']:.1f}s "
                  f"({cold['lm_calls']} calls, {cold['calls_per_s']:.2f} calls/s, "
                  f"{cold['prompt_tok_per_s']:.0f} prompt tok/s) | warm {warm['wall_s']:.3f}s "
                  f"({warm['lm_calls']} calls, {warm['cache_hits']} hits) | load1 {os.getloadavg()[0]:.2f}",
                  file=sys.stderr, flush=True)
    total_s = time.perf_counter() - started
    args.load_start = load_start

    report = render(args, thread_counts, runs, {t: med(v) for t, v in load_s.items()}, total_s)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps({"args": vars(args), "load_s": load_s, "total_s": total_s,
                          "runs": [{k: v for k, v in run.items() if k != "outputs"} for run in runs]}))
    return 0


def render(args, thread_counts: list[int], runs: list[dict], load_s: dict, total_s: float) -> str:
    def pick(threads: int, phase: str) -> list[dict]:
        return [r for r in runs if r["threads"] == threads and r["phase"] == phase]

    lines = [
        f"### LM throughput: `{args.model}`, {args.n} requests/rep ({args.task} test, k={args.k}), {args.reps} reps",
        "",
        f"{dt.datetime.now().isoformat(timespec='seconds')} | {platform.machine()} | os.cpu_count()={os.cpu_count()}"
        f" | load1 at start {args.load_start:.2f}, loadavg at end {' '.join(f'{x:.2f}' for x in os.getloadavg())} | measured loop {total_s:.0f}s"
        f" | model load {', '.join(f'{t}t {s:.1f}s' for t, s in load_s.items())}",
        "",
        f"llama.cpp: {build_info()}; {args.llama_note}.",
        "",
        "Medians over repetitions. Cold = fresh cache folder, every request is a real llama.cpp call; "
        "warm = a second pass over the same requests on the same cache folder.",
        "",
        "| threads | phase | LM calls | cache hits | wall s | requests/s | calls/s | prompt tok/s | "
        "completion tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for threads in thread_counts:
        for phase in ("cold", "warm"):
            rs = pick(threads, phase)
            lines.append(
                f"| {threads} | {phase} | {med([r['lm_calls'] for r in rs]):.0f} | {med([r['cache_hits'] for r in rs]):.0f}"
                f" | {med([r['wall_s'] for r in rs]):.3f} | {med([r['requests_per_s'] for r in rs]):.1f}"
                f" | {med([r['calls_per_s'] for r in rs]):.2f} | {med([r['prompt_tok_per_s'] for r in rs]):.0f}"
                f" | {med([r['completion_tokens'] / r['wall_s'] for r in rs]):.1f} |"
            )
    lines += ["", "| ratio (paired per repetition, median) | value | per-rep values |", "|---|---|---|"]
    base = thread_counts[0]
    for threads in thread_counts[1:]:
        pairs = [(a, b) for a in pick(threads, "cold") for b in pick(base, "cold") if a["rep"] == b["rep"]]
        ratios = [a["calls_per_s"] / b["calls_per_s"] for a, b in pairs]
        tok = [a["prompt_tok_per_s"] / b["prompt_tok_per_s"] for a, b in pairs]
        lines.append(f"| calls/s {threads}t / {base}t (cold) | **{med(ratios):.2f}** | "
                     f"{', '.join(f'{x:.2f}' for x in ratios)} |")
        lines.append(f"| prompt tok/s {threads}t / {base}t (cold) | {med(tok):.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in tok)} |")
        same = all(a["outputs"] == b["outputs"] for a, b in pairs)
        lines.append(f"| identical outputs {threads}t vs {base}t | {'yes' if same else 'NO'} | |")
    for threads in thread_counts:
        cold, warm = pick(threads, "cold"), pick(threads, "warm")
        pairs = [(w, c) for w in warm for c in cold if w["rep"] == c["rep"]]
        wall = [w["wall_s"] / c["wall_s"] for w, c in pairs]
        lines.append(f"| wall warm / cold ({threads}t) | **{med(wall):.2e}** (warm {1 / med(wall):.0f}x faster) | "
                     f"{', '.join(f'{x:.2e}' for x in wall)} |")
        lines.append(f"| LM calls warm ({threads}t), all reps | {sum(w['lm_calls'] for w in warm)} | "
                     f"cache hits {', '.join(str(w['cache_hits']) for w in warm)} |")
        same = all(w["outputs"] == c["outputs"] for w, c in pairs)
        lines.append(f"| warm outputs identical to cold ({threads}t) | {'yes' if same else 'NO'} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
