"""Failure analysis: what kind of error each failure is, and which failures go together.

The kind is decided by program: *form* errors come from the output parser (empty, extra text, label outside the
set, invalid JSON, missing keys, SQL that does not parse) or from a prompt too long for the context window (what a
fine-tuned model without demos avoids), *content* errors are well-formed but wrong, and *fact*
errors are content errors that showing the task's context field fixes. Failures of one kind are clustered on
embeddings of input, output and gold (k-means; the number of groups maximises the silhouette, see `cluster`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .embed import Embedder
from .evaluate import EvalResult, EvalRow
from .task import Task

FORM_KINDS = ("empty", "extra_text", "label_outside_set", "invalid_json", "missing_keys", "sql_error", "too_long")
KIND_TEXT = {
    "empty": "empty output",
    "extra_text": "extra text around the answer",
    "label_outside_set": "a label outside the label set",
    "invalid_json": "output that is not valid JSON",
    "missing_keys": "JSON missing required keys",
    "sql_error": "SQL that does not parse",
    "too_long": "a prompt longer than the context window (fewer or shorter demos fit)",
    "content": "well-formed but wrong answers",
    "fact": "missing facts (the context fixes them)",
}
MIN_SILHOUETTE = 0.1
MAX_GROUPS = 8
MAX_PREDICTION_CHARS = 40
FIXED_SCORE = 0.5


def family(kind: str) -> str:
    """"form", "fact" or "content"."""
    return "form" if kind in FORM_KINDS else kind


@dataclass(frozen=True)
class ErrorGroup:
    """Failures that go together: one error kind, similar inputs/outputs. `confusions` are (gold, predicted, n)."""

    kind: str
    size: int
    row_ids: tuple[str, ...]
    confusions: tuple[tuple[str, str, int], ...]
    examples: tuple[dict[str, Any], ...]
    summary: str

    @property
    def family(self) -> str:
        return family(self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "family": self.family}


@dataclass(frozen=True)
class Analysis:
    """All failures of one evaluation, by kind and in groups."""

    n: int
    kinds: dict[str, int]
    groups: tuple[ErrorGroup, ...]

    @property
    def n_failures(self) -> int:
        return sum(self.kinds.values())

    def shares(self) -> dict[str, float]:
        """Share of failures per family (form / content / fact), each in [0, 1]."""
        total = max(1, self.n_failures)
        counts = Counter({"form": 0, "content": 0, "fact": 0})
        for kind, count in self.kinds.items():
            counts[family(kind)] += count
        return {name: counts[name] / total for name in ("form", "content", "fact")}

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "n_failures": self.n_failures, "kinds": dict(self.kinds), "shares": self.shares(),
                "groups": [group.to_dict() for group in self.groups]}


def analyze(task: Task, result: EvalResult, embedder: Embedder, *, context_fixed: Collection[str] = (),
            max_groups: int = MAX_GROUPS, seed: int = 0) -> Analysis:
    """Classify and group the failures of `result`. `context_fixed`: ids of failures the context field fixes."""
    failures = [row for row in result.rows if row.error_kind is not None]
    kinds = {row.id: "fact" if row.error_kind == "content" and row.id in context_fixed else row.error_kind
             for row in failures}
    groups: list[ErrorGroup] = []
    for kind in dict.fromkeys(kinds.values()):
        rows = [row for row in failures if kinds[row.id] == kind]
        vectors = embedder.embed([failure_text(row) for row in rows])
        for members in cluster(vectors, max_groups, seed):
            groups.append(_group(task, kind, [rows[i] for i in members], vectors[members]))
    groups.sort(key=lambda group: -group.size)
    return Analysis(len(result.rows), dict(Counter(kinds.values()).most_common()), tuple(_cap(groups, max_groups)))


def fixed_by_context(without: Sequence[EvalRow], shown: Sequence[EvalRow]) -> set[str]:
    """Ids of content failures that showing the context fixes: with it, the score reaches FIXED_SCORE and rises
    (partial-credit metrics such as token F1 rarely reach a perfect 1.0)."""
    by_id = {row.id: row for row in shown}
    return {row.id for row in without if row.error_kind == "content" and row.id in by_id
            and by_id[row.id].score >= FIXED_SCORE and by_id[row.id].score > row.score}


def failure_text(row: EvalRow) -> str:
    """What a failure is clustered on: its input, what the model said, and what it should have said."""
    inputs = " | ".join(str(value) for value in row.inputs.values())
    return f"input: {inputs}\noutput: {row.output[:300]}\ngold: {row.gold}"


def cluster(vectors: np.ndarray, max_groups: int, seed: int) -> list[np.ndarray]:
    """Index sets of k-means clusters. k runs over 2..min(max_groups, n // 3) and the k with the best cosine
    silhouette wins if that silhouette reaches MIN_SILHOUETTE; otherwise (or below 6 rows) one group."""
    n = len(vectors)
    everything = [np.arange(n)]
    if n < 6:
        return everything
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    best_score, best_labels = MIN_SILHOUETTE, None
    for k in range(2, min(max_groups, n // 3) + 1):
        with warnings.catch_warnings():  # identical failures make fewer distinct points than k: skipped just below
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(vectors)
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(vectors, labels, metric="cosine")
        if score > best_score:
            best_score, best_labels = score, labels
    if best_labels is None:
        return everything
    return [np.flatnonzero(best_labels == label) for label in sorted(set(best_labels))]


def _group(task: Task, kind: str, rows: Sequence[EvalRow], vectors: np.ndarray) -> ErrorGroup:
    confusions = Counter((str(row.gold), _shown(task, row.prediction)) for row in rows if task.output_type == "label")
    centroid = vectors.mean(axis=0)
    nearest = np.argsort(-(vectors @ centroid))[:3]
    examples = tuple({"id": rows[i].id, "inputs": dict(rows[i].inputs), "output": rows[i].output,
                      "gold": rows[i].gold} for i in nearest)
    pairs = tuple((gold, pred, n) for (gold, pred), n in confusions.most_common(5))
    return ErrorGroup(kind, len(rows), tuple(row.id for row in rows), pairs, examples, _summary(kind, rows, pairs))


def _shown(task: Task, prediction: object) -> str:
    """A prediction as shown in a confusion: a label as it is, free text (a form error) cut to a short line."""
    if str(prediction) in task.labels:
        return str(prediction)
    text = " ".join(str(prediction).split())
    if len(text) <= MAX_PREDICTION_CHARS:
        return text
    return text[: MAX_PREDICTION_CHARS - 1] + "…"


def _summary(kind: str, rows: Sequence[EvalRow], confusions: Sequence[tuple[str, str, int]]) -> str:
    text = f"{len(rows)} failure{'s' * (len(rows) != 1)}: {KIND_TEXT.get(kind, kind)}"
    if confusions and kind in ("content", "label_outside_set", "extra_text"):
        top = ", ".join(f"{gold} -> {pred} ({n})" for gold, pred, n in confusions[:3])
        text += f"; most often {top}"
    sample = " ".join(rows[0].output.split())[:80]
    return f'{text}; e.g. output "{sample}"' if sample else text


def _cap(groups: list[ErrorGroup], max_groups: int) -> list[ErrorGroup]:
    """Keep the `max_groups - 1` largest groups and merge the rest into one group of their most common kind."""
    if len(groups) <= max_groups:
        return groups
    kept, rest = groups[: max_groups - 1], groups[max_groups - 1 :]
    ids = tuple(i for group in rest for i in group.row_ids)
    examples = tuple(example for group in rest for example in group.examples)[:3]
    kinds = Counter(group.kind for group in rest for _ in group.row_ids)
    kind = kinds.most_common(1)[0][0]
    other = ErrorGroup(kind, len(ids), ids, (), examples, f"{len(ids)} other failures in {len(rest)} small groups")
    return [*kept, other]
