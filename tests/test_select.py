"""ExampleSelector: exact top-k, MMR, label quota, persistence without re-embedding, adapters, clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from optimizer.embed import CachedEmbedder, TfidfEmbedder, normalize_rows
from optimizer.errors import ConfigError
from optimizer.select import DEDUPE, ExampleSelector


class VectorEmbedder:
    """Embeds 'v:<i>' to a fixed random unit vector and anything else by hashing; counts how many texts it saw."""

    id = "test-vectors"

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        self.dim, self.seed, self.seen = dim, seed, 0

    def embed(self, texts):
        self.seen += len(texts)
        rows = [np.random.default_rng([self.seed, abs(hash(t)) % 2**31]).normal(size=self.dim) for t in texts]
        return normalize_rows(np.array(rows) if rows else np.zeros((0, self.dim)))

    def spec(self):
        return {"kind": "test"}


def pool(n: int = 200, labels: int = 5) -> list[dict]:
    return [{"id": i, "text": f"example number {i}", "label": f"L{i % labels}"} for i in range(n)]


def brute_force(selector: ExampleSelector, text: str, k: int) -> list[int]:
    query = selector.embedder.embed([selector.text_of({"text": text})])[0]
    return [int(i) for i in np.argsort(-(selector.matrix @ query), kind="stable")[:k]]


@pytest.mark.parametrize("k", [1, 4, 8, 25])
def test_knn_equals_brute_force(k: int) -> None:
    selector = ExampleSelector(VectorEmbedder(), k, input_keys=["text"], dedupe=None).fit(pool())
    for query in ("a question", "another one", "example number 3x"):
        chosen = selector.select_scored({"text": query})
        assert [c.example["id"] for c in chosen][::-1] == brute_force(selector, query, k)
        sims = [c.similarity for c in chosen]
        assert sims == sorted(sims)  # most similar last


def test_order_similar_first() -> None:
    selector = ExampleSelector(VectorEmbedder(), 5, input_keys=["text"], order="similar_first").fit(pool())
    sims = [c.similarity for c in selector.select_scored({"text": "q"})]
    assert sims == sorted(sims, reverse=True)


def test_batch_equals_single() -> None:
    selector = ExampleSelector(VectorEmbedder(), 4, input_keys=["text"]).fit(pool())
    queries = [{"text": f"q{i}"} for i in range(10)]
    batch = selector.select_batch(queries)
    assert [[c.example["id"] for c in row] for row in batch] == [
        [c.example["id"] for c in selector.select_scored(q)] for q in queries
    ]


@pytest.mark.parametrize("strategy", ["knn", "mmr", "label_quota"])
def test_a_query_alone_gets_what_it_gets_in_a_batch_even_among_exact_ties(strategy: str) -> None:
    """TF-IDF on texts of one shape ties many neighbours exactly; a lone query's float32 product rounded otherwise
    than the batch's and reordered them (a saved program then missed the search's cached answers)."""
    selector = ExampleSelector("tfidf", 6, input_keys=["text"], strategy=strategy, label_key="label").fit(pool(120))
    queries = [{"text": f"example number {i}{suffix}"} for i in range(0, 120, 7) for suffix in ("", "0", " please")]
    batch = selector.select_batch(queries)
    assert batch == [selector.select_scored(query) for query in queries]
    assert any(len({round(c.similarity, 6) for c in row}) < len(row) for row in batch)  # there were ties


def test_a_query_tied_with_the_whole_pool_gets_its_first_examples() -> None:
    """A pool of one text repeated: every example ties with any query. The first k are chosen (it got whichever k
    argpartition left at the top), the whole pool shortlisted and ranked block by block, not in one float64 copy."""
    selector = ExampleSelector("tfidf", 4, input_keys=["text"]).fit(
        [{"id": i, "text": "the same words", "label": "x"} for i in range(3000)])
    chosen = selector.select_scored({"text": "some words"})
    assert sorted(c.example["id"] for c in chosen) == [0, 1, 2, 3] and len({c.similarity for c in chosen}) == 1


def test_exclude_keeps_the_query_out() -> None:
    examples = pool(50)
    selector = ExampleSelector("tfidf", 3, input_keys=["text"]).fit(examples)
    assert 7 in [e["id"] for e in selector.select({"text": "example number 7"})]
    assert 7 not in [e["id"] for e in selector.select({"text": "example number 7"}, exclude_id=7)]


def test_dedupe_skips_near_identical_examples() -> None:
    examples = [{"id": i, "text": "the very same text", "label": "a"} for i in range(5)]
    examples += [{"id": 10 + i, "text": f"different thing {i}", "label": "b"} for i in range(5)]
    deduped = ExampleSelector("tfidf", 3, input_keys=["text"], dedupe=DEDUPE).fit(examples).select(
        {"text": "the very same text"})
    plain = ExampleSelector("tfidf", 3, input_keys=["text"]).fit(examples).select({"text": "the very same text"})
    assert sum(e["text"] == "the very same text" for e in plain) == 3
    assert sum(e["text"] == "the very same text" for e in deduped) == 1


def test_mmr_trades_relevance_for_diversity() -> None:
    cluster = [{"id": i, "text": f"refund my order {i}", "label": "refund"} for i in range(6)]
    others = [{"id": 100 + i, "text": f"{word} order refund", "label": word} for i, word in
              enumerate(["cancel", "track", "change"])]
    examples = cluster + others
    knn = ExampleSelector("tfidf", 4, input_keys=["text"], dedupe=None).fit(examples)
    mmr = ExampleSelector("tfidf", 4, input_keys=["text"], strategy="mmr", mmr_lambda=0.3, dedupe=None).fit(examples)
    pure_relevance = ExampleSelector("tfidf", 4, input_keys=["text"], strategy="mmr", mmr_lambda=1.0,
                                     dedupe=None).fit(examples)
    query = {"text": "refund my order please"}
    assert [e["id"] for e in pure_relevance.select(query)] == [e["id"] for e in knn.select(query)]
    labels_knn = {e["label"] for e in knn.select(query)}
    labels_mmr = {e["label"] for e in mmr.select(query)}
    assert len(labels_mmr) > len(labels_knn)


def test_mmr_greedy_matches_the_formula() -> None:
    selector = ExampleSelector(VectorEmbedder(), 4, input_keys=["text"], strategy="mmr", mmr_lambda=0.6,
                               dedupe=None, fetch_k=30).fit(pool(60))
    q = selector.embedder.embed([selector.text_of({"text": "q"})])[0]
    sims = selector.matrix @ q
    candidates = list(np.argsort(-sims)[:30])
    chosen: list[int] = []
    while len(chosen) < 4:
        best = max(candidates, key=lambda i: 0.6 * sims[i] - 0.4 * max(
            (float(selector.matrix[i] @ selector.matrix[j]) for j in chosen), default=0.0))
        chosen.append(best)
        candidates.remove(best)
    assert {e["id"] for e in selector.select({"text": "q"})} == set(map(int, chosen))


def test_label_quota_balances_labels() -> None:
    examples = [{"id": i, "text": f"positive great movie {i}", "label": "pos"} for i in range(20)]
    examples += [{"id": 100 + i, "text": f"bad film {i}", "label": "neg"} for i in range(20)]
    quota = ExampleSelector("tfidf", 8, input_keys=["text"], strategy="label_quota", label_key="label").fit(examples)
    chosen = quota.select({"text": "great positive movie"})
    assert Counter(e["label"] for e in chosen) == {"pos": 4, "neg": 4}
    many = ExampleSelector(VectorEmbedder(), 5, input_keys=["text"], strategy="label_quota",
                           label_key="label").fit(pool(200, labels=20))
    assert len({e["label"] for e in many.select({"text": "q"})}) == 5  # one each of the 5 closest labels


@pytest.mark.parametrize("strategy", ["knn", "mmr", "label_quota"])
def test_dedupe_still_returns_k_demos_when_the_nearest_are_all_duplicates(strategy: str) -> None:
    """30 copies of the query's text fill every first fetch; the selector fetches further until it has k."""
    examples = [{"id": i, "text": "I want a refund", "label": "refund"} for i in range(30)]
    examples += [{"id": 100 + i, "text": f"I want a refund for order {i}", "label": f"L{i % 3}"} for i in range(6)]
    examples += [{"id": 200 + i, "text": f"unrelated question {i}", "label": "other"} for i in range(20)]
    selector = ExampleSelector("tfidf", 4, input_keys=["text"], strategy=strategy, label_key="label",
                               dedupe=DEDUPE).fit(examples)
    for demos in (selector.select({"text": "I want a refund"}),
                  [s.example for s in selector.select_batch([{"text": "I want a refund"}, {"text": "question 3"}])[0]]):
        assert len(demos) == 4
        assert sum(demo["text"] == "I want a refund" for demo in demos) == 1


def test_selected_demos_share_nothing_with_the_pool_or_the_callers_records() -> None:
    records = [{"id": i, "text": f"two red shirts {i}", "output": {"product": "shirt", "sizes": [i]}} for i in range(5)]
    selector = ExampleSelector("tfidf", 2, input_keys=["text"]).fit(records)
    demo = selector.select({"text": "two red shirts 3"})[-1]
    demo["output"]["product"], demo["output"]["sizes"][0] = "changed", 99
    records[0]["output"]["product"] = "changed too"
    again = selector.select({"text": "two red shirts 3"})[-1]
    assert again["output"] == {"product": "shirt", "sizes": [3]}
    assert selector.examples[0]["output"]["product"] == "shirt"


def test_texts_with_line_separators_and_accents_round_trip(tmp_path: Path) -> None:
    records = [{"id": 0, "text": "caf\u00e9 cr\u00e8me\u2028second line\u2029\u0085end"}, {"id": 1, "text": "plain"}]
    ExampleSelector("tfidf", 1, input_keys=["text"]).fit(records).save(tmp_path / "sel")
    loaded = ExampleSelector.load(tmp_path / "sel")
    assert loaded.examples == records


def test_a_saved_selector_under_a_non_utf8_locale(tmp_path: Path) -> None:
    """Files are UTF-8 whatever the locale: save and load in a Python whose default encoding is ASCII."""
    script = ("import sys; from optimizer.select import ExampleSelector as S; "
              "S('tfidf', 1, input_keys=['text']).fit([{'text': 'caf\\u00e9 cr\\u00e8me'}]).save(sys.argv[1]); "
              "print(S.load(sys.argv[1]).examples[0]['text'].encode('unicode_escape').decode())")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sel")], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "caf\\xe9 cr\\xe8me"


@pytest.mark.parametrize(("damage", "message"), [
    (lambda sel: (sel / "examples.jsonl").write_text("".join((sel / "examples.jsonl").read_text().splitlines(True)[:3])),
     "examples.jsonl holds 3 examples, embeddings.npy 5 vectors"),
    (lambda sel: (sel / "examples.jsonl").write_text((sel / "examples.jsonl").read_text() + '{"id": 9, "text": "x"}\n'),
     "examples.jsonl holds 6 examples, embeddings.npy 5 vectors"),
    (lambda sel: (sel / "examples.jsonl").write_text("[1]\n"), "every line must be a JSON object"),
    (lambda sel: (sel / "selector.json").write_text("[]"), "not a saved selector (no config object)"),
    (lambda sel: (sel / "selector.json").write_text(json.dumps(
        {k: v for k, v in json.loads((sel / "selector.json").read_text()).items() if k != "embedder_id"})),
     "not a saved selector (no embedder_id)"),
])
def test_a_damaged_saved_selector_is_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    ExampleSelector("tfidf", 2, input_keys=["text"]).fit(pool(5)).save(tmp_path / "sel")
    damage(tmp_path / "sel")
    with pytest.raises(ConfigError, match=re.escape(message)):
        ExampleSelector.load(tmp_path / "sel")


def test_save_and_load_round_trip_without_reembedding(tmp_path: Path) -> None:
    embedder = VectorEmbedder()
    selector = ExampleSelector(embedder, 4, input_keys=["text"], strategy="mmr").fit(pool())
    assert embedder.seen == 200
    selector.save(tmp_path / "sel")
    counting = VectorEmbedder()
    loaded = ExampleSelector.load(tmp_path / "sel", embedder=counting)
    assert loaded.config == selector.config and loaded.examples == selector.examples
    assert loaded.matrix.dtype == np.float32 and np.array_equal(loaded.matrix, selector.matrix)
    assert loaded.select({"text": "q"}) == selector.select({"text": "q"})
    assert counting.seen == 1  # only the query was embedded


def test_tfidf_selector_reloads_with_its_idf(tmp_path: Path) -> None:
    selector = ExampleSelector("tfidf", 3, input_keys=["text"]).fit(pool(40))
    selector.save(tmp_path / "sel")
    loaded = ExampleSelector.load(tmp_path / "sel", k=2)
    assert loaded.embedder.id == selector.embedder.id
    assert loaded.select({"text": "example number 12"}) == selector.select({"text": "example number 12"})[-2:]


def test_two_selectors_on_one_tfidf_embedder_keep_their_own_idf(tmp_path: Path) -> None:
    """Fitting a second selector on the shared embedder refitted the first one's IDF: its queries were embedded
    with weights its pool was not, and `save` wrote the second pool's IDF beside the first pool's vectors."""
    shared = TfidfEmbedder()
    first = ExampleSelector(shared, 5, input_keys=["text"]).fit(pool(60))
    alone = ExampleSelector(TfidfEmbedder(), 5, input_keys=["text"]).fit(pool(60))
    other = [{"id": i, "text": f"refund order {i} please, number {i % 7}", "label": "x"} for i in range(80)]
    ExampleSelector(shared, 5, input_keys=["text"]).fit(other)
    assert shared.id != alone.embedder.id == first.embedder.id
    queries = [{"text": f"example number {i} please"} for i in (3, 17, 41)]
    assert first.select_batch(queries) == alone.select_batch(queries)
    first.save(tmp_path / "first")
    assert ExampleSelector.load(tmp_path / "first").select_batch(queries) == alone.select_batch(queries)


def test_a_selector_saved_by_a_newer_formfit_is_refused_clearly(tmp_path: Path) -> None:
    ExampleSelector("tfidf", 3, input_keys=["text"]).fit(pool(10)).save(tmp_path / "sel")
    meta = json.loads((tmp_path / "sel" / "selector.json").read_text())
    (tmp_path / "sel" / "selector.json").write_text(json.dumps({**meta, "format": meta["format"] + 1}))
    with pytest.raises(ConfigError, match=r"selector\.json: saved by a newer formfit \(format 2; this one reads up to 1"):
        ExampleSelector.load(tmp_path / "sel")


def test_cached_embedder_embeds_each_text_once(cache) -> None:
    inner = VectorEmbedder()
    cached = CachedEmbedder(inner, cache)
    first = cached.embed(["a", "b", "a"])
    again = CachedEmbedder(VectorEmbedder(), cache).embed(["b", "a"])
    assert inner.seen == 2 and np.array_equal(first[[1, 0]], again)
    assert first.dtype == np.float32


def test_tfidf_embedder_is_normalised_and_similar_texts_are_close() -> None:
    embedder = TfidfEmbedder().fit(["my card is lost", "refund my order", "where is my card"])
    vectors = embedder.embed(["my card is lost", "I lost my card", "refund please"])
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_hnsw_index_agrees_with_exact_search() -> None:
    examples = pool(2000)
    exact = ExampleSelector(VectorEmbedder(dim=32), 8, input_keys=["text"], dedupe=None).fit(examples)
    ann = ExampleSelector(VectorEmbedder(dim=32), 8, input_keys=["text"], dedupe=None, index="hnsw").fit(examples)
    overlap = [len({e["id"] for e in exact.select({"text": f"q{i}"})} & {e["id"] for e in ann.select({"text": f"q{i}"})})
               for i in range(20)]
    assert np.mean(overlap) >= 7.0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ExampleSelector("tfidf", 2, input_keys=["text"]).fit([]).select({"text": "x"}), "pool is empty"),
        (lambda: ExampleSelector("tfidf", 9, input_keys=["text"]).fit(pool(5)).select({"text": "x"}),
         "k=9 is larger than the demo pool (5 examples)"),
        (lambda: ExampleSelector("tfidf", 2, strategy="nearest"), "unknown selection strategy 'nearest'"),
        (lambda: ExampleSelector("tfidf", 2, strategy="label_quota"), "needs label_key"),
        (lambda: ExampleSelector("tfidf", 2, mmr_lambda=2.0), "mmr_lambda must be in [0, 1]"),
        (lambda: ExampleSelector("tfidf", 2, input_keys=["text"]).fit(pool(5)).select({"question": "x"}),
         "lacks input field(s) 'text'"),
    ],
)
def test_clear_errors(build, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_one_input_key_may_be_given_as_a_string() -> None:
    """`input_keys="text"` is the field `text` (it was the fields 't', 'e', 'x', 't': "lacks input field(s) 't'")."""
    pool = [{"text": "my card is lost", "label": "card"}, {"text": "refund my order", "label": "refund"}]
    selector = ExampleSelector("tfidf", 1, input_keys="text").fit(pool)
    assert selector.config.input_keys == ("text",) and selector.select({"text": "lost card"}) == pool[:1]


def test_langchain_adapter_satisfies_the_interface() -> None:
    from langchain_core.example_selectors import BaseExampleSelector
    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

    from optimizer.interop.langchain import LangChainExampleSelector

    adapter = LangChainExampleSelector(ExampleSelector("tfidf", 2, input_keys=["text"]).fit(
        [{"text": "my card is lost", "label": "card_lost"}, {"text": "refund my order", "label": "refund"},
         {"text": "card stolen yesterday", "label": "card_lost"}]))
    assert isinstance(adapter, BaseExampleSelector)
    adapter.add_example({"text": "I want my money back", "label": "refund"})
    prompt = FewShotPromptTemplate(
        example_selector=adapter, example_prompt=PromptTemplate.from_template("{text} -> {label}"),
        suffix="{text} ->", input_variables=["text"])
    rendered = prompt.format(text="money back for my order")
    assert "refund" in rendered and rendered.endswith("money back for my order ->")


def test_dspy_module_selects_per_call_and_survives_save_load(tmp_path: Path) -> None:
    import dspy
    from dspy.utils import DummyLM

    from optimizer.interop.dspy import SimilarDemos

    examples = [{"id": i, "text": t, "label": l} for i, (t, l) in enumerate(
        [("my card is lost", "card_lost"), ("refund my order", "refund"), ("card stolen", "card_lost"),
         ("money back please", "refund")])]
    selector = ExampleSelector("tfidf", 2, input_keys=["text"]).fit(examples)
    program = SimilarDemos("text -> label", selector)
    demos = program.demos({"text": "refund my money please"})
    assert {d.label for d in demos} == {"refund"} and "id" not in demos[0]
    lm = DummyLM([{"label": "refund"}] * 3)
    with dspy.context(lm=lm):
        assert program(text="refund my money please").label == "refund"
    program.save(tmp_path / "prog")
    loaded = SimilarDemos("text -> label", ExampleSelector("tfidf", 1)).load(tmp_path / "prog")
    assert loaded.selector.examples == selector.examples and loaded.selector.config.k == 2
    assert [d.toDict() for d in loaded.demos({"text": "lost card"})] == [d.toDict() for d in
                                                                        program.demos({"text": "lost card"})]
    assert json.loads((tmp_path / "prog" / "program.json").read_text())


def test_cli_select_from_a_data_file_then_from_the_saved_selector(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in [
        {"id": 1, "text": "my card never arrived", "label": "card_arrival"},
        {"id": 2, "text": "refund my last order", "label": "refund"},
        {"id": 3, "text": "card still not delivered", "label": "card_arrival"},
        {"id": 4, "text": "I was charged twice", "label": "double_charge"},
    ]))
    code, out, err = run_cli("select", str(data), "where is my card", "-k", "2", "--save", str(tmp_path / "sel"),
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [d["example"]["label"] for d in result["demos"]] == ["card_arrival", "card_arrival"]
    assert result["demos"][0]["similarity"] <= result["demos"][1]["similarity"]
    code, out, err = run_cli("select", str(tmp_path / "sel"), "charged two times", "-k", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["demos"][0]["example"]["id"] == 4
    code, out, err = run_cli("select", str(tmp_path / "sel"), "charged two times", "--json")  # k as saved
    assert code == 0, err
    assert len(json.loads(out)["demos"]) == 2


def test_cli_select_on_a_pool_of_several_inputs_takes_the_others_with_input(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in [
        {"id": 1, "question": "who wrote it", "context": "a novel about whales", "label": "melville"},
        {"id": 2, "question": "who wrote it", "context": "a play about a danish prince", "label": "shakespeare"},
    ]))
    code, out, err = run_cli("select", str(data), "who wrote it", "--input", "context=the prince of denmark",
                             "-k", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["query"] == {"question": "who wrote it", "context": "the prince of denmark"}
    assert [d["example"]["label"] for d in result["demos"]] == ["shakespeare"]


def test_cli_select_errors(run_cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run_cli("select", str(empty), "x")
    assert code == 2 and "empty.jsonl: the file has no records" in err and len(err.strip().splitlines()) == 1
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a", "label": "b"}\n')
    code, _, err = run_cli("select", str(one), "x", "-k", "3")
    assert code == 2 and "k=3 is larger than the demo pool (1 examples)" in err


def test_cli_select_shows_pool_records_and_the_query_as_text_not_rich_markup(run_cli, tmp_path: Path) -> None:
    """rich reads `[...]` as markup: `[/INST]` in a pool record used to crash the table (MarkupError)."""
    data = tmp_path / "pool.jsonl"
    data.write_text('{"text": "see [/INST] here", "label": "[b]a\\\\"}\n{"text": "other thing", "label": "b"}\n')
    code, out, err = run_cli("select", str(data), "[/q] see here", "-k", "1", "--embedder", "tfidf")
    assert code == 0, err
    assert "'[/q] see here'" in out and '{"text": "see [/INST] here", "label": "[b]a\\\\"}' in out
