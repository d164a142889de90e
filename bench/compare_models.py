"""Quality and speed of the two embedded local models on the built-in tasks.

For every condition (task, with/without context, with/without the output constraint) both models evaluate the
same test examples with the same k random demos (seeded), each with a fresh temporary response cache so every
request is a real llama.cpp call. The models alternate which one goes first, so background load on a shared
machine hits both alike.

    .venv/bin/python bench/compare_models.py                      # limit 40, k 4, 1 thread
    .venv/bin/python bench/compare_models.py --limit 20 --threads 1 --json --out bench/results/models.md

Score is the task metric's mean in [0, 1]. Latency is the mean llama.cpp time per real call; "gemma/smollm" is
the ratio of those means (>1: gemma is slower). Prompt lengths differ between the models: SmolLM2 gets chat
messages through its chat template, Gemma (a base model) a completion prompt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
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
from optimizer.prompt import output_constraint  # noqa: E402
from optimizer.select import RandomDemos  # noqa: E402
from optimizer.task import Task, load_task, show_context  # noqa: E402

MODELS = ("local/smollm2-135m", "local/gemma3-270m")
SHORT = {"local/smollm2-135m": "smollm", "local/gemma3-270m": "gemma"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, the first is the baseline")
    parser.add_argument("--tasks", default="support_intent,order_extract,fictional_facts")
    parser.add_argument("--limit", type=int, default=40, help="first N test examples per task (default 40)")
    parser.add_argument("--k", type=int, default=4, help="random demos per input (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1)")
    parser.add_argument("--no-constraint", action="store_true", help="skip the constrained-output runs")
    parser.add_argument("--model-dir", default=None,
                        help="where a chunked model (gemma) is assembled; default a folder under the temp dir")
    parser.add_argument("--amx-workaround", choices=("auto", "on", "off"), default="auto",
                        help="load models with use_extra_bufts=false if an unpatched call crashes (see _llama_probe.py)")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    parser.add_argument("--out", default=None, help="also write the markdown report to this file")
    return parser.parse_args(argv)


def context_task(task: Task) -> tuple[Task, str]:
    """`task.with_context()`; if that raises, the same transformation done here (and the error is reported)."""
    try:
        return task.with_context(), "task.with_context()"
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        field_name = task.context_field or ""
        splits = {name: tuple(show_context(e, field_name) for e in examples) for name, examples in task.splits.items()}
        note = f"task.with_context() raised {type(exc).__name__}: {exc}; used an equivalent built in the bench"
        return replace(task, inputs=(field_name, *task.inputs), splits=splits), note


def conditions(args: argparse.Namespace) -> tuple[list[tuple[str, Task, bool]], list[str]]:
    """(label, task, constrained) for every run, and notes."""
    runs, notes = [], []
    for name in args.tasks.split(","):
        task = load_task(name)
        runs.append((name, task, False))
        if task.context_field:
            shown, note = context_task(task)
            runs.append((f"{name} +context", shown, False))
            if note != "task.with_context()":
                notes.append(note)
        if not args.no_constraint:
            if output_constraint(task, "local") is not None:
                runs.append((f"{name} constrained", task, True))
            else:
                notes.append(f"{name}: output_constraint() gives no constraint for output_type {task.output_type!r}")
    return runs, notes


def run_one(model: str, backend: LocalBackend, task: Task, constrained: bool, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="formfit-bench-"))
    try:
        lm = LM(model, threads=args.threads, cache=Cache(tmp), backend=backend)
        examples = task.split("test")[: args.limit]
        demos = RandomDemos(task.split("train"), args.k, seed=args.seed)
        constraint = output_constraint(task, lm.backend_kind) if constrained else None
        start = time.perf_counter()
        try:
            result = evaluate(task, task.instruction, lm, examples, demos=demos, seed=args.seed, constraint=constraint)
        except Exception as exc:  # noqa: BLE001 - a failing condition is a result to report
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                    "traceback": traceback.format_exc(limit=3)}
        wall = time.perf_counter() - start
        usage = lm.usage
        return {
            "score": result.score,
            "n": len(result.rows),
            "lm_calls": usage.calls,
            "cache_hits": usage.cache_hits,
            "mean_latency_s": usage.call_seconds / usage.calls if usage.calls else float("nan"),
            "prompt_tokens_per_call": usage.prompt_tokens / usage.calls if usage.calls else float("nan"),
            "completion_tokens_per_call": usage.completion_tokens / usage.calls if usage.calls else float("nan"),
            "wall_s": wall,
            "error_counts": result.error_counts(),
            "sample_outputs": [row.output for row in result.rows[:3]],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = args.models.split(",")
    args.llama_note = prepare(args.amx_workaround)
    print(args.llama_note, file=sys.stderr, flush=True)
    model_dir = Path(args.model_dir) if args.model_dir else Path(tempfile.gettempdir()) / "formfit-bench-models"
    runs, notes = conditions(args)

    backends, load_s = {}, {}
    for model in models:
        start = time.perf_counter()
        backends[model] = LocalBackend(model, threads=args.threads, n_ctx=4096, cache_dir=model_dir)
        load_s[model] = time.perf_counter() - start

    results: dict[str, dict[str, dict]] = {}
    started = time.perf_counter()
    for index, (label, task, constrained) in enumerate(runs):
        order = models if index % 2 == 0 else list(reversed(models))
        results[label] = {}
        for model in order:
            res = run_one(model, backends[model], task, constrained, args)
            results[label][model] = res
            if "error" in res:
                print(f"{label} {SHORT.get(model, model)}: ERROR {res['error']}", file=sys.stderr, flush=True)
            else:
                print(f"{label} {SHORT.get(model, model)}: score {res['score']:.3f}, {res['mean_latency_s']:.3f}s/call,"
                      f" {res['prompt_tokens_per_call']:.0f} prompt tok/call, errors {res['error_counts']}",
                      file=sys.stderr, flush=True)
    total_s = time.perf_counter() - started

    report = render(args, models, runs, results, notes, load_s, total_s)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps({"args": vars(args), "load_s": load_s, "total_s": total_s, "notes": notes,
                          "results": results}))
    return 0


def render(args, models, runs, results, notes, load_s, total_s) -> str:
    base, other = models[0], models[-1]
    a, b = SHORT.get(base, base), SHORT.get(other, other)
    lines = [
        f"### Models: {' vs '.join(f'`{m}`' for m in models)} (test limit {args.limit}, k={args.k} random demos, "
        f"seed {args.seed}, {args.threads} thread(s))",
        "",
        f"{dt.datetime.now().isoformat(timespec='seconds')} | {platform.machine()} | os.cpu_count()={os.cpu_count()}"
        f" | loadavg at end {' '.join(f'{x:.2f}' for x in os.getloadavg())} | measured loop {total_s:.0f}s"
        f" | model load {', '.join(f'{SHORT.get(m, m)} {s:.1f}s' for m, s in load_s.items())}",
        "",
        f"llama.cpp: {build_info()}; {args.llama_note}.",
        "",
        f"| condition | score {a} | score {b} | s/call {a} | s/call {b} | latency {b}/{a} | prompt tok/call {a} | "
        f"prompt tok/call {b} | output tok/call {a} | output tok/call {b} | form errors {a} | form errors {b} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for label, _, _ in runs:
        ra, rb = results[label][base], results[label][other]

        def cell(r, key, fmt):
            return "ERROR" if "error" in r else format(r[key], fmt)

        def errs(r):
            if "error" in r:
                return r["error"].replace("|", "/")
            return ", ".join(f"{k} {v}" for k, v in r["error_counts"].items() if k != "content") or "-"

        ratio = "-"
        if "error" not in ra and "error" not in rb:
            ratios.append(rb["mean_latency_s"] / ra["mean_latency_s"])
            ratio = f"{ratios[-1]:.2f}"
        lines.append(f"| {label} | {cell(ra, 'score', '.3f')} | {cell(rb, 'score', '.3f')} | "
                     f"{cell(ra, 'mean_latency_s', '.3f')} | {cell(rb, 'mean_latency_s', '.3f')} | {ratio} | "
                     f"{cell(ra, 'prompt_tokens_per_call', '.0f')} | {cell(rb, 'prompt_tokens_per_call', '.0f')} | "
                     f"{cell(ra, 'completion_tokens_per_call', '.1f')} | {cell(rb, 'completion_tokens_per_call', '.1f')} | "
                     f"{errs(ra)} | {errs(rb)} |")
    if ratios:
        ratios.sort()
        mid = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
        lines += ["", f"Median latency ratio {b}/{a} over conditions: **{mid:.2f}** "
                      f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})."]
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in notes]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
