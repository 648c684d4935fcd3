"""Conversations: each message becomes a standalone question before retrieval, and a LlamaIndex chat engine.

"What is gout?" then "How is it treated?": retrieval must search for "How is gout treated?". The bundled 135M
model cannot be trusted to rewrite questions, so :func:`standalone_question` does it with the index's own topic
names (:class:`rag_app.index.topics.FocusMatcher`) and a few rules that hold in any conversation:

- a message that refers back ("it", "its", "this", "that condition", ...) and names no topic of its own before
  that reference takes the conversation's topic in place of the reference;
- a question with an aspect, or a short one, that names no topic gets the topic before it ("What should he eat?" ->
  "diabetes type 1: What should he eat?");
- a message that names a new topic and nothing else ("what about diabetes?", "and asthma?") keeps the aspect
  asked before: the previous question with the new topic in place of the old one;
- anything else stands on its own and is left exactly as it is (so is every first message);
- a follow-up that names only subjects of common words ("is there any medicine?", "does diet matter?": topics with
  nothing but overview pages, :meth:`~rag_app.index.topics.FocusMatcher.overview_only`) asks them about the
  conversation's topic;
- a first message that refers back or asks only an aspect gets a clarifying question instead of an answer, and thanks
  or a greeting get a short reply (:data:`SMALL_TALK_WORDS`), neither searched;
- an answer drawn from pages on another topic than the one the message named (one sharing no word with it: "... a
  sudden twist sends a shock through my body" answered from *Hand Injuries and Disorders*, "Shock" named by accident)
  makes that page's topic the conversation's: the person follows up on what they read. The answer's sources travel
  with it in the history (``additional_kwargs["source_ids"]``, :data:`SOURCE_IDS`); a declined answer has none.

The model's prompt stays the one it was trained on: the standalone question and its sources. A page an earlier answer
already quoted is shown without the sentences the answers said (``MedQAQueryEngine.said``), so a new question about
the same page gets what else it says, not the same answer. A pronoun after "take" or "use" ("how long do I have to
take them?") is the treatment, not the condition (:data:`TREATMENT_TAKEN`).
:class:`MedQAChatEngine` (``build_chat_engine()``) is LlamaIndex's ``BaseChatEngine`` over the query engine, and
``retrieve(message, chat_history)`` measures retrieval over conversations without generating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generator, Optional, Sequence

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.schema import NodeWithScore

from llama_index.core.types import Thread

from rag_app.answer.engine import MedQAQueryEngine, build_query_engine
from rag_app.answer.plan import UNCOVERED
from rag_app.index.topics import question_types
from rag_app.retrieval.modes import topic_matcher
from rag_app.text import prompts

#: A reference back to something said before (only the first one in a message is replaced).
REFERENCE = re.compile(
    r"\b(?:this|that|these|those|the|your|his|her|my)\s+(?:condition|disease|illness|disorder|problem|syndrome|infection|"
    r"diagnosis|cancer|tumou?r)s?\b|\b(?:it|its|this|that|they|them|their)\b",
    re.IGNORECASE,
)
#: Words that may surround a topic in an elliptical follow-up ("and what about asthma, then?").
ELLIPSIS_WORDS = frozenset(
    "what how about and or for with the same question also too as well then in of regarding re ok okay so now a an please thanks".split()
)
#: A first message this short that refers back or asks only an aspect gets a clarifying question; a follow-up this
#: short that names nothing is about the conversation's topic.
SHORT_WORDS = 8
CLARIFY = (
    "Which condition do you mean? Please name it in your question, for example “How is gout treated?”, "
    "so I can look up the right NIH pages."
)
_WORD = re.compile(r"[A-Za-z0-9']+")
#: Words of thanks, greetings and goodbyes; a message made only of these (one of :data:`SMALL_TALK_CUES` among them, no
#: question mark) is answered with :data:`WELCOME` or :data:`HELLO`, not searched.
SMALL_TALK_WORDS = frozenset(
    "ok okay great cool perfect nice good awesome alright sure thanks thank you thx ty cheers got it bye goodbye see "
    "hi hello hey morning afternoon evening that helps helped helpful very so much a lot again for the your all help "
    "answer answers info information doc doctor there".split()
)
SMALL_TALK_CUES = frozenset("ok okay great cool perfect nice awesome alright thanks thank thx ty cheers got bye goodbye hi hello hey morning helps helped helpful".split())
GREETINGS = frozenset("hi hello hey morning afternoon evening".split())
WELCOME = "You're welcome. Ask another health question whenever you like."
HELLO = "Hello! Ask me a health question, for example “How is gout treated?”, and I'll answer it from NIH pages."
#: Where an answer's sources (QA pair ids, citation order) are kept: its ``ChatMessage.additional_kwargs`` and its
#: response's ``metadata``. Empty when the answer declined.
SOURCE_IDS = "source_ids"


@dataclass(frozen=True)
class Topic:
    """A conversation's topic: the index's name for it and the words the person used."""

    name: str
    text: str


@dataclass(frozen=True)
class Resolution:
    """What a message asks once the conversation is taken into account.

    Attributes:
        question: The standalone question to retrieve and answer (the message itself when it stands alone).
        topic: The conversation's topic after this message (None when no topic has been named yet).
        changed: True when ``question`` differs from the message.
        clarify: A clarifying question to ask instead of answering (the message can't be tied to a topic).
        reply: A reply to thanks or a greeting, instead of answering.
    """

    question: str
    topic: Optional[Topic] = None
    changed: bool = False
    clarify: Optional[str] = None
    reply: Optional[str] = None


def _named(matcher: Any, text: str) -> list[Topic]:
    """Topics named in ``text``, each with the words that name it.

    Only names written as names count (:meth:`rag_app.index.topics.FocusMatcher.written`: "all" is not "ALL"), and
    only where their words stand together (not "medicine ... high blood pressure" for "High blood pressure
    medicines"). Names of common words ("Surgery", "Pain", "Medicines") come after the others, then names found
    only through another form of their words ("it itches" for Itching: a story's verb, where "eczema" names the
    condition); names written without their generic head word ("parkinsons": :meth:`~rag_app.index.topics.
    FocusMatcher.named_in_part`) come after the names of the same kind written in full. Each group keeps the
    matcher's order (most specific, or best scored, first). Where no name is written right, a misspelt one counts
    (:meth:`~rag_app.index.topics.FocusMatcher.named_misspelt`), with the index's spelling as its words.
    """
    found = []
    for kind, names in enumerate((matcher.named(text), matcher.named_in_part(text))):
        for name in names:
            span = _topic_span(text, matcher, Topic(name, ""))
            if span:
                named = text[span[0] : span[1]]
                words = [named[start:end] for start, end in matcher.mentions(named, name)]
                written = _as_written(words, name)
                # Another form of the name's words reads badly in a follow-up ("is snores dangerous?"): the index's name.
                found.append(((matcher.common(name), not written, kind), Topic(name, named if written else name)))
    if not found:
        # A misspelt name is carried on in the index's spelling: "macular degeneraton" -> "Macular Degeneration".
        found = [((matcher.common(name), False, 2), Topic(name, name)) for name in matcher.named_misspelt(text)]
    return [topic for _, topic in sorted(found, key=lambda item: item[0])]  # stable: the matcher's order kept


def _as_written(words: Sequence[str], name: str) -> bool:
    """Whether ``words`` are the name's own words (a plural or possessive aside), not other forms of them."""

    def form(word: str) -> str:
        return word.lower().removesuffix("'s").removesuffix("s")

    return {form(w) for w in words} <= {form(w) for w in _WORD.findall(name)}


def _first_mention(matcher: Any, text: str, topic: Topic) -> int:
    spans = matcher.mentions(text, topic.name)
    return spans[0][0] if spans else len(text)


#: What a treatment does, not a condition: "how long before it works?" after "is there a pill for this?" asks about
#: the treatment ("acne treatment"), not about acne.
TREATMENT_DOES = re.compile(
    r"\s+(?:(?:will |would |should |does |do |did )?(?:works?|worked|working|kicks? in|wears? off)\b"
    r"|(?:to )?takes? (?:effect|to work)\b|starts? (?:to work|working)\b|(?:has|have|had|cause|causes) (?:any )?side effects\b)",
    re.IGNORECASE,
)


#: What is taken or used is a treatment: "how long do I have to take them?" after "... put me on levothyroxine" asks
#: about the treatment, not about hypothyroidism.
TREATMENT_TAKEN = re.compile(r"\b(?:take|takes|taking|took|use|uses|using|used)\s+$", re.IGNORECASE)


def _replace_reference(message: str, match: re.Match[str], topic: Topic) -> str:
    word = match.group(0)
    pronoun = word.lower() in {"it", "this", "that", "they", "them"}
    if pronoun and (TREATMENT_DOES.match(message, match.end()) or TREATMENT_TAKEN.search(message[: match.start()])):
        text = f"{topic.text} treatment"
    else:
        text = f"{topic.text}'s" if word.lower() in {"its", "their"} else topic.text
    return message[: match.start()] + text + message[match.end() :]


def _with_topic(message: str, topic: Topic) -> str:
    """A follow-up with the conversation's topic before it: "gout: What are the symptoms?"."""
    return f"{topic.text}: {message}"


def _reference(message: str) -> Optional[re.Match[str]]:
    """The reference back in ``message``: the first, or the thing after a "they" that means people ("how do they get
    rid of them?": the doctors, then the stones)."""
    found = list(REFERENCE.finditer(message))
    if len(found) > 1 and found[0].group(0).lower() == "they":
        return next((m for m in found[1:] if m.group(0).lower() != "they"), found[0])
    return found[0] if found else None


def _without(text: str, matcher: Any, topic: Topic) -> str:
    """``text`` with the words that name ``topic`` blanked out."""
    for start, end in reversed(matcher.mentions(text, topic.name)):
        text = text[:start] + " " + text[end:]
    return text


def _is_ellipsis(message: str, matcher: Any, topic: Topic) -> bool:
    return {w.lower() for w in _WORD.findall(_without(message, matcher, topic))} <= ELLIPSIS_WORDS


def _foreign(matcher: Any, text: str, wanted: set[str]) -> bool:
    """Whether ``text`` has a word that is neither one of ``wanted`` (stems) nor a function word."""
    return not set(matcher.tokens(re.sub(r"'s\b", "", text))) <= wanted


def _topic_span(text: str, matcher: Any, topic: Topic) -> tuple[int, int] | None:
    """Where ``topic`` is named in ``text``: the shortest stretch holding all its words, a closing bracket included.

    None when no stretch holds them side by side (other words than the name's, function words aside, between them).
    """
    stemmed = matcher.stemmed_mentions(text, topic.name)
    spans = [(start, end) for start, end, _ in stemmed]
    stems = [stem for _, _, stem in stemmed]
    wanted = set(stems)
    best: tuple[int, int] | None = None
    for i in range(len(spans)):
        j = next((j for j in range(i, len(spans)) if set(stems[i : j + 1]) == wanted), None)
        if j is not None and (best is None or spans[j][1] - spans[i][0] < spans[best[1]][1] - spans[best[0]][0]):
            best = (i, j)
    if best is None:
        return None
    first, last = best
    # The name's words right beside the stretch belong to it ("Wilms Tumor and Other Childhood Kidney Tumors").
    while first > 0 and not _foreign(matcher, text[spans[first - 1][1] : spans[first][0]], wanted):
        first -= 1
    while last + 1 < len(spans) and not _foreign(matcher, text[spans[last][1] : spans[last + 1][0]], wanted):
        last += 1
    best = (spans[first][0], spans[last][1])
    if _foreign(matcher, text[best[0] : best[1]], wanted):
        return None
    start, end = best
    if text[start:end].count("(") > text[start:end].count(")") and text[end : end + 1] == ")":
        end += 1
    return start, end


def resolve_turn(message: str, topic: Optional[Topic], last: Optional[str], matcher: Any) -> Resolution:
    """One step of :func:`standalone_question`: ``message`` given the conversation's topic and last question.

    Args:
        message: The new message (clean text).
        topic: The conversation's topic so far (None before any was named).
        last: The last standalone question that named ``topic``.
        matcher: The index's topic matcher.
    """
    said = {w.lower() for w in _WORD.findall(message)}
    if said and said <= SMALL_TALK_WORDS and said & SMALL_TALK_CUES and "?" not in message:
        return Resolution(message, topic, reply=HELLO if said & GREETINGS else WELCOME)
    named = _named(matcher, message)
    reference = _reference(message)
    # Aspect cues in a topic's own name ("Hereditary ...", "Chromosome ...") are not an aspect asked.
    aspects = question_types(_without(message, matcher, named[0]) if named else message)
    if topic is not None and named and all(matcher.common(t.name) and matcher.overview_only(t.name) for t in named):
        # "is there any medicine (for it)?", "does diet matter?": a subject of common words (no condition: NIH answers
        # nothing but an overview of it), asked about the conversation's topic.
        if reference:
            return Resolution(_replace_reference(message, reference, topic), topic, changed=True)
        return Resolution(_with_topic(message, topic), topic, changed=True)
    if named:
        new = named[0]
        if topic is not None and reference and reference.start() < _first_mention(matcher, message, new) and new.name != topic.name:
            # "Is it painful?": the reference comes before any topic of its own, so it points back.
            return Resolution(_replace_reference(message, reference, topic), topic, changed=True)
        if topic is not None and last and new.name != topic.name and not aspects and _is_ellipsis(message, matcher, new):
            span = _topic_span(last, matcher, topic)
            if span:
                return Resolution(last[: span[0]] + new.text + last[span[1] :], new, changed=True)
        return Resolution(message, new)
    if topic is not None and reference:
        return Resolution(_replace_reference(message, reference, topic), topic, changed=True)
    short = len(_WORD.findall(message)) <= SHORT_WORDS
    if topic is not None and (aspects or short):
        # A follow-up naming nothing asks about the conversation's topic ("what should he eat?", "so she doesn't get
        # heart problems?").
        return Resolution(_with_topic(message, topic), topic, changed=True)
    if topic is None and (reference or aspects) and short:
        return Resolution(message, None, clarify=CLARIFY)
    return Resolution(message, topic)


def answered_topic(matcher: Any, topic: Optional[Topic], source_ids: Sequence[str]) -> Optional[Topic]:
    """The conversation's topic once an answer drawn from ``source_ids`` has been read.

    ``topic`` stays where a source is about it, or about a topic sharing a word with it ("Kidney Stones" answered from
    "Kidney Stones in Adults"); otherwise (or with no topic yet) the first source's topic takes its place.
    """
    names = [matcher.names_of(doc_id) for doc_id in source_ids]
    if not names or not names[0]:
        return topic
    if topic is not None:
        if set(matcher.doc_ids(topic.name)) & set(source_ids) or any(matcher.shares_a_word([topic.name], d) for d in source_ids):
            return topic
    return Topic(names[0][0], names[0][0])


def _declined(content: str) -> bool:
    return content.lstrip().startswith(prompts.ABSTAIN_ANSWER.split(":")[0])


def standalone_question(message: str, chat_history: Sequence[Any], matcher: Any) -> Resolution:
    """The question to retrieve for ``message``, given the conversation so far.

    Args:
        message: The new message.
        chat_history: Earlier messages (LlamaIndex ``ChatMessage`` or ``{"role", "content"}`` dicts), in order: the
            person's messages, and the sources of the answers that carry them (:data:`SOURCE_IDS`).
        matcher: The index's :class:`rag_app.index.topics.FocusMatcher` (topic names and synonyms).

    Returns:
        The :class:`Resolution`; its ``question`` is ``message`` unchanged when it stands on its own.
    """
    topic: Optional[Topic] = None
    last: Optional[str] = None
    pending: Optional[str] = None  # a question that was answered with a clarifying question
    step = Resolution("")
    turns: list[tuple[str, Any]] = []  # ("user", clean text) and ("assistant", its source ids)
    for earlier in chat_history:
        role = earlier.get("role") if isinstance(earlier, dict) else getattr(earlier, "role", None)
        content = str((earlier.get("content") if isinstance(earlier, dict) else earlier.content) or "")
        extra = (earlier.get("additional_kwargs") if isinstance(earlier, dict) else getattr(earlier, "additional_kwargs", None)) or {}
        role = str(getattr(role, "value", role))
        if role == "user" and prompts.clean_text(content):
            turns.append(("user", prompts.clean_text(content)))
        elif role == "assistant" and extra.get(SOURCE_IDS) and not _declined(content):
            turns.append(("assistant", list(extra[SOURCE_IDS])))
    for role, text in turns + [("user", prompts.clean_text(message))]:
        if role == "assistant":
            topic = answered_topic(matcher, topic, text) if not pending else topic
            continue
        step = resolve_turn(text, topic, last, matcher)
        named = _named(matcher, text) if pending else []
        if named and _is_ellipsis(text, matcher, named[0]):
            # "How is it treated?" -> "Which condition?" -> "gout": the pending question, about gout.
            step = resolve_turn(pending, named[0], None, matcher)
            step = Resolution(step.question, named[0], changed=True)
        pending = text if step.clarify else None
        if step.topic is not None and step.clarify is None and step.reply is None:
            topic, last = step.topic, step.question
    return step


class MedQAChatEngine(BaseChatEngine):
    """A chat over the medqa query engine: each message is made standalone, then retrieved and answered.

    Responses carry ``source_nodes`` in citation order, as the query engine's do, and
    ``metadata["searched_for"]`` (the standalone question); a message that can't be tied to a topic gets a
    clarifying question and no sources.

    Args:
        query_engine: The :class:`rag_app.answer.engine.MedQAQueryEngine` that retrieves and answers.
        memory: The conversation (default: a token-limited buffer).
    """

    def __init__(self, query_engine: MedQAQueryEngine, memory: Any = None) -> None:
        self.query_engine = query_engine
        self._memory = memory or ChatMemoryBuffer.from_defaults(token_limit=4096)

    # ---- conversation -------------------------------------------------------------
    def resolve(self, message: str, chat_history: Optional[Sequence[Any]] = None) -> Resolution:
        """The standalone question for ``message`` (``chat_history`` defaults to this engine's)."""
        history = self.chat_history if chat_history is None else chat_history
        matcher = topic_matcher(self.query_engine.retriever)
        question, _ = self.query_engine.clean_question(message)
        if matcher is None:
            return Resolution(question)
        return standalone_question(question, history, matcher)

    def retrieve(self, message: str, chat_history: Optional[Sequence[Any]] = None) -> list[NodeWithScore]:
        """The sources retrieval finds for ``message`` in the conversation (nothing when it needs clarifying)."""
        resolution = self.resolve(message, chat_history)
        return [] if resolution.clarify or resolution.reply else self.query_engine.retrieve(resolution.question)

    # ---- BaseChatEngine -----------------------------------------------------------------
    def _answer(self, message: str, chat_history: Optional[list[ChatMessage]], streaming: bool) -> tuple[Any, list[NodeWithScore], dict]:
        """Resolve ``message`` and answer it: ``(text, or a token iterator when streaming; sources; metadata)``.

        The message joins the history here; the answer joins it when the caller has it.
        """
        if chat_history is not None:
            self._memory.set(chat_history)
        resolution = self.resolve(message)
        metadata = {"searched_for": resolution.question, "rewritten": resolution.changed, "clarify": bool(resolution.clarify)}
        instead = resolution.clarify or resolution.reply
        if instead:
            answer: Any = iter([instead]) if streaming else instead
            nodes: list[NodeWithScore] = []
        else:
            # Everything answered so far: a page quoted two answers ago is as read as one quoted in the last.
            said = "\n\n".join(m.content or "" for m in self.chat_history if m.role == MessageRole.ASSISTANT)
            engine = self.query_engine.model_copy(update={"streaming": streaming, "said": said})
            response = engine.query(resolution.question)
            answer = response.response_gen if streaming else str(response)
            nodes = list(response.source_nodes)
            metadata.update(response.metadata or {})
            declined = metadata.get("coverage") == UNCOVERED
            metadata[SOURCE_IDS] = [] if declined else list(dict.fromkeys(n.node.ref_doc_id for n in nodes if n.node.ref_doc_id))
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message))
        return answer, nodes, metadata

    def chat(self, message: str, chat_history: Optional[list[ChatMessage]] = None) -> AgentChatResponse:
        text, nodes, metadata = self._answer(message, chat_history, streaming=False)
        self._memory.put(answer_message(text, metadata.get(SOURCE_IDS, ())))
        return AgentChatResponse(response=text, source_nodes=nodes, metadata=metadata)

    def stream_chat(self, message: str, chat_history: Optional[list[ChatMessage]] = None) -> "StreamingChatResponse":
        tokens, nodes, metadata = self._answer(message, chat_history, streaming=True)
        chat_response = StreamingChatResponse(chat_stream=_as_chat_stream(tokens, metadata.get(SOURCE_IDS, ())), source_nodes=nodes, metadata=metadata)
        # Like LlamaIndex's own chat engines: the answer joins the history once it has streamed.
        thread = Thread(target=chat_response.write_response_to_history, args=(self._memory,))
        chat_response.write_response_to_history_thread = thread
        thread.start()
        return chat_response

    async def achat(self, message: str, chat_history: Optional[list[ChatMessage]] = None) -> AgentChatResponse:
        return self.chat(message, chat_history)

    async def astream_chat(self, message: str, chat_history: Optional[list[ChatMessage]] = None) -> StreamingAgentChatResponse:
        return self.stream_chat(message, chat_history)

    def reset(self) -> None:
        self._memory.reset()

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self._memory.get_all()


@dataclass
class StreamingChatResponse(StreamingAgentChatResponse):
    """LlamaIndex's streaming chat response, with the engine's ``metadata`` (``searched_for``, ...) as on ``chat``."""

    metadata: dict[str, Any] = field(default_factory=dict)


def answer_message(content: str, source_ids: Sequence[str] = ()) -> ChatMessage:
    """An answer as the history keeps it: its text and, for the next message's topic, its sources' ids."""
    return ChatMessage(role=MessageRole.ASSISTANT, content=content, additional_kwargs={SOURCE_IDS: list(source_ids)})


def _as_chat_stream(tokens: Any, source_ids: Sequence[str]) -> Generator[ChatResponse, None, None]:
    text = ""
    for token in tokens:
        text += token
        yield ChatResponse(message=answer_message(text, source_ids), delta=token)


def build_chat_engine(settings: Any = None, *, query_engine: Any = None, **kwargs: Any) -> MedQAChatEngine:
    """A chat engine over :func:`rag_app.answer.engine.build_query_engine` (same arguments: ``llm``, ``retriever``, ...).

    Returns:
        A LlamaIndex ``BaseChatEngine``: ``chat``, ``stream_chat``, ``chat_history``, ``reset``, and
        ``retrieve(message, chat_history)``.
    """
    return MedQAChatEngine(query_engine or build_query_engine(settings, **kwargs))
