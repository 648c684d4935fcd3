"""The non-UI half of the Streamlit chat (``streamlit_app.py``): per-request engines, sources, index builds.

Everything here is plain Python that tests can call without Streamlit. The app keeps one LLM,
one embedding model and one retriever per process and builds a cheap per-request engine from
them with the user's sidebar choices, so two browser tabs with different settings never step on
each other's configuration.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from llama_index.core.llms import ChatMessage

from rag_app.answer.conversation import answer_message
from rag_app.config import BUNDLED_LLM, Settings
from rag_app.llm.decoding import with_decoding
from rag_app.llm.info import model_info
from rag_app.llm.resolve import BUNDLED_LLM_NAME, model_kind
from rag_app.text.prompts import MEDICAL_NOTICE, cited_numbers, source_title


# ---- models -------------------------------------------------------------------


def finetuned_model_dir(settings: Settings) -> Path | None:
    """The fine-tuned model, when one exists: a merged model folder (``config.json``) or a LoRA adapter folder.

    Its location is ``settings.finetuned_llm`` (``MEDQA_FINETUNED_LLM``; default: the shipped adapter).
    """
    path = Path(settings.finetuned_llm).expanduser()
    return path if any((path / name).is_file() for name in ("config.json", "adapter_config.json")) else None


@dataclass(frozen=True)
class ModelChoice:
    """A model the sidebar offers: a label and the ``MEDQA_LLM`` value that loads it."""

    label: str
    llm: str
    finetuned: bool = False


def model_label(llm: str, finetuned: bool = False) -> ModelChoice:
    """The sidebar entry of a ``MEDQA_LLM`` value: base, fine-tune (with its kind) or another configured model.

    Args:
        llm: The value.
        finetuned: It is the configured fine-tune (``MEDQA_FINETUNED_LLM``), even without a run record.
    """
    if llm == BUNDLED_LLM:
        return ModelChoice(f"Base: {BUNDLED_LLM_NAME}", llm)
    path = Path(llm).expanduser()
    kind = model_kind(path) if path.exists() else "base"
    if kind != "base" or finetuned:
        return ModelChoice(f"Fine-tuned: {path.name} ({'fine-tune' if kind == 'base' else kind})", llm, finetuned=True)
    return ModelChoice(f"Configured: {path.name or llm}", llm)


def model_choices(settings: Settings) -> list[ModelChoice]:
    """The configured model first (the default), then the fine-tune and the bundled base model when they differ."""
    merged = finetuned_model_dir(settings)
    values = [(settings.llm, merged is not None and _same(settings.llm, str(merged)))]
    if merged is not None:
        values.append((str(merged), True))
    values.append((BUNDLED_LLM, False))
    choices: list[ModelChoice] = []
    for value, finetuned in values:
        if not any(_same(value, c.llm) for c in choices):
            choices.append(model_label(value, finetuned))
    return choices


def _same(a: str, b: str) -> bool:
    return a == b or (":" not in a and ":" not in b and Path(a).expanduser().absolute() == Path(b).expanduser().absolute())


@dataclass
class ChatOptions:
    """What the sidebar controls: one value per control."""

    llm: str
    use_rag: bool = True
    top_k: int = 3
    temperature: float = 0.0
    max_new_tokens: int = 256

    @classmethod
    def from_settings(cls, settings: Settings) -> "ChatOptions":
        return cls(
            llm=settings.llm,
            use_rag=True,
            top_k=settings.top_k,
            temperature=settings.temperature,
            max_new_tokens=settings.max_new_tokens,
        )


def request_llm(llm: Any, temperature: float, max_new_tokens: int, stop: threading.Event | None = None) -> Any:
    """A copy of the loaded model (weights shared) with this request's decoding settings.

    Args:
        llm: The shared model.
        temperature: 0 for greedy decoding.
        max_new_tokens: Answer budget.
        stop: Setting this event ends the generation at the next token (the chat's Stop button).
    """
    return with_decoding(llm, stop=stop, temperature=temperature, max_new_tokens=max_new_tokens)


def request_engine(base: Any, options: ChatOptions, llm: Any, retriever: Any = None, stop: threading.Event | None = None) -> Any:
    """The engine for one question: ``base`` (from ``build_query_engine``, with its re-ranker) with the sidebar's choices.

    The retriever over the shared index and the re-ranker are shared; nothing is copied or loaded.
    """
    use_rag = options.use_rag and retriever is not None
    engine = base.model_copy(
        update={
            "llm": request_llm(llm, options.temperature, options.max_new_tokens, stop),
            "retriever": retriever if use_rag else None,
            "reranker": base.reranker if use_rag else None,
            "use_rag": use_rag,
            "streaming": True,
            "max_new_tokens": options.max_new_tokens,
        }
    )
    return engine.with_top_k(options.top_k)


def engine_config(engine: Any) -> dict[str, Any]:
    """What an engine will do, for display and tests: model, RAG, top-k, temperature, max tokens."""
    kwargs = getattr(engine.llm, "generate_kwargs", {}) or {}
    return {
        "model": model_info(engine.llm).name,
        "use_rag": engine.use_rag,
        "top_k": engine.top_k if engine.use_rag else None,
        "temperature": (kwargs.get("temperature") or 0.0) if kwargs.get("do_sample", True) else 0.0,
        "backend": model_info(engine.llm).backend,
        "max_new_tokens": getattr(engine.llm, "max_new_tokens", engine.max_new_tokens),
    }


# ---- sources --------------------------------------------------------------------


@dataclass
class SourceView:
    """One source as the chat shows it; ``number`` is the citation ``[n]`` in the answer."""

    number: int
    title: str
    question: str = ""
    collection: str = ""
    url: str = ""
    passage: str = ""
    score: float | None = None
    cited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)




def source_views(source_nodes: Sequence[Any], answer: str = "") -> list[SourceView]:
    """Turn ``response.source_nodes`` into display records numbered as the engine numbered them.

    ``source_nodes[0]`` is ``[1]``, as in the prompt the model saw; ``cited`` marks the numbers
    the answer actually uses.
    """
    used = cited_numbers(answer)
    views = []
    for i, node in enumerate(source_nodes, start=1):
        meta = dict(getattr(node.node, "metadata", {}) or {})
        score = getattr(node, "score", None)
        views.append(
            SourceView(
                number=i,
                title=source_title(meta),
                question=str(meta.get("question") or ""),
                collection=str(meta.get("collection") or ""),
                url=str(meta.get("url") or ""),
                passage=node.node.get_content().strip(),
                score=float(score) if score is not None else None,
                cited=i in used,
            )
        )
    return views


def link_citations(answer: str, sources: Sequence[SourceView | dict[str, Any]]) -> str:
    """Make each ``[n]`` in the answer a Markdown link to source n's NIH page (when it has one)."""
    urls = {}
    for s in sources:
        s = s if isinstance(s, dict) else s.to_dict()
        if s.get("url"):
            urls[int(s["number"])] = s["url"]

    def repl(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"[\\[{n}\\]]({urls[n]})" if n in urls else match.group(0)

    return re.sub(r"(?<!\\)\[(\d{1,2})\](?!\()", repl, answer)


# ---- index ----------------------------------------------------------------------


def index_facts(status: dict[str, Any]) -> list[tuple[str, str]]:
    """``index_status`` as (label, value) rows for the sidebar."""
    if status.get("damaged"):
        return [("Index", "damaged: it can't be read; “Rebuild index” moves it aside and builds a new one")]
    if not status.get("exists"):
        return [("Index", "missing")]
    corpus = status.get("corpus") or []
    corpus = ", ".join(corpus) if isinstance(corpus, (list, tuple)) else str(corpus)
    built = str(status.get("built_at") or "unknown").replace("T", " ")
    docs = status.get("documents")
    done = status.get("indexed_documents")
    shown = f"{docs:,}" if isinstance(docs, int) else "unknown"
    if status.get("building") and isinstance(done, int) and isinstance(docs, int):
        shown = f"{done:,} of {docs:,} (still being built)"
    return [
        ("Documents", shown),
        ("Chunks", f"{status.get('chunks', 0):,}"),
        ("Corpus", corpus or "unknown"),
        ("Last build", built),
    ]


def commands_in(message: str) -> list[str]:
    """The shell commands quoted in backticks in one of medqa's error messages."""
    return re.findall(r"`([^`]+)`", message or "")


def index_command(settings: Settings, rebuild: bool = False) -> str:
    """The exact command that builds (or rebuilds) the index these settings point at (corpus and storage spelled out)."""
    return (
        f"python -m rag_app.index {'--rebuild ' if rebuild else ''}--corpus {shlex.quote(','.join(settings.corpus))} "
        f"--storage-dir {shlex.quote(str(settings.storage_dir))}"
    )


def missing_corpus(settings: Settings) -> list[str]:
    """Configured corpus paths that look like local paths but do not exist."""
    missing = []
    for source in settings.corpus:
        looks_like_hub_id = "/" in source and source.count("/") == 1 and not source.startswith((".", "/", "~"))
        if not looks_like_hub_id and not Path(source).expanduser().exists():
            missing.append(source)
    return missing


def index_needs_build(settings: Settings, status: dict[str, Any]) -> bool:
    """True when the index is missing, was left half-built, or was built from another corpus.

    A damaged index is not built over: only a rebuild (which moves it aside) recovers it, and the user starts that.
    """
    if status.get("damaged"):
        return False
    if not status.get("exists") or status.get("building"):
        return True
    corpus = status.get("corpus")
    return isinstance(corpus, list) and corpus != list(settings.corpus)


def partial_index_notice(status: dict[str, Any]) -> str:
    """One line for an answer given while the index is being built; empty once it is complete."""
    if not status.get("building"):
        return ""
    done, total, chunks = status.get("indexed_documents"), status.get("documents"), status.get("chunks")
    if isinstance(done, int) and isinstance(total, int):
        so_far = f"{done:,} of {total:,} documents"
    else:
        so_far = f"{chunks:,} passages" if chunks else "part of the sources"
    return f"⏳ The source index is still being built: this answer draws on the {so_far} indexed so far."


@dataclass
class Turn:
    """One chat message kept in the session's history."""

    role: str
    content: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    emergency: str = ""
    meta: str = ""
    error: str = ""
    searched_for: str = ""  # the standalone question retrieval used, when it differs from the message
    source_ids: list[str] = field(default_factory=list)  # for an answer: its sources' QA pair ids (none when it declined)
    question: str = ""  # for an answer: the message it answers
    config: dict[str, Any] = field(default_factory=dict)  # for an answer: the engine settings that produced it
    notice: str = ""  # for an answer: e.g. that the index was still being built
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def chat_history(turns: Sequence[Turn]) -> list[Any]:
    """The session's turns as LlamaIndex chat messages (for ``MedQAChatEngine``), without empty or failed ones."""
    kept = [t for t in turns if t.content and not t.error]
    return [answer_message(t.content, t.source_ids) if t.role == "assistant" else ChatMessage(role=t.role, content=t.content) for t in kept]


# ---- feedback and export ----------------------------------------------------------------


def feedback_path(settings: Settings) -> Path:
    """Where thumbs up/down and comments are kept: ``<storage>/feedback.jsonl`` (the next evaluation set's raw material)."""
    return Path(settings.storage_dir) / "feedback.jsonl"


_feedback_lock = threading.Lock()


def record_feedback(settings: Settings, turn: Turn, rating: str | None, comment: str = "") -> dict[str, Any]:
    """Append one feedback line for an answer: rating, comment, question, answer, sources and settings.

    Lines are only ever appended (a later line for the same ``turn_id`` supersedes an earlier one), so
    nothing recorded is lost or rewritten.

    Args:
        settings: Settings (the storage folder).
        turn: The answer's turn.
        rating: ``"up"``, ``"down"`` or None (a comment alone).
        comment: Optional free text.

    Returns:
        The record written.
    """
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "turn_id": turn.id,
        "rating": rating,
        "comment": comment.strip(),
        "question": turn.question,
        "searched_for": turn.searched_for or turn.question,
        "answer": turn.content,
        "sources": [{k: s.get(k) for k in ("number", "title", "collection", "url", "score", "cited")} for s in turn.sources],
        "settings": turn.config,
    }
    path = feedback_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _feedback_lock, path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return record


def conversation_markdown(turns: Sequence[Turn]) -> str:
    """The conversation as Markdown: each question, each answer with what was searched for and its sources."""
    lines = ["# medqa conversation", "", f"_Exported {time.strftime('%Y-%m-%d %H:%M')}. {MEDICAL_NOTICE}_", ""]
    for turn in turns:
        if turn.role == "user":
            lines += [f"**You:** {turn.content}", ""]
            continue
        lines += [f"**medqa:** {turn.content.replace(MEDICAL_NOTICE, '').strip()}", ""]
        if turn.searched_for:
            lines += [f"_Searched for: {turn.searched_for}_", ""]
        for s in turn.sources:
            lines.append(f"- [{s['number']}] {s['title']} ({s.get('collection') or 'source'}): {s.get('url') or 'no link'}")
        if turn.sources:
            lines.append("")
    return "\n".join(lines)
