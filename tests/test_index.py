"""Chroma index: counts, idempotent re-index, replace/delete, interruption, model mismatch, retrieval."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import load_corpus
from rag_app.index import build as index_mod
from rag_app.errors import IndexMissingError
from rag_app.index.build import build_index
from rag_app.index.chroma import get_collection, index_status, index_version, load_nodes, manifest_path, questions_collection_name
from rag_app.retrieval.modes import build_retriever


def _chunk_ids_by_doc(settings) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for node in load_nodes(settings):
        got.setdefault(node.ref_doc_id, []).append(node.id_)
    return got


def test_build_then_reindex_adds_nothing(settings, embed_model) -> None:
    stats = build_index(settings, embed_model=embed_model, show_progress=False)
    assert stats.documents == 8 and stats.embedded_documents == 8 and stats.skipped == 1
    chunks = get_collection(settings).count()
    assert chunks == stats.total_chunks >= 8

    again = build_index(settings, embed_model=embed_model, show_progress=False)
    assert again.embedded_documents == 0 and again.unchanged_documents == 8
    assert get_collection(settings).count() == chunks
    status = index_status(settings)
    assert status["exists"] and status["chunks"] == chunks and status["documents"] == 8


def test_collections_in_one_storage_folder_keep_their_own_manifest(settings, embed_model, medquad_dir: Path) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    version = index_version(settings)
    other = settings.model_copy(update={"collection": "other", "corpus": [str(medquad_dir / "1_TestA_QA")]})
    build_index(other, embed_model=embed_model, show_progress=False)

    assert manifest_path(settings) == settings.storage_dir / "index_manifest.json"  # the path dvc.yaml tracks
    assert manifest_path(other) != manifest_path(settings)
    assert index_version(settings) == version, "building another collection changed this one's version"
    assert index_status(settings)["documents"] == 8 and index_status(other)["documents"] == 4


def test_changed_document_is_replaced_and_removed_one_deleted(settings, embed_model, medquad_dir: Path) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    gout = medquad_dir / "1_TestA_QA" / "0000002.xml"
    gout.write_text(gout.read_text().replace("colchicine", "colchicine and a new drug called zyloprimix"))
    (medquad_dir / "2_TestB_QA" / "0000002.xml").unlink()  # Anemia: 2 answered pairs gone

    stats = build_index(settings, embed_model=embed_model, show_progress=False)
    assert stats.embedded_documents == 1 and stats.deleted_documents == 2 and stats.documents == 6
    nodes = load_nodes(settings)
    assert not any(n.metadata["focus"] == "Anemia" for n in nodes)
    gout_text = " ".join(n.get_content() for n in nodes if n.ref_doc_id == "medquad/1_TestA_QA/0000002/0000002-2")
    assert "zyloprimix" in gout_text
    assert len([n for n in nodes if "zyloprimix" in n.get_content()]) == 1  # the old chunk is gone, no duplicate


def _own_vectors(got, texts, embed_model) -> bool:
    """True when each vector in ``got`` is closest to its own text's vector (bfloat16 vectors differ in the 3rd decimal)."""
    import numpy as np

    single = np.asarray([embed_model.get_text_embedding(t) for t in texts])
    sims = np.asarray(got) @ single.T
    return bool((sims.argmax(axis=1) == np.arange(len(texts))).all() and sims.diagonal().min() > 0.99)


def test_encoding_on_several_workers_gives_each_text_its_own_vector(settings, embed_model) -> None:
    import torch

    conditions = ["gout", "asthma", "glaucoma", "anemia", "psoriasis", "migraine", "shingles", "scoliosis"]
    aspects = ["What causes {}?", "How is {} treated at home and by doctors?", "Is {} inherited, and can children get it from a parent?",
               "What are the first signs of {} in older adults?", "Which tests does a doctor order to confirm {}?"]
    texts = [a.format(c) for c in conditions for a in aspects]
    threads = torch.get_num_threads()
    threaded = index_mod.embed_texts(embed_model, texts, workers=2)
    assert torch.get_num_threads() == threads  # the workers' share of the cores is theirs alone
    assert _own_vectors(threaded, texts, embed_model)

    # The build's pipeline step: every stored chunk vector is its own text's.
    small = embed_model.model_copy(update={"embed_batch_size": 4})  # enough batches for two workers
    build_index(settings.model_copy(update={"embed_workers": 2}), embed_model=small, show_progress=False)
    texts = {n.id_: n.get_content(metadata_mode="embed") for n in load_nodes(settings)}
    stored = get_collection(settings).get(include=["embeddings"])
    assert len(stored["ids"]) == 8  # two workers of batch 4
    assert _own_vectors(stored["embeddings"], [texts[c] for c in stored["ids"]], embed_model)


def test_nearest_chunks_are_exact_over_the_in_memory_copy(settings, embed_model) -> None:
    import numpy as np

    from rag_app.index.store import open_index

    build_index(settings, embed_model=embed_model, show_progress=False)
    index = open_index(settings, embed_model)
    snap = index.snapshot()
    query = np.asarray(embed_model.get_query_embedding("How is a rare disease of the skin treated?"), dtype=np.float32)
    sims = snap.chunk_vectors @ query
    best_first = [snap.doc_of_chunk[snap.chunk_at[r]] for r in np.argsort(-sims)]
    got = index.nearest(query.tolist(), 3, snap)
    assert got[:2] == list(dict.fromkeys(best_first))[:2]  # chunks first, best first; then the nearest questions


def test_interrupted_run_leaves_index_usable_and_resumes(settings, embed_model, monkeypatch: pytest.MonkeyPatch) -> None:
    docs, _ = load_corpus(settings.corpus)
    build_index(settings, documents=docs[:4], embed_model=embed_model, show_progress=False)
    before = _chunk_ids_by_doc(settings)

    monkeypatch.setattr(index_mod, "BATCH_DOCS", 2)
    calls = {"n": 0}
    real = type(embed_model)._get_text_embeddings

    def flaky(self, texts):
        calls["n"] += 1
        if calls["n"] == 3:  # the second batch's chunks: the first batch (chunks, then questions) is in
            raise KeyboardInterrupt("power cut")
        return real(self, texts)

    monkeypatch.setattr(type(embed_model), "_get_text_embeddings", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_index(settings, documents=docs, embed_model=embed_model, show_progress=False)
    partial = _chunk_ids_by_doc(settings)
    assert set(before) <= set(partial)  # nothing previously indexed was lost
    assert build_retriever(settings, embed_model=embed_model).retrieve("What is glaucoma?")
    questions_before = get_collection(settings, name=questions_collection_name(settings)).count()

    monkeypatch.setattr(type(embed_model), "_get_text_embeddings", real)
    stats = build_index(settings, documents=docs, embed_model=embed_model, show_progress=False)
    assert stats.embedded_documents == 2  # only the batch that never finished
    final = _chunk_ids_by_doc(settings)
    assert len(final) == 8
    ids = [i for chunk_ids in final.values() for i in chunk_ids]
    assert len(ids) == len(set(ids)) == get_collection(settings).count()
    assert questions_before == 6 and get_collection(settings, name=questions_collection_name(settings)).count() == 8


def test_other_embedding_model_is_refused(settings, embed_model) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    other = settings.model_copy(update={"embed_model": "some/other-model"})
    with pytest.raises(IndexMissingError, match="--rebuild"):
        get_collection(other)


def test_reindexing_with_another_embedding_model_never_mixes_vector_spaces(settings, embed_model) -> None:
    """A changed MEDQA_EMBED_MODEL is refused until --rebuild, which starts the collection afresh."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    before = get_collection(settings).count()
    other = settings.model_copy(update={"embed_model": "my-finetuned-embedder"})
    with pytest.raises(IndexMissingError, match="--rebuild"):
        build_index(other, embed_model=embed_model, show_progress=False)
    assert get_collection(settings).count() == before  # untouched
    build_index(other, embed_model=embed_model, rebuild=True, show_progress=False)
    assert get_collection(other).metadata["embed_model"] == "my-finetuned-embedder"
    assert get_collection(other).count() == before
    with pytest.raises(IndexMissingError, match="--rebuild"):
        get_collection(settings)  # the old model's queries are refused now


def test_missing_index_names_the_command(settings) -> None:
    with pytest.raises(IndexMissingError, match="python -m rag_app.index"):
        build_retriever(settings)


@pytest.mark.parametrize("mode", ["fielded", "hybrid", "dense", "bm25"])
def test_each_question_retrieves_its_own_pair(settings, embed_model, mode: str) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    s = settings.model_copy(update={"retrieval_mode": mode, "top_k": 3})
    retriever = build_retriever(s, embed_model=embed_model)
    docs, _ = load_corpus(settings.corpus)
    for doc in docs:
        nodes = retriever.retrieve(doc.metadata["question"])
        refs = [n.node.ref_doc_id for n in nodes]
        # BM25 alone can't tell "What is X?" from "How is X treated?" on this tiny corpus; top-3 suffices.
        if mode == "bm25":
            assert doc.id_ in refs, (mode, doc.metadata["question"])
        else:
            assert refs[0] == doc.id_, (mode, doc.metadata["question"])
        assert len(refs) == len(set(refs)) == 3  # one chunk per QA pair


def test_question_vectors_follow_the_documents(settings, embed_model, medquad_dir: Path) -> None:
    """One question-only vector per QA pair, with its topic and type; replaced, deleted and backfilled with them."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    questions = get_collection(settings, name=questions_collection_name(settings))
    docs, _ = load_corpus(settings.corpus)
    got = questions.get(include=["documents", "metadatas"])
    assert sorted(got["ids"]) == sorted(d.id_ for d in docs)
    by_id = {d.id_: d for d in docs}
    for doc_id, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
        assert text == by_id[doc_id].metadata["question"]
        assert meta["focus"] == by_id[doc_id].metadata["focus"] and meta["question_type"] == by_id[doc_id].metadata["question_type"]
    assert questions.metadata["embed_model"] == settings.embed_model

    (medquad_dir / "2_TestB_QA" / "0000002.xml").unlink()  # Anemia: 2 answered pairs gone
    questions.delete(ids=[got["ids"][0]])  # as in an index built before question vectors existed
    stats = build_index(settings, embed_model=embed_model, show_progress=False)
    assert stats.deleted_documents == 2 and stats.embedded_documents == 0 and stats.embedded_questions == 1
    remaining = questions.get(include=["metadatas"])
    assert len(remaining["ids"]) == 6 and not any(m["focus"] == "Anemia" for m in remaining["metadatas"])

    build_index(settings, embed_model=embed_model, rebuild=True, show_progress=False)
    assert get_collection(settings, name=questions_collection_name(settings)).count() == 6


def test_fielded_retrieval_finds_the_topic_a_long_message_names(settings, embed_model) -> None:
    """A story around one named condition still ranks that condition's overview first, one result per pair."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    retriever = build_retriever(settings.model_copy(update={"top_k": 4}), embed_model=embed_model)
    message = (
        "my grandmother. Hello, my grandmother is 80 and she lives alone since last winter. The doctor said "
        "something about her eye pressure and glaucoma last week and we did not understand. Can you explain?"
    )
    nodes = retriever.retrieve(message)
    assert nodes[0].node.metadata["focus"] == "Glaucoma"
    assert nodes[0].node.metadata["question_type"] == "information"
    refs = [n.node.ref_doc_id for n in nodes]
    assert len(refs) == len(set(refs))
    treat = retriever.retrieve("glaucoma. my father has it, is there any cure or treatment that works?")
    assert treat[0].node.metadata["focus"] == "Glaucoma" and treat[0].node.metadata["question_type"] == "treatment"
    # Another top_k is another thin retriever over the same opened index: same ranking, nothing re-read.
    two = retriever.with_top_k(2)
    assert two.index is retriever.index and [n.node.node_id for n in two.retrieve(message)] == [n.node.node_id for n in nodes[:2]]


def test_fielded_retrieval_works_on_an_index_without_question_vectors(settings, embed_model, caplog) -> None:
    build_index(settings, embed_model=embed_model, show_progress=False)
    from rag_app.index.chroma import chroma_client

    chroma_client(settings).delete_collection(questions_collection_name(settings))
    with caplog.at_level("WARNING", logger="rag_app"):
        retriever = build_retriever(settings, embed_model=embed_model)
    assert "python -m rag_app.index" in caplog.text
    assert retriever.retrieve("What are the treatments for gout?")[0].node.metadata["focus"] == "Gout"


def test_fielded_retriever_reads_the_index_again_when_it_changes(settings, embed_model, medquad_dir: Path) -> None:
    """A long-lived retriever (the chat keeps one) serves replaced and new answers, never a deleted chunk."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    retriever = build_retriever(settings.model_copy(update={"top_k": 2}), embed_model=embed_model)
    assert "zyloprimix" not in retriever.retrieve("What are the treatments for gout?")[0].node.get_content()

    gout = medquad_dir / "1_TestA_QA" / "0000002.xml"
    gout.write_text(gout.read_text().replace("colchicine", "colchicine and a new drug called zyloprimix"))
    build_index(settings, embed_model=embed_model, show_progress=False)
    top = retriever.retrieve("What are the treatments for gout?")[0].node
    assert top.metadata["focus"] == "Gout" and "zyloprimix" in top.get_content()

    # Without a version stamp (say, the manifest could not be written), a chunk gone from the index still
    # triggers a re-read instead of a missing or empty source.
    retriever.index.version = lambda: None
    retriever.index.reload()
    gout.write_text(gout.read_text().replace("zyloprimix", "zyloprimax"))
    build_index(settings, embed_model=embed_model, show_progress=False)
    top = retriever.retrieve("What are the treatments for gout?")[0].node
    assert "zyloprimax" in top.get_content() and "zyloprimix" not in top.get_content()


def test_source_prior_favours_the_sources_that_answer_patients(settings, embed_model) -> None:
    """The per-collection prior moves pairs of a favoured source up, and of a disfavoured one down."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    message = "a question. What treatments are there for it?"

    def top_collections(prior: dict[str, float]) -> list[str]:
        tuned = settings.model_copy(update={"top_k": 4, "source_weight": 1.0, "source_prior": prior})
        return [n.node.metadata["collection"] for n in build_retriever(tuned, embed_model=embed_model).retrieve(message)]

    assert top_collections({"1_TestA_QA": 2.0})[:2] == ["1_TestA_QA"] * 2
    assert top_collections({"1_TestA_QA": -2.0})[:2] == ["2_TestB_QA"] * 2
    assert top_collections({"2_TestB_QA": 2.0, "1_TestA_QA": 0.0})[:2] == ["2_TestB_QA"] * 2


def test_a_page_that_only_points_elsewhere_comes_after_the_page_with_content(settings, embed_model, medquad_dir: Path) -> None:
    """"What is gout?" gets the page that says what gout is, not one that only says where to read about it, even when
    that page's collection is favoured; without the pointer weight the favoured pointer page would come first."""
    from tests.conftest import _medquad_xml

    folder = medquad_dir / "3_TestC_QA"
    folder.mkdir()
    stub = "More detailed information on gout is available at www.niams.nih.gov. Also, see the NIAMS web site."
    (folder / "0000001.xml").write_text(_medquad_xml("0000001", "Gout", stub, "Gout is treated with rest.", "https://www.nih.gov/c/gout"))
    build_index(settings, embed_model=embed_model, show_progress=False)
    favoured = settings.model_copy(update={"top_k": 3, "source_weight": 0.1, "source_prior": {"3_TestC_QA": 1.0}})

    def top(weight: float) -> str:
        retriever = build_retriever(favoured.model_copy(update={"pointer_weight": weight}), embed_model=embed_model)
        assert len(retriever.index.snapshot().pointers) == 1
        return retriever.retrieve("What is gout?")[0].node.get_content()

    assert "www.niams.nih.gov" in top(0.0)
    assert "Gout is a form of arthritis" in top(settings.pointer_weight)


def test_a_page_split_into_pairs_with_one_question_takes_one_place_before_the_others(settings, embed_model, medquad_dir: Path) -> None:
    """A collection that splits its gout overview into four pairs all asking "What is (are) Gout ?" (as NIHSeniorHealth
    does) fills the first places when favoured; with ``same_question_limit`` 1 its first part comes first and the
    other parts only after the other pages (limit 0: by score alone)."""
    folder = medquad_dir / "3_TestC_QA"
    folder.mkdir()
    parts = ["Gout is a painful joint disease.", "Gout attacks often start in the big toe.", "Gout is common in older men.",
             "Gout can be controlled for most people."]
    pairs = "".join(
        f'<QAPair pid="{i}"><Question qid="c-{i}" qtype="information">What is (are) Gout ?</Question><Answer>{text}</Answer></QAPair>'
        for i, text in enumerate(parts, start=1)
    )
    (folder / "0000001.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?><Document id="c1" source="Test" url="https://www.nih.gov/c/gout">'
        f"<Focus>Gout</Focus><QAPairs>{pairs}</QAPairs></Document>"
    )
    build_index(settings, embed_model=embed_model, show_progress=False)
    favoured = settings.model_copy(update={"top_k": 5, "source_weight": 0.1, "source_prior": {"3_TestC_QA": 1.0}})

    def top(limit: int) -> list[tuple[str, str]]:
        retriever = build_retriever(favoured.model_copy(update={"same_question_limit": limit}), embed_model=embed_model)
        return [(n.node.metadata["collection"], n.node.metadata["question"]) for n in retriever.retrieve("What is gout?")]

    split = ("3_TestC_QA", "What is (are) Gout ?")
    assert top(0)[:4] == [split] * 4
    limited = top(1)
    assert limited[0] == split and limited.count(split) == 1 and len(limited) == 5  # the corpus has 8 other pairs


def test_pages_that_only_point_elsewhere_are_told_from_pages_with_content() -> None:
    """Addresses, links and "more information is available at" say nothing themselves; a list of resources about one
    condition (which NLM's own answers quote) and a page with a sentence of content are not pointer pages."""
    from rag_app.text.pointers import only_points_elsewhere

    assert only_points_elsewhere("More detailed information on heart attacks is available at www.nhlbi.nih.gov/health/dci.")
    assert only_points_elsewhere("National Eye Institute 2020 Vision Place Bethesda, MD 20892-3655 301-496-5248 E-mail: 2020@nei.nih.gov")
    assert only_points_elsewhere("NIAMS at NIH has more information about gout. Check out the information here. Also, see \"Key Words\".")
    assert only_points_elsewhere("See the PDQ summary about Chronic Myelogenous Leukemia Treatment for information.")
    assert not only_points_elsewhere("These resources address the diagnosis or management of Marfan syndrome: - Gene Review: Marfan")
    assert not only_points_elsewhere("Heart failure means the heart cannot pump enough blood. More information is available at www.nhlbi.nih.gov.")
    assert not only_points_elsewhere("People can view their claims and order history, and see a description of covered services.")
    assert not only_points_elsewhere("")


def test_a_sentence_that_only_points_elsewhere_is_not_shown_to_the_model() -> None:
    """MedQuAD's links are gone from its text: "Learn more about type 1 diabetes here." in an answer points nowhere (the
    re-ranker chose it as where a follow-up's answer starts); advice and list items that name a place stay."""
    from llama_index.core.schema import NodeWithScore, TextNode

    from rag_app.answer.passages import page_sentences
    from rag_app.text.pointers import points_elsewhere

    page = (
        "Question: What is (are) Diabetes ?\nAnswer: To survive, people with type 1 diabetes must have insulin delivered by "
        "injection or a pump. Learn more about type 1 diabetes here. For more information, go to the Health Topics "
        "Arrhythmia article. Visit the dentist routinely for a check-up. - Check out books about diabetes from the library."
    )
    got = page_sentences(NodeWithScore(node=TextNode(text=page, metadata={"focus": "Diabetes"})))
    assert got == [
        "To survive, people with type 1 diabetes must have insulin delivered by injection or a pump.",
        "Visit the dentist routinely for a check-up.",
        "- Check out books about diabetes from the library.",
    ]
    only = "Question: What is (are) Gout ?\nAnswer: Learn more about gout. Click here to view this resource."
    assert len(page_sentences(NodeWithScore(node=TextNode(text=only, metadata={"focus": "Gout"})))) == 2  # nothing else to show
    assert points_elsewhere("(For more information, go to \"What Makes You Sleep?\")")
    assert not points_elsewhere("Genetic counseling gives information about how the condition is inherited.")
    # A page's videos are gone with its links ("(Watch the video to learn more about diabetes risk. To enlarge ...").
    assert points_elsewhere("(Watch the video to learn more about native Americans and diabetes risk.")
    assert points_elsewhere("To enlarge the video, click the brackets in the lower right-hand corner.")
    assert points_elsewhere("To reduce the video, press the Escape (Esc) button on your keyboard.")
    assert not points_elsewhere("A small camera on the endoscope transmits a video image to a monitor.")


def test_a_topic_without_a_page_of_the_asked_type_offers_the_nearest_type(settings, embed_model) -> None:
    """"what can she do so she doesn't get heart problems?" about Marfan syndrome asks prevention, and NIH has no Marfan
    prevention page: its treatment page (the type nearest prevention) gets part of the type bonus and comes first."""
    build_index(settings, embed_model=embed_model, show_progress=False)
    message = "My dad has gout. How can he keep it from getting worse?"

    def top(share: float) -> str:
        retriever = build_retriever(settings.model_copy(update={"top_k": 3, "nearest_type_share": share}), embed_model=embed_model)
        return retriever.retrieve(message)[0].node.metadata["question"]

    assert top(0.0) == "What is (are) Gout ?"
    assert top(settings.nearest_type_share) == "What are the treatments for Gout ?"
