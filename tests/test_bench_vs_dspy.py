"""The DSPy comparison's target check (bench/vs_dspy.py), on hand-made result records."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT

pytest.importorskip("dspy")


def load_vs_dspy():
    spec = importlib.util.spec_from_file_location("vs_dspy", ROOT / "bench" / "vs_dspy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vs_dspy = load_vs_dspy()


def record(kind: str, score: float, optimize: int, test: int, rows: int = 200) -> dict:
    return {"kind": kind, "status": "done", "score": {"value": score, "low": score, "high": score},
            "optimize": {"calls": optimize}, "test": {"calls": test}, "scores": [score] * rows}


def test_extra_calls_count_test_time_learning_and_not_the_answers():
    assert vs_dspy.extra_calls(record("dspy", 0.5, 0, 1000)) == 800  # KNNFewShot bootstraps at test time
    assert vs_dspy.extra_calls(record("dspy", 0.5, 611, 200)) == 611
    assert vs_dspy.extra_calls(record("dspy", 0.5, 0, 200)) == 0


def test_target_is_checked_against_the_best_dspy_row_within_half_its_calls():
    methods = {"knn[plain]": record("dspy", 0.52, 0, 1000), "mipro[plain]": record("dspy", 0.18, 611, 200),
               "formfit@305": record("formfit", 0.59, 268, 200), "formfit@611": record("formfit", 0.70, 531, 200)}
    text = vs_dspy.target_check(methods)
    assert "best DSPy row knn[plain] 0.520, 800 extra calls" in text
    assert "formfit@305 0.590 with 268, +7.0 points: met." in text  # formfit@611 spends 531 > 400

    methods["formfit@305"] = record("formfit", 0.55, 268, 200)
    assert vs_dspy.target_check(methods).endswith("+3.0 points: short by 2.0 points.")


def test_target_not_met_when_no_formfit_row_is_cheap_enough():
    methods = {"labeled[plain]": record("dspy", 0.075, 0, 200), "formfit@406": record("formfit", 0.505, 364, 200)}
    text = vs_dspy.target_check(methods)
    assert "no optimizer can spend half of 0" in text and text.endswith("+43.0 points): not met.")
    assert vs_dspy.target_check({"formfit@406": methods["formfit@406"]}).startswith("Target: not checked yet")


def test_report_rows_show_extra_calls_and_one_line_errors():
    knn = {**record("dspy", 0.52, 0, 1000), "optimize": {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                         "wall_s": 1.0},
           "test": {"calls": 1000, "prompt_tokens": 9, "completion_tokens": 9, "wall_s": 2.0}}
    assert vs_dspy.row("knn[plain]", knn).startswith("| knn[plain] | 0.520 [0.520, 0.520] | 0 + 1,000 | 800 | 9 | 9 |")
    failed = {"kind": "dspy", "status": "failed", "error": "AdapterParseError: a | b\nc",
              "optimize": {"calls": 2, "prompt_tokens": 5, "completion_tokens": 1, "wall_s": 3.0}}
    assert vs_dspy.row("copro[plain]", failed) == ("| copro[plain] | failed: AdapterParseError: a / b c | 2 + 0 |  | 5 "
                                                   "| 1 | 3 |")


def test_wall_time_sums_all_rows_and_those_of_the_plain_adapter_table():
    def timed(kind: str, optimize_s: float, test_s: float, **extra) -> dict:
        return {"kind": kind, "optimize": {"wall_s": optimize_s}, "test": {"wall_s": test_s}, **extra}

    methods = {"knn[plain]": timed("dspy", 0, 1800), "knn[chat]": timed("dspy", 0, 3600),
               "copro[plain]": {"kind": "dspy", "optimize": {"wall_s": 1800}},  # failed: no test part
               "formfit@800": timed("formfit", 3600, 1800, **{"for": ["knn[plain]", "half of mipro[plain]"]}),
               "formfit@1800": timed("formfit", 3600, 0, **{"for": ["knn[chat]"]})}
    assert vs_dspy.wall_time(methods) == "Wall time of the rows: 4.5 h; of the plain-adapter table: 2.5 h."


def test_formfit_rows_name_their_budget_reason_chosen_demos_and_code():
    row = {"for": ["half of bootstrap_rs[plain]"], "best": {"k": 16, "strategy": "fixed"}, "code": "6cf16ae"}
    assert vs_dspy.row_label("formfit@993", row) == ("formfit@993 (for half of bootstrap_rs[plain], chose 16 fixed "
                                                     "demos, code 6cf16ae)")
    assert vs_dspy.row_label("formfit@50", {"best": {"k": 0, "strategy": "random"}}) == "formfit@50 (chose no demos)"
    assert vs_dspy.row_label("knn[plain]", {}) == "knn[plain]"


def test_rows_of_another_embedder_are_keyed_apart_and_sorted_after_their_tfidf_twin():
    assert vs_dspy.row_key("knn[plain]", "minilm") == "knn[plain]+minilm"
    assert vs_dspy.row_key("formfit@1007", "minilm") == "formfit@1007+minilm"
    assert vs_dspy.row_key("bootstrap_rs[plain]", "minilm") == "bootstrap_rs[plain]"  # it does not embed
    assert vs_dspy.row_key("knn[plain]", "tfidf") == "knn[plain]"
    keys = ["formfit@1007+minilm", "formfit@611", "knn[plain]+minilm", "formfit@1007", "knn[plain]", "labeled[chat]"]
    assert sorted(keys, key=vs_dspy.row_order) == ["labeled[chat]", "knn[plain]", "knn[plain]+minilm", "formfit@611",
                                                   "formfit@1007", "formfit@1007+minilm"]
