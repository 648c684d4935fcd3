"""Every decoding hook medqa attaches to a generation, for both backends (transformers and llama.cpp).

An answer stops as soon as it repeats itself (:func:`repetition_stop`, the text rule in :mod:`rag_app.text.repetition`),
may be kept from starting with the decline (``suppress``), may have to open with its source's words
(:class:`rag_app.text.openings.Opening`), and stops when the chat's Stop button is pressed. :func:`with_decoding`
gives one answer a copy of the loaded model (weights shared) with its own hooks and decoding settings.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from rag_app.config import Settings
from rag_app.llm.gguf import is_llamacpp
from rag_app.text.openings import Opening, opening_words
from rag_app.text.prompts import ABSTAIN_ANSWER, answer_text
from rag_app.text.repetition import repeats


def llm_tokenizer(llm: Any) -> Any:
    """The Hugging Face tokenizer of a local model (either backend); None for a served model or a stand-in."""
    return getattr(llm, "_tokenizer", None)


def llm_model(llm: Any) -> Any:
    """The transformers model of a ``HuggingFaceLLM`` (LlamaIndex keeps it private); None for other backends."""
    return getattr(llm, "_model", None)


def decline_start_ids(tokenizer: Any) -> list[int]:
    """The first token of the abstain answer: kept from starting an answer whose sources are about the question."""
    return tokenizer(ABSTAIN_ANSWER, add_special_tokens=False)["input_ids"][:1]


def answer_start_ids(tokenizer: Any) -> list[int]:
    """The token ids the chat template puts right before an answer (e.g. ``<|im_start|>assistant\\n``).

    Found by comparing a one-message conversation rendered with and without the generation prompt;
    empty when the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "x"}]
    with_prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    suffix = with_prompt[len(without) :] if with_prompt.startswith(without) else ""
    return tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []


@functools.lru_cache(maxsize=8)
def stop_ids(tokenizer: Any) -> tuple[int, ...]:
    """The token ids that would end an answer or turn it into the decline: the special tokens (end of text, the chat
    template's turn marks) and the decline's first word, with and without a space before it."""
    ids = set(tokenizer.all_special_ids)
    for text in (ABSTAIN_ANSWER, " " + ABSTAIN_ANSWER):
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"][:1])
    return tuple(sorted(ids))


def _last_index(ids: Sequence[int], pattern: Sequence[int]) -> int | None:
    n = len(pattern)
    for i in range(len(ids) - n, -1, -1):
        if list(ids[i : i + n]) == list(pattern):
            return i + n
    return None


def answer_repeats(ids: Sequence[int], header: Sequence[int], tokenizer: Any) -> bool:
    """True when the answer in ``ids`` (the tokens after the last ``header``, the chat template's answer start)
    repeats itself; False while there is no answer yet."""
    start = _last_index(ids, header) if header else None
    if start is None:
        return False
    return repeats(tokenizer.decode(list(ids[start:]), skip_special_tokens=True))


def repetition_stop(tokenizer: Any) -> Any:
    """A ``transformers`` stopping criterion that ends each sequence once its answer repeats itself.

    It is stateless: each call finds where the answer starts (after the chat template's answer header),
    so one criterion serves every request and every row of a batch.
    """
    header = answer_start_ids(tokenizer)

    class RepeatedSentenceStop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = [answer_repeats(row, header, tokenizer) for row in input_ids.tolist()]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return RepeatedSentenceStop()


def answer_opening(
    tokenizer: Any, passages: Sequence[str], alternatives: Sequence[int] = (), index: int = 0, finish: str = "",
    copy_bias: float = 0.0, decline_bias: float = 0.0,
) -> Opening | None:
    """The :class:`Opening` of an answer from ``passages`` for a model with ``tokenizer``; None without one.

    Args:
        tokenizer: The model's Hugging Face tokenizer.
        passages: The sources' texts in citation order.
        alternatives: First tokens allowed instead of the opening (e.g. the decline's), when the model may decline.
        index: The source the answer opens with (0 = the top one).
        finish: The source's text as the model is shown it, when the answer may not end while it copies it and it
            goes on (:meth:`rag_app.text.openings.Opening.banned`).
        copy_bias: With ``finish``, logits added to the token that source goes on with while the answer copies it
            word for word (:meth:`rag_app.text.openings.Opening.copying`).
        decline_bias: Logits taken from the ``alternatives`` at the first token (:attr:`rag_app.text.openings.Opening.
            alternative_bias`).
    """
    words = opening_words(passages, index)
    ids = tuple(tokenizer(words, add_special_tokens=False)["input_ids"]) if words else ()
    if not ids:
        return None
    alternatives = tuple(a for a in alternatives if a != ids[0])
    against = -decline_bias if alternatives else 0.0
    if not finish:
        return Opening(ids, alternatives, alternative_bias=against)
    skipped = skipped_ids(tokenizer)
    copied = tuple(tokenizer(answer_text(finish), add_special_tokens=False)["input_ids"])
    source = tuple(t for t in copied if t not in skipped)
    unbiased = punctuation_ids(tokenizer) if copy_bias else frozenset()
    return Opening(ids, alternatives, source, skipped, stop_ids(tokenizer), copied if copy_bias else (), copy_bias, unbiased, against)


@functools.lru_cache(maxsize=8)
def _token_texts(tokenizer: Any) -> tuple[str | None, ...]:
    """The text of each token id of ``tokenizer`` (None for an id without a token). Decoded once per tokenizer."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return tuple(None if tok is None else tokenizer.convert_tokens_to_string([tok]) for tok in vocab)


@functools.lru_cache(maxsize=8)
def skipped_ids(tokenizer: Any) -> frozenset[int]:
    """The token ids an answer's copy of its source is compared without: those with no letter (citation marks,
    digits, punctuation, spaces), which the model adds or drops around the copied words. Computed once per tokenizer."""
    return frozenset(i for i, text in enumerate(_token_texts(tokenizer)) if text is not None and not any(c.isalpha() for c in text))


@functools.lru_cache(maxsize=8)
def punctuation_ids(tokenizer: Any) -> frozenset[int]:
    """The token ids with neither a letter nor a digit (punctuation, spaces, brackets): an answer copying its source
    may put a citation mark where the source goes on with one of them. Computed once per tokenizer."""
    return frozenset(i for i, text in enumerate(_token_texts(tokenizer)) if text is not None and not any(c.isalnum() for c in text))


class OpeningProcessor:
    """A transformers logits processor: each row of a batch opens as its :class:`Opening` says (None: free).

    Rows start generating together (left padding), so the first call sees every row's first answer token.
    One processor per ``generate`` call.
    """

    def __init__(self, openings: Sequence[Opening | None]) -> None:
        self.openings = list(openings)
        self.start: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.start is None:
            self.start = input_ids.shape[1]
        mask = None
        cloned = False  # scores are copied once, before the first copy bias is added
        for row, opening in enumerate(self.openings):
            if opening is None:
                continue
            generated = input_ids[row, self.start :].tolist()
            allowed = opening.allowed(generated)
            banned = opening.banned(generated) if allowed is None else ()
            copying = opening.copying(generated) if allowed is None else ()
            if copying:
                scores, cloned = (scores if cloned else scores.clone()), True
                scores[row, list(copying)] += opening.bias
            biased = opening.first_biased(generated)
            if biased:
                scores, cloned = (scores if cloned else scores.clone()), True
                scores[row, list(biased)] += opening.alternative_bias
            if allowed is None and not banned:
                continue
            if mask is None:
                mask = scores.new_zeros(scores.shape, dtype=bool)
            if allowed is None:
                mask[row, list(banned)] = True
            else:
                mask[row] = True
                mask[row, allowed] = False
        return scores if mask is None else scores.masked_fill(mask, float("-inf"))


def generation_kwargs(settings: Settings, tokenizer: Any) -> dict[str, Any]:
    """``generate()`` arguments for the settings: greedy at temperature 0, sampling otherwise."""
    kwargs: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id}
    if settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=0.9)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def suppress_first(token_ids: Sequence[int]) -> Any:
    """A llama.cpp logits processor that keeps ``token_ids`` from being an answer's first token.

    The llama.cpp twin of transformers' ``begin_suppress_tokens``; one processor per answer.
    """
    ids = list(token_ids)
    state = {"first": True}

    def process(input_ids: Any, scores: Any) -> Any:
        if state["first"]:
            state["first"] = False
            scores = np.array(scores, copy=True)
            scores[ids] = -np.inf
        return scores

    return process


def opening_processor(opening: Opening) -> Any:
    """A llama.cpp logits processor that makes an answer open as :class:`rag_app.text.openings.Opening` says.

    The llama.cpp twin of :class:`OpeningProcessor`; one processor per answer.
    """
    state: dict[str, int] = {}

    def process(input_ids: Any, scores: Any) -> Any:
        start = state.setdefault("start", len(input_ids))
        generated = list(input_ids[start:])
        allowed = opening.allowed(generated)
        if allowed is None:
            banned, copying = opening.banned(generated), opening.copying(generated)
            if not (banned or copying):
                return scores
            scores = np.array(scores, copy=True)
            scores[list(copying)] += opening.bias
            scores[list(banned)] = -np.inf
            return scores
        kept = np.full_like(scores, -np.inf)
        kept[allowed] = np.asarray(scores)[allowed]
        kept[list(opening.first_biased(generated))] += opening.alternative_bias
        return kept

    return process


def llamacpp_repetition_stop(tokenizer: Any) -> Any:
    """A llama.cpp stopping criterion: the answer repeats a sentence (:func:`answer_repeats`)."""
    header = answer_start_ids(tokenizer)
    return lambda input_ids, logits: answer_repeats(list(input_ids), header, tokenizer)


def event_stop(event: threading.Event) -> Any:
    """A llama.cpp stopping criterion: ``event`` is set (the chat's Stop button)."""
    return lambda input_ids, logits: event.is_set()


def llamacpp_decoding_kwargs(temperature: float, max_new_tokens: int) -> dict[str, Any]:
    """``Llama.__call__`` arguments: greedy at temperature 0 (no repeat penalty, as in transformers), else top-p 0.9."""
    if temperature > 0:
        return {"temperature": temperature, "top_p": 0.9, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "max_tokens": max_new_tokens}
    return {"temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "max_tokens": max_new_tokens}


def with_decoding(
    llm: Any,
    *,
    suppress: Sequence[int] = (),
    opening: Opening | None = None,
    stop: threading.Event | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
) -> Any:
    """A copy of a loaded LLM (weights shared) for one answer: its own decoding settings and stops.

    Args:
        llm: From :func:`load_llm` (transformers or llama.cpp); anything else is returned as it is.
        suppress: Token ids the answer may not start with.
        opening: How the answer must open (:class:`rag_app.text.openings.Opening`).
        stop: Setting this event ends the generation at the next token (the chat's Stop button).
        temperature: 0 for greedy decoding.
        max_new_tokens: Answer budget.
    """
    if is_llamacpp(llm):
        return _llamacpp_decoding(llm, suppress, opening, stop, temperature, max_new_tokens)
    tokenizer = llm_tokenizer(llm)
    if tokenizer is None or not hasattr(llm, "generate_kwargs"):
        return llm  # not a local model (a served one, or a mock in tests): use as is
    kwargs = dict(llm.generate_kwargs)
    update: dict[str, Any] = {}
    if temperature is not None:
        kwargs.update(generation_kwargs(Settings.model_construct(temperature=temperature), tokenizer))
    if suppress:
        kwargs["begin_suppress_tokens"] = list(suppress)
    if opening is not None:
        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), OpeningProcessor([opening])])
    if max_new_tokens is not None:
        update["max_new_tokens"] = max_new_tokens
    mine = llm.model_copy(update={**update, "generate_kwargs": kwargs})
    if stop is not None:
        class StopEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        mine._stopping_criteria = StoppingCriteriaList([*llm._stopping_criteria, StopEvent()])
    return mine


def _llamacpp_decoding(
    llm: Any, suppress: Sequence[int], opening: Opening | None, stop: threading.Event | None, temperature: float | None,
    max_new_tokens: int | None,
) -> Any:
    """A copy of ``llm`` (same C++ model) with its own stops, first tokens and decoding settings."""
    # llama-cpp-python is optional (a compiled package): imported only for a model of that backend.
    from llama_cpp import LogitsProcessorList as LlamaProcessors
    from llama_cpp import StoppingCriteriaList as LlamaStops

    kwargs = dict(llm.generate_kwargs)
    if temperature is not None or max_new_tokens is not None:
        temp = temperature if temperature is not None else float(kwargs.get("temperature") or 0.0)
        kwargs.update(llamacpp_decoding_kwargs(temp, max_new_tokens or llm.max_new_tokens))
    if stop is not None:
        kwargs["stopping_criteria"] = LlamaStops([*(kwargs.get("stopping_criteria") or []), event_stop(stop)])
    if suppress:
        kwargs["logits_processor"] = LlamaProcessors([*(kwargs.get("logits_processor") or []), suppress_first(suppress)])
    if opening is not None:
        kwargs["logits_processor"] = LlamaProcessors([*(kwargs.get("logits_processor") or []), opening_processor(opening)])
    update: dict[str, Any] = {"generate_kwargs": kwargs}
    if max_new_tokens is not None:
        update["max_new_tokens"] = max_new_tokens
    if temperature is not None:
        update["temperature"] = min(temperature, 1.0)
    return llm.model_copy(update=update)
