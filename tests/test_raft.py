"""Retrieval-aware (RAFT) training data: same prompts as the engine, no leakage, abstain targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.raft import RaftArguments, cited_answer, covers


def test_cited_answer_cites_after_the_first_statement_and_cuts_at_a_sentence() -> None:
    count = lambda text: len(text.split())  # noqa: E731
    assert cited_answer("How is gout treated? Rest helps. Ice helps too.", 2, count, 50) == "How is gout treated? Rest helps [2]. Ice helps too."
    assert cited_answer("One two three. Four five six seven eight nine ten.", 1, count, 6) == "One two three [1]."
    assert cited_answer("no sentence end here", 3, count, 50) == "no sentence end here [3]"


def test_covers_detects_a_repeated_answer_opening() -> None:
    answer = "Osteopetrosis is a bone disease that makes bones abnormally dense and prone to breakage."
    assert covers("Intro. Osteopetrosis is a bone disease that makes bones abnormally dense and prone to breakage.", answer)
    assert not covers("Gout is a form of arthritis caused by uric acid crystals in the joints.", answer)


@pytest.fixture()
def raft_setup(settings, embed_model, tiny_model_dir: Path):
    """A small real index over every pair, splits by topic, and the tiny model's tokenizer."""
    from transformers import AutoTokenizer

    from corpus import load_corpus
    from finetune.data import document_to_example, write_splits
    from rag_app.index.build import build_index

    build_index(settings, embed_model=embed_model, show_progress=False)
    docs, _ = load_corpus(settings.corpus)
    rows = [document_to_example(d) for d in docs]
    focuses = sorted({r["focus"] for r in rows})
    held_out = {"val": focuses[0], "test": focuses[1]}
    splits = {
        "train": [r for r in rows if r["focus"] not in held_out.values()],
        "val": [r for r in rows if r["focus"] == held_out["val"]],
        "test": [r for r in rows if r["focus"] == held_out["test"]],
    }
    manifest = write_splits(splits, settings.storage_dir / "splits", {"seed": 0, "sources": settings.corpus})
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return {"splits": splits, "manifest": manifest, "tokenizer": tokenizer, "settings": settings, "model": tiny_model_dir}


def _build(setup, seed: int = 0, **overrides):
    from finetune.raft import load_or_build

    args = RaftArguments(raft=True, raft_top_k=2, **overrides)
    splits = setup["splits"]
    return load_or_build(
        {"train": splits["train"], "val": splits["val"]}, {r["doc_id"] for r in splits["train"]}, setup["manifest"],
        setup["tokenizer"], "tiny", args, seed, setup["settings"].storage_dir, show_progress=False, settings=setup["settings"],
    )  # fmt: skip


def test_training_prompts_are_the_engine_prompts(raft_setup) -> None:
    from llama_index.core.schema import NodeWithScore

    from finetune.train import ChatEncoder
    from rag_app.answer.engine import build_query_engine
    from rag_app.index.chroma import load_nodes
    from rag_app.llm.load import load_llm

    examples, _ = _build(raft_setup, raft_oracle_fraction=0.5)
    settings = raft_setup["settings"]
    nodes = {n.node_id: n for n in load_nodes(settings)}
    llm = load_llm(settings.model_copy(update={"llm": str(raft_setup["model"])}))
    engine = build_query_engine(settings, llm=llm)
    encoder = ChatEncoder(raft_setup["tokenizer"], max_length=1024, min_answer_tokens=4)
    checked = 0
    for ex in examples["train"] + examples["val"]:
        question = ex.messages[1]["content"].rpartition("Question: ")[2]
        served = engine.messages(engine.clean_question(question)[0], [NodeWithScore(node=nodes[i], score=None) for i in ex.source_nodes])
        assert served == ex.messages
        # The tokens trained on are the tokens the model is prompted with at inference.
        rendered = raft_setup["tokenizer"].apply_chat_template(served, add_generation_prompt=True, tokenize=False)
        assert encoder.prompt_text(ex.messages) == rendered
        checked += 1
    assert checked == len(raft_setup["splits"]["train"]) + len(raft_setup["splits"]["val"])


def test_no_validation_or_test_pair_in_a_training_prompt(raft_setup) -> None:
    examples, stats = _build(raft_setup, raft_oracle_fraction=0.5)
    held_out = raft_setup["splits"]["val"] + raft_setup["splits"]["test"]
    held_ids = {r["doc_id"] for r in held_out}
    assert examples["train"] and stats["train"]["skipped_no_gold"] == 0
    for ex in examples["train"]:
        assert not held_ids & set(ex.source_ids)
        prompt = ex.messages[1]["content"]
        assert not any(r["question"] in prompt for r in held_out)
        assert not any(r["answer"][:60] in prompt for r in held_out)
    # Validation prompts hold their own pair (for the loss) but their distractors are train pairs only.
    train_ids = {r["doc_id"] for r in raft_setup["splits"]["train"]}
    for ex in examples["val"]:
        assert set(ex.source_ids) - {ex.doc_id} <= train_ids


def test_distractor_only_examples_get_the_abstain_target(raft_setup) -> None:
    from rag_app.text.prompts import ABSTAIN_ANSWER

    examples, stats = _build(raft_setup, raft_oracle_fraction=0.0)
    rows = {r["doc_id"]: r for r in raft_setup["splits"]["train"]}
    assert stats["train"]["distractor"] == len(examples["train"]) > 0
    for ex in examples["train"]:
        assert ex.kind == "distractor" and ex.answer == ABSTAIN_ANSWER and ex.gold_position is None
        assert ex.doc_id not in ex.source_ids
        assert all(rows[s]["focus"] != rows[ex.doc_id]["focus"] for s in ex.source_ids)

    positions = set()
    oracle = [ex for seed in range(4) for ex in _build(raft_setup, seed=seed, raft_oracle_fraction=1.0)[0]["train"]]
    for ex in oracle:
        assert ex.kind == "oracle" and ex.source_ids[ex.gold_position - 1] == ex.doc_id
        assert f"[{ex.gold_position}]" in ex.answer and ex.answer != ABSTAIN_ANSWER
        positions.add(ex.gold_position)
    assert positions == {1, 2}  # the gold passage moves around


def test_prompts_are_cached_with_the_manifest(raft_setup) -> None:
    first, stats = _build(raft_setup)
    assert not stats["train"]["from_cache"] and Path(stats["train"]["cache"]).is_file()
    assert raft_setup["manifest"]["content_hash"]
    again, stats2 = _build(raft_setup)
    assert stats2["train"]["from_cache"] and stats2["train"]["cache"] == stats["train"]["cache"]
    assert [vars(e) for e in again["train"]] == [vars(e) for e in first["train"]]
    _, other = _build(raft_setup, raft_answer_tokens=32)
    assert other["train"]["cache"] != stats["train"]["cache"]


def test_raft_needs_an_index(settings, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from finetune import UserError
    from finetune.raft import load_or_build

    rows = [{"doc_id": "a", "question": "What is gout?", "answer": "Arthritis.", "focus": "Gout"}]
    with pytest.raises(UserError, match=r"python -m rag_app\.index"):
        load_or_build({"train": rows}, {"a"}, {"content_hash": "x"}, AutoTokenizer.from_pretrained(tiny_model_dir), "tiny",
                      RaftArguments(raft=True), 0, settings.storage_dir, show_progress=False, settings=settings)
    with pytest.raises(UserError, match="raft_oracle_fraction"):
        RaftArguments(raft=True, raft_oracle_fraction=1.5).validate()


from tests.test_finetune import tiny_argv, workspace  # noqa: E402,F401  (the module-scoped tiny workspace)


def test_train_on_raft_prompts_end_to_end(workspace, embed_model) -> None:  # noqa: F811
    """`python -m finetune.train --raft true` builds the prompts from the index, trains on them and records it."""
    import json

    from finetune.train import RUN_SUMMARY, run
    from rag_app.config import Settings
    from rag_app.index.build import build_index

    build_index(Settings(storage_dir=workspace["storage"], corpus=[str(workspace["corpus"])]), embed_model=embed_model, show_progress=False)
    out = workspace["root"] / "raft-run"
    summary = run(tiny_argv(workspace, out, "--raft", "true", "--raft_top_k", "2", "--max_length", "768", "--max_steps", "2", "--merge", "false"))
    raft = summary["data"]["raft"]["train"]
    assert raft["oracle"] + raft["distractor"] == summary["data"]["train"]["examples"] > 0
    assert Path(raft["cache"]).is_file() and summary["hyperparameters"]["raft"] is True
    assert summary["global_step"] == 2 and json.loads((out / RUN_SUMMARY).read_text())["data"]["raft"]["train"]["cache"] == raft["cache"]


def test_consumer_style_questions_keep_the_retrievers_order(raft_setup) -> None:
    """Consumer-style rewrites; with raft_retrieved_order the sources are exactly what the engine retrieves."""
    from finetune.raft import TrainOnlyRetriever

    examples, stats = _build(raft_setup, raft_oracle_fraction=1.0, raft_consumer_fraction=1.0, raft_retrieved_order=True)
    rows = {r["doc_id"]: r for r in raft_setup["splits"]["train"]}
    train = examples["train"]
    assert stats["train"]["consumer"] == len(train) > 0 and stats["train"]["gold_in_top_k"] > 0
    retriever = TrainOnlyRetriever(raft_setup["settings"], set(rows), 2 + 6, 40)
    kept = 0
    for ex in train:
        question = ex.messages[1]["content"].rpartition("Question: ")[2]
        assert ex.style == "consumer" and question != rows[ex.doc_id]["question"]
        assert rows[ex.doc_id]["focus"].lower()[:4] in question.lower() or any(p in question.lower() for p in ("it", "this", "that"))
        assert ex.source_ids[ex.gold_position - 1] == ex.doc_id and f"[{ex.gold_position}]" in ex.answer
        top = retriever.retrieve(question)[:2]
        if ex.doc_id in [n.node.ref_doc_id for n in top]:
            assert ex.source_nodes == [n.node.node_id for n in top]  # the retriever's own chunks and order
            kept += 1
    assert kept == stats["train"]["gold_in_top_k"]
    with pytest.raises(Exception, match="must not exceed 1"):
        RaftArguments(raft=True, raft_consumer_fraction=0.7, raft_sibling_fraction=0.5).validate()


def test_consumer_question_and_siblings() -> None:
    import random

    from finetune.consumer import consumer_question, misspell, sibling_questions
    from finetune.data import normalize_focus

    texts = {consumer_question("Gout", "treatment", random.Random(seed), ["causes"]) for seed in range(40)}
    assert len(texts) > 30  # varied
    assert all(t != "What are the treatments for Gout ?" for t in texts)
    assert sum("gout" in t.lower() for t in texts) > 20
    assert misspell("glaucoma treatment", random.Random(0), rate=1.0) != "glaucoma treatment"
    rows = [
        {"doc_id": "a", "question": "What is (are) Diabetes, Type 2 ?", "focus": "Diabetes, Type 2", "question_type": "information"},
        {"doc_id": "b", "question": "What is diabetes type 2?", "focus": "diabetes type 2", "question_type": "information"},
        {"doc_id": "c", "question": "How to prevent Diabetes type 2 ?", "focus": "Diabetes Type 2", "question_type": "prevention"},
    ]
    assert sibling_questions(rows, normalize_focus) == {"a": ["What is diabetes type 2?"], "b": ["What is (are) Diabetes, Type 2 ?"]}


def test_weighted_row_sample_prefers_heavy_rows() -> None:
    from finetune.data import sample_rows

    rows = [{"doc_id": f"{c}{i}", "collection": c} for c in "ab" for i in range(100)]
    picked = sample_rows(rows, 50, 0, weight=lambda r: 10.0 if r["collection"] == "a" else 1.0)
    assert len(picked) == 50 and len({r["doc_id"] for r in picked}) == 50
    assert sum(r["collection"] == "a" for r in picked) > 35
    assert picked == sample_rows(rows, 50, 0, weight=lambda r: 10.0 if r["collection"] == "a" else 1.0)  # seeded
