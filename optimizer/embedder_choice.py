"""The `auto` embedder for a task (or a selector's labelled pool): MiniLM or TF-IDF, decided on the labelled pool
itself without LM calls.

MiniLM (meaning over wording) is preferred where its extra is installed. For a label task the choice is checked with
a leave-one-out kNN vote: each example of a seeded sample of the pool gets the majority label of its `VOTE_K`
nearest other pool examples, once per embedder. TF-IDF replaces MiniLM when its neighbours give the right label more
often and the 95% paired bootstrap interval of that lead excludes zero: a task whose labels follow its wording
(templated tickets, say) gets the embedder that sees wording. Measured in docs/benchmarks.md ("The auto embedder").
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .cache import Cache
from .embed import Embedder, make_embedder, resolve_embedder
from .select import ExampleSelector, Selected, example_record
from .stats import difference
from .task import Example, Task

VOTE_K = 8
VOTE_SAMPLE = 1000


def task_embedder(name: str, task: Task, pool: Sequence[Example], *, cache: Cache | None = None,
                  seed: int = 0) -> str:
    """`name`, or for `auto` the embedder `choose_embedder` picks for `task` on `pool`."""
    return choose_embedder(task, pool, cache=cache, seed=seed) if name == "auto" else name


def choose_embedder(task: Task, pool: Sequence[Example], *, cache: Cache | None = None, seed: int = 0) -> str:
    """`minilm` or `tfidf` for `task` (see the module docstring); without the minilm extra, or for a task without
    labels, what `resolve_embedder("auto")` says."""
    if task.output_type != "label":
        return resolve_embedder("auto")
    records = [example_record(task, example) for example in pool]
    return choose_for_records(records, task.inputs, task.output, cache=cache, seed=seed)


def choose_for_records(records: Sequence[Mapping[str, Any]], input_keys: Sequence[str], label_key: str, *,
                       cache: Cache | None = None, seed: int = 0) -> str:
    """The vote of `choose_embedder` on labelled records (what an `ExampleSelector` with a `label_key` holds)."""
    name = resolve_embedder("auto")
    if name != "minilm" or len(records) <= VOTE_K:
        return name
    minilm = neighbour_votes(records, input_keys, label_key, make_embedder("minilm", cache=cache), seed=seed)
    tfidf = neighbour_votes(records, input_keys, label_key, make_embedder("tfidf"), seed=seed)
    return "tfidf" if difference(tfidf, minilm, seed=seed).low > 0 else "minilm"


def neighbour_votes(records: Sequence[Mapping[str, Any]], input_keys: Sequence[str], label_key: str,
                    embedder: Embedder, *, k: int = VOTE_K, sample: int = VOTE_SAMPLE, seed: int = 0) -> list[float]:
    """1.0 or 0.0 for each of a seeded sample of `records`: is the majority label of its k nearest other records
    its own label? (A tie goes to the tied label of the nearest neighbour.)"""
    records = [{**record, "id": str(index)} for index, record in enumerate(records)]  # ids to leave a query out
    selector = ExampleSelector(embedder, k, input_keys=input_keys, label_key=label_key).fit(records)
    queries = random.Random(f"{seed}-vote").sample(records, min(sample, len(records)))
    chosen = selector.select_batch([{key: query[key] for key in input_keys} for query in queries],
                                   exclude_ids=[query["id"] for query in queries])
    return [float(vote(demos, label_key) == query[label_key]) for query, demos in zip(queries, chosen)]


def vote(demos: Sequence[Selected], label_key: str) -> str | None:
    """The most common label among `demos`; a tie goes to the tied label of the most similar demo."""
    counts = Counter(demo.example[label_key] for demo in demos)
    if not counts:
        return None
    top = max(counts.values())
    nearest_first = sorted(demos, key=lambda demo: -demo.similarity)
    return next(demo.example[label_key] for demo in nearest_first if counts[demo.example[label_key]] == top)
