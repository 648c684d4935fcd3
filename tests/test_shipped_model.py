"""The retrieval-aware model the repo ships: its record matches its recipe, and it answers real questions from sources."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED_MEDQUAD

SHIPPED = REPO / "finetune" / "adapters" / "smollm2-135m-raft"
RECIPE = REPO / "finetune" / "recipes" / "smollm2-135m-raft-cpu.yaml"
# The pages these questions are about, plus a few other topics for the retriever to rank against.
PAGES = {
    "7_SeniorHealth_QA": ["0000036.xml", "0000028.xml"],
    "8_NHLBI_QA_XML": ["0000071.xml", "0000089.xml"],
    "4_MPlus_Health_Topics_QA": ["0000471.xml", "0000409.xml", "0000582.xml", "0000498.xml"],
    "5_NIDDK_QA": ["0000009.xml"],
    "3_GHR_QA": ["0000407.xml", "0000001.xml", "0000002.xml", "0000627.xml"],
    "2_GARD_QA": ["0002550.xml", "0000004.xml", "0003801.xml", "0003802.xml"],
    "6_NINDS_QA": ["0000001.xml", "0000002.xml"],
}
# Real consumer-style questions the previous retrieval-aware model declined (issue #15).
QUESTIONS = ["How is gout treated?", "What causes high blood pressure in young adults?", "Is Gilbert syndrome dangerous?"]


def test_shipped_record_matches_the_recipe() -> None:
    """The committed adapter names the recipe, data and retrieval settings it came from, with its figures."""
    record = json.loads((SHIPPED / "medqa_run.json").read_text())
    recipe = yaml.safe_load(RECIPE.read_text())
    assert record["recipe"]["path"] == "finetune/recipes/smollm2-135m-raft-cpu.yaml"
    assert record["recipe"]["values"] == recipe  # the recipe file is what trained it
    hp = record["hyperparameters"]
    for key in ("learning_rate", "max_steps", "lora_r", "lora_alpha", "gradient_accumulation_steps", "max_length", "raft_top_k",
                "raft_oracle_fraction", "raft_consumer_fraction", "raft_sibling_fraction", "raft_retrieved_order", "raft_weight_by_source"):
        assert hp[key] == recipe[key], key
    assert record["global_step"] == recipe["max_steps"] and record["base_model"] == recipe["model_name_or_path"]
    assert record["data"]["manifest_hash"] and record["data"]["raft"]["retrieval"]["retrieval_mode"] == "fielded"
    assert record["eval_loss_after"] < record["eval_loss_before"]
    assert record["evaluation"]["liveqa"]["raft+rag/rougeL"] > 0
    config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "bundled:smollm2-135m-instruct" and config["r"] == recipe["lora_r"]
    size = (SHIPPED / "adapter_model.safetensors").stat().st_size
    assert 5e6 < size < 15e6  # 16-bit LoRA weights, small enough to commit
    assert (SHIPPED / "README.md").is_file()


def real_pages(tmp_path: Path, embed_model):
    """Settings over an index (real Chroma) of the real MedQuAD pages of :data:`PAGES`, answering with the shipped model."""
    from rag_app.config import Settings
    from rag_app.index.build import build_index

    corpus = tmp_path / "medquad"
    for collection, files in PAGES.items():
        (corpus / collection).mkdir(parents=True)
        for name in files:
            shutil.copy(SHARED_MEDQUAD / collection / name, corpus / collection / name)
    settings = Settings(storage_dir=tmp_path / "storage", corpus=[str(corpus)], llm=str(SHIPPED), max_new_tokens=96)
    build_index(settings, embed_model=embed_model, show_progress=False)
    return settings


def shipped_over_real_pages(tmp_path: Path, embed_model):
    """Settings over an index of the real MedQuAD pages of :data:`PAGES`, and the shipped model loaded."""
    from rag_app.llm.load import load_llm

    settings = real_pages(tmp_path, embed_model)
    # The bundled base and the merged adapter are cached with the other test models between runs.
    cache = Path(os.environ.get("MEDQA_TEST_MODEL_CACHE", tmp_path / "models-cache"))
    return settings, load_llm(settings.model_copy(update={"storage_dir": cache}))


@pytest.mark.skipif(not SHARED_MEDQUAD.is_dir(), reason="needs ../shared/data/medquad")
def test_shipped_model_answers_real_questions_with_citations(tmp_path: Path, embed_model) -> None:
    """Loaded from the committed adapter (merged on first use), it answers from the sources and cites them."""
    from eval.metrics import cited_numbers, is_abstention
    from rag_app.text.openings import opening_words
    from rag_app.answer.engine import build_query_engine
    from rag_app.llm.info import model_info

    settings, llm = shipped_over_real_pages(tmp_path, embed_model)
    assert model_info(llm).name == SHIPPED.name and not model_info(llm).fallback
    engine = build_query_engine(settings, embed_model=embed_model, llm=llm)
    for question in QUESTIONS:
        response = engine.query(question)
        answer = str(response)
        assert not is_abstention(answer), (question, answer)
        cited = cited_numbers(answer)
        assert cited and all(1 <= n <= len(response.source_nodes) for n in cited), (question, answer)
        topic = response.source_nodes[cited[0] - 1].node.metadata["focus"].lower()
        assert any(word in topic for word in ("gout", "blood pressure", "gilbert")), (question, topic)
        # It answers from the top-ranked source: the answer opens with that source's first words.
        opening = opening_words([n.node.get_content() for n in response.source_nodes])
        assert opening and answer.startswith(opening), (question, opening, answer)
        if "treated" in question:  # answered from a treatment page, not the overview the model used to copy
            assert "treat" in response.source_nodes[cited[0] - 1].node.metadata["question"].lower(), (question, answer)


# Messages as patients write them (issue #13): the page answering what was asked must come first, and the answer must
# say what that page says about it; headings the pages lost their line breaks around must not be glued into it.
PATIENT_MESSAGES = [
    ("Is gout hereditary?", "gout", {"susceptibility", "causes"}, r"family history|genetic|inherit"),
    ("my dad's big toe got red and swollen overnight, the doctor said gout. how do you treat gout?", "gout", {"treatment"},
     r"drug|medication|NSAID|treat"),
    ("Marfans syndrom. My wife has marfans, can our kids get it?", "marfan", {"inheritance", "susceptibility"}, r"inherit|parent|famil|child"),
    ("my dad is 72 and his big toe got red and swollen overnight, the doctor said its gout. what can he take for the pain and "
     "will it come back?", "gout", {"treatment", "outlook"}, r"drug|medication|NSAID|treat"),
]
GLUED_HEADINGS = ["Where Gout Usually Occurs", "Sudden, Intense Joint Pain", "A Buildup of Uric Acid", "Symptoms Can Be Controlled",
                  "Attacks Usually Start at Night", "Who is at Risk?"]


@pytest.mark.skipif(not SHARED_MEDQUAD.is_dir(), reason="needs ../shared/data/medquad")
def test_patient_messages_get_the_page_for_what_they_ask(tmp_path: Path, embed_model) -> None:
    """The shipped re-ranker and model, real Chroma: the asked aspect's page first, an answer from it, no glued heading;
    a follow-up asking something else gets another answer."""
    import re

    from eval.metrics import is_abstention
    from rag_app.answer.conversation import build_chat_engine
    from rag_app.answer.engine import build_query_engine
    from rag_app.text import prompts

    settings, llm = shipped_over_real_pages(tmp_path, embed_model)
    engine = build_query_engine(settings, embed_model=embed_model, llm=llm)
    assert engine.reranker is not None  # the shipped re-ranker, on by default
    for message, topic, types, says in PATIENT_MESSAGES:
        response = engine.query(message)
        top = response.source_nodes[0].node.metadata
        assert topic in top["focus"].lower() and top["question_type"] in types, (message, top["question"])
        answer = str(response)
        assert not is_abstention(answer) and re.search(says, answer, re.IGNORECASE), (message, answer)
        assert not any(heading in answer for heading in GLUED_HEADINGS), (message, answer)
    chat = build_chat_engine(query_engine=engine)
    first = chat.chat("What is gout?")
    # What gout is, not the page that only says where to read about it ("NIAMS has more information about gout ...").
    assert re.search(r"form of arthritis|uric acid|joint", str(first), re.IGNORECASE), str(first)
    reply = chat.chat("Is it hereditary?")
    assert reply.metadata["searched_for"] == "Is gout hereditary?"
    assert reply.source_nodes[0].node.metadata["question_type"] in {"susceptibility", "causes"}
    assert str(reply) != str(first), "a different question gets a different answer"
    # A follow-up naming nothing the index knows ("heart problems") is about the conversation's condition.
    chat.reset()
    chat.chat("Marfans syndrom. My wife has marfans, can our kids get it?")
    reply = chat.chat("what can she do so she doesnt get heart problems?")
    assert "marfan" in reply.metadata["searched_for"].lower(), reply.metadata["searched_for"]
    assert "marfan" in reply.source_nodes[0].node.metadata["focus"].lower()
    # "them" after "take" are the pills the story named: the treatment page, and what it says besides the first answer.
    chat.reset()
    first = chat.chat("hi, my doctor said i have hypothyroidsm and put me on levothyroxine, i been gaining wieght and always "
                      "tired. will the pills make me loose the weight?")
    reply = chat.chat("how long do i have to take them")
    assert reply.metadata["searched_for"] == "how long do i have to take Hypothyroidism treatment", reply.metadata["searched_for"]
    assert reply.source_nodes[0].node.metadata["question_type"] == "treatment"

    def statements(response) -> set[str]:
        text = str(response).replace(prompts.MEDICAL_NOTICE, "")
        return {s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) > 5}

    assert statements(reply) and not statements(first) & statements(reply), (str(first), str(reply))


# Causes asked the way people ask, not in the words the re-ranker was trained on: read as asking for causes (cue words
# or the nearest plain way of asking), the message is re-ranked with "What causes it?" after it.
ASKED_OTHERWISE = [
    "My dad was diagnosed with high blood pressure last month, he is only 45. What brings it on?",
    "my husband has gout in his big toe. why did he get it??",
    "Our daughter has Marfan syndrome. Why does someone get this?",
]


@pytest.mark.skipif(not SHARED_MEDQUAD.is_dir(), reason="needs ../shared/data/medquad")
def test_the_shipped_reranker_reads_the_asked_type_however_it_is_asked(tmp_path: Path, embed_model) -> None:
    """The shipped re-ranker over real pages puts the causes page first for causes asked in other words; reading the
    message as written, it put the overview first for at least one of them."""
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import build_query_engine

    engine = build_query_engine(real_pages(tmp_path, embed_model), embed_model=embed_model, llm=MockLLM())
    as_written = engine.model_copy(update={"rerank_reads_asked": False})
    firsts = {}
    for message in ASKED_OTHERWISE:
        assert engine.read(message).asked == {"causes"}, message
        top = engine.retrieve(message)[0].node.metadata
        assert top["question_type"] == "causes", (message, top["question"])
        firsts[message] = as_written.retrieve(message)[0].node.metadata["question_type"]
    assert "information" in firsts.values(), firsts
