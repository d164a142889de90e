"""The real embedders: MiniLM from its PyPI package (offline), and LiteLLM's embedding call against
llama-cpp-python's OpenAI-compatible server in embedding mode on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import random

import numpy as np
import pytest

from conftest import SHARED_DATASETS, write_task
from optimizer.embed import (CachedEmbedder, LiteLLMEmbedder, MiniLMEmbedder, TfidfEmbedder, make_embedder,
                             minilm_installed, resolve_embedder)
from optimizer.embedder_choice import choose_embedder
from optimizer.select import ExampleSelector, example_record
from optimizer.task import Example, Task, load_task

TEXTS = ["my card never arrived", "the card I ordered has not come yet", "I want my money back for this order"]


def test_minilm_embeds_meaning_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vectors = MiniLMEmbedder().embed(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_minilm_leaves_the_host_applications_settings_alone(monkeypatch) -> None:
    """torch's thread count, the offline flags and transformers' progress bars are process-wide: an app that
    imports a selector keeps its own."""
    import torch
    import transformers

    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    bars_before, threads_before = transformers.utils.logging.is_progress_bar_enabled(), torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        embedder = MiniLMEmbedder(threads=1)
        assert embedder.embed(TEXTS).shape == (3, 384) and embedder.spec() == {"kind": "minilm"}
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads_before)
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
    assert transformers.utils.logging.is_progress_bar_enabled() == bars_before


def test_minilm_selector_uses_the_cache(cache) -> None:
    embedder = make_embedder("minilm", cache=cache)
    assert isinstance(embedder, CachedEmbedder)
    pool = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    ExampleSelector(embedder, 1, input_keys=["text"]).fit(pool)
    second = make_embedder("minilm", cache=cache)
    chosen = ExampleSelector(second, 1, input_keys=["text"]).fit(pool).select({"text": "where is my card"})
    assert second.hits == 3 and second.misses == 1 and chosen[0]["id"] in (0, 1)


def test_litellm_embedder_against_local_server(llama_server, cache) -> None:
    base = llama_server("smollm2-embed", "--embedding", "true")
    embedder = CachedEmbedder(LiteLLMEmbedder("smollm2-embed", api_base=base, batch_size=2), cache)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape[0] == 3 and vectors.shape[1] > 100 and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    again = embedder.embed(TEXTS)
    assert np.array_equal(vectors, again) and embedder.misses == 3 and embedder.hits == 3


def test_auto_is_minilm_where_the_extra_is_installed(run_cli, tmp_path) -> None:
    assert minilm_installed() and resolve_embedder("auto") == "minilm" and resolve_embedder("tfidf") == "tfidf"
    code, stdout, _ = run_cli("select", str(write_task(tmp_path / "t")), "item 3", "-k", "2", "--json")
    assert code == 0 and json.loads(stdout)["embedder"] == MiniLMEmbedder.id


def test_auto_falls_back_to_tfidf_without_the_extra(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "sentence_transformers" else real_find_spec(name, *args))
    assert not minilm_installed() and resolve_embedder("auto") == "tfidf"
    assert isinstance(make_embedder("auto"), TfidfEmbedder)


def banking77_pool(n: int) -> tuple[Example, ...]:
    lines = (SHARED_DATASETS / "banking77" / "train.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in random.Random(0).sample(lines, n)]
    return tuple(Example(id=str(i), inputs={"text": row["text"]}, gold=row["label"]) for i, row in enumerate(rows))


def test_auto_picks_tfidf_for_the_worded_intent_tickets(cache, run_cli) -> None:
    """Measured in docs/benchmarks.md: the built-in tickets' labels follow their wording."""
    intent = load_task("support_intent")
    assert choose_embedder(intent, intent.split("train"), cache=cache) == "tfidf"
    code, stdout, _ = run_cli("select", "support_intent", "my card was declined", "-k", "2", "--json")
    assert code == 0 and json.loads(stdout)["embedder"].startswith("tfidf-")
    records = [example_record(intent, example) for example in intent.split("train")]
    selector = ExampleSelector("auto", 2, input_keys=intent.inputs, label_key=intent.output, cache=cache).fit(records)
    assert isinstance(selector.embedder, TfidfEmbedder)  # an app's selector decides as the CLI does
    unlabelled = {key: value for key, value in records[0].items() if key != intent.output}
    selector = ExampleSelector("auto", 2, input_keys=intent.inputs, label_key=intent.output, cache=cache)
    assert isinstance(selector.fit([unlabelled, *records]).embedder, TfidfEmbedder)  # a KeyError before
    assert selector.select(unlabelled, k=1)[0] == unlabelled


@pytest.mark.skipif(not (SHARED_DATASETS / "banking77").is_dir(), reason="../shared/datasets is not on this machine")
def test_auto_keeps_minilm_for_banking77(cache) -> None:
    """Measured in docs/benchmarks.md: banking77's intents are paraphrases, MiniLM's neighbours vote right."""
    pool = banking77_pool(1000)
    banking = Task(name="banking77", description="", inputs=("text",), output="label", output_type="label",
                   metric="label_match", instruction="Intent?", labels=tuple(sorted({e.gold for e in pool})),
                   splits={"train": pool})
    assert choose_embedder(banking, pool, cache=cache) == "minilm"
