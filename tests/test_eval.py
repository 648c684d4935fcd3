"""Evaluation: metric edge cases and an end-to-end `python -m eval.compare` run on a tiny model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from eval import metrics as M


def test_rouge_of_reference_is_one_and_of_unrelated_is_low() -> None:
    scores = M.rouge_scores(["Gout is treated with colchicine.", "Bananas are yellow."], ["Gout is treated with colchicine.", "Gout is arthritis."])
    assert all(scores[t][0] == pytest.approx(1.0) for t in M.ROUGE_TYPES)
    assert scores["rougeL"][1] < 0.2


def test_bootstrap_ci_and_paired_test() -> None:
    mean, low, high = M.bootstrap_ci([0.5] * 50)
    assert mean == low == high == 0.5
    better = [0.6 + 0.01 * (i % 5) for i in range(100)]
    worse = [b - 0.1 for b in better]
    assert M.paired_bootstrap_pvalue(better, worse) < 0.01
    same = [0.3, 0.5, 0.4, 0.6] * 25
    assert M.paired_bootstrap_pvalue(same, list(reversed(same))) > 0.2
    assert all(math.isnan(x) for x in M.bootstrap_ci([]))


def test_ranking_metrics() -> None:
    got = M.ranking_metrics([["a", "b", "c"], ["x", "y", "gold"], ["p", "q"]], [["a"], ["gold"], ["gold"]], k=3)
    assert got["hit@3"] == [1.0, 1.0, 0.0]
    assert got["mrr@3"] == [1.0, pytest.approx(1 / 3), 0.0]
    assert got["ndcg@3"][0] == 1.0 and got["ndcg@3"][1] == pytest.approx(0.5)
    repeated = M.ranking_metrics([["doc1", "doc1", "doc2"]], [["doc1"]], k=3)
    assert repeated["ndcg@3"] == [1.0] and repeated["mrr@3"] == [1.0]


def test_abstention_citations_and_grounding() -> None:
    assert M.is_abstention("I don't know: the provided sources don't cover this question.")
    assert M.is_abstention("The sources do not mention this drug.")
    assert not M.is_abstention("Gout is treated with colchicine [1].")
    assert M.cited_numbers("See [2] and [1], also [2].") == [2, 1]
    assert M.citation_correct("It is treated with NSAIDs [2].", 2) == 1.0
    assert M.citation_correct("It is treated with NSAIDs [1].", 2) == 0.0
    assert math.isnan(M.citation_correct("anything", None))
    ctx = ["Gout attacks are treated with colchicine and corticosteroids."]
    assert M.grounding_score("Gout attacks are treated with colchicine [1].", ctx) == 1.0
    assert M.grounding_score("Bananas contain potassium and vitamins.", ctx) == 0.0
    assert math.isnan(M.grounding_score("Yes.", ctx))
    # Citation support: does each [n] point at the source holding the words it closes?
    two = ctx + ["Bananas contain potassium and many vitamins."]
    answer = "Gout attacks are treated with colchicine [1]. Bananas contain potassium and vitamins [1]."
    assert M.citation_support(answer, two) == 0.5
    assert M.citation_support(answer.replace("vitamins [1]", "vitamins [2]"), two) == 1.0
    assert M.citation_support("Gout attacks are treated with colchicine [3].", two) == 0.0  # no source 3
    assert math.isnan(M.citation_support("Gout attacks are treated with colchicine.", two))  # cites nothing


def test_ragas_judge_free_context_metrics() -> None:
    got = M.ragas_context_scores(
        [["gout is treated with colchicine", "asthma uses inhalers"]],
        [["gout is treated with colchicine"]],
        [["a", "b"]],
        [["a"]],
    )
    assert got["ragas_id_context_recall"] == [1.0]
    assert got["ragas_id_context_precision"] == [0.5]
    assert got["ragas_nonllm_context_recall"][0] == pytest.approx(1.0)


def _write_split(settings, tmp_path: Path) -> Path:
    from corpus import load_corpus
    from finetune.data import document_to_example, write_splits

    docs, _ = load_corpus(settings.corpus)
    rows = [document_to_example(d) for d in docs]
    split_dir = tmp_path / "splits"
    write_splits({"train": rows[:2], "val": rows[2:3], "test": rows}, split_dir, {"seed": 0, "sources": settings.corpus})
    return split_dir


@pytest.mark.parametrize("exclude", [False, True])
def test_compare_end_to_end(settings, embed_model, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exclude: bool) -> None:
    from eval.compare import main
    from rag_app.index.build import build_index

    build_index(settings, embed_model=embed_model, show_progress=False)
    split_dir = _write_split(settings, tmp_path)
    for key, value in {"MEDQA_STORAGE_DIR": settings.storage_dir, "MEDQA_CORPUS": settings.corpus[0],
                       "MEDQA_CHUNK_SIZE": settings.chunk_size, "MEDQA_CHUNK_OVERLAP": settings.chunk_overlap}.items():
        monkeypatch.setenv(key, str(value))
    out = tmp_path / "report"
    argv = ["--systems", "base,ft,base+rag,ft+rag,raft+rag,reference", "--base_model", str(tiny_model_dir), "--ft_model", str(tiny_model_dir),
            "--raft_model", str(tiny_model_dir),
            "--split_dir", str(split_dir), "--limit", "6", "--max_new_tokens", "8", "--batch_size", "4", "--output_dir", str(out)]
    if exclude:
        argv.append("--exclude_test_from_index")
    assert main(argv) == 0

    for name in ("report.md", "metrics.json", "details.jsonl", "rouge.png", "scatter_ft_vs_ft_rag.png", "scatter_ft_rag_vs_raft_rag.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reference/rougeL"] == pytest.approx(1.0) and metrics["reference/rouge1"] == pytest.approx(1.0)
    for system in ("base", "ft", "base+rag", "ft+rag"):
        assert 0.0 <= metrics[f"{system}/rougeL"] <= 1.0
        assert metrics[f"{system}/rougeL_ci_low"] <= metrics[f"{system}/rougeL"] <= metrics[f"{system}/rougeL_ci_high"]
    assert 0.0 <= metrics["p/ft+rag_vs_ft/rougeL"] <= 1.0
    details = [json.loads(line) for line in (out / "details.jsonl").read_text().splitlines()]
    assert len(details) == 6 and set(details[0]["answers"]) == {"base", "ft", "base+rag", "ft+rag", "raft+rag", "reference"}
    assert 0.0 <= metrics["raft+rag/abstention"] <= 1.0 and "p/raft+rag_vs_ft+rag/rougeL" in metrics
    report = (out / "report.md").read_text()
    assert "| rougeL |" in report and "manifest hash" in report
    if exclude:
        assert "knowledge absent" in report
        assert metrics["retrieval/pair_hit@3"] == 0.0  # the test pairs are never retrieved
        assert all(s["doc_id"] != d["doc_id"] for d in details for s in d["sources"])
    else:
        assert "open book: 6/6" in report
        assert metrics["retrieval/pair_hit@3"] == 1.0
        assert metrics["retrieval/ragas_id_context_recall"] == 1.0
        assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k.startswith("retrieval/") and v is not None)


def test_missing_split_and_bad_system_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from eval.compare import main

    assert main(["--split_dir", str(tmp_path / "none"), "--storage_dir", str(tmp_path)]) == 2
    assert "python -m finetune.data" in capsys.readouterr().err
    assert main(["--systems", "base,magic", "--storage_dir", str(tmp_path)]) == 2
    assert "unknown system 'magic'" in capsys.readouterr().err


def test_answer_cache_reuses_answers_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Greedy answers are generated once per (weights, prompt, decoding); retraining the model invalidates them."""
    from llama_index.core.llms import MockLLM

    import rag_app.answer.engine as engine_module
    from eval.cache import AnswerCache
    from rag_app.answer.engine import MedQAQueryEngine
    from rag_app.answer.plan import AnswerPart, AnswerPlan
    from rag_app.llm.info import ModelInfo

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"v1")

    class FakeLLM(MockLLM):
        model_info: ModelInfo = ModelInfo(name="fake", path=str(model_dir))

    calls: list[int] = []

    def fake_generate(llm, conversations, max_new_tokens, **kwargs):
        calls.append(len(conversations))
        return [f"answer to {c[-1]['content']} in {max_new_tokens}" for c in conversations]

    monkeypatch.setattr(engine_module, "generate_batch", fake_generate)
    engine = MedQAQueryEngine(llm=FakeLLM(), use_rag=False, medical_notice=False)

    def plans(budget: int, n: int = 5) -> list[AnswerPlan]:
        return [AnswerPlan(f"q{i}", [], [], [{"role": "user", "content": f"q{i}" + "x" * i}], "unknown", [AnswerPart(None, (), budget)])
                for i in range(n)]

    path = tmp_path / "cache" / "answers.jsonl"
    first = engine.answer_batch(plans(16), 2, AnswerCache(path, engine.llm))
    assert first == [f"answer to q{i}" + "x" * i + " in 16" for i in range(5)] and sum(calls) == 5
    again = engine.answer_batch(plans(16), 2, AnswerCache(path, engine.llm))
    assert again == first and sum(calls) == 5  # all reused
    with path.open("a") as handle:
        handle.write('{"key": "cut sh')  # an interrupted write is ignored
    engine.answer_batch(plans(32), 2, AnswerCache(path, engine.llm))
    assert sum(calls) == 10  # another token budget is another answer
    (model_dir / "model.safetensors").write_bytes(b"v2-retrained")
    engine.answer_batch(plans(16, 2), 2, AnswerCache(path, engine.llm))
    assert sum(calls) == 12  # new weights, new answers


def test_compare_liveqa_questions_with_subsets_and_extractive(
    settings, embed_model, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real-question mode: several references (best one scores), answerable vs rest, an extractive baseline."""
    from eval.compare import main
    from rag_app.index.build import build_index
    from tests.test_liveqa import XML

    build_index(settings, embed_model=embed_model, show_progress=False)
    liveqa = tmp_path / "liveqa"
    liveqa.mkdir()
    (liveqa / "TREC-2017-LiveQA-Medical-Train-2.xml").write_text(XML, encoding="utf-8")
    for key, value in {"MEDQA_STORAGE_DIR": settings.storage_dir, "MEDQA_CORPUS": settings.corpus[0],
                       "MEDQA_CHUNK_SIZE": settings.chunk_size, "MEDQA_CHUNK_OVERLAP": settings.chunk_overlap}.items():
        monkeypatch.setenv(key, str(value))
    out = tmp_path / "report"
    argv = ["--questions", "liveqa", "--liveqa", str(liveqa), "--half", "all", "--systems", "base+rag,extractive,oracle,reference",
            "--base_model", str(tiny_model_dir), "--max_new_tokens", "8", "--output_dir", str(out), "--no_plots", "true"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    details = {d["doc_id"]: d for d in map(json.loads, (out / "details.jsonl").read_text().splitlines())}
    assert details["2:1.0"]["subset"] == "answerable" and details["2:1.0"]["relevant"]
    assert details["2:2.0"]["subset"] == "rest" and details["2:2.0"]["relevant"] == []
    # The extractive answer is the top source's answer text, cut to the budget, citing [1]; that citation is
    # correct exactly when the top source is a relevant pair.
    gout = details["2:1.0"]
    assert gout["sources"][0]["focus"] == "Gout"
    assert gout["answers"]["extractive"].startswith("Gout ") and gout["answers"]["extractive"].endswith("[1]")
    assert metrics["answerable/extractive/citation_accuracy"] == float(gout["sources"][0]["doc_id"] in gout["relevant"])
    assert "2:2.0" in details and details["2:2.0"]["answers"]["extractive"].endswith("[1]")
    assert metrics["answerable/reference/rougeL"] == pytest.approx(1.0)
    # The oracle copies whichever source scores best against the reference, citing that source's number.
    for row in details.values():
        assert row["scores"]["oracle"]["rougeL"] >= row["scores"]["extractive"]["rougeL"]
        assert re.search(r"\[[1-3]\]", row["answers"]["oracle"])
    assert metrics["retrieval/pair_hit@3"] == 1.0  # scored on the answerable question only
    report = (out / "report.md").read_text()
    assert "LiveQA all half" in report and "1 answerable, 1 rest" in report and "### Subset: answerable (1 questions)" in report
    assert main(["--questions", "liveqa", "--liveqa", str(tmp_path / "none"), "--storage_dir", str(settings.storage_dir)]) == 2


def test_batched_generation_opens_each_row_as_told(tiny_model_dir: Path) -> None:
    """The evaluation's batched transformers path applies each prompt's own opening (and none where it has none)."""
    from rag_app.config import Settings
    from rag_app.llm.batch import generate_batch
    from rag_app.llm.decoding import answer_opening, llm_tokenizer
    from rag_app.llm.load import load_llm

    llm = load_llm(Settings(llm=str(tiny_model_dir), max_new_tokens=12), llm_backend="transformers")
    conversations = [[{"role": "user", "content": "What is gout?"}], [{"role": "user", "content": "What is lupus, and how is it treated?"}]]
    opening = answer_opening(llm_tokenizer(llm), ["Answer: Gout is a form of arthritis that causes pain", "Answer: Lupus"])
    free = generate_batch(llm, conversations, 12)
    opened = generate_batch(llm, conversations, 12, openings=[opening, None])
    assert opened[0].startswith("Gout is a form") and not free[0].startswith("Gout is a form")
    assert opened[1] == free[1]


def test_two_reports_are_compared_question_by_question(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`python -m eval.diff` pairs the questions by id (two may share a text), counts changed answers and top sources,
    and says in one line when a folder is not a report."""
    from eval.diff import main

    def report(name: str, answers: list[tuple[str, float, str]]) -> str:
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"question": "same words", "doc_id": f"q{i}", "answers": {"raft+rag": text}, "sources": [{"doc_id": top}],
                 "scores": {"raft+rag": {"rougeL": score}}} for i, (text, score, top) in enumerate(answers)]
        (folder / "details.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
        return str(folder)

    before = report("before", [("a", 0.2, "p1"), ("b", 0.3, "p2"), ("c", 0.4, "p3")])
    after = report("after", [("a", 0.2, "p1"), ("b2", 0.5, "p9"), ("c", 0.4, "p3")])
    assert main(["--before", before, "--after", after]) == 0
    out = capsys.readouterr()
    assert "3 questions in both reports; raft+rag: 1 answers changed, 1 top sources changed" in out.out
    assert "ROUGE-L 0.30000 -> 0.36667 (+0.06667" in out.out and "skipped line 4" in out.err
    assert main(["--before", str(tmp_path / "nowhere"), "--after", after]) == 2
    assert "has no details.jsonl" in capsys.readouterr().err
