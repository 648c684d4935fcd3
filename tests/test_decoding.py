"""Answers never loop: the repeated-sentence stop and trim (rag_app.decoding)."""

from __future__ import annotations

from pathlib import Path

from rag_app.decoding import answer_start_ids, repeat_start, repeats, repetition_stop, trim_repetition

LOOP = "Gout is a form of arthritis [1]. Gout is a form of arthritis [1]. Gout is a form of arthritis [1]."


def test_a_repeated_sentence_is_cut_and_a_clean_answer_is_untouched() -> None:
    assert trim_repetition(LOOP) == "Gout is a form of arthritis [1]."
    clean = "Gout is a form of arthritis [1]. It is treated with colchicine. - Rest. - Ice. - Rest. - Ice."
    assert not repeats(clean) and trim_repetition(clean) == clean  # short list items may recur
    words = "take the medicine with food and water every morning before you go out today " * 3
    assert repeats(words) and trim_repetition(words).split() == words.split()[: len(words.split()) // 3]  # one pass kept
    assert repeat_start("Yes. Yes. Yes.") is None


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
    from rag_app.decoding import StreamTrimmer

    trimmer = StreamTrimmer()
    shown = "".join(trimmer.feed(t) for t in LOOP.split(" ")[:1] + [" " + t for t in LOOP.split(" ")[1:]]) + trimmer.finish()
    assert shown == "Gout is a form of arthritis [1]."
    clean = "Gout is arthritis [1]. Gout attacks are treated with colchicine [1]."
    trimmer = StreamTrimmer()
    pieces = [trimmer.feed(c) for c in clean]
    assert "".join(pieces) + trimmer.finish() == clean
    assert sum(1 for p in pieces if p) > 40  # streamed as it comes, not held back to the end


def test_a_repeat_at_the_very_end_is_cut_before_a_citation_is_added() -> None:
    """The last sentence counts once it ends with a full stop, so adding " [1]" after it can't reveal a repeat."""
    from rag_app.decoding import citation_to_add, repeats, trim_repetition

    answer = "6. Bleeding after bowel movements.\n7. Bleeding after bowel movements."
    trimmed = trim_repetition(answer)
    assert trimmed == "6. Bleeding after bowel movements.\n7."
    passage = "Bleeding after bowel movements is a sign to see a doctor."
    assert not repeats(trimmed + citation_to_add(trimmed, [passage]))
    assert trim_repetition("Gout is a form of arthritis. It is painful.") == "Gout is a form of arthritis. It is painful."
