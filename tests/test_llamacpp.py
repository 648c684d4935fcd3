"""The llama.cpp backend: GGUF export of the bundled model and its fine-tunes, same answers as transformers, stops."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO

pytest.importorskip("llama_cpp")
SHIPPED = REPO / "finetune" / "adapters" / "smollm2-135m-raft"
SOURCE = (
    "Source [1] (Gout): Gout is a form of arthritis that causes sudden attacks of pain, swelling and redness in a joint, "
    "often the big toe. It happens when uric acid builds up in the blood and forms crystals in the joint."
)
MESSAGES = [
    {"role": "system", "content": "Answer the question from the numbered sources and cite them like [1]."},
    {"role": "user", "content": f"{SOURCE}\n\nQuestion: What is gout?"},
]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> tuple[object, object]:
    """The shipped model loaded twice from the test model cache: llama.cpp (8-bit GGUF) and transformers (float32)."""
    from rag_app.config import Settings
    from rag_app.models import load_llm

    cache = Path(os.environ.get("MEDQA_TEST_MODEL_CACHE", tmp_path_factory.mktemp("models-cache")))
    settings = Settings(storage_dir=cache, llm=str(SHIPPED), max_new_tokens=48)
    return load_llm(settings), load_llm(settings, llm_backend="transformers")


def _chat(llm, **decoding) -> str:
    from llama_index.core.llms import ChatMessage

    from rag_app.models import with_decoding

    mine = with_decoding(llm, **decoding) if decoding else llm
    return mine.chat([ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES]).message.content.strip()


def test_bundled_checkpoint_exports_to_the_same_weights(bundled_llm_dir: Path, tmp_path: Path) -> None:
    """The base checkpoint written back to GGUF changes no weight; another architecture is refused."""
    from rag_app.gguf import export_gguf, fits
    from rag_app.models import bundled_gguf

    out = export_gguf(bundled_llm_dir, bundled_gguf(), tmp_path / "base.gguf")
    import gguf

    reader = gguf.GGUFReader(str(out))
    types = {t.tensor_type.name for t in reader.tensors}
    assert types == {"Q8_0", "F32"}  # weight matrices in one 8-bit type, norms in float
    assert reader.fields["tokenizer.chat_template"].contents() == gguf.GGUFReader(str(bundled_gguf())).fields["tokenizer.chat_template"].contents()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 576}')
    assert not fits(tmp_path / "other", bundled_gguf())
    with pytest.raises(ValueError, match="architecture"):
        export_gguf(tmp_path / "other", bundled_gguf(), tmp_path / "other.gguf")


def test_llamacpp_answers_as_transformers_does(shipped) -> None:
    """Greedy answers of the 8-bit GGUF and the float32 checkpoint agree (the same prompt, token for token)."""
    from rag_app.models import describe_llm, llm_info

    fast, reference = shipped
    assert llm_info(fast)["backend"] == "llama.cpp" and llm_info(reference)["backend"] == "transformers"
    assert describe_llm(fast) == "smollm2-135m-raft (retrieval-aware fine-tune, llama.cpp)"
    fast_answer, reference_answer = _chat(fast), _chat(reference)
    assert fast_answer.split()[:12] == reference_answer.split()[:12], (fast_answer, reference_answer)
    assert "arthritis" in fast_answer.lower()


def test_first_token_suppression_and_stop_event(shipped) -> None:
    """The engine's decline suppression and the chat's Stop button work on llama.cpp too."""
    fast, _ = shipped
    first = fast._tokenizer(_chat(fast), add_special_tokens=False)["input_ids"][0]
    assert fast._tokenizer(_chat(fast, suppress=[first]), add_special_tokens=False)["input_ids"][0] != first
    stop = threading.Event()
    stop.set()
    assert len(_chat(fast, stop=stop).split()) <= 2  # ends at the next token
    assert len(_chat(fast, max_new_tokens=8).split()) <= 8


def test_engine_streams_the_same_answer_it_returns(shipped) -> None:
    """Through the query engine, streaming and non-streaming answers are the same text."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    from rag_app.engine import build_query_engine

    fast, _ = shipped

    class OneSource(BaseRetriever):
        def _retrieve(self, query_bundle):
            node = TextNode(text=SOURCE.split(": ", 1)[1], metadata={"focus": "Gout", "question": "What is gout?"})
            return [NodeWithScore(node=node, score=1.0)]

    engine = build_query_engine(llm=fast, retriever=OneSource(), medical_notice=False, decline_by_topic=False)
    whole = str(engine.query("What is gout?"))
    streamed = "".join(build_query_engine(llm=fast, retriever=OneSource(), streaming=True, medical_notice=False,
                                          decline_by_topic=False).query("What is gout?").response_gen)
    assert whole == streamed and "[1]" in whole


def test_answer_opening_on_both_backends(shipped) -> None:
    """An answer made to open with the top source's first words starts with them on llama.cpp and transformers."""
    from rag_app.decoding import answer_opening, opening_words

    passages = ["Answer: Uric acid crystals in a joint cause the pain of gout", "Answer: Gout is a form of arthritis"]
    for llm in shipped:
        opening = answer_opening(llm._tokenizer, passages)
        assert _chat(llm).startswith("Gout")  # on its own it opens with the topic's name
        assert opening_words(passages) == "Uric acid crystals in"
        assert _chat(llm, opening=opening).startswith("Uric acid crystals in "), llm
