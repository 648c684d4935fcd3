"""The medqa query engine: retrieve NIH sources, re-rank them, then answer from them with citations.

How an answer is made has one owner, :class:`MedQAQueryEngine`: :meth:`~MedQAQueryEngine.plan` decides everything
about it before the model runs (the sources and what is shown of them, whether to decline, how each part of the
answer opens; :mod:`rag_app.answer.plan`), :meth:`~MedQAQueryEngine.generate` / :meth:`~MedQAQueryEngine.stream` /
:meth:`~MedQAQueryEngine.answer_batch` run the model on plans, and :meth:`~MedQAQueryEngine.finish` trims repetition and
settles the citations. Evaluation asks the engine for plans and batched answers.
"""

from __future__ import annotations

import logging
from typing import Any, Generator, Iterator, Mapping, Optional, Protocol, Sequence

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.llms import LLM
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle
from tqdm.auto import tqdm

from rag_app.answer.passages import (
    page_sentences, self_contained_start, shown_node, turns_to_sibling, unsaid_sentences,
)
from rag_app.answer.plan import COVERED, PART_SEPARATOR, UNKNOWN, AnswerPart, AnswerPlan, Reading, source_coverage
from rag_app.config import Settings
from rag_app.index.topics import OVERVIEW_TYPE, first_answering, topic_key
from rag_app.llm.batch import generate_batch
from rag_app.llm.decoding import answer_opening, decline_start_ids, llm_tokenizer, with_decoding
from rag_app.llm.info import model_info
from rag_app.llm.load import close_llm, load_llm
from rag_app.retrieval.modes import asked_again, asked_types, build_retriever, topic_matcher
from rag_app.retrieval.rerank import RELEVANCE_KEY, load_reranker
from rag_app.text import prompts
from rag_app.text.citations import StreamAttributor, citation_to_add, finish_citations
from rag_app.text.openings import Opening
from rag_app.text.repetition import StreamTrimmer, trim_repetition

logger = logging.getLogger("rag_app")

#: Fewest words of a page shown from a later sentence; with fewer (the page's last sentence) it is shown from its start.
MIN_SHOWN_WORDS = 30


class AnswerCache(Protocol):
    """Answers generated before, by prompt and decoding (evaluation keeps one per model: ``eval.cache.AnswerCache``)."""

    def get(self, messages: list[dict[str, str]], decoding: dict[str, Any]) -> str | None: ...

    def put_many(self, items: Sequence[tuple[list[dict[str, str]], dict[str, Any], str]]) -> None: ...


class MedQAQueryEngine(CustomQueryEngine):
    """Answers a question from numbered retrieved sources (or from the model alone when ``use_rag`` is off).

    ``query(q)`` returns a ``Response`` (``StreamingResponse`` when ``streaming``) whose
    ``source_nodes`` are the sources shown to the model, in citation order: ``[1]`` is
    ``source_nodes[0]``. ``retrieve(q)`` returns those sources without generating.

    Sources are the retriever's candidates re-ranked by the cross-encoder (``reranker``), best first. The model is
    shown each source's answer without glued section headings, and the top source from the sentence that answers
    what was asked (``answer_from_sentence``). A citation names the source its text was taken from
    (:func:`rag_app.text.citations.attribute_citations`), and an answer that cites nothing but is taken from one source gets
    that source's number (:func:`rag_app.text.citations.citation_to_add`). A retrieval-aware fine-tune's answer opens with
    the top source's words (``open_with_top_source``) and, while it copies that source, does not end before the source
    as shown does (``finish_source``); a message asking two things that two pages of its topic answer gets a second
    part opening with the second page's words. With ``decline_by_topic`` the engine, not the model,
    decides whether to decline: when the question names a topic and no source is about it (and the re-ranker does not
    find the top source answering it), it answers :data:`rag_app.text.prompts.ABSTAIN_ANSWER` without generating; when a
    source is about it, the model may not start with that answer (:func:`rag_app.answer.plan.source_coverage`).
    """

    llm: LLM
    retriever: Optional[BaseRetriever] = None
    reranker: Optional[Any] = None  # a node postprocessor (rag_app.retrieval.rerank.CrossEncoderRerank) over the candidates
    top_k: int = 3
    rerank_candidates: int = 10
    use_rag: bool = True
    streaming: bool = False
    max_new_tokens: int = 256
    context_window: int = 2048
    max_question_tokens: int = 256
    source_tokens: int = 96
    top_source_tokens: Optional[int] = 256  # the first source's budget (None: source_tokens)
    medical_notice: bool = True
    stop_on_repeat: bool = True  # drop a repeated sentence (the LLM's stop ends generation there)
    decline_by_topic: bool = True
    attribute_citations: bool = True  # a citation names the source its text was copied from
    open_with_top_source: str = "auto"  # "on", "off", or "auto": on for retrieval-aware fine-tunes
    answer_from_sentence: bool = True  # the top source is shown from the sentence that answers the question
    sentence_margin: float = 1.0  # logit margin by which a later sentence must beat the page's first
    answer_threshold: float = 0.5  # re-ranker probability from which the top source counts as answering the question
    finish_source: bool = True  # an answer copying its top source does not end while the source goes on
    copy_bias: float = 6.0  # logits for the token the top source goes on with while an answer copies it
    decline_bias: float = 4.0  # logits taken from the decline's first token where the model may decline
    said: str = ""  # the conversation's answers so far: the top page is shown without the sentences they said
    correct_spelling: bool = True  # retrieve and re-rank with misspelt topic names as the index writes them
    rerank_reads_asked: bool = True  # the re-ranker reads the question types asked written plainly after the message

    # ---- helpers ------------------------------------------------------------
    def _count(self, text: str) -> int:
        return prompts.token_counter(llm_tokenizer(self.llm))(text)

    def clean_question(self, question: str) -> tuple[str, list[str]]:
        """:func:`rag_app.text.prompts.clean_question` with the model's token count and ``max_question_tokens``."""
        return prompts.clean_question(question, self._count, self.max_question_tokens)

    def retrieve(self, query: str | QueryBundle) -> list[NodeWithScore]:
        """The sources for a question, best first (empty when RAG is off)."""
        query_str = query.query_str if isinstance(query, QueryBundle) else query
        question, _ = self.clean_question(query_str)
        return self.select_sources(question, self.ranked(question))

    def ranked(self, question: str, reading: Reading | None = None) -> list[NodeWithScore]:
        """Every candidate of a clean question, best first: the retriever's, re-ranked when a re-ranker is set.

        Both read the question with its misspelt topic names written as the index writes them
        (``correct_spelling``, :meth:`rag_app.index.topics.FocusMatcher.corrected`: "alzeimers" would be nearer
        "Alport" than "Alzheimer"); the re-ranker reads it with the question types it asks asked plainly after it
        (``rerank_reads_asked``, :func:`rag_app.text.asking.with_plain_asks`). ``reading``: :meth:`read`'s, when known.
        """
        if not self.use_rag or self.retriever is None:
            return []
        reading = reading or self.read(question)
        nodes = self.retriever.retrieve(reading.search)
        if self.reranker is not None:
            return self.reranker.with_top_n(len(nodes)).postprocess_nodes(nodes, query_str=reading.rerank_text)
        return nodes

    def read(self, question: str) -> Reading:
        """How the engine reads a clean question (:class:`Reading`): what it retrieves, the types it asks (cue words,
        else the nearest way of asking: :func:`rag_app.retrieval.modes.asked_types`) and what the re-ranker reads."""
        matcher = topic_matcher(self.retriever)
        search = matcher.corrected(question) if matcher is not None and self.correct_spelling else question
        asked = frozenset(asked_types(self.retriever, search))
        rerank_text = asked_again(self.retriever, search, asked) if self.rerank_reads_asked and self.reranker is not None else search
        return Reading(search, asked, rerank_text)

    def select_sources(self, question: str, ranked: Sequence[NodeWithScore]) -> list[NodeWithScore]:
        """The ``top_k`` sources from the ranked candidates."""
        return list(ranked[: self.top_k])

    def messages(self, question: str, nodes: list[NodeWithScore] | None, passages: list[str] | None = None) -> list[dict[str, str]]:
        """The chat messages sent to the model for a (clean) question and its sources (``passages``: their texts as
        :meth:`shown_passages` cut them, when already known)."""
        return prompts.answer_messages(
            question, nodes, self._count, use_rag=self.use_rag, context_window=self.context_window,
            max_new_tokens=self.max_new_tokens, source_tokens=self.source_tokens,
            top_source_tokens=self.top_source_tokens, passages=passages,
        )

    def shown_passages(self, question: str, nodes: list[NodeWithScore]) -> list[str]:
        """The sources' texts as the prompt shows them (each cut to its share of the source budget)."""
        return prompts.shown_passages(question, nodes, self._count, context_window=self.context_window,
                                      max_new_tokens=self.max_new_tokens, source_tokens=self.source_tokens,
                                      top_source_tokens=self.top_source_tokens)

    def coverage(self, question: str, nodes: list[NodeWithScore]) -> str:
        """Whether the sources answer a clean question.

        The topic names decide first (:func:`~rag_app.answer.plan.source_coverage`, with ``decline_by_topic``): a
        question naming a topic in full that no source is about is uncovered, however confident the re-ranker is
        about a page on something else. Where the names say nothing (a misspelt or unusual name), a top source the
        re-ranker finds answering (probability ≥ ``answer_threshold``) makes it covered. Unknown without RAG.
        """
        if not self.use_rag:
            return UNKNOWN
        by_topic = source_coverage(question, nodes, topic_matcher(self.retriever)) if self.decline_by_topic else UNKNOWN
        if by_topic == UNKNOWN and nodes and self.reranker is not None and _relevance(nodes[0]) >= self.answer_threshold:
            return COVERED
        return by_topic

    def opens_with_sources(self) -> bool:
        """Whether answers open with their sources' words (``open_with_top_source``; ``auto``: retrieval-aware fine-tunes)."""
        if self.open_with_top_source == "auto":
            return model_info(self.llm).retrieval_aware
        return self.open_with_top_source == "on"

    def opening(self, coverage: str, passages: list[str], index: int = 0, finish: str = "") -> Opening | None:
        """How an answer from ``passages`` must open (:func:`rag_app.llm.decoding.answer_opening`), or None.

        With ``open_with_top_source`` on, the answer quotes source ``index + 1``'s first words; where the sources don't
        cover the question, it may decline instead. Given ``finish``, that source as the prompt shows it (and with
        ``finish_source``), it may not end while it copies it and it goes on.
        """
        tokenizer = llm_tokenizer(self.llm)
        if not (self.opens_with_sources() and self.use_rag and passages and tokenizer is not None):
            return None
        alternatives = () if coverage == COVERED else decline_start_ids(tokenizer)
        return answer_opening(
            tokenizer, passages, alternatives, index=index, finish=finish if self.finish_source else "", copy_bias=self.copy_bias,
            decline_bias=self.decline_bias,
        )

    # ---- the plan --------------------------------------------------------------
    def shown(self, question: str, sources: Sequence[NodeWithScore], second_part: bool, reading: Reading | None = None) -> list[NodeWithScore]:
        """The sources as the model is shown them: headings dropped, the top source (and a second part's page) from
        the sentence that answers the question.

        A top page of the type the message asks ("will he get better?" answered from "What is the outlook for
        Stroke?") is shown from its start. A top page of another type ("what causes ADHD?" answered from the ADHD
        overview) is shown from its first sentence that says something of the asked type (:func:`rag_app.index.topics.
        first_answering`: "No one knows exactly what causes ADHD."); otherwise the re-ranker chooses the sentence
        (on the message as written). A chosen sentence that leans on the one before ("However, ...", "It is caused
        by ...": :func:`rag_app.answer.passages.self_contained_start`) gives way to that one. A page is shown from its
        start when the message asks for an overview ("info about ...": the page's first sentence says what the
        condition is) or when what would follow the chosen sentence is too short to answer
        from (:data:`MIN_SHOWN_WORDS`: a page's last sentence alone, "Possible treatments include surgery to remove
        the tumor.", misleads more than it answers). In a conversation (``said``: the answers so far), a top page they
        already quoted is shown without the sentences they said (from the chosen sentence on, else the whole page), where
        enough is left: a new question gets what the page says besides, not the same answer again; a top page they
        quoted to its end gives way to the next source on the same topic they didn't, else to the next source they
        didn't (:meth:`not_said_first`). A top page on a broader topic ends before it turns to another form of the
        topic the message names (:func:`~rag_app.answer.passages.turns_to_sibling`: type 2 diabetes after a question on
        type 1), where enough is left."""
        reading = reading or self.read(question)
        asked = reading.asked
        pages = {node.node.node_id: page_sentences(node) for node in sources}
        matcher = topic_matcher(self.retriever)
        named = matcher.named(reading.search) if matcher is not None else []
        if self.said and not second_part:
            sources = self.not_said_first(sources, pages)
        out = []
        for i, node in enumerate(sources):
            start = 0
            chosen = i == 0 or (i == 1 and second_part)
            sentences = pages[node.node.node_id]
            if chosen and self.answer_from_sentence and self.reranker is not None and asked != {OVERVIEW_TYPE}:
                typed = i == 0 and _type(node) in asked  # a page of the asked type answers it from its start
                other = asked if i == 0 and OVERVIEW_TYPE not in asked and not typed else set()
                start = first_answering(sentences, other) if other else None
                if typed:
                    start = 0
                elif start is None or not _enough_from(sentences, start):
                    # The sentence is chosen on the message as written: re-asking the type helps rank pages, but on a page
                    # with no sentence of that type it made the re-ranker pick one that merely sounds like it.
                    start = self.reranker.start_sentence(reading.search, node, sentences, self.sentence_margin)
                start = self_contained_start(sentences, start)
                if not _enough_from(sentences, start):
                    start = 0
            keep = None
            if i == 0 and self.said:
                unsaid = unsaid_sentences(sentences, self.said)
                after = [j for j in unsaid if j >= start]
                # What the page says after the chosen sentence and the answers didn't, else what it says before it.
                keep = next((kept for kept in (after, unsaid) if _enough(sentences, kept)), None)
            end = None
            if chosen and named and matcher is not None:
                end = turns_to_sibling(sentences, start, _topic(node), named, matcher.named, matcher.with_synonyms)
            if end is not None:
                before = [j for j in (range(start, len(sentences)) if keep is None else keep) if j < end]
                keep = before if _enough(sentences, before) else keep
            out.append(shown_node(node, start, keep, sentences))
        return out

    def not_said_first(self, sources: Sequence[NodeWithScore], pages: Mapping[str, Sequence[str]]) -> list[NodeWithScore]:
        """``sources`` with the first page of the top page's topic that the answers so far (``said``) didn't quote to its
        end moved first, or else the first such page of any topic, when the top page was quoted to its end (the
        sources' order otherwise). ``pages``: each source's :func:`~rag_app.answer.passages.page_sentences` by node
        id."""
        def unsaid(node: NodeWithScore) -> bool:
            page = pages[node.node.node_id]
            return _enough(page, unsaid_sentences(page, self.said))

        if not sources or unsaid(sources[0]):
            return list(sources)
        later = next((i for i in range(1, len(sources)) if _same_topic(sources[i], sources[0]) and unsaid(sources[i])), None)
        if later is None:  # then the next source it didn't quote: the same page again would answer nothing new
            later = next((i for i in range(1, len(sources)) if unsaid(sources[i])), None)
        if later is None:
            return list(sources)
        return [sources[later], *(n for i, n in enumerate(sources) if i != later)]

    def plan(self, query_str: str, ranked: Sequence[NodeWithScore] | None = None) -> AnswerPlan:
        """Decide how to answer ``query_str``: sources, what is shown of them, declining, and each part's opening.

        Args:
            query_str: The question as asked.
            ranked: Its ranked candidates when already known (:meth:`ranked`); retrieved otherwise.
        """
        question, warnings = self.clean_question(query_str)
        reading = self.read(question) if self.use_rag and self.retriever is not None else None
        if ranked is None:
            ranked = self.ranked(question, reading)
        sources = self.select_sources(question, ranked) if self.use_rag else []
        coverage = self.coverage(question, sources)
        # A second part where source [2] is another page of the top source's topic, on another question type, that the
        # re-ranker also finds answering the message: it asks two things ("what can he take, and will it come back?").
        second = (
            self.opens_with_sources()
            and len(sources) > 1
            and _topic(sources[1]) == _topic(sources[0])
            and _type(sources[0]) != _type(sources[1])
            and min(_relevance(sources[0]), _relevance(sources[1])) >= self.answer_threshold
            and self.reranker is not None
        )
        shown = self.shown(question, sources, second, reading) if self.use_rag else []
        tokenizer = llm_tokenizer(self.llm)
        suppress = tuple(decline_start_ids(tokenizer)) if coverage == COVERED and tokenizer is not None else ()
        passages = [n.node.get_content() for n in shown]
        cut = self.shown_passages(question, shown) if self.use_rag else None
        if second:
            half = self.max_new_tokens // 2
            parts = [  # each part stops where the model ends it: finishing a page would spend the other part's budget
                AnswerPart(self.opening(coverage, passages), suppress, self.max_new_tokens - half),
                AnswerPart(self.opening(COVERED, passages, index=1), suppress, half),
            ]
        else:
            parts = [AnswerPart(self.opening(coverage, passages, finish=cut[0] if cut else ""), suppress, self.max_new_tokens)]
        return AnswerPlan(question, warnings, shown, self.messages(question, shown, cut), coverage, parts)

    # ---- generation --------------------------------------------------------------
    def part_llm(self, part: AnswerPart, llm: Any = None) -> Any:
        """The LLM (``llm``, default the engine's) decoding one part: its opening, or no leading decline, and budget."""
        llm = llm or self.llm
        if part.opening is None and not part.suppress and part.max_new_tokens == self.max_new_tokens:
            return llm
        return with_decoding(llm, opening=part.opening, suppress=() if part.opening else part.suppress, max_new_tokens=part.max_new_tokens)

    def join_parts(self, texts: Sequence[str]) -> str:
        """The generated parts of an answer as one text, each cut before its repeat (the generation stop ends a part
        once it repeats itself, so the repeat is its last sentence)."""
        texts = [trim_repetition(t.strip()) if self.stop_on_repeat else t.strip() for t in texts]
        return PART_SEPARATOR.join(t for t in texts if t)

    def generate(self, plan: AnswerPlan, llm: Any = None) -> str:
        """The model's answer to a plan, parts joined (the abstain answer when the plan declines)."""
        if plan.declines:
            return prompts.ABSTAIN_ANSWER
        chat = prompts.messages_to_llama(plan.messages)
        return self.join_parts([self.part_llm(part, llm).chat(chat).message.content or "" for part in plan.parts])

    def stream(self, plan: AnswerPlan, llm: Any = None) -> Iterator[str]:
        """The model's answer to a plan as it is generated: the parts one after another, each without its repeat
        (text that may be starting a repeated sentence is held back, :class:`rag_app.text.repetition.StreamTrimmer`)."""
        if plan.declines:
            yield prompts.ABSTAIN_ANSWER
            return
        chat = prompts.messages_to_llama(plan.messages)
        for i, part in enumerate(plan.parts):
            trimmer = StreamTrimmer() if self.stop_on_repeat else None
            if i:
                yield PART_SEPARATOR
            for chunk in self.part_llm(part, llm).stream_chat(chat):
                shown = trimmer.feed(chunk.delta or "") if trimmer else chunk.delta or ""
                if shown:
                    yield shown
            if trimmer:
                yield trimmer.finish()

    def answer_batch(self, plans: Sequence[AnswerPlan], batch_size: int = 8, cache: AnswerCache | None = None, desc: str = "Answering") -> list[str]:
        """Finished answers to many plans, greedily, as :meth:`generate` and :meth:`finish` give them one by one.

        Every part of every plan that doesn't decline is generated (answers in ``cache`` reused), in batches of parts
        that share a budget and a first-token suppression (the transformers backend; llama.cpp answers one at a time).
        """
        jobs = [(p, part) for p, plan in enumerate(plans) if not plan.declines for part in plan.parts]
        texts: list[str | None] = [cache.get(plans[p].messages, part.decoding) if cache else None for p, part in jobs]
        todo = [i for i, t in enumerate(texts) if t is None]
        # Longest prompts first keep padding small within a batch.
        todo.sort(key=lambda i: (str(jobs[i][1].decoding["suppress"]), jobs[i][1].max_new_tokens,
                                 -sum(len(m["content"]) for m in plans[jobs[i][0]].messages)))
        batches: list[list[int]] = []
        for i in todo:
            first = jobs[batches[-1][0]][1] if batches else None
            if first and len(batches[-1]) < batch_size and first.max_new_tokens == jobs[i][1].max_new_tokens and first.suppress == jobs[i][1].suppress:
                batches[-1].append(i)
            else:
                batches.append([i])
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not batches):
            part = jobs[batch[0]][1]
            out = generate_batch(
                self.llm, [plans[jobs[i][0]].messages for i in batch], part.max_new_tokens,
                begin_suppress_tokens=part.decoding["suppress"], openings=[jobs[i][1].opening for i in batch],
            )
            if cache:
                cache.put_many([(plans[jobs[i][0]].messages, jobs[i][1].decoding, text) for i, text in zip(batch, out)])
            for i, text in zip(batch, out):
                texts[i] = text
        parts: list[list[str]] = [[] for _ in plans]
        for (p, _), text in zip(jobs, texts):
            parts[p].append(text or "")
        return [self.finish(plan, prompts.ABSTAIN_ANSWER if plan.declines else self.join_parts(parts[p])) for p, plan in enumerate(plans)]

    def finish(self, plan: AnswerPlan, text: str) -> str:
        """A raw answer as the reader gets it: without its repeat, citations settled, the notice appended."""
        text = trim_repetition(text.strip()) if self.stop_on_repeat else text.strip()
        text = finish_citations(text, plan.passages, attribute=self.attribute_citations)
        return f"{text}\n\n{prompts.MEDICAL_NOTICE}" if self.medical_notice else text

    # ---- CustomQueryEngine ----------------------------------------------------
    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        plan = self.plan(query_str)
        metadata = {"question": plan.question, "warnings": plan.warnings, "use_rag": self.use_rag, "coverage": plan.coverage}
        if self.streaming:
            return StreamingResponse(response_gen=self._with_notice(self._shown_stream(plan)), source_nodes=plan.sources, metadata=metadata)
        return Response(response=self.finish(plan, self.generate(plan)), source_nodes=plan.sources, metadata=metadata)

    def _shown_stream(self, plan: AnswerPlan) -> Generator[str, None, None]:
        """:meth:`stream` as the reader sees it: repeats held back, citations settled as they come."""
        passages = plan.passages
        trimmer = StreamTrimmer()  # a later part repeating an earlier one is not shown either
        attributor = StreamAttributor(passages if self.attribute_citations else [])
        text = ""
        for delta in self.stream(plan):
            shown = attributor.feed(trimmer.feed(delta) if self.stop_on_repeat else delta)
            if shown:
                text += shown
                yield shown
        rest = attributor.feed(trimmer.finish() if self.stop_on_repeat else "") + attributor.finish()
        rest += citation_to_add(text + rest, passages)
        if rest:
            yield rest

    def _with_notice(self, tokens: Any) -> Generator[str, None, None]:
        yield from tokens
        if self.medical_notice:
            yield f"\n\n{prompts.MEDICAL_NOTICE}"

    def close(self) -> None:
        """Free the model's weights now (a llama.cpp model's memory); the engine can't answer afterwards."""
        close_llm(self.llm)

    def __enter__(self) -> "MedQAQueryEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def with_top_k(self, top_k: int) -> "MedQAQueryEngine":
        """A copy answering from ``top_k`` sources (the retriever and re-ranker are shared, nothing is loaded)."""
        return self.model_copy(update=candidate_pipeline(self.retriever, self.reranker, top_k, self.rerank_candidates))


def _topic(node: NodeWithScore) -> str:
    return str(node.node.metadata.get("focus") or "").strip().lower()


def _enough_from(sentences: Sequence[str], first: int) -> bool:
    """Whether a page shown from sentence ``first`` holds :data:`MIN_SHOWN_WORDS` words or more."""
    return _enough(sentences, range(first, len(sentences)))


def _enough(sentences: Sequence[str], kept: Sequence[int]) -> bool:
    """Whether the ``kept`` sentences of a page hold :data:`MIN_SHOWN_WORDS` words or more."""
    return sum(len(sentences[i].split()) for i in kept) >= MIN_SHOWN_WORDS


def _same_topic(a: NodeWithScore, b: NodeWithScore) -> bool:
    """Whether two sources are about one topic, however their collections spell it ("Crohn's Disease", "Crohn disease")."""
    return topic_key(_topic(a)) == topic_key(_topic(b))


def _type(node: NodeWithScore) -> str:
    return str(node.node.metadata.get("question_type") or "")


def _relevance(node: NodeWithScore) -> float:
    return float(node.node.metadata.get(RELEVANCE_KEY, 0.0))


def candidate_pipeline(retriever: Any, reranker: Any, top_k: int, candidates: int) -> dict[str, Any]:
    """The retriever, re-ranker and ``top_k`` of an engine returning ``top_k`` sources.

    With a re-ranker the retriever returns ``max(candidates, top_k)`` candidates for it to read; without one, ``top_k``.
    """
    wanted = max(candidates, top_k) if reranker is not None else top_k
    if retriever is not None and hasattr(retriever, "with_top_k") and getattr(retriever, "top_k", None) != wanted:
        retriever = retriever.with_top_k(wanted)
    return {"retriever": retriever, "reranker": reranker, "top_k": top_k}


def build_query_engine(
    settings: Settings | None = None,
    *,
    use_rag: bool = True,
    streaming: bool = False,
    llm: Any = None,
    embed_model: Any = None,
    retriever: Any = None,
    reranker: Any = None,
    **overrides: Any,
) -> MedQAQueryEngine:
    """Build the medqa query engine from settings.

    Args:
        settings: Settings (default: from the environment); ``overrides`` replace fields (e.g. ``top_k=5``).
        use_rag: Retrieve sources; ``False`` answers from the model alone through the same interface.
        streaming: Return ``StreamingResponse`` objects from ``query``.
        llm: A LlamaIndex LLM to use instead of loading ``settings.llm``.
        embed_model: An embedding model to use instead of loading ``settings.embed_model``.
        retriever: A retriever to use instead of building one over the index.
        reranker: A node postprocessor to use instead of loading ``settings.rerank_model`` (``MEDQA_RERANK``).

    Returns:
        A LlamaIndex query engine with ``query``, ``retrieve`` and streaming.

    Raises:
        IndexMissingError: If RAG is on and there is no index (the message gives the command that builds it).
        ModelUnavailableError: If no LLM can be loaded.
    """
    settings = settings or Settings()
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})
    if use_rag and retriever is None:
        retriever = build_retriever(settings, embed_model=embed_model)
    if use_rag and reranker is None:
        reranker = load_reranker(settings)
    pipeline = candidate_pipeline(retriever, reranker, settings.top_k, settings.rerank_candidates) if use_rag else {}
    llm = llm or load_llm(settings)
    return MedQAQueryEngine(
        llm=llm,
        retriever=pipeline.get("retriever"),
        reranker=pipeline.get("reranker"),
        top_k=settings.top_k,
        rerank_candidates=settings.rerank_candidates,
        use_rag=use_rag,
        streaming=streaming,
        max_new_tokens=settings.max_new_tokens,
        context_window=getattr(getattr(llm, "metadata", None), "context_window", settings.context_window)
        or settings.context_window,
        max_question_tokens=settings.max_question_tokens,
        source_tokens=settings.source_tokens,
        top_source_tokens=settings.top_source_tokens,
        medical_notice=settings.medical_notice,
        stop_on_repeat=settings.stop_on_repeat,
        decline_by_topic=settings.decline_by_topic,
        attribute_citations=settings.attribute_citations,
        open_with_top_source=settings.open_with_top_source,
        answer_from_sentence=settings.answer_from_sentence,
        sentence_margin=settings.sentence_margin,
        answer_threshold=settings.answer_threshold,
        finish_source=settings.finish_source,
        copy_bias=settings.copy_bias,
        decline_bias=settings.decline_bias,
        correct_spelling=settings.correct_spelling,
        rerank_reads_asked=settings.rerank_reads_asked,
    )
