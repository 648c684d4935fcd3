"""Embedder fine-tuning (python -m finetune.embed): examples with hard negatives, a tiny real run, and the
result used as MEDQA_EMBED_MODEL for a small Chroma index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune import RECIPES_DIR
from finetune.embed import build_examples, main, pair_text, run

TINY = RECIPES_DIR / "minilm-tiny.yaml"
CPU = RECIPES_DIR / "minilm-medquad-cpu.yaml"

TRAIN = [
    ("Glaucoma", "What is (are) Glaucoma ?", "Glaucoma is a group of diseases that damage the optic nerve and can cause blindness."),
    ("Glaucoma", "What are the treatments for Glaucoma ?", "Glaucoma is treated with eye drops, laser trabeculoplasty or surgery."),
    ("Glaucoma", "Who is at risk for Glaucoma ?", "People over 60, African Americans over 40 and people with a family history."),
    ("Gout", "What is (are) Gout ?", "Gout is a form of arthritis caused by uric acid crystals in a joint, often the big toe."),
    ("Gout", "What are the treatments for Gout ?", "Gout attacks are treated with anti-inflammatory drugs, colchicine or corticosteroids."),
    ("Asthma", "What is (are) Asthma ?", "Asthma is a chronic disease that inflames and narrows the airways of the lungs."),
    ("Asthma", "What are the treatments for Asthma ?", "Asthma is controlled with inhaled corticosteroids and quick-relief inhalers."),
    ("Anemia", "What is (are) Anemia ?", "Anemia is a condition with too few red blood cells or too little hemoglobin."),
    ("Anemia", "What are the treatments for Anemia ?", "Iron supplements, vitamin B12 injections or blood transfusions, by cause."),
    ("Hiccups", "What causes Hiccups ?", "Hiccups are sudden contractions of the diaphragm, often after eating quickly."),
]
VAL = [
    ("Migraine", "What is (are) Migraine ?", "Migraine is a headache disorder with throbbing pain, nausea and sensitivity to light."),
    ("Migraine", "What are the treatments for Migraine ?", "Migraine is treated with pain relievers, triptans and preventive medicines."),
    ("Eczema", "What is (are) Eczema ?", "Eczema is an itchy inflammation of the skin, common in children."),
    ("Eczema", "What are the treatments for Eczema ?", "Moisturizers, steroid creams and avoiding triggers help control eczema."),
]


def _row(i: int, split: str, focus: str, question: str, answer: str) -> dict[str, str]:
    return {
        "question": question, "answer": answer, "doc_id": f"medquad/Test/{split}{i:03d}/{i}", "focus": focus,
        "collection": "Test", "url": "https://example.org", "question_type": "information", "source": "MedQuAD",
        "document_id": f"{split}{i:03d}",
    }


def _rows(items, split: str) -> list[dict[str, str]]:
    return [_row(i, split, *item) for i, item in enumerate(items)]


@pytest.fixture()
def splits_dir(tmp_path: Path) -> Path:
    """A tiny split folder in ``read_split``'s format (train and val; no manifest)."""
    folder = tmp_path / "splits"
    folder.mkdir()
    for name, items in (("train", TRAIN), ("val", VAL)):
        lines = [json.dumps(r, sort_keys=True) for r in _rows(items, name)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ---- examples ----------------------------------------------------------------------------------------------


def test_hard_negatives_come_from_the_same_focus() -> None:
    rows = _rows(TRAIN, "train")
    columns, stats = build_examples(rows, hard_negatives=True, seed=0)
    assert list(columns) == ["anchor", "positive", "negative"]
    assert columns["anchor"] == [r["question"] for r in rows]
    assert columns["positive"][0] == f"Question: {rows[0]['question']}\nAnswer: {rows[0]['answer']}"
    by_text = {pair_text(r): r for r in rows}
    for row, positive, negative in zip(rows, columns["positive"], columns["negative"]):
        assert negative != positive
        if row["focus"] != "Hiccups":
            assert by_text[negative]["focus"] == row["focus"]  # a different pair on the same topic
        else:  # the only Hiccups pair: a pair of another topic stands in
            assert by_text[negative]["focus"] != "Hiccups"
    assert stats == {"examples": 10, "focus_negatives": 9, "random_negatives": 1}
    assert build_examples(rows, seed=0) == (columns, stats)  # seeded: the same negatives every run

    plain, plain_stats = build_examples(rows, hard_negatives=False)
    assert list(plain) == ["anchor", "positive"] and plain_stats["focus_negatives"] == 0


def test_same_answer_is_never_a_negative() -> None:
    rows = _rows([("Gout", "What is gout?", "Same answer."), ("Gout", "Define gout", "Same answer."), ("Asthma", "Asthma?", "Other.")], "t")
    columns, stats = build_examples(rows, seed=1)
    assert columns["negative"][0] == columns["negative"][1] == pair_text(rows[2])
    assert columns["negative"][2] in {pair_text(rows[0]), pair_text(rows[1])}
    assert stats == {"examples": 3, "focus_negatives": 0, "random_negatives": 3}


def test_recipe_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(TINY), "--no_such_key", "1"]) == 2
    assert "unknown argument" in capsys.readouterr().err
    assert main(["--config", str(TINY), "--per_device_train_batch_size", "1", "--splits_dir", str(tmp_path)]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["--config", str(TINY), "--splits_dir", str(tmp_path / "none"), "--corpus", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cpu_recipe_parses_with_the_required_training_setup() -> None:
    from finetune.embed import parse_args

    training_args, data_args = parse_args(["--config", str(CPU)])
    assert str(getattr(training_args.batch_sampler, "value", training_args.batch_sampler)) == "no_duplicates"
    assert training_args.per_device_train_batch_size == 64 and 0 < training_args.max_steps <= 90  # ~18 s a step on 2 cores
    assert training_args.use_cpu and data_args.max_seq_length == 128 and data_args.hard_negatives
    assert not training_args.disable_tqdm  # progress bars on for the long run


# ---- a real (tiny) run -----------------------------------------------------------------------------------------


def test_tiny_run_gives_a_model_the_project_can_index_with(tmp_path: Path, splits_dir: Path, settings, embed_model) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from rag_app.index.build import build_index

    from rag_app.index.chroma import get_collection
    from rag_app.llm.load import load_embed_model
    from rag_app.retrieval.modes import build_retriever

    out = tmp_path / "emb"
    summary = run(["--config", str(TINY), "--splits_dir", str(splits_dir), "--output_dir", str(out), "--storage_dir", str(tmp_path / "st")])
    assert summary["global_step"] == 3
    assert summary["data"]["train_examples"] == 10 and summary["data"]["focus_negatives"] == 9
    assert summary["eval_before"]["n"] == summary["eval_after"]["n"] == 4
    assert 0 < summary["eval_after"]["mrr@10"] <= 1
    assert summary["train_loss"] is not None

    # a sentence-transformers model folder with a model card and the run summary
    assert (out / "modules.json").is_file() and (out / "config_sentence_transformers.json").is_file()
    card = (out / "README.md").read_text()
    for needle in ("MultipleNegativesRankingLoss", "no_duplicates", "Steps: 3 optimizer steps", "same focus", "MRR@10", "train.jsonl", "LiveQA"):
        assert needle in card, needle
    assert json.loads((out / "medqa_embed_run.json").read_text())["global_step"] == 3

    tuned = SentenceTransformer(str(out), device="cpu")
    assert tuned.max_seq_length == embed_model._model.max_seq_length  # the base model's budget is kept for indexing
    text = "Gout attacks are treated with colchicine."
    vec = tuned.encode([text], normalize_embeddings=True)[0]
    base = np.asarray(embed_model.get_text_embedding(text))
    assert vec.shape == base.shape == (384,)
    assert not np.allclose(vec, base, atol=1e-4)  # training changed the weights

    # MEDQA_EMBED_MODEL=<dir>: loaded through the project's model loader, indexed and retrieved with
    s = settings.model_copy(update={"embed_model": str(out)})
    emb = load_embed_model(s)
    got = np.asarray(emb.get_text_embedding(text))
    assert got.shape == (384,) and float(np.dot(got, vec)) > 0.999  # the loader's bfloat16 weights, where the CPU has them
    stats = build_index(s, embed_model=emb, show_progress=False)
    assert stats.embedded_documents == 8
    assert get_collection(s).metadata["embed_model"] == str(out)
    nodes = build_retriever(s.model_copy(update={"retrieval_mode": "dense", "top_k": 3}), embed_model=emb).retrieve(
        "What are the treatments for gout?"
    )
    assert len(nodes) == 3
    assert any(n.node.metadata["focus"] == "Gout" for n in nodes)
