"""The Streamlit chat (streamlit_app.py) through streamlit.testing.v1.AppTest, plus its non-UI helpers.

One small index and the bundled LLM are shared by the module (the app caches its models per
process, as it does in production), so the whole file runs in about a minute on two CPU cores.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import safety  # noqa: E402
from app import session as chat  # noqa: E402
from rag_app.text import prompts  # noqa: E402
from rag_app.config import Settings  # noqa: E402
from tests.conftest import write_medquad  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TIMEOUT = 180  # the first run loads the models


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, embed_model, bundled_llm_dir) -> dict[str, str]:
    """MEDQA_* variables of an app over a small built index, with short answers."""
    from rag_app.index.build import build_index

    root = tmp_path_factory.mktemp("app")
    corpus = write_medquad(root / "medquad")
    env = {
        "MEDQA_STORAGE_DIR": str(root / "storage"),
        "MEDQA_CORPUS": str(corpus),
        "MEDQA_LLM": str(bundled_llm_dir),
        "MEDQA_MAX_NEW_TOKENS": "16",
        "MEDQA_TOP_K": "3",
        "MEDQA_FINETUNED_LLM": str(root / "storage" / "models" / "merged"),
    }
    build_index(Settings(storage_dir=root / "storage", corpus=[str(corpus)]), embed_model=embed_model, show_progress=False)
    # A "fine-tuned" model where the app looks for one (the bundled checkpoint stands in for it).
    (root / "storage" / "models").mkdir(parents=True, exist_ok=True)
    (root / "storage" / "models" / "merged").symlink_to(bundled_llm_dir, target_is_directory=True)
    return env


@pytest.fixture()
def app(app_env, monkeypatch) -> AppTest:
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def last_turn(at: AppTest) -> chat.Turn:
    return at.session_state["messages"][-1]


# ---- the app --------------------------------------------------------------------------


def test_ask_answers_with_numbered_sources(app: AppTest, app_env, embed_model) -> None:
    from llama_index.core.llms import MockLLM

    from rag_app.answer.engine import build_query_engine

    assert any("Not medical advice" in w.value for w in app.warning), "the notice is visible before any question"
    ask(app, "How is gout treated?")
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    turn = last_turn(app)
    assert turn.content.endswith(prompts.MEDICAL_NOTICE) and len(turn.content) > len(prompts.MEDICAL_NOTICE)
    assert not turn.emergency and not turn.error
    # [n] in the expander is source_nodes[n-1], in retrieval order.
    settings = Settings(storage_dir=app_env["MEDQA_STORAGE_DIR"], corpus=[app_env["MEDQA_CORPUS"]])
    engine = build_query_engine(settings, llm=MockLLM(max_tokens=4), embed_model=embed_model)
    expected = [prompts.source_title(n.node.metadata) for n in engine.retrieve("How is gout treated?")]
    assert [s["number"] for s in turn.sources] == [1, 2, 3]
    assert [s["title"] for s in turn.sources] == expected and expected[0] == "Gout"
    assert turn.sources[0]["url"] == "https://www.nih.gov/test/gout" and turn.sources[0]["passage"]
    assert turn.sources[0]["collection"] and turn.sources[0]["score"] > 0
    (expander,) = app.chat_message[1].expander
    assert expander.label == "📚 Sources (3)"
    shown = [m.value for m in expander.markdown]
    assert shown[0].startswith("**[1] Gout**") and "(https://www.nih.gov/test/gout)" in shown[1]
    assert "first token" in app.chat_message[1].caption[-1].value

    ask(app, "What is glaucoma?")  # the history is kept
    assert [m.name for m in app.chat_message] == ["user", "assistant"] * 2
    assert app.session_state["messages"][-1].sources[0]["title"] == "Glaucoma"


def test_sidebar_controls_change_the_engine(app: AppTest) -> None:
    app.sidebar.slider(key="top_k").set_value(2)
    app.sidebar.slider(key="temperature").set_value(0.5)
    app.sidebar.slider(key="max_new_tokens").set_value(8)
    ask(app, "What is anemia?")
    assert app.session_state["engine_config"] == {
        "model": app.session_state["engine_config"]["model"],
        "use_rag": True,
        "top_k": 2,
        "temperature": 0.5,
        "max_new_tokens": 8,
        "backend": app.session_state["engine_config"]["backend"],
    }
    assert len(last_turn(app).sources) == 2

    app.sidebar.toggle(key="use_rag").set_value(False)
    app.sidebar.slider(key="temperature").set_value(0.0)
    ask(app, "What is anemia?")
    config = app.session_state["engine_config"]
    assert config["use_rag"] is False and config["top_k"] is None and config["temperature"] == 0.0
    assert last_turn(app).sources == [] and "RAG off" in last_turn(app).meta
    assert len(app.chat_message[-1].expander) == 0


def test_model_choice_switches_to_the_finetuned_model(app: AppTest, app_env) -> None:
    radio = app.sidebar.radio(key="model")
    assert radio.options == [f"Configured: {Path(app_env['MEDQA_LLM']).name}", "Fine-tuned: merged (fine-tune)", "Base: SmolLM2-135M-Instruct"]
    assert radio.value.startswith("Configured")
    radio.set_value("Fine-tuned: merged (fine-tune)")
    ask(app, "What is gout?")
    assert app.session_state["engine_config"]["model"] == str(Path(app_env["MEDQA_STORAGE_DIR"]) / "models" / "merged")
    assert last_turn(app).content and last_turn(app).sources


@pytest.mark.parametrize("question", ["", "   \n  "])
def test_empty_input_is_ignored(app: AppTest, question: str) -> None:
    ask(app, question)
    assert app.session_state["messages"] == [] and len(app.chat_message) == 0
    assert "engine_config" not in app.session_state


def test_red_flag_shows_emergency_guidance_first(app: AppTest) -> None:
    ask(app, "My father has chest pain and shortness of breath, what should he take?")
    message = app.chat_message[1]
    assert message.name == "assistant"
    (alert,) = message.error
    assert "emergency" in alert.value and "911" in alert.value
    # The guidance comes before the answer inside the assistant message.
    # (UnknownElement: the emptied slot of the Stop button, which shows only while the answer streams.)
    children = [type(c).__name__ for c in message.children.values() if type(c).__name__ != "UnknownElement"]
    assert children[:2] == ["Error", "Markdown"], children
    assert last_turn(app).emergency.startswith("**🚨") and last_turn(app).content


def test_missing_index_is_built_in_the_background_and_the_chat_opens(tmp_path, monkeypatch, app_env) -> None:
    """No index: the chat opens at once, the index builds in the background, a question waits for the first sources."""
    storage = tmp_path / "empty-storage"
    monkeypatch.setenv("MEDQA_STORAGE_DIR", str(storage))
    monkeypatch.setenv("MEDQA_CORPUS", app_env["MEDQA_CORPUS"])
    monkeypatch.setenv("MEDQA_LLM", app_env["MEDQA_LLM"])
    monkeypatch.setenv("MEDQA_MAX_NEW_TOKENS", "8")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert all("hasn't been built" not in h.value for h in at.subheader)
    assert len(at.chat_input) == 1, "the chat opens while the index is built"
    ask(at, "What is gout?")
    assert not at.exception, at.exception
    assert last_turn(at).sources and last_turn(at).sources[0]["title"] == "Gout"
    from rag_app.index.chroma import index_status

    deadline = time.monotonic() + 120
    while index_status(Settings()).get("building") or not index_status(Settings()).get("exists"):
        assert time.monotonic() < deadline, "the background build did not finish"
        time.sleep(0.5)
    assert index_status(Settings())["indexed_documents"] == 8

    monkeypatch.setenv("MEDQA_STORAGE_DIR", str(tmp_path / "other-storage"))
    monkeypatch.setenv("MEDQA_CORPUS", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any("hasn't been built" in h.value for h in at.subheader)
    assert "python -m corpus.download medquad" == at.code[0].value
    assert len(at.chat_input) == 0, "no corpus, no index: no chat until one is downloaded (or RAG is off)"


def test_no_model_screen_gives_the_command(app_env, monkeypatch, tmp_path) -> None:
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MEDQA_LLM", str(tmp_path / "no-such-model"))
    monkeypatch.setenv("MEDQA_OFFLINE_FALLBACK", "false")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("could not be loaded" in h.value for h in at.subheader)
    assert at.code and len(at.chat_input) == 0


def test_rebuild_button_updates_the_index(app: AppTest) -> None:
    """The button starts the shared background build; the sidebar says what it did when it ends."""
    app.sidebar.button(key="rebuild").click().run()
    deadline = time.monotonic() + TIMEOUT
    while not app.sidebar.success:
        assert not app.exception and not app.error, (app.exception, app.error)
        assert time.monotonic() < deadline, "the build did not finish"
        time.sleep(0.5)
        app.run()
    (done,) = app.sidebar.success
    assert "indexed 8 documents" in done.value and "0 embedded" in done.value
    ask(app, "What is gout?")
    assert last_turn(app).sources[0]["title"] == "Gout"


def test_two_sessions_answer_at_once(app: AppTest, app_env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each AppTest compiles the script on its own thread with its own script cache, and CPython 3.11's ast.parse is
    # not safe on two threads at once (python/cpython#106905: "AST constructor recursion depth mismatch"); the
    # Streamlit server compiles once, under its one cache's lock.
    from streamlit.runtime.scriptrunner import magic

    lock, add_magic = threading.Lock(), magic.add_magic

    def one_at_a_time(code: str, path: str) -> Any:
        with lock:
            return add_magic(code, path)

    monkeypatch.setattr(magic, "add_magic", one_at_a_time)
    other = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    errors: list[BaseException] = []

    def run(at: AppTest, question: str) -> None:
        try:
            ask(at, question)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(a, q)) for a, q in ((app, "What is gout?"), (other, "What is asthma?"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * TIMEOUT)  # two answers at once on a loaded machine can take longer than one script run
    assert not any(t.is_alive() for t in threads), "a session did not finish answering"
    assert not errors, errors
    assert last_turn(app).sources[0]["title"] == "Gout" and last_turn(other).sources[0]["title"] == "Asthma"
    assert len(app.session_state["messages"]) == len(other.session_state["messages"]) == 2


# ---- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "keys"),
    [
        ("I have chest pain and shortness of breath", ["heart"]),
        ("crushing pressure in my chest and I'm sweating", ["heart"]),
        ("her face is drooping and her speech is slurred", ["stroke"]),
        ("sudden numbness on one side of my body", ["stroke"]),
        ("I keep having suicidal thoughts", ["suicide"]),
        ("I want to kill myself", ["suicide"]),
        ("I think I took too many sleeping pills", ["overdose"]),
        ("my toddler swallowed bleach", ["overdose"]),
        ("my throat is closing up after a bee sting", ["breathing"]),
        ("he is unconscious and not breathing", ["collapse"]),
        ("What are the treatments for glaucoma?", []),
        ("What causes chest pain in asthma?", []),
        ("I think I'm having a heart attack", ["heart"]),
        ("I think my son was poisoned", ["overdose"]),
        ("How is a stroke diagnosed?", []),
        ("My mother had a stroke last year; what is the outlook?", []),
        ("What are the treatments for lead poisoning?", []),
        ("What is the recommended dose of ibuprofen?", []),
        ("", []),
    ],
)
def test_red_flag_detection(message: str, keys: list[str]) -> None:
    flags = safety.detect_red_flags(message)
    assert [f.key for f in flags] == keys
    markdown = safety.emergency_markdown(flags)
    assert bool(markdown) == bool(keys) and (not keys or "911" in markdown)


def test_suicide_guidance_gives_the_crisis_line() -> None:
    (flag,) = safety.detect_red_flags("I don't want to live anymore")
    assert "988" in flag.guidance


class _Node:
    def __init__(self, text: str, metadata: dict):
        self.text, self.metadata = text, metadata

    def get_content(self) -> str:
        return self.text


class _Scored:
    def __init__(self, node: _Node, score: float):
        self.node, self.score = node, score


def test_source_views_number_and_mark_citations() -> None:
    nodes = [
        _Scored(_Node("Gout text", {"focus": "Gout", "collection": "A", "url": "https://a/gout"}), 0.9),
        _Scored(_Node("Asthma text", {"question": "What is asthma?", "url": ""}), 0.5),
    ]
    views = chat.source_views(nodes, "Gout hurts [1]. See also [1, 2].")
    assert [(v.number, v.title, v.cited) for v in views] == [(1, "Gout", True), (2, "What is asthma?", True)]
    assert prompts.cited_numbers("no citations") == []
    linked = chat.link_citations("Treated with colchicine [1] and rest [2].", views)
    assert linked == "Treated with colchicine [\\[1\\]](https://a/gout) and rest [2]."


def test_request_engine_copies_and_leaves_shared_objects_alone(bundled_llm_model) -> None:
    from llama_index.core.schema import TextNode

    from rag_app.answer.engine import build_query_engine
    from rag_app.retrieval.classic import MedQARetriever, bm25_retriever

    nodes = [TextNode(text=f"Gout is treated with medicine number {i}.", id_=f"n{i}") for i in range(8)]
    shared = MedQARetriever(None, bm25_retriever(nodes, 20), top_k=3, candidate_k=20)
    base = build_query_engine(use_rag=False, llm=bundled_llm_model)
    before = dict(bundled_llm_model.generate_kwargs), bundled_llm_model.max_new_tokens
    engine = chat.request_engine(base, chat.ChatOptions(llm="x", top_k=5, temperature=0.7, max_new_tokens=12), bundled_llm_model, shared)
    config = chat.engine_config(engine)
    assert config["use_rag"] and config["top_k"] == 5 and config["temperature"] == 0.7 and config["max_new_tokens"] == 12
    assert len(engine.retrieve("How is gout treated?")) == 5 and len(shared.retrieve("How is gout treated?")) == 3
    assert engine.streaming and engine.llm._model is bundled_llm_model._model
    assert (dict(bundled_llm_model.generate_kwargs), bundled_llm_model.max_new_tokens) == before and shared.top_k == 3
    off = chat.request_engine(base, chat.ChatOptions(llm="x", use_rag=False), bundled_llm_model, shared)
    assert off.use_rag is False and off.retriever is None


def test_finetuned_model_is_offered_when_merged_exists(settings) -> None:
    from rag_app.config import BUNDLED_LLM

    merged = settings.storage_dir / "models" / "merged"
    settings = settings.model_copy(update={"finetuned_llm": str(merged), "llm": BUNDLED_LLM})
    assert [(c.label, c.finetuned) for c in chat.model_choices(settings)] == [("Base: SmolLM2-135M-Instruct", False)]
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    choices = chat.model_choices(settings)
    assert [c.finetuned for c in choices] == [False, True] and choices[1].llm == str(merged)
    # A training run's merged model says what it is (its run record is in the parent folder).
    (merged.parent / "medqa_run.json").write_text('{"hyperparameters": {"raft": true}}')
    assert chat.model_choices(settings)[1].label == "Fine-tuned: merged (retrieval-aware fine-tune)"


def test_the_shipped_model_is_the_default_and_the_base_is_one_choice_away() -> None:
    from rag_app.config import BUNDLED_LLM, SHIPPED_LLM

    settings = Settings()
    assert settings.llm == settings.finetuned_llm == SHIPPED_LLM and Path(SHIPPED_LLM, "adapter_config.json").is_file()
    choices = chat.model_choices(settings)
    assert [c.llm for c in choices] == [SHIPPED_LLM, BUNDLED_LLM]
    assert choices[0].label == "Fine-tuned: smollm2-135m-raft (retrieval-aware fine-tune)" and choices[0].finetuned


def test_build_index_reports_progress_fractions(settings, embed_model) -> None:
    from rag_app.index.build import build_index

    seen: list[tuple[float, str]] = []
    stats = build_index(settings, embed_model=embed_model, show_progress=False, on_progress=lambda f, t: seen.append((f, t)))
    assert stats.embedded_documents == 8
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < len(seen)
    assert fractions[0] == 0.0 and any(0.15 < f < 1.0 or f == 1.0 for f in fractions)
    assert any(t.startswith("Embedding: 8/8") for _, t in seen) and any(t.startswith("Read") for _, t in seen)
