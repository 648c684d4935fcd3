"""Answers never loop: the repeated-sentence stop and trim (rag_app.text.repetition)."""

from __future__ import annotations

import re
from pathlib import Path

from rag_app.llm.decoding import answer_start_ids, repetition_stop

from rag_app.text.repetition import repeat_start, repeats, trim_repetition

LOOP = "Gout is a form of arthritis [1]. Gout is a form of arthritis [1]. Gout is a form of arthritis [1]."


def test_a_repeated_sentence_is_cut_and_a_clean_answer_is_untouched() -> None:
    assert trim_repetition(LOOP) == "Gout is a form of arthritis [1]."
    clean = "Gout is a form of arthritis [1]. It is treated with colchicine. - Rest. - Ice. - Rest. - Ice."
    assert not repeats(clean) and trim_repetition(clean) == clean  # short list items may recur
    words = "take the medicine with food and water every morning before you go out today " * 3
    assert repeats(words) and trim_repetition(words).split() == words.split()[: len(words.split()) // 3]  # one pass kept
    assert repeat_start("Yes. Yes. Yes.") is None
    # The 135M model copied a list a second time without its bullets (Alzheimer's early signs, full index).
    listed = (
        "A person in the early stage may - find it hard to remember things - ask the same questions over and over - get "
        "lost in familiar places - lose things. find it hard to remember things ask the same questions over and over"
    )
    assert trim_repetition(listed).endswith("- lose things.")


def test_stop_ends_only_the_rows_whose_answer_repeats(bundled_llm_dir: Path) -> None:
    """Stateless and batched: the prompt (which may hold the same sentence, copied from a source) doesn't count."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_llm_dir)
    header = answer_start_ids(tokenizer)
    assert tokenizer.decode(header) == "<|im_start|>assistant\n"
    stop = repetition_stop(tokenizer)
    source = "Sources:\n[1] Gout is a form of arthritis. Gout is a form of arthritis.\n\nQuestion: What is gout?"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": source}], add_generation_prompt=True, tokenize=False)

    def ids(answer: str) -> list[int]:
        return tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]

    rows = [ids(LOOP[:68]), ids("Gout is a form of arthritis [1]. It is treated with colchicine [1].")]
    width = max(map(len, rows))
    batch = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    assert stop(batch, None).tolist() == [True, False]


def test_streaming_never_shows_the_repeat() -> None:
    from rag_app.text.repetition import StreamTrimmer

    trimmer = StreamTrimmer()
    shown = "".join(trimmer.feed(t) for t in LOOP.split(" ")[:1] + [" " + t for t in LOOP.split(" ")[1:]]) + trimmer.finish()
    assert shown == "Gout is a form of arthritis [1]."
    clean = "Gout is arthritis [1]. Gout attacks are treated with colchicine [1]."
    trimmer = StreamTrimmer()
    pieces = [trimmer.feed(c) for c in clean]
    assert "".join(pieces) + trimmer.finish() == clean
    assert sum(1 for p in pieces if p) > 10  # streamed word by word as it comes, not held back to the end
    # A list copied again without its bullets: the words that may be starting the copy are held back, never shown.
    listed = (
        "A person in the early stage may - find it hard to remember things - ask the same questions over and over - get "
        "lost in familiar places - lose things. find it hard to remember things ask the same questions over and over get"
    )
    trimmer = StreamTrimmer()
    shown = "".join(trimmer.feed(t) for t in re.findall(r"\S+\s*", listed)) + trimmer.finish()
    assert shown.strip() == "A person in the early stage may - find it hard to remember things - ask the same questions over and over - get lost in familiar places - lose things."


def test_an_answer_that_turns_into_the_decline_ends_before_it() -> None:
    """"<what the source says> [1]. I don't know: ..." keeps what it said, streamed or not, and stops generating there;
    the decline on its own, and a sentence with "I" in it, are left alone."""
    from rag_app.text.prompts import ABSTAIN_ANSWER
    from rag_app.text.repetition import StreamTrimmer, repeats, trim_repetition

    said = "There is no cure for fibromyalgia, but medicine can help you manage your symptoms [1]."
    assert trim_repetition(f"{said} {ABSTAIN_ANSWER}") == said
    assert repeats(f"{said} I don't know") and not repeats(f"{said} I don")  # the stop ends it as it starts
    trimmer = StreamTrimmer()
    shown = "".join(trimmer.feed(t) for t in re.findall(r"\S+\s*", f"{said} {ABSTAIN_ANSWER}")) + trimmer.finish()
    assert shown.strip() == said
    assert trim_repetition(ABSTAIN_ANSWER) == ABSTAIN_ANSWER and not repeats(ABSTAIN_ANSWER)
    clean = "Type I diabetes is treated with insulin [1]. I.V. fluids may be needed in a crisis."
    assert trim_repetition(clean) == clean


def test_a_repeat_at_the_very_end_is_cut_before_a_citation_is_added() -> None:
    """The last sentence counts once it ends with a full stop, so adding " [1]" after it can't reveal a repeat."""
    from rag_app.text.citations import citation_to_add
    from rag_app.text.repetition import repeats, trim_repetition

    answer = "6. Bleeding after bowel movements.\n7. Bleeding after bowel movements."
    trimmed = trim_repetition(answer)
    assert trimmed == "6. Bleeding after bowel movements.\n7."
    passage = "Bleeding after bowel movements is a sign to see a doctor."
    assert not repeats(trimmed + citation_to_add(trimmed, [passage]))
    assert trim_repetition("Gout is a form of arthritis. It is painful.") == "Gout is a form of arthritis. It is painful."


PASSAGES = [
    "Question: What is (are) Herniated Disk ? Answer: Your backbone is made up of 26 bones called vertebrae, with soft disks between them.",
    "Question: What is (are) Hernia ? Answer: A hernia happens when part of an internal organ or tissue bulges through a weak area of muscle.",
    "Question: What is (are) Hernia ? Answer: A hernia is when part of an organ or tissue bulges through a weak spot in a muscle wall.",
]


def test_a_citation_names_the_source_its_text_was_copied_from() -> None:
    from rag_app.text.citations import attribute_citations, finish_citations

    copied = "A hernia happens when part of an internal organ or tissue bulges through a weak area of muscle [1]."
    assert attribute_citations(copied, PASSAGES) == copied.replace("[1]", "[2]")
    # Each citation closes the text since the previous one; a right number is kept.
    two = "Your backbone is made up of 26 bones called vertebrae [1]. A hernia happens when tissue bulges through a weak area of muscle [3]."
    assert attribute_citations(two, PASSAGES) == two.replace("[3]", "[2]")
    # Kept: a near tie (source 3 says much the same), words found in no source, too few words, lists, no sources.
    tie = "A hernia is when part of an organ or tissue bulges through a weak spot in muscle [2]."
    assert attribute_citations(tie, PASSAGES) == tie
    for kept in ("Ask your doctor about colchicine and rest for swollen joints [1].", "See a doctor [1].", "A hernia bulges through muscle [1, 3]."):
        assert attribute_citations(kept, PASSAGES) == kept
    assert attribute_citations(copied, []) == copied
    # The engine's finish: attribution, then the number of an uncited answer's source; switched off, the model's number stays.
    assert finish_citations(copied.replace(" [1]", ""), PASSAGES).endswith("muscle. [2]")
    assert finish_citations(copied, PASSAGES, attribute=False) == copied


def test_streamed_citations_are_attributed_as_they_complete() -> None:
    from rag_app.text.citations import StreamAttributor, attribute_citations

    answer = "A hernia happens when part of an internal organ or tissue bulges through a weak area of muscle [1]. See [NAME] [1"
    attributor = StreamAttributor(PASSAGES)
    pieces = [attributor.feed(c) for c in answer]
    assert "".join(pieces) + attributor.finish() == attribute_citations(answer, PASSAGES)
    assert "".join(pieces).endswith("See [NAME] ")  # only an unfinished "[1" is held back
    assert pieces[answer.index("[1]") + 1] == "" and pieces[answer.index("[1]") + 2] == "[2]"


def test_opening_quotes_the_top_source_until_it_is_told_apart() -> None:
    """The opening runs to the first word no other source shares at that place, plus two, within 4 to 12 words."""
    from rag_app.text.openings import opening_words

    same_start = ["Answer: Lupus is a chronic disease of the immune system that", "Answer: Lupus is an autoimmune disease"]
    assert opening_words(same_start) == "Lupus is a chronic disease"
    assert opening_words(["Answer: Physicians often prescribe high doses of NSAIDs", "Answer: Gout is"]) == "Physicians often prescribe high"
    long_shared = ["Answer: " + " ".join(f"w{i}" for i in range(30)), "Answer: " + " ".join(f"w{i}" for i in range(20))]
    assert len(opening_words(long_shared).split()) == 12
    # A chunk that starts mid-sentence opens with its first whole sentence; no sources, no opening.
    assert opening_words(["sodium intake and alcohol. Being overweight raises blood pressure too", "x"]) == "Being overweight raises blood"
    assert opening_words([]) == ""


def test_opening_allows_its_tokens_in_order_then_anything() -> None:
    from rag_app.text.openings import Opening

    opening = Opening((5, 6, 7), alternatives=(9,))
    assert opening.allowed([]) == [5, 9]
    assert opening.allowed([5]) == [6] and opening.allowed([5, 6]) == [7]
    assert opening.allowed([5, 6, 7]) is None  # quoted: free from here
    assert opening.allowed([9]) is None  # declined instead: free


def test_opening_processor_masks_each_row_of_a_batch() -> None:
    import torch

    from rag_app.llm.decoding import OpeningProcessor

    from rag_app.text.openings import Opening

    processor = OpeningProcessor([Opening((2, 3)), None])
    prompt = torch.zeros((2, 4), dtype=torch.long)
    scores = processor(prompt, torch.zeros((2, 5)))
    assert torch.isfinite(scores[0]).tolist() == [False, False, True, False, False]
    assert torch.isfinite(scores[1]).all()  # a row without an opening is free
    step = torch.cat([prompt, torch.tensor([[2], [4]])], dim=1)
    assert torch.isfinite(processor(step, torch.zeros((2, 5)))[0]).tolist() == [False, False, False, True, False]


def test_an_answer_copying_its_source_may_not_end_while_the_source_goes_on() -> None:
    """End tokens are masked while the answer's last compared tokens are a place of the source with more after it;
    skipped tokens (a citation) don't break the copy; an answer that declined, drifted or reached the end may end."""
    import torch

    from rag_app.llm.decoding import OpeningProcessor, opening_processor

    from rag_app.text.openings import Opening

    source = tuple(range(10, 20))  # the source: tokens 10..19
    opening = Opening((10, 11), alternatives=(1,), source=source, skipped=frozenset({7, 8}), stops=(0, 14))
    assert opening.banned([10, 11, 12]) == ()  # too short to tell
    assert opening.banned([10, 11, 12, 7, 8, 13]) == (0,)
    assert opening.banned([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]) == ()  # copied to the end
    assert opening.banned([10, 11, 12, 13, 5]) == () and opening.banned([1, 12, 13, 14, 15]) == ()  # drifted; declined
    assert opening.banned([10, 11, 12, 13, 14]) == (0, 14)  # a stop token is banned ...
    assert opening.banned([10, 11, 12, 13]) == (0,)  # ... except where the source goes on with it
    assert Opening((10, 11), stops=(0,)).banned([10, 11, 12, 13]) == ()  # no source: free
    processor = OpeningProcessor([opening, opening, None])
    prompt = torch.zeros((3, 4), dtype=torch.long)
    processor(prompt, torch.zeros((3, 20)))
    step = torch.cat([prompt, torch.tensor([[10, 11, 12, 13], [1, 12, 13, 14], [10, 11, 12, 13]])], dim=1)
    finite = torch.isfinite(processor(step, torch.zeros((3, 20))))
    assert finite.tolist() == [[False] + [True] * 19, [True] * 20, [True] * 20]
    # The llama.cpp twin masks the same way.
    twin = opening_processor(opening)
    twin([9, 9], [0.0] * 20)
    assert [s == float("-inf") for s in twin([9, 9, 10, 11, 12, 13], [0.0] * 20)] == [True] + [False] * 19
    assert float("-inf") not in list(twin([9, 9, 10, 11, 12, 13, 5], [0.0] * 20))


def test_an_answer_copying_its_source_word_for_word_leans_to_the_sources_next_token() -> None:
    """While the answer's last tokens are a place of the source, the token the source goes on with there (a digit
    too: "type 2", not "type 1") gains the bias; never a punctuation token, where a citation mark may go; nothing after
    a drift, a decline, or without a bias. Both backends' processors add it."""
    import torch

    from rag_app.llm.decoding import OpeningProcessor, opening_processor

    from rag_app.text.openings import Opening

    copied = (10, 11, 12, 13, 14, 3, 15, 16)  # 3: a punctuation token, 14: a digit
    opening = Opening((10, 11), copied=copied, bias=6.0, unbiased=frozenset({3}))
    assert opening.copying([10, 11, 12, 13]) == (14,)
    assert opening.copying([10, 11, 12, 13, 14]) == ()  # the source goes on with punctuation: the model's choice
    assert opening.copying([10, 11, 12, 5]) == () and opening.copying([1, 11, 12, 13]) == ()  # drifted; declined
    assert Opening((10, 11), copied=copied).copying([10, 11, 12, 13]) == ()  # no bias
    step = torch.cat([torch.zeros((2, 4), dtype=torch.long), torch.tensor([[10, 11, 12, 13], [10, 11, 12, 13]])], dim=1)
    processor = OpeningProcessor([opening, None])
    processor(step[:, :4], torch.zeros((2, 20)))
    scores = processor(step, torch.zeros((2, 20)))
    assert scores[0, 14] == 6.0 and scores[0].sum() == 6.0 and scores[1].abs().sum() == 0
    twin = opening_processor(opening)
    twin([9, 9], [0.0] * 20)
    assert list(twin([9, 9, 10, 11, 12, 13], [0.0] * 20)) == [6.0 if i == 14 else 0.0 for i in range(20)]


def test_the_decline_bias_keeps_a_slight_preference_for_declining_from_declining() -> None:
    """At the first token the decline's first token loses the bias: a model preferring it by less opens with its source,
    by more still declines; later tokens, and an opening without alternatives, are untouched. Both backends alike."""
    import torch

    from rag_app.llm.decoding import OpeningProcessor, opening_processor

    from rag_app.text.openings import Opening

    opening = Opening((5, 6), alternatives=(9,), alternative_bias=-2.0)
    assert opening.first_biased([]) == (9,) and opening.first_biased([5]) == () and Opening((5, 6), alternatives=(9,)).first_biased([]) == ()
    for margin, first in ((1.0, 5), (3.0, 9)):  # the model prefers declining by 1, then by 3 logits
        logits = torch.zeros((1, 10))
        logits[0, 9] = margin
        processor = OpeningProcessor([opening])
        assert int(processor(torch.zeros((1, 4), dtype=torch.long), logits).argmax()) == first
        twin = opening_processor(opening)
        assert int(torch.tensor(list(twin([0, 0, 0, 0], logits[0].tolist()))).argmax()) == first
    later = OpeningProcessor([opening])
    later(torch.zeros((1, 4), dtype=torch.long), torch.zeros((1, 10)))
    assert later(torch.tensor([[0, 0, 0, 0, 9]]), torch.zeros((1, 10))).abs().sum() == 0  # declined: free, unbiased


def test_stop_ids_are_special_tokens_and_the_declines_first_word(bundled_llm_dir: Path) -> None:
    from transformers import AutoTokenizer

    from rag_app.llm.decoding import answer_opening, skipped_ids, stop_ids

    tokenizer = AutoTokenizer.from_pretrained(bundled_llm_dir)
    stops = {tokenizer.decode([i]) for i in stop_ids(tokenizer)}
    assert {"<|im_end|>", "<|im_start|>", "I", " I"} <= stops and not {" Gout", "."} & stops
    skipped = skipped_ids(tokenizer)
    assert all(t in skipped for t in tokenizer(" [1].", add_special_tokens=False)["input_ids"])
    assert not any(t in skipped for t in tokenizer(" Gout is", add_special_tokens=False)["input_ids"])
    passages = ["Answer: Gout is a form of arthritis [2]. It hurts.", "Answer: Lupus is"]
    opening = answer_opening(tokenizer, passages, finish=passages[0])
    assert tokenizer.decode(list(opening.source)).split() == "Gout is a form of arthritis It hurts".split()
    assert answer_opening(tokenizer, passages).source == ()
