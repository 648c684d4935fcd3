"""Training the re-ranker (``python -m finetune.rerank``): its messages, its negatives, and one short real run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from finetune.consumer import ASKS, MORE_ASKS, consumer_question
from finetune.rerank import Message, RerankDataArguments, main, pick_negatives


def test_long_messages_tell_a_story_and_still_ask_the_pairs_aspect() -> None:
    short = [consumer_question("Gout", "treatment", random.Random(seed)) for seed in range(60)]
    long = [consumer_question("Gout", "treatment", random.Random(seed), long_rate=1.0, other_topics=["Asthma"]) for seed in range(60)]
    sentences = lambda texts: sum(t.count(".") + t.count("?") for t in texts) / len(texts)  # noqa: E731
    assert sentences(long) > sentences(short) + 1.5
    assert sum("asthma" in t.lower() or "atshma" in t.lower() or "astma" in t.lower() for t in long) >= 5  # another condition, sometimes
    asks = [a.split("{t}")[0].lower().strip() for a in ASKS["treatment"] + MORE_ASKS["treatment"]]
    asked = sum(any(a in t.lower() for a in asks if a) for t in long)
    assert asked >= 45  # a treatment ask in all but the misspelt ones (53 of these 60)
    assert any(a.split("{t}")[0].strip() in t.lower() for t in long for a in MORE_ASKS["treatment"])
    # Without long_rate nothing new is drawn: data built before the option is built the same.
    assert [consumer_question("Gout", "treatment", random.Random(seed), ["causes"], long_rate=0.0) for seed in range(20)] == [
        consumer_question("Gout", "treatment", random.Random(seed), ["causes"]) for seed in range(20)
    ]


def test_overview_negative_is_taken_when_another_aspect_is_asked() -> None:
    topic = [
        {"doc_id": "over", "question_type": "information"},
        {"doc_id": "treat", "question_type": "treatment"},
        {"doc_id": "risk", "question_type": "susceptibility"},
        {"doc_id": "genes", "question_type": "genetic changes"},
    ]
    message = Message("my dad has gout, what can he take?", ["treat"], "consumer")
    args = RerankDataArguments(hard_negatives=1, topic_negatives=1, random_negatives=0, overview_negative=True)
    for seed in range(10):
        chosen = pick_negatives(message, ["x", "treat"], topic, ["x", "over", "treat"], args, random.Random(seed))
        assert chosen == {"x": "retrieved", "over": "topic"}
    plain = RerankDataArguments(hard_negatives=0, topic_negatives=1, random_negatives=0)
    drawn = {next(iter(pick_negatives(message, [], topic, [], plain, random.Random(seed)))) for seed in range(20)}
    assert drawn > {"over"}  # without the option the overview is one draw among the topic's pages
    overview_asked = Message("what is gout?", ["over"], "consumer")
    chosen = pick_negatives(overview_asked, [], topic, [], args, random.Random(0))
    assert "over" not in chosen and len(chosen) == 1


def test_type_balance_draws_rare_question_types_about_as_often_as_common_ones(tmp_path: Path) -> None:
    from collections import Counter

    from finetune.data import select_rows, write_splits

    rows = [
        {"doc_id": f"{qtype}-{i:03d}", "question": "q", "answer": "a", "focus": f"topic {i}", "collection": "c", "question_type": qtype}
        for qtype, n in (("information", 1500), ("symptoms", 1000), ("causes", 100)) for i in range(n)
    ]
    write_splits({"train": rows, "val": rows[:2], "test": []}, tmp_path / "splits", {"seed": 0})
    args = RerankDataArguments(storage_dir=str(tmp_path), max_train_samples=150)

    def drawn(balance: float) -> Counter:
        sampled = select_rows(args, 0, by_source=False, type_balance=balance)[0]["train"]
        return Counter(r["question_type"] for r in sampled)

    assert drawn(0.0)["causes"] <= 15  # as the split has them: about 150 * 100 / 2600
    balanced = drawn(1.0)
    assert balanced["causes"] >= 35 and balanced["information"] <= 65  # about 50 of each
    assert drawn(1.0) == balanced  # seeded
    assert main(["--type_balance", "1.5", "--output_dir", "unused"]) == 2


def test_bad_long_rate_is_one_clear_line(capsys) -> None:
    assert main(["--long_rate", "2", "--output_dir", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "long_rate=2" in err[0]


@pytest.fixture()
def split_index(settings, embed_model):
    """A small real index and topic-grouped splits (one validation topic)."""
    from corpus import load_corpus
    from finetune.data import document_to_example, write_splits
    from rag_app.index.build import build_index

    build_index(settings, embed_model=embed_model, show_progress=False)
    docs, _ = load_corpus(settings.corpus)
    rows = [document_to_example(d) for d in docs]
    val = sorted({r["focus"] for r in rows})[0]
    splits = {"train": [r for r in rows if r["focus"] != val], "val": [r for r in rows if r["focus"] == val], "test": []}
    write_splits(splits, settings.storage_dir / "splits", {"seed": 0, "sources": settings.corpus})
    return settings


def test_a_short_run_writes_a_loadable_reranker_with_its_card_and_record(split_index, tmp_path: Path, monkeypatch) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from rag_app.retrieval.rerank import load_reranker

    settings = split_index
    monkeypatch.setenv("MEDQA_CHUNK_SIZE", str(settings.chunk_size))
    monkeypatch.setenv("MEDQA_CHUNK_OVERLAP", str(settings.chunk_overlap))
    out = tmp_path / "rerank"
    argv = [
        "--storage_dir", str(settings.storage_dir), "--corpus", *settings.corpus, "--num_layers", "1", "--max_length", "64",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--save_strategy", "no",
        "--long_rate", "1.0", "--overview_negative", "true", "--candidate_k", "4", "--hard_negatives", "0", "--use_cpu", "true",
        "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(out),
    ]
    assert main(argv) == 0
    record = json.loads((out / "medqa_rerank_run.json").read_text())
    assert record["global_step"] == 2 and record["hyperparameters"]["num_layers"] == 1
    assert record["data"]["messages"] == record["data"]["pairs"] > 0
    assert record["data"]["topic"] > 0 and record["validation"]["n"] > 0
    assert "## Data" in (out / "README.md").read_text() and (out / "model.safetensors").stat().st_size > 0
    reranker = load_reranker(settings.model_copy(update={"rerank": True, "rerank_model": str(out)}))
    nodes = [NodeWithScore(node=TextNode(text="Gout is arthritis.", metadata={"question": "What is gout?"}), score=0.5)]
    assert len(reranker.logits("what is gout", nodes)) == 1
    assert record["continued"] is False and "a new one-logit head" in (out / "README.md").read_text()

    # A second stage trains that re-ranker further (the shipped recipe's two stages), its head kept.
    second = tmp_path / "rerank-2"
    at = argv.index("--output_dir")
    assert main([*argv[:at], "--model_name_or_path", str(out), "--type_balance", "1", "--output_dir", str(second)]) == 0
    record = json.loads((second / "medqa_rerank_run.json").read_text())
    assert record["continued"] is True and record["data"]["type_balance"] == 1.0 and sum(record["data"]["types"].values()) > 0
    card = (second / "README.md").read_text()
    assert f"trained further from `{out}`" in card and "Pairs drawn by question type" in card
