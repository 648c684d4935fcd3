"""The pure parts of benchmarks/bench_aspects.py: the aspect set and what counts as the asked aspect's page."""

from __future__ import annotations

from types import SimpleNamespace

BENCHMARK = "bench_aspects"  # the module the ``bench`` fixture (conftest.py) imports


def row(doc_id: str, focus: str, qtype: str, question: str) -> dict:
    return {"doc_id": doc_id, "focus": focus, "question_type": qtype, "question": question, "answer": "Some text."}


def test_the_same_question_of_another_collection_counts_as_the_asked_aspects_page(bench) -> None:
    # The split kept GARD's inheritance page; GHR's page of the same question was dropped from it as a duplicate.
    rows = [
        row("gard-1", "Peutz-Jeghers syndrome", "inheritance", "Is Peutz-Jeghers syndrome inherited ?"),
        row("gard-2", "Peutz-Jeghers syndrome", "information", "What is (are) Peutz-Jeghers syndrome ?"),
    ]
    items = [i for i in bench.aspect_set(rows, 5, seed=7) if i["aspect"] == "inheritance"]
    assert len(items) == 1 and items[0]["relevant"] == items[0]["own"] == {"gard-1"}
    documents = [
        SimpleNamespace(doc_id="gard-1", metadata={"focus": "Peutz-Jeghers syndrome", "question_type": "inheritance"}),
        SimpleNamespace(doc_id="ghr-3", metadata={"focus": "Peutz-Jeghers Syndrome", "question_type": "inheritance"}),
        SimpleNamespace(doc_id="ghr-1", metadata={"focus": "Peutz-Jeghers syndrome", "question_type": "information"}),
        SimpleNamespace(doc_id="other", metadata={"focus": "Marfan syndrome", "question_type": "inheritance"}),
    ]
    bench.with_same_questions(items, documents)
    assert items[0]["relevant"] == {"gard-1", "ghr-3"}  # another topic's or another type's page is not
    assert items[0]["own"] == {"gard-1"}


def test_hit_at_1_counts_both_labels(bench) -> None:
    item = {"message": "m", "aspect": "inheritance", "relevant": {"a", "b"}, "own": {"a"}}

    class Engine:
        def retrieve(self, text: str) -> list:
            return [SimpleNamespace(node=SimpleNamespace(ref_doc_id=d)) for d in ("b", "a")]

    hit, mrr, per, hits, own = bench.hit_at_1(Engine(), [item], "message")
    assert (hit, mrr, per["inheritance"], hits, own) == (1.0, 1.0, [1], [1], [0])
