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
