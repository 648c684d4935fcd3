"""The pure parts of benchmarks/bench_liveqa.py: deterministic halves, metric aggregation, percentiles."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


BENCHMARK = "bench_liveqa"  # the module the ``bench`` fixture (conftest.py) imports


QIDS = [f"{f}:{i}.0" for f in (1, 2) for i in range(1, 120)]


def test_halves_are_deterministic_disjoint_and_cover_all(bench) -> None:
    groups = bench.split_halves(QIDS)
    assert set(groups) == {"tune", "report", "all"}
    tune, report = set(groups["tune"]), set(groups["report"])
    assert not tune & report
    assert tune | report == set(QIDS) == set(groups["all"])
    assert len(groups["all"]) == len(QIDS)
    # both halves are substantial (a hash split, not everything on one side)
    assert 0.35 < len(tune) / len(QIDS) < 0.65
    # same split whatever the input order, duplicates or a second call
    again = bench.split_halves(list(reversed(QIDS)) + QIDS[:5])
    assert again == groups
    # a question's half doesn't depend on which other questions are scored (e.g. with --limit)
    subset = bench.split_halves(QIDS[:30])
    assert set(subset["tune"]) == tune & set(QIDS[:30])
    # pinned values: the split must not change between runs or Python versions (SHA-1, not hash())
    assert {q: bench.half_of(q) for q in ("1:1.0", "1:2.0", "1:3.0", "2:1.0", "2:2.0", "2:3.0")} == {
        "1:1.0": "report", "1:2.0": "report", "1:3.0": "report", "2:1.0": "tune", "2:2.0": "tune", "2:3.0": "tune",
    }


def test_aggregate_on_a_hand_made_case(bench) -> None:
    labels = {"q1": {"a"}, "q2": {"b", "c"}, "q3": {"z"}, "q4": {"d"}}
    rankings = {
        "q1": ["a", "x", "y"],  # hit at 1
        "q2": ["x", "b", "b", "y", "c"],  # first hit at 2; the repeated b counts once, so c is at rank 4
        "q3": ["x", "y"],  # miss
        "q4": ["x"] * 3 + [f"n{i}" for i in range(10)] + ["d"],  # d is beyond the top 10 distinct ids
    }
    got = bench.aggregate(rankings, labels, ["q1", "q2", "q3", "q4"])
    assert got["n"] == 4
    assert got["mrr@10"] == pytest.approx((1 + 1 / 2 + 0 + 0) / 4)
    assert got["recall@10"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert got["hit@1"] == pytest.approx(1 / 4)
    ndcg_q2 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert got["ndcg@10"] == pytest.approx((1 + ndcg_q2 + 0 + 0) / 4)

    # only the named questions count; a question the system never answered scores zero
    one = bench.aggregate(rankings, labels, ["q2"])
    assert one["mrr@10"] == pytest.approx(0.5) and one["hit@1"] == 0.0 and one["recall@10"] == 1.0
    missing = bench.aggregate({}, labels, ["q1"])
    assert missing["mrr@10"] == 0.0 and missing["recall@10"] == 0.0
    assert math.isnan(bench.aggregate(rankings, labels, [])["mrr@10"])


def test_recall_and_dedupe(bench) -> None:
    assert bench.dedupe_sources(["a", "b", "a", "c"], k=2) == ["a", "b"]
    assert bench.recall_at_k(["a", "a", "b"], {"a", "b", "c", "d"}, k=2) == pytest.approx(0.5)
    assert bench.recall_at_k(["a"], set()) == 0.0


def test_percentile(bench) -> None:
    values = [10.0, 1.0, 4.0, 3.0, 2.0]
    assert bench.percentile(values, 0.5) == 3.0
    assert bench.percentile(values, 0.0) == 1.0 and bench.percentile(values, 1.0) == 10.0
    assert bench.percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)
    assert math.isnan(bench.percentile([], 0.5))


def test_answers_of_takes_the_answer_part(bench) -> None:
    from llama_index.core import Document

    docs = [Document(id_="d1", text="Question: What is gout?\nAnswer: Gout is arthritis.\nMore."), Document(id_="d2", text="no answer")]
    assert bench.answers_of(docs) == {"d1": "Gout is arthritis.\nMore.", "d2": "no answer"}


def test_source_log_odds_on_a_hand_made_case(bench) -> None:
    spec = importlib.util.spec_from_file_location("tune_liveqa", REPO / "benchmarks" / "tune_liveqa.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    source_of = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C"}
    ranked = {"q1": ["a1", "b1", "c1"], "q2": ["a2", "b2"], "q3": ["b1", "a1"]}
    labels = {"q1": {"a1"}, "q2": {"a2"}, "q3": {"a1"}}  # A: 3 of 3 seen are relevant, B: 0 of 3, C: 0 of 1
    odds = tune.source_log_odds(ranked, labels, source_of, alpha=1.0)
    p = 3 / 7
    assert odds["A"] == round(math.log((3 + 1) / (3 + 1 / p)) - math.log(p), 2) > 0
    assert odds["B"] < odds["C"] < 0  # C, seen once, is pulled towards 0 by the smoothing
    assert tune.source_log_odds(ranked, {}, source_of) == {}
