"""The `auto` embedder's vote (optimizer/embedder_choice.py) on the built-in support_intent task and on the 1,000-row
pools bench/vs_dspy.py gives every method (seed 0): how often each embedder's 8 nearest neighbours vote an example's
own label, TF-IDF's lead, and what `auto` picks. No LM calls; MiniLM vectors are cached in --cache-dir.

    .venv/bin/python bench/embedder_vote.py     # a markdown table on stdout (~1 min cold, ~10 s with the cache warm)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from optimizer.cache import Cache  # noqa: E402
from optimizer.embed import make_embedder  # noqa: E402
from optimizer.embedder_choice import choose_embedder, neighbour_votes  # noqa: E402
from optimizer.select import example_record  # noqa: E402
from optimizer.stats import difference, mean  # noqa: E402
from optimizer.task import Task, load_task  # noqa: E402
from selector import build_task  # noqa: E402

VS_DSPY_POOL, VS_DSPY_HELD_OUT = 1000, 300  # bench/vs_dspy.py's defaults: --pool, --test + --dev


def task_of(name: str, seed: int) -> Task:
    return load_task(name) if name == "support_intent" else build_task(name, VS_DSPY_POOL, VS_DSPY_HELD_OUT, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="support_intent,trec,sst2,banking77")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(ROOT / "cache"))
    args = parser.parse_args()
    cache = Cache(args.cache_dir)
    print("| task | pool | neighbours right, MiniLM | TF-IDF | TF-IDF's lead [95% CI] | auto picks |")
    print("|---|---|---|---|---|---|")
    for name in args.tasks.split(","):
        task = task_of(name, args.seed)
        pool = task.split("train")
        records = [example_record(task, example) for example in pool]
        minilm, tfidf = (neighbour_votes(records, task.inputs, task.output, embedder, seed=args.seed)
                         for embedder in (make_embedder("minilm", cache=cache), make_embedder("tfidf")))
        lead = difference(tfidf, minilm, seed=args.seed).text(points=True)
        picked = choose_embedder(task, pool, cache=cache, seed=args.seed)
        print(f"| {name} | {len(pool)} | {mean(minilm).value:.3f} | {mean(tfidf).value:.3f} | {lead} | {picked} |")


if __name__ == "__main__":
    main()
