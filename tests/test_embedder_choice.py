"""The `auto` embedder's choice by a leave-one-out kNN vote (unit tests: planted data, stand-in vectors for MiniLM;
the real MiniLM choices are in test_embed_real.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import optimizer.embedder_choice as choice
from optimizer.embedder_choice import choose_embedder, neighbour_votes, vote
from optimizer.select import ExampleSelector, Selected, example_record
from optimizer.task import Example, Task

LABELS = ("alpha", "beta", "gamma")


def worded_task(n: int = 90) -> Task:
    """Each label has its own words, so TF-IDF neighbours share the label."""
    words = {"alpha": "refund money back", "beta": "parcel late delivery", "gamma": "password login locked"}
    pool = tuple(Example(id=str(i), inputs={"text": f"{words[LABELS[i % 3]]} case {i}"}, gold=LABELS[i % 3])
                 for i in range(n))
    return Task(name="worded", description="", inputs=("text",), output="label", output_type="label",
                metric="label_match", instruction="Label it.", labels=LABELS, splits={"train": pool})


class Vectors:
    """A stand-in for MiniLM: one vector per text from `vector_of`."""

    id = "stand-in"

    def __init__(self, vector_of) -> None:
        self.vector_of, self.calls = vector_of, 0

    def embed(self, texts):
        self.calls += 1
        return np.array([self.vector_of(text) for text in texts], dtype=np.float32).reshape(len(texts), -1)

    def spec(self):
        return {"kind": "minilm"}


def with_minilm(monkeypatch, vectors: Vectors) -> None:
    """The minilm extra "installed", with `vectors` standing in for MiniLM wherever an embedder is made by name."""
    monkeypatch.setattr("optimizer.embed.minilm_installed", lambda: True)
    real = choice.make_embedder

    def stand_in(name: str, **kwargs):
        return vectors if name in ("minilm", "auto") else real(name, **kwargs)

    monkeypatch.setattr(choice, "make_embedder", stand_in)
    monkeypatch.setattr("optimizer.select.make_embedder", stand_in)


def label_vector(text: str) -> list[float]:
    number = int(text.split()[-1])
    return [float(number % 3 == j) for j in range(3)]


def test_the_vote_is_the_majority_and_a_tie_goes_to_the_nearest() -> None:
    def demo(label: str, similarity: float) -> Selected:
        return Selected({"label": label}, similarity)

    assert vote([demo("a", 0.9), demo("b", 0.8), demo("b", 0.7)], "label") == "b"
    assert vote([demo("a", 0.7), demo("b", 0.9), demo("a", 0.8), demo("b", 0.6)], "label") == "b"
    assert vote([], "label") is None


def test_tfidf_neighbours_of_worded_labels_vote_right() -> None:
    from optimizer.embed import make_embedder

    task = worded_task()
    records = [example_record(task, example) for example in task.split("train")]
    votes = neighbour_votes(records, task.inputs, task.output, make_embedder("tfidf"), sample=40)
    assert len(votes) == 40 and sum(votes) == 40


def test_tfidf_replaces_minilm_when_its_neighbours_are_clearly_better(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    with_minilm(monkeypatch, Vectors(lambda text: rng.normal(size=8)))  # neighbours by chance
    task = worded_task()
    assert choose_embedder(task, task.split("train")) == "tfidf"


def test_minilm_stays_when_tfidf_is_not_clearly_better(monkeypatch) -> None:
    with_minilm(monkeypatch, Vectors(label_vector))  # as good as TF-IDF here: no lead
    task = worded_task()
    assert choose_embedder(task, task.split("train")) == "minilm"


@pytest.mark.parametrize("output_type", ["text", "json"])
def test_no_vote_without_labels(monkeypatch, output_type: str) -> None:
    vectors = Vectors(label_vector)
    with_minilm(monkeypatch, vectors)
    task = replace(worded_task(), output_type=output_type, labels=())
    assert choose_embedder(task, task.split("train")) == "minilm" and vectors.calls == 0


def test_without_the_minilm_extra_auto_is_tfidf_and_nothing_is_embedded(monkeypatch) -> None:
    vectors = Vectors(label_vector)
    real = choice.make_embedder
    monkeypatch.setattr(choice, "make_embedder", lambda name, **kw: vectors if name == "minilm" else real(name, **kw))
    task = worded_task()  # the conftest fixture says the extra is missing
    assert choose_embedder(task, task.split("train")) == "tfidf" and vectors.calls == 0


@pytest.mark.parametrize(("vector_of", "chosen"), [(None, "tfidf"), (label_vector, "minilm")])
def test_an_auto_selector_with_labels_lets_its_pool_vote(monkeypatch, vector_of, chosen: str) -> None:
    rng = np.random.default_rng(0)
    vectors = Vectors(vector_of or (lambda text: rng.normal(size=8)))
    with_minilm(monkeypatch, vectors)
    records = [example_record(worded_task(), example) for example in worded_task().split("train")]
    selector = ExampleSelector("auto", 4, input_keys=["text"], label_key="label").fit(records)
    assert (selector.embedder is vectors) == (chosen == "minilm")
    assert selector.embedder.spec()["kind"] == chosen
    unlabelled = ExampleSelector("auto", 4, input_keys=["text"]).fit(records)
    assert unlabelled.embedder is vectors  # no labels, no vote: MiniLM where installed
