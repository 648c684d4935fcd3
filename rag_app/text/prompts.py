"""The one prompt format shared by the query engine, fine-tuning data and evaluation.

Training examples and live queries are built by the same functions here, so the model is
trained on exactly the prompt it sees at inference.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Sequence

from llama_index.core.llms import ChatMessage

from rag_app.errors import QuestionError

logger = logging.getLogger("rag_app")

RAG_SYSTEM_PROMPT = (
    "You are a careful medical information assistant. Answer the question using only the numbered "
    "sources. Cite the sources you use with their numbers, like [1] or [2]. If the sources do not "
    "answer the question, say that you don't know."
)
PLAIN_SYSTEM_PROMPT = (
    "You are a careful medical information assistant. Answer the health question clearly and concisely."
)
#: What the engine (and a retrieval-aware fine-tune) says when the sources don't cover a question.
ABSTAIN_ANSWER = "I don't know: the provided sources don't cover this question."
MEDICAL_NOTICE = (
    "Note: this is general information from NIH sources, not medical advice. "
    "Please consult a health professional about your situation."
)

# Counts tokens of a string; a whitespace split is the fallback when no tokenizer is at hand.
TokenCounter = Callable[[str], int]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")


def clean_text(text: str) -> str:
    """Text as a model can read it: undecodable bytes, control characters and replacement marks removed.

    A terminal line or a pasted message can carry bytes that aren't UTF-8; Python keeps them as lone
    surrogates, which tokenizers reject. They are dropped here, at the boundary, with control characters;
    white space is folded.
    """
    raw = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return " ".join(_CONTROL.sub(" ", raw).split())


def estimate_tokens(text: str) -> int:
    """A text's token count estimated from its words (where no tokenizer is at hand)."""
    return int(len(text.split()) * 1.4) + 1


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """Counts a text's tokens with ``tokenizer`` (a Hugging Face tokenizer), or estimates them without one."""
    if tokenizer is None:
        return estimate_tokens
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def clean_question(question: str, count: TokenCounter, max_tokens: int) -> tuple[str, list[str]]:
    """A question as the engine answers it: cleaned (:func:`clean_text`) and cut to ``max_tokens``.

    Returns:
        ``(question, warnings)``.

    Raises:
        QuestionError: If the question is empty or only white space.
    """
    question = clean_text(question) if isinstance(question, str) else ""
    if not question:
        raise QuestionError("the question is empty; ask something, e.g. 'What are the symptoms of glaucoma?'")
    warnings: list[str] = []
    if count(question) > max_tokens:
        question = truncate_to_tokens(question, max_tokens, count)
        warning = f"the question was longer than {max_tokens} tokens and was truncated"
        logger.warning(warning)
        warnings.append(warning)
    return question, warnings


def source_title(metadata: dict[str, Any]) -> str:
    """A short title for a source: its focus (topic), else its question, else its file."""
    return str(metadata.get("focus") or metadata.get("question") or metadata.get("document_id") or "Source")


def format_sources(passages: Sequence[str], titles: Sequence[str] | None = None) -> str:
    """Number passages as ``[1] (title) text`` blocks separated by blank lines."""
    blocks = []
    for i, passage in enumerate(passages, start=1):
        title = f"({titles[i - 1]}) " if titles and titles[i - 1] else ""
        blocks.append(f"[{i}] {title}{passage.strip()}")
    return "\n\n".join(blocks)


def answer_text(passage: str) -> str:
    """A QA pair's answer text: what follows ``Answer: `` (the whole passage for a chunk without it)."""
    _, sep, answer = passage.partition("Answer: ")
    return answer if sep else passage


def truncate_to_tokens(text: str, max_tokens: int, count: TokenCounter = estimate_tokens) -> str:
    """Cut ``text`` at a word boundary so it holds at most ``max_tokens`` (by ``count``)."""
    if count(text) <= max_tokens:
        return text
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search for the longest prefix that fits
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " …"


def build_messages(
    question: str,
    passages: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """Chat messages for a question, with numbered sources when ``passages`` is not None.

    Args:
        question: The user's question (already validated/truncated).
        passages: Passages as shown (:func:`shown_passages`), in rank order; ``None`` builds the no-RAG prompt.
        titles: Optional titles shown beside each passage number.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``, ready for a chat template.
    """
    if passages is None:
        return [
            {"role": "system", "content": PLAIN_SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
    passages = list(passages)
    sources = format_sources(passages, titles) if passages else "(no sources found)"
    return [
        {"role": "system", "content": RAG_SYSTEM_PROMPT},
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}"},
    ]


def rag_messages(
    question: str,
    nodes: Sequence[Any] | None,
    count: TokenCounter = estimate_tokens,
    *,
    context_window: int = 2048,
    max_new_tokens: int = 256,
    source_tokens: int = 160,
    top_source_tokens: int | None = None,
    passages: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """The retrieval-augmented prompt for a question and its retrieved nodes.

    The query engine and the retrieval-aware fine-tuning data (``finetune.raft``) both call this, so a
    model is trained on exactly the prompt it is later asked with.

    Args:
        question: The clean question.
        nodes: Retrieved ``NodeWithScore`` (or ``BaseNode``) objects in citation order.
        count: Token counter of the model's tokenizer.
        context_window: The model's prompt + answer budget.
        max_new_tokens: Tokens reserved for the answer.
        source_tokens: Budget of each passage after the first; the window may force a smaller share.
        top_source_tokens: Budget of the first passage (``None``: the same as the others).
        passages: The nodes' texts as :func:`shown_passages` cuts them, when the caller already has them.

    Returns:
        System and user messages with the numbered sources.
    """
    base = [getattr(n, "node", n) for n in nodes or []]
    if passages is None:
        passages = shown_passages(question, base, count, context_window=context_window, max_new_tokens=max_new_tokens,
                                  source_tokens=source_tokens, top_source_tokens=top_source_tokens)
    return build_messages(question, passages, [source_title(b.metadata) for b in base])


def shown_passages(
    question: str,
    nodes: Sequence[Any],
    count: TokenCounter = estimate_tokens,
    *,
    context_window: int = 2048,
    max_new_tokens: int = 256,
    source_tokens: int = 160,
    top_source_tokens: int | None = None,
) -> list[str]:
    """The nodes' texts as :func:`rag_messages` shows them, each cut to its budget.

    The first passage gets ``top_source_tokens`` (``source_tokens`` when ``None``) and the others an equal share of
    the rest, at most ``source_tokens`` each; a window too small for that gives each less (never under 16 tokens).
    An answer mostly copies its top source, so that one is worth showing as far as an answer can go, and every
    token of the others is prompt the model reads before its first word.
    """
    base = [getattr(n, "node", n) for n in nodes]
    if not base:
        return []
    room = max(context_window - max_new_tokens - count(question) - 160, 64)
    top = source_tokens if top_source_tokens is None else top_source_tokens
    first = max(16, min(top, room - 16 * (len(base) - 1)))
    share = max(16, min(room - first, source_tokens * (len(base) - 1)) // max(1, len(base) - 1))
    return [truncate_to_tokens(b.get_content(), first if i == 0 else share, count) for i, b in enumerate(base)]


def answer_messages(
    question: str,
    nodes: Sequence[Any] | None,
    count: TokenCounter,
    *,
    use_rag: bool = True,
    context_window: int = 2048,
    max_new_tokens: int = 256,
    source_tokens: int = 160,
    top_source_tokens: int | None = None,
    passages: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """The chat messages the model answers: a clean question and its sources (LlamaIndex nodes), or the question alone.

    ``passages`` are the nodes' texts as :func:`shown_passages` cut them, when the caller has them already."""
    if not use_rag:
        return build_messages(question)
    return rag_messages(question, nodes, count, context_window=context_window, max_new_tokens=max_new_tokens,
                        source_tokens=source_tokens, top_source_tokens=top_source_tokens, passages=passages)


def messages_to_llama(messages: Sequence[dict[str, str]]) -> list[Any]:
    """Convert role/content dicts to LlamaIndex ``ChatMessage`` objects."""
    return [ChatMessage(role=m["role"], content=m["content"]) for m in messages]


#: A citation as answers write it: ``[2]``, or a list ``[1, 3]``.
CITATION = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")
#: One citation of one source, ``[n]`` (not a list): the number is group 1.
SINGLE_CITATION = re.compile(r"\[(\d{1,2})\]")


def cited_numbers(text: str) -> list[int]:
    """The source numbers an answer cites, in the order they first appear (``[1, 2]`` lists included)."""
    seen: list[int] = []
    for match in CITATION.finditer(text or ""):
        for part in match.group(1).split(","):
            if int(part) not in seen:
                seen.append(int(part))
    return seen
