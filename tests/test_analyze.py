"""Failure grouping: k-means over failure embeddings, the silhouette choosing the number of groups."""

from __future__ import annotations

import warnings

import numpy as np

from optimizer.analyze import cluster


def test_identical_failures_group_without_warnings() -> None:
    """Nine failures that are three copies of two kinds: two groups, and sklearn's warning about fewer distinct
    points than clusters (for k = 3) never reaches the user's terminal."""
    vectors = np.array([[1, 0]] * 5 + [[0, 1]] * 4, dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = cluster(vectors, max_groups=8, seed=0)
    assert sorted(len(group) for group in groups) == [4, 5]
    assert not caught


def test_a_confused_label_with_inner_spaces_stays_a_label_and_gets_a_contrast_rule() -> None:
    from optimizer.analyze import analyze
    from optimizer.embed import make_embedder
    from optimizer.evaluate import EvalResult, EvalRow
    from optimizer.prompt import Prompt
    from optimizer.propose import rule_patches
    from optimizer.task import Task

    labels = ("New  York", "Los Angeles")  # two spaces: a label as the task's data spells it
    task = Task(name="t", description="d", inputs=("text",), output="label", output_type="label",
                metric="label_match", instruction="Which city?", labels=labels)
    rows = tuple(EvalRow(f"r{i}", {"text": f"text {i}"}, labels[0], labels[0], labels[1], 0.0, "content", 1, 1, 0.0,
                         False) for i in range(3))
    analysis = analyze(task, EvalResult(rows=rows, n_requested=3), make_embedder("tfidf"))
    assert analysis.groups[0].confusions == (("Los Angeles", "New  York", 3),)
    [patch] = rule_patches(task, Prompt(task.instruction), analysis, [], seed=0)
    assert patch.prompt.instruction.endswith("Do not confuse New  York with Los Angeles.")  # in the labels' order
