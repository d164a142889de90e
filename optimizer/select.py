"""Choosing few-shot demos for each input: random, a fixed set, or by embedding similarity with `ExampleSelector`.

`ExampleSelector` is the part apps import: fit it on labelled examples (plain dicts), ask it for the `k` demos
closest to an input, save it and load it without embedding the pool again.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Union, Protocol

import numpy as np

from .cache import Cache, cache_key
from .embed import Embedder, TfidfEmbedder, embedder_from_spec, make_embedder
from .data import jsonl_lines, read_rows
from .errors import ConfigError, DataError, check_format, located, writing
from .prompt import Prompt
from .task import Example, Task

STRATEGIES = ("knn", "mmr", "label_quota")
ORDERS = ("similar_last", "similar_first")
INDEXES = ("exact", "hnsw")
FORMAT_VERSION = 1
GRAM_MAX = 64  # candidates up to which their whole Gram matrix is computed at once
TIE_TOLERANCE = 1e-4  # above the rounding of a float32 cosine of unit vectors (384 dims: 384 x 6e-8)
RESCORE_ROWS = 1024  # rows per float64 block when ranking a shortlist
DEDUPE = 0.98  # the near-duplicate cutoff formfit's own prompts use (evaluation, optimize, programs, CLI select)


class DemoSource(Protocol):
    """Anything that picks the demos to show with one example."""

    def demos_for(self, example: Example) -> list[Example]: ...


class NoDemos:
    """Zero-shot."""

    def demos_for(self, example: Example) -> list[Example]:
        return []


def _check_k(k: int, pool_size: int) -> None:
    if k < 0:
        raise ConfigError(f"k must be 0 or more, got {k}")
    if pool_size == 0 and k > 0:
        raise ConfigError("the demo pool is empty: fit the selector on at least one example")
    if k > pool_size:
        raise ConfigError(f"k={k} is larger than the demo pool ({pool_size} examples)")


class RandomDemos:
    """`k` demos drawn at random from `pool` for each input, reproducibly: seeded by `seed` and the example id, or
    the input fields for an example without one (an app's input)."""

    def __init__(self, pool: Sequence[Example], k: int, seed: int = 0) -> None:
        _check_k(k, len(pool))
        self.pool, self.k, self.seed = list(pool), k, seed

    def demos_for(self, example: Example) -> list[Example]:
        candidates = [demo for demo in self.pool if demo.id != example.id]
        rng = random.Random(cache_key([self.seed, example.id or example.inputs]))
        return rng.sample(candidates, min(self.k, len(candidates)))


class FixedDemos:
    """The same demos, in the same order, for every input; an input that is one of them is not shown itself."""

    def __init__(self, demos: Sequence[Example]) -> None:
        self.demos = list(demos)

    def demos_for(self, example: Example) -> list[Example]:
        return [demo for demo in self.demos if demo.id != example.id]


def fixed_draw(pool: Sequence[Example], k: int, seed: int | str) -> tuple[str, ...]:
    """The ids of one candidate fixed demo set: `k` examples of `pool` drawn at random by `seed`."""
    _check_k(k, len(pool))
    return tuple(example.id for example in random.Random(cache_key(["fixed", seed])).sample(list(pool), k))


@dataclass(frozen=True)
class SelectorConfig:
    """How an `ExampleSelector` chooses; saved with it."""

    k: int = 4
    input_keys: tuple[str, ...] | None = None
    strategy: str = "knn"
    mmr_lambda: float = 0.5
    label_key: str | None = None
    order: str = "similar_last"
    dedupe: float | None = None
    fetch_k: int | None = None
    index: str = "exact"

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown selection strategy {self.strategy!r} (use {', '.join(STRATEGIES)})")
        if self.order not in ORDERS:
            raise ConfigError(f"unknown order {self.order!r} (use {', '.join(ORDERS)})")
        if self.index not in INDEXES:
            raise ConfigError(f"unknown index {self.index!r} (use {', '.join(INDEXES)})")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must be in [0, 1], got {self.mmr_lambda}")
        if self.strategy == "label_quota" and not self.label_key:
            raise ConfigError("strategy 'label_quota' needs label_key (the field holding each example's label)")
        if self.k < 0:
            raise ConfigError(f"k must be 0 or more, got {self.k}")


@dataclass(frozen=True, slots=True)
class Selected:
    """One chosen demo with its cosine similarity to the query."""

    example: dict[str, Any]
    similarity: float


class ExampleSelector:
    """Few-shot demos by embedding similarity: `knn`, `mmr` (relevance vs diversity), or `label_quota`.

    >>> selector = ExampleSelector("tfidf", k=4, input_keys=["text"]).fit(examples)
    >>> selector.select({"text": "my card never arrived"})      # -> list of example dicts, most similar last
    >>> selector.save("selector/"); ExampleSelector.load("selector/")

    `embedder`: an `Embedder` or a name for `make_embedder`; `auto` is MiniLM where its extra is installed, and with a
    `label_key` `fit` lets the pool's labels vote between MiniLM and TF-IDF first, as `formfit select` and the search
    do (`optimizer.embedder_choice`). `input_keys` are the fields embedded (only what a query will have);
    `exclude_id` in `select` (or an identical input text) keeps the query itself out when the pool is also the
    evaluation set; `dedupe` (a cosine, e.g.
    `DEDUPE`; off by default, as in LangChain's and DSPy's selectors) skips a candidate whose similarity to an
    already chosen demo reaches it, at the cost of one k x k product per query.
    """

    def __init__(self, embedder: Embedder | str = "auto", k: int = 4, *, input_keys: Sequence[str] | None = None,
                 strategy: str = "knn", mmr_lambda: float = 0.5, label_key: str | None = None,
                 order: str = "similar_last", dedupe: float | None = None, fetch_k: int | None = None,
                 index: str = "exact", cache: Cache | None = None) -> None:
        keys = (input_keys,) if isinstance(input_keys, str) else tuple(input_keys) if input_keys else None  # "text"
        self.config = SelectorConfig(k, keys, strategy, mmr_lambda, label_key, order, dedupe, fetch_k, index)
        self.config.check()
        self._vote = embedder == "auto" and label_key is not None  # `fit` lets the pool's labels choose
        self._cache = cache
        self.embedder = make_embedder(embedder, cache=cache) if isinstance(embedder, str) else embedder
        self.examples: list[dict[str, Any]] = []
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self._texts: list[str] = []
        self._ann: Any = None

    # --- building the pool ---------------------------------------------------------------------------------

    def text_of(self, example: Mapping[str, Any]) -> str:
        """The text embedded for an example or a query: its input fields, one `key: value` line each."""
        keys = self.input_keys_of(example)
        try:
            return "\n".join([f"{key}: {example[key]}" for key in keys])
        except KeyError:
            missing = [key for key in keys if key not in example]
            raise ConfigError(f"example or query lacks input field(s) {', '.join(map(repr, missing))}") from None

    def input_keys_of(self, example: Mapping[str, Any]) -> Sequence[str]:
        """`input_keys`, or without them every field of `example` but the label and `id`."""
        return self.config.input_keys or [key for key in example if key not in (self.config.label_key, "id")]

    def fit(self, examples: Sequence[Mapping[str, Any]]) -> ExampleSelector:
        """Embed the pool (once; the embeddings cache answers repeats). TF-IDF learns its IDF weights here: the
        embedder given is fitted, and the selector keeps a copy, so a later `fit` elsewhere on the same embedder does
        not change how this one embeds queries. With `auto` and a `label_key`, the labels of the examples that have
        one first choose MiniLM or TF-IDF (`choose_for_records`)."""
        self.examples = [_detached(example) for example in examples]
        self._texts = [self.text_of(example) for example in self.examples]
        if self._vote:
            self.embedder = make_embedder(self._voted_embedder(), cache=self._cache)
        if isinstance(self.embedder, TfidfEmbedder) and self._texts:
            self.embedder = copy.copy(self.embedder.fit(self._texts))
        self.matrix = self.embedder.embed(self._texts) if self._texts else np.zeros((0, 0), np.float32)
        self._ann = None
        return self

    def _voted_embedder(self) -> str:
        from .embedder_choice import choose_for_records  # it builds selectors itself: imported here, not on top

        label_key = self.config.label_key or ""
        labelled = [example for example in self.examples if label_key in example]  # an unlabelled one has no vote
        if not labelled:
            return "auto"
        return choose_for_records(labelled, self.input_keys_of(labelled[0]), label_key, cache=self._cache)

    def add(self, example: Mapping[str, Any]) -> None:
        """Add one example to the pool (its vector is appended; TF-IDF weights are not refitted)."""
        text = self.text_of(example)
        vector = self.embedder.embed([text])
        self.matrix = vector if self.matrix.size == 0 else np.vstack([self.matrix, vector])
        self.examples.append(_detached(example))
        self._texts.append(text)
        self._ann = None

    def __len__(self) -> int:
        return len(self.examples)

    # --- choosing ------------------------------------------------------------------------------------------

    def select(self, inputs: Mapping[str, Any], *, k: int | None = None, exclude_id: Any = None) -> list[dict]:
        """The demos for one input, as example dicts (ordered by `order`: most similar last by default)."""
        return [_detached(self.examples[index]) for index, _ in self._pick([inputs], k, [exclude_id])[0]]

    def select_scored(self, inputs: Mapping[str, Any], *, k: int | None = None,
                      exclude_id: Any = None) -> list[Selected]:
        """Like `select`, with each demo's cosine similarity to the input."""
        return self.select_batch([inputs], k=k, exclude_ids=[exclude_id])[0]

    def select_batch(self, queries: Sequence[Mapping[str, Any]], *, k: int | None = None,
                     exclude_ids: Sequence[Any] | None = None) -> list[list[Selected]]:
        """Demos for many inputs at once (one matrix product for the whole batch)."""
        return [[Selected(_detached(self.examples[index]), similarity) for index, similarity in picked]
                for picked in self._pick(queries, k, exclude_ids)]

    def _pick(self, queries: Sequence[Mapping[str, Any]], k: int | None,
              exclude_ids: Sequence[Any] | None) -> list[list[tuple[int, float]]]:
        """For each query, the chosen (pool index, similarity) pairs in `order`."""
        k = self.config.k if k is None else k
        _check_k(k, len(self.examples))
        if k == 0 or not queries:
            return [[] for _ in queries]
        texts = [self.text_of(query) for query in queries]
        exclude_ids = exclude_ids or [None] * len(queries)
        vectors = self.embedder.embed(texts)
        picked: list[list[tuple[int, float]]] = [[] for _ in queries]
        todo, fetch = list(range(len(queries))), min(len(self.examples), self._fetch_size(k))
        while todo:  # a query left short of k (its candidates were near-duplicates) fetches twice as many again
            for query, (indices, similarities) in zip(todo, self._nearest(vectors[todo], fetch)):
                picked[query] = self._choose(indices, similarities, k, exclude_ids[query], texts[query])
            todo = [query for query in todo if len(picked[query]) < k] if fetch < len(self.examples) else []
            fetch = min(len(self.examples), 2 * fetch)
        return picked

    def _fetch_size(self, k: int) -> int:
        if self.config.fetch_k:
            return max(self.config.fetch_k, k + 1)
        if self.config.strategy == "label_quota":
            return max(50 * k, 200)
        if self.config.strategy == "mmr":
            return max(4 * k, 20)
        return 2 * k + 2  # room for the excluded query and near-duplicates

    def _nearest(self, vectors: np.ndarray, fetch: int) -> list[tuple[list[int], list[float]]]:
        """Per query, the `fetch` most similar pool rows, best first, as (indices, cosine similarities): exact, or
        HNSW when asked."""
        if self.config.index == "hnsw":
            similarities, indices = self._hnsw().search(vectors, fetch)
            return [_ranked(row, scores) for row, scores in zip(indices.tolist(), similarities.tolist())]
        # One query: a matrix-vector product, the cheapest path. The float32 products only shortlist; the ranking is
        # `_rescored`'s, so a query alone and in a batch get the same neighbours even among exact ties.
        scores = (self.matrix @ vectors[0])[None, :] if len(vectors) == 1 else vectors @ self.matrix.T
        return [_best(self.matrix, vector, row, fetch) for vector, row in zip(vectors, scores)]

    def _hnsw(self) -> Any:
        if self._ann is None:
            try:
                import faiss
            except ImportError:
                raise ConfigError("index 'hnsw' needs the 'ann' extra (pip install faiss-cpu)") from None
            faiss.omp_set_num_threads(1)
            index = faiss.IndexHNSWFlat(self.matrix.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
            index.add(np.ascontiguousarray(self.matrix))
            self._ann = index
        return self._ann

    def _choose(self, indices: list[int], similarity: list[float], k: int, exclude_id: Any,
                query_text: str) -> list[tuple[int, float]]:
        """Pick `k` of the candidates (pool indices, best first, with their similarities to the query) by the
        strategy, on the candidate block's Gram rows (all at once up to GRAM_MAX candidates, else on demand), as
        plain floats, since the loops below are short and numpy's per-call overhead would dominate them."""
        if exclude_id is not None or self.config.index == "hnsw":  # HNSW pads missing results with -1
            kept = [j for j, i in enumerate(indices)
                    if i >= 0 and not (exclude_id is not None and self._excluded(i, exclude_id, query_text))]
            indices, similarity = [indices[j] for j in kept], [similarity[j] for j in kept]
        if self.config.strategy == "knn" and self._distinct(indices[:k]):  # the common case: the top k as is
            chosen = list(range(min(k, len(indices))))
        else:
            block = self.matrix[indices]
            gram = (block @ block.T).tolist() if len(indices) <= GRAM_MAX else _GramRows(block)
            if self.config.strategy == "mmr":
                chosen = self._mmr(similarity, gram, k)
            elif self.config.strategy == "label_quota":
                chosen = self._label_quota(indices, gram, k)
            else:
                chosen = self._deduped(range(len(indices)), gram, k, [])
        chosen.sort(key=similarity.__getitem__, reverse=self.config.order == "similar_first")
        return [(indices[j], similarity[j]) for j in chosen]

    def _distinct(self, indices: list[int]) -> bool:
        """No two of these pool rows are near-duplicates (always true without dedupe): one small product."""
        if self.config.dedupe is None or len(indices) < 2:
            return True
        block = self.matrix[indices]
        gram = (block @ block.T).tolist()
        return all(value < self.config.dedupe for j, row in enumerate(gram) for value in row[j + 1:])

    def _excluded(self, index: int, exclude_id: Any, query_text: str) -> bool:
        """The query itself: the same id, or the same input text (a pool that is also the evaluation set)."""
        return self.examples[index].get("id") == exclude_id or self._texts[index] == query_text

    def _is_duplicate(self, j: int, chosen: list[int], gram: Gram) -> bool:
        """Candidate `j` is near-identical (cosine >= dedupe) to one already chosen (positions in the block)."""
        if self.config.dedupe is None or not chosen:
            return False
        row = gram[j]
        return max(row[c] for c in chosen) >= self.config.dedupe

    def _deduped(self, positions: Iterable[int], gram: Gram, k: int, chosen: list[int]) -> list[int]:
        """`chosen` extended in the order of `positions`, skipping near-duplicates, up to `k`."""
        for j in positions:
            if len(chosen) == k:
                break
            if j not in chosen and not self._is_duplicate(j, chosen, gram):
                chosen.append(j)
        return chosen

    def _mmr(self, similarity: list[float], gram: Gram, k: int) -> list[int]:
        """Maximal marginal relevance: lambda * sim(query, c) - (1 - lambda) * max sim(c, chosen)."""
        weight = self.config.mmr_lambda
        chosen: list[int] = []
        remaining = list(range(len(similarity)))

        def score(j: int) -> float:
            redundancy = max((gram[j][c] for c in chosen), default=0.0)
            return weight * similarity[j] - (1 - weight) * redundancy

        while remaining and len(chosen) < k:
            best = max(remaining, key=score)
            remaining.remove(best)
            if not self._is_duplicate(best, chosen, gram):
                chosen.append(best)
        return chosen

    def _label_quota(self, kept: list[int], gram: Gram, k: int) -> list[int]:
        """Most similar first, but at most ceil(k / labels) demos per label, labels counted among the candidates."""
        labels = [str(self.examples[i].get(self.config.label_key)) for i in kept]
        quota = math.ceil(k / max(1, min(k, len(set(labels)))))
        counts: dict[str, int] = {}
        chosen: list[int] = []
        for j, label in enumerate(labels):
            if len(chosen) < k and counts.get(label, 0) < quota and not self._is_duplicate(j, chosen, gram):
                chosen.append(j)
                counts[label] = counts.get(label, 0) + 1
        return self._deduped(range(len(kept)), gram, k, chosen)

    # --- persistence ---------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write config, examples and the float32 matrix (and TF-IDF weights) so `load` never re-embeds the pool."""
        directory = Path(directory)
        with writing(directory, "the selector"):
            directory.mkdir(parents=True, exist_ok=True)
            meta = {"format": FORMAT_VERSION, "config": asdict(self.config), "embedder": self.embedder.spec(),
                    "embedder_id": self.embedder.id}
            (directory / "selector.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            with (directory / "examples.jsonl").open("w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(example, ensure_ascii=False) + "\n" for example in self.examples)
            np.save(directory / "embeddings.npy", self.matrix)
            if isinstance(self.embedder, TfidfEmbedder):
                np.save(directory / "idf.npy", self.embedder.idf)
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, cache: Cache | None = None, embedder: Embedder | None = None,
             **overrides: Any) -> ExampleSelector:
        """Load a saved selector; `overrides` change config fields (k, strategy, ...) without re-embedding."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "selector.json").read_text(encoding="utf-8"))
            lines = jsonl_lines((directory / "examples.jsonl").read_text(encoding="utf-8"))
            examples = [json.loads(line) for line in lines if line]
            matrix = np.load(directory / "embeddings.npy")
            idf = np.load(directory / "idf.npy") if (directory / "idf.npy").exists() else None
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{directory}: not a saved selector ({exc})") from None
        check_format(directory / "selector.json", meta, FORMAT_VERSION)
        _check_saved(directory, meta, examples, matrix)
        config = replace(SelectorConfig(**{**meta["config"], "input_keys": _tuple(meta["config"]["input_keys"])}),
                         **overrides)
        selector = cls(embedder or embedder_from_spec(meta["embedder"], cache=cache, idf=idf), **asdict(config))
        if selector.embedder.id != meta["embedder_id"]:
            raise ConfigError(f"{directory}: saved with embedder {meta['embedder_id']}, given {selector.embedder.id}")
        selector.examples, selector.matrix = examples, matrix.astype(np.float32, copy=False)
        selector._texts = [selector.text_of(example) for example in examples]
        return selector


def _check_saved(directory: Path, meta: Any, examples: list[Any], matrix: np.ndarray) -> None:
    """A ConfigError naming what does not fit in a saved selector: missing metadata, pool and vectors apart."""
    where = directory / "selector.json"
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ConfigError(f"{where}: not a saved selector (no config object)")
    missing = [key for key in ("embedder", "embedder_id") if key not in meta]
    missing += [] if "input_keys" in meta["config"] else ["input_keys"]
    if missing:
        raise ConfigError(f"{where}: not a saved selector (no {', '.join(missing)})")
    if not all(isinstance(example, dict) for example in examples):
        raise ConfigError(f"{directory / 'examples.jsonl'}: every line must be a JSON object")
    if matrix.ndim != 2 or matrix.shape[0] != len(examples):
        raise ConfigError(f"{directory}: examples.jsonl holds {len(examples)} examples, embeddings.npy "
                          f"{matrix.shape[0] if matrix.ndim else 0} vectors")


def _detached(example: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an example that shares no mutable value with it (flat records copy at dict speed)."""
    return {key: copy.deepcopy(value) if isinstance(value, (dict, list)) else value for key, value in example.items()}


def _best(matrix: np.ndarray, vector: np.ndarray, scores: np.ndarray, fetch: int) -> tuple[list[int], list[float]]:
    """The `fetch` rows of `matrix` most similar to `vector`, best first (ties: lower index first), with their
    similarities: shortlisted by `scores` (float32, of any rounding) with every row within `TIE_TOLERANCE` of the
    last one kept, then ranked by `_rescored`."""
    if fetch < len(scores):
        last = scores[np.argpartition(scores, -fetch)[-fetch:]].min()
        shortlist = np.flatnonzero(scores >= last - TIE_TOLERANCE)
    else:
        shortlist = np.arange(len(scores))
    similarities = _rescored(matrix, shortlist, vector)
    best = np.lexsort((shortlist, -similarities))[:fetch]
    return shortlist[best].tolist(), similarities[best].tolist()


def _rescored(matrix: np.ndarray, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """The cosine similarities of `matrix[rows]` to `vector`, in float64 and row by row: the same bits for a query
    alone or in any batch (a float32 matrix product rounds by its shape, which reordered exactly tied neighbours).
    `RESCORE_ROWS` rows at a time: a query tied with the whole pool (no known word) shortlists all of it."""
    vector = vector.astype(np.float64)
    return np.concatenate([(matrix[rows[start:start + RESCORE_ROWS]].astype(np.float64) * vector).sum(axis=1)
                           for start in range(0, len(rows), RESCORE_ROWS)])


def _ranked(indices: list[int], similarities: list[float]) -> tuple[list[int], list[float]]:
    """Candidates best first (ties: lower pool index first), as parallel lists."""
    order = sorted(range(len(indices)), key=lambda j: (-similarities[j], indices[j]))
    return [indices[j] for j in order], [similarities[j] for j in order]


def _tuple(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if value else None


class _GramRows:
    """Rows of the Gram matrix of a large candidate block (label quota fetches hundreds), computed on demand."""

    def __init__(self, block: np.ndarray) -> None:
        self.block, self.rows = block, {}

    def __getitem__(self, j: int) -> list[float]:
        if j not in self.rows:
            self.rows[j] = (self.block @ self.block[j]).tolist()
        return self.rows[j]


Gram = Union[list[list[float]], _GramRows]


class SelectorDemos:
    """A `DemoSource` for evaluation: an `ExampleSelector` over a task's pool (never showing an input itself)."""

    def __init__(self, task: Task, pool: Sequence[Example], selector: ExampleSelector) -> None:
        self.task, self.selector = task, selector
        self._by_id = {example.id: example for example in pool}
        selector.fit([example_record(task, example) for example in pool])

    def demos_for(self, example: Example) -> list[Example]:
        return self.demos_for_many([example])[0]

    def demos_for_many(self, examples: Sequence[Example]) -> list[list[Example]]:
        """Demos for a batch of inputs with one matrix product (much faster than one query at a time)."""
        picks = self.selector._pick([example.inputs for example in examples], None,
                                    [example.id for example in examples])
        return [[self._by_id[self.selector.examples[index]["id"]] for index, _ in picked] for picked in picks]


def demos_for_all(source: DemoSource, examples: Sequence[Example]) -> list[list[Example]]:
    """Every example's demos, in one batch where the source can (`demos_for_many`)."""
    many = getattr(source, "demos_for_many", None)
    return many(examples) if many is not None else [source.demos_for(example) for example in examples]


def file_pool(path: str | Path, input_keys: Sequence[str] = (), label_key: str | None = None
              ) -> tuple[list[dict[str, Any]], tuple[str, ...], str | None]:
    """A data file as a demo pool: (records, input keys, label key). The label key is `label_key`, else `label` or
    `output` when the first record has one; the input keys are `input_keys`, else the first record's other fields
    but `id`. A record without an input field is a DataError naming its file:line."""
    rows = read_rows(path)
    if not rows:
        raise ConfigError(f"{path}: the file has no records")
    first = rows[0][1]
    if label_key is not None and label_key not in first:
        raise ConfigError(f"{located(path, rows[0][0])}: no label field {label_key!r} (fields: {', '.join(first)})")
    label_key = label_key or next((key for key in ("label", "output") if key in first), None)
    keys = tuple(input_keys) or tuple(key for key in first if key not in (label_key, "id"))
    for line, record in rows:
        missing = next((key for key in keys if key not in record), None)
        if missing is not None:
            raise DataError(f"{located(path, line)}: record has no field {missing!r}")
    return [record for _, record in rows], keys, label_key


def example_record(task: Task, example: Example) -> dict[str, Any]:
    """A task example as the flat dict an `ExampleSelector` holds: id, input fields, output field."""
    return {"id": example.id, **example.inputs, task.output: example.gold}


def prompt_demos(task: Task, pool: Sequence[Example], prompt: Prompt, *, seed: int = 0,
                 embedder: Embedder | str = "auto") -> DemoSource:
    """The demo source `prompt` asks for: its fixed demos from `pool` by id, else `demo_source` by k and strategy."""
    if prompt.strategy == "fixed":
        return FixedDemos(fixed_demos(pool, prompt.demo_ids))
    return demo_source(task, pool, prompt.k, prompt.strategy, seed=seed, embedder=embedder)


def fixed_demos(pool: Sequence[Example], demo_ids: Sequence[str]) -> list[Example]:
    """The examples of `pool` with ids `demo_ids`, in that order."""
    by_id = {example.id: example for example in pool}
    missing = [demo_id for demo_id in demo_ids if demo_id not in by_id]
    if missing:
        raise ConfigError(f"fixed demo id(s) not in the demo pool: {', '.join(map(repr, missing[:5]))}")
    return [by_id[demo_id] for demo_id in demo_ids]


def demo_source(task: Task, pool: Sequence[Example], k: int, strategy: str = "random", *, seed: int = 0,
                embedder: Embedder | str = "auto", **options: Any) -> DemoSource:
    """The demo source for `k` demos by `strategy` (random, knn, mmr, label_quota) from `pool`."""
    if k == 0:
        return NoDemos()
    if strategy == "random":
        return RandomDemos(pool, k, seed)
    label_key = task.output if task.output_type == "label" else None
    options.setdefault("dedupe", DEDUPE)
    selector = ExampleSelector(embedder, k, input_keys=task.inputs, strategy=strategy,
                               label_key=options.pop("label_key", label_key), **options)
    _check_k(k, len(pool))
    return SelectorDemos(task, pool, selector)
