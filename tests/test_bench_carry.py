"""Unfinished bench/vs_dspy.py rows carried between machines (bench/_carry.py), on hand-made caches."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("dspy")

import litellm  # noqa: E402
from _carry import pack, pack_path, unpack  # noqa: E402
from _counting_proxy import Counts, Meter  # noqa: E402
from dspy.clients.cache import Cache as DspyCache  # noqa: E402

from optimizer.cache import Cache  # noqa: E402

TAGS = {"trec/knn[chat]/optimize": {"calls": 7, "prompt_tokens": 70, "completion_tokens": 7, "errors": 0,
                                    "wall_s": 1.5}}


def answer(text: str) -> litellm.ModelResponse:
    return litellm.ModelResponse(choices=[{"message": {"role": "assistant", "content": text}}], model="smollm2")


def test_formfit_row_carries_its_lm_answers_counters_and_record_but_no_vectors(tmp_path):
    source = Cache(tmp_path / "here" / "cache")
    source.put_json("lm", "k1", {"text": "location"})
    source.put_json("lm", "k2", {"text": "entity"})
    source.put("embedding", "v1", b"\x00" * 64)
    record = {"kind": "formfit", "status": "optimized", "best": {"instruction": "x"}}
    target = pack_path(tmp_path / "carry", "trec", "formfit@611")
    assert pack(tmp_path / "here", target, TAGS, record) == 2

    tags, carried, entries = unpack(target, tmp_path / "there")
    copy = Cache(tmp_path / "there" / "cache")
    assert (tags, carried, entries) == (TAGS, record, 2)
    assert copy.get_json("lm", "k1") == {"text": "location"} and copy.get_json("lm", "k2") == {"text": "entity"}
    assert copy.keys("embedding") == []


def test_dspy_row_answers_are_read_back_by_dspys_own_cache(tmp_path):
    disk = DspyCache(True, False, str(tmp_path / "here" / "cache")).disk_cache
    disk["request-digest"] = answer("[[ ## label ## ]] location")
    disk["embedding-digest"] = np.zeros((4, 8), dtype=np.float32)
    target = pack_path(tmp_path / "carry", "trec", "knn[chat]")
    assert pack(tmp_path / "here", target, TAGS, None) == 1

    assert unpack(target, tmp_path / "there")[1:] == (None, 1)
    again = DspyCache(True, False, str(tmp_path / "there" / "cache")).disk_cache
    assert again["request-digest"].choices[0].message.content == "[[ ## label ## ]] location"
    assert "embedding-digest" not in again


def test_meter_adopts_carried_tags_without_overwriting_its_own(tmp_path):
    meter = Meter(tmp_path / "meter.json")
    meter.start("trec/knn[chat]/test")
    meter.record(10, 1, ok=True)
    meter.stop()
    meter.adopt({**TAGS, "trec/knn[chat]/test": {**TAGS["trec/knn[chat]/optimize"], "calls": 99}})
    saved = json.loads((tmp_path / "meter.json").read_text())
    assert saved["trec/knn[chat]/optimize"]["calls"] == 7
    assert saved["trec/knn[chat]/test"]["calls"] == 1
    assert Meter(tmp_path / "meter.json").counts["trec/knn[chat]/optimize"] == Counts(**TAGS["trec/knn[chat]/optimize"])


def test_pack_takes_unfinished_rows_with_their_own_tags_only(tmp_path):
    from test_bench_vs_dspy import vs_dspy

    out, carry = tmp_path / "out", tmp_path / "carry"
    for key in ("formfit@611", "formfit@305"):
        Cache(out / "trec" / key / "cache").put_json("lm", key, {"text": "x"})
    meter = {**TAGS, "trec/formfit@611/optimize": TAGS["trec/knn[chat]/optimize"]}
    (out / "meter.json").write_text(json.dumps(meter))
    done = {"kind": "formfit", "status": "done"}
    (tmp_path / "r.json").write_text(json.dumps({"datasets": {"trec": {"methods": {"formfit@305": done}}}}))
    vs_dspy.main(["--pack", "--datasets", "trec", "--out", str(out), "--results", str(tmp_path / "r.json"),
                  "--carry", str(carry)])
    assert sorted(path.name for path in (carry / "trec").iterdir()) == ["formfit@611.pkl.xz"]
    tags, record, entries = unpack(carry / "trec" / "formfit@611.pkl.xz", tmp_path / "there")
    assert (list(tags), record, entries) == (["trec/formfit@611/optimize"], None, 1)


def test_a_carried_row_that_fails_is_recorded_and_spends_its_pack(tmp_path, monkeypatch):
    from test_bench_vs_dspy import vs_dspy

    disk = DspyCache(True, False, str(tmp_path / "there" / "cache")).disk_cache
    disk["request-digest"] = answer("[[ ## label ## ]] location")
    source = pack_path(tmp_path / "carry", "trec", "mipro[chat]")
    pack(tmp_path / "there", source, {"trec/mipro[chat]/optimize": TAGS["trec/knn[chat]/optimize"]}, None)

    def compile_fails(*args, **kwargs):
        raise ValueError("the proposer's answer did not parse")

    monkeypatch.setattr(vs_dspy, "compile_dspy", compile_fails)
    monkeypatch.setattr(vs_dspy.dspy, "configure_cache", lambda **kwargs: None)
    monkeypatch.setattr(vs_dspy.dspy, "configure", lambda **kwargs: None)
    args = vs_dspy.parse_args(["--out", str(tmp_path / "out"), "--results", str(tmp_path / "r.json"),
                               "--carry", str(tmp_path / "carry")])
    bench = vs_dspy.Bench(args, "http://127.0.0.1:9/v1", lambda: True, Meter(tmp_path / "meter.json"))
    methods = bench.data["datasets"].setdefault("trec", {"methods": {}})["methods"]
    bench.dspy_method(SimpleNamespace(name="trec"), methods, "mipro", "chat")

    saved = json.loads((tmp_path / "r.json").read_text())["datasets"]["trec"]["methods"]["mipro[chat]"]
    assert (saved["status"], saved["error"]) == ("failed", "ValueError: the proposer's answer did not parse")
    assert saved["optimize"]["calls"] == 7  # the carried calls, adopted by the meter
    assert (tmp_path / "out" / "trec" / "mipro[chat]" / "cache").is_dir()  # unpacked before it ran
    assert not source.exists()
