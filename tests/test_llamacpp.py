"""The llama.cpp backend: GGUF export of the bundled model and its fine-tunes, same answers as transformers, stops."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rag_app.llm.decoding import llm_tokenizer
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
    from rag_app.llm.load import load_llm

    cache = Path(os.environ.get("MEDQA_TEST_MODEL_CACHE", tmp_path_factory.mktemp("models-cache")))
    settings = Settings(storage_dir=cache, llm=str(SHIPPED), max_new_tokens=48)
    return load_llm(settings), load_llm(settings, llm_backend="transformers")


def _chat(llm, **decoding) -> str:
    from llama_index.core.llms import ChatMessage

    from rag_app.llm.decoding import with_decoding

    mine = with_decoding(llm, **decoding) if decoding else llm
    return mine.chat([ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES]).message.content.strip()


def test_bundled_checkpoint_exports_to_the_same_weights(bundled_llm_dir: Path, tmp_path: Path) -> None:
    """The base checkpoint written back to GGUF changes no weight; another architecture is refused."""
    from rag_app.llm.gguf import export_gguf, fits
    from rag_app.llm.resolve import bundled_gguf

    out = export_gguf(bundled_llm_dir, bundled_gguf(), tmp_path / "base.gguf")
    import gguf

    reader = gguf.GGUFReader(str(out))
    types = {t.tensor_type.name for t in reader.tensors}
    assert types == {"F16", "F32"}  # weight matrices in one 16-bit type, norms in float32
    assert reader.fields["tokenizer.chat_template"].contents() == gguf.GGUFReader(str(bundled_gguf())).fields["tokenizer.chat_template"].contents()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "qwen2", "hidden_size": 576}')
    assert not fits(tmp_path / "other", bundled_gguf())
    with pytest.raises(ValueError, match="architecture"):
        export_gguf(tmp_path / "other", bundled_gguf(), tmp_path / "other.gguf")


def test_llamacpp_answers_as_transformers_does(shipped) -> None:
    """Greedy answers of the 16-bit GGUF and the float32 checkpoint agree (the same prompt, token for token)."""
    from rag_app.llm.info import model_info

    fast, reference = shipped
    assert model_info(fast).backend == "llama.cpp" and model_info(reference).backend == "transformers"
    assert model_info(fast).describe() == "smollm2-135m-raft (retrieval-aware fine-tune, llama.cpp)"
    fast_answer, reference_answer = _chat(fast), _chat(reference)
    assert fast_answer.split()[:12] == reference_answer.split()[:12], (fast_answer, reference_answer)
    assert "arthritis" in fast_answer.lower()


def test_first_token_suppression_and_stop_event(shipped) -> None:
    """The engine's decline suppression and the chat's Stop button work on llama.cpp too."""
    fast, _ = shipped
    first = llm_tokenizer(fast)(_chat(fast), add_special_tokens=False)["input_ids"][0]
    assert llm_tokenizer(fast)(_chat(fast, suppress=[first]), add_special_tokens=False)["input_ids"][0] != first
    stop = threading.Event()
    stop.set()
    assert len(_chat(fast, stop=stop).split()) <= 2  # ends at the next token
    assert len(_chat(fast, max_new_tokens=8).split()) <= 8


def test_engine_streams_the_same_answer_it_returns(shipped) -> None:
    """Through the query engine, streaming and non-streaming answers are the same text."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    from rag_app.answer.engine import build_query_engine

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
    from rag_app.llm.decoding import answer_opening
    from rag_app.text.openings import opening_words

    passages = ["Answer: Uric acid crystals in a joint cause the pain of gout", "Answer: Gout is a form of arthritis"]
    for llm in shipped:
        opening = answer_opening(llm_tokenizer(llm), passages)
        assert _chat(llm).startswith("Gout")  # on its own it opens with the topic's name
        assert opening_words(passages) == "Uric acid crystals in"
        assert _chat(llm, opening=opening).startswith("Uric acid crystals in "), llm


def test_an_answer_copying_its_source_runs_to_its_end_on_both_backends(shipped) -> None:
    """On its own the shipped model stops one sentence before the end of this source; told to finish its source, it
    copies the last sentence too and then ends (on llama.cpp and transformers alike)."""
    from llama_index.core.llms import ChatMessage

    from rag_app.llm.decoding import answer_opening, with_decoding

    text = SOURCE.split(": ", 1)[1] + (
        " Attacks often start at night and can last a week or two. Between attacks most people have no symptoms at all."
        " Without treatment, attacks may come more often and last longer."
        " Eating less red meat and drinking less alcohol can lower the chance of another attack."
    )
    messages = [MESSAGES[0], {"role": "user", "content": f"Source [1] (Gout): {text}\n\nQuestion: What is gout?"}]
    passages = ["Answer: " + text]
    last = "Eating less red meat and drinking less alcohol can lower the chance of another attack."
    for llm in shipped:
        answers = []
        for finish in ("", passages[0]):
            mine = with_decoding(llm, opening=answer_opening(llm_tokenizer(llm), passages, finish=finish), max_new_tokens=160)
            answers.append(mine.chat([ChatMessage(**m) for m in messages]).message.content.strip())
        free, finished = answers
        assert last not in free and free.endswith("last longer."), free
        assert finished.startswith(free) and finished.endswith(last), finished

@pytest.mark.parametrize("generate", [False, True])
def test_a_library_script_exits_cleanly(settings, embed_model, tmp_path: Path, generate: bool) -> None:
    """A script that builds the default engine (the shipped model on llama.cpp) and only retrieves, or also answers,
    exits with nothing on stderr but logging: the model is freed before Python tears its modules down."""
    import subprocess
    import sys

    from rag_app.index.build import build_index

    build_index(settings, embed_model=embed_model, show_progress=False)
    cache = Path(os.environ.get("MEDQA_TEST_MODEL_CACHE", tmp_path / "models-cache"))
    script = (
        "import logging; logging.disable(logging.CRITICAL)\n"
        "from rag_app import build_query_engine\n"
        "engine = build_query_engine()\n"
        "print(engine.retrieve('How is gout treated?')[0].node.metadata['focus'])\n"
        + ("print(engine.query('How is gout treated?'))\n" if generate else "")
    )
    env = {**os.environ, "MEDQA_STORAGE_DIR": str(settings.storage_dir), "MEDQA_CORPUS": settings.corpus[0],
           "MEDQA_CHUNK_SIZE": str(settings.chunk_size), "MEDQA_CHUNK_OVERLAP": str(settings.chunk_overlap), "MEDQA_MAX_NEW_TOKENS": "16"}
    # The merged shipped model and its GGUF are kept in the test model cache.
    (cache / "models").mkdir(parents=True, exist_ok=True)
    (settings.storage_dir / "models").symlink_to((cache / "models").resolve(), target_is_directory=True)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "Gout" in run.stdout
    noise = [line for line in run.stderr.splitlines() if line.strip() and "%|" not in line and not line.startswith(("Loading", "Writing"))]
    assert not noise, run.stderr
