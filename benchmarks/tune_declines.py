"""Which topic names may decline a question, and when may the re-ranker overrule them? Decided on dev sets only.

    python benchmarks/tune_declines.py            # the index named by MEDQA_* (the full MedQuAD index)
    python benchmarks/tune_declines.py --model    # and the model's own declines by decline bias

A question that names a topic in full with no source about it is declined without generating
(:func:`rag_app.answer.plan.source_coverage` says ``uncovered``). This counts such declines, three sets:

* answerable LiveQA *tune*-half questions (a MedQuAD pair holds a reference answer): every decline there is lost;
* 300 questions of the *validation* split in consumer wording (``finetune.consumer.consumer_question``; their
  pairs are in the index): every decline there is lost too;
* 200 questions of the *validation* split with their topics taken out of retrieval (knowledge absent, as
  ``python -m eval.compare --exclude_test_from_index`` does for the test split): declining is right there.

First table: which names count. "every full name" is the rule before names had to be written as names
(:meth:`rag_app.index.topics.FocusMatcher.written`) and before common words stopped counting
(:meth:`~rag_app.index.topics.FocusMatcher.common`); the next columns set ``COMMON_NAME_SHARE``; the last is the
engine's rule, where sources about a topic the message names in part also keep the answer
(``named_in_part_keeps``: "Shock" named by accident in a message about hands, the sources on hand disorders).
Second table: thresholds on the re-ranker's probability for the top source above which a decline would be
overruled ("never" is the engine's rule).
Third table (``--model``, the configured LLM read through transformers): where the names leave it open, the model
chooses at its first token between declining and opening with its top source; the columns are ``MEDQA_DECLINE_BIAS``
values (logits taken from the decline's first token), counting the questions it would decline.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THRESHOLDS = (0.5, 0.7, 0.9, 0.95, None)
BIASES = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
SHARES = (None, float("inf"), 0.005, 0.01, 0.02, 0.05)


def _table(title: str, heads: list[str], counts: dict[str, list[int]]) -> None:
    print(f"\n{title}")
    print("| set | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for name, row in counts.items():
        print(f"| {name} | " + " | ".join(str(d) for d in row) + " |")


def decline_margin(llm, plan) -> float | None:
    """How many logits the model prefers the decline's first token over its opening's, for a plan where it may choose
    (None where it may not: the names or the re-ranker decided, or the answer has no opening)."""
    import torch

    from rag_app.llm.decoding import llm_model, llm_tokenizer

    opening = plan.parts[0].opening if plan.parts and not plan.declines else None
    if opening is None or not opening.alternatives:
        return None
    tokenizer = llm_tokenizer(llm)
    ids = tokenizer.apply_chat_template(plan.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        logits = llm_model(llm)(**ids).logits[0, -1]
    return float(logits[list(opening.alternatives)].max() - logits[opening.tokens[0]])


def main() -> int:
    import argparse

    from llama_index.core.llms import MockLLM
    from tqdm.auto import tqdm

    import rag_app.index.topics as topics
    from eval.arguments import CompareArguments
    from eval.questions import exclusion_set, load_liveqa_rows, load_test_split
    from finetune.consumer import consumer_question
    from rag_app.answer.engine import build_query_engine
    from rag_app.answer.plan import UNCOVERED, source_coverage
    from rag_app.config import Settings
    from rag_app.index.chroma import load_nodes
    from rag_app.retrieval.modes import build_retriever, topic_matcher
    from rag_app.retrieval.rerank import RELEVANCE_KEY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="store_true", help="also count the model's own declines by decline bias (slower)")
    args = parser.parse_args()
    settings = Settings()
    nodes = load_nodes(settings)
    llm = MockLLM()
    if args.model:
        from rag_app.llm.load import load_llm

        llm = load_llm(settings.model_copy(update={"llm_backend": "transformers"}))
    by_bias: dict[str, list[int]] = {}
    liveqa, _ = load_liveqa_rows(CompareArguments(questions="liveqa", half="tune", limit=1000), settings)
    validation, _ = load_test_split(CompareArguments(split_dir=str(settings.storage_dir / "splits-val"), limit=10**6), settings)
    rng = random.Random(1)
    consumer = [{"question": consumer_question(r["focus"], r["question_type"], rng)} for r in rng.sample(validation, 300)]
    absent, _ = load_test_split(CompareArguments(split_dir=str(settings.storage_dir / "splits-val"), limit=200), settings)
    sets = {
        "LiveQA tune half, answerable: declined, wrongly": ([r for r in liveqa if r["relevant"]], frozenset()),
        "validation split, consumer wording: declined, wrongly": (consumer, frozenset()),
        "validation split, knowledge absent: declined, rightly": (absent, exclusion_set(absent, nodes)),
    }
    by_share: dict[str, list[int]] = {}
    by_threshold: dict[str, list[int]] = {}
    default_share = topics.COMMON_NAME_SHARE
    for name, (rows, exclude) in sets.items():
        candidates = max(settings.candidate_k, 60 if exclude else 20)
        retriever = build_retriever(settings.model_copy(update={"candidate_k": candidates}), nodes=nodes, exclude=exclude)
        engine = build_query_engine(settings, llm=llm, retriever=retriever)
        biased = [0] * len(BIASES)
        matcher = topic_matcher(retriever)
        shares, declined = [0] * (len(SHARES) + 1), [0] * len(THRESHOLDS)
        for row in tqdm(rows, desc=name.split(":")[0], unit="q"):
            question = engine.clean_question(row["question"])[0]
            ranked = engine.ranked(question)
            sources = engine.select_sources(question, ranked)
            for i, share in enumerate(SHARES):
                topics.COMMON_NAME_SHARE = share if share is not None else float("inf")
                written = matcher.written
                if share is None:
                    matcher.written = lambda text, name: True  # the old rule: every full name counts
                shares[i] += source_coverage(question, sources, matcher, named_in_part_keeps=False) == UNCOVERED
                matcher.written = written
            topics.COMMON_NAME_SHARE = default_share
            shares[-1] += source_coverage(question, sources, matcher) == UNCOVERED
            if args.model:
                margin = decline_margin(llm, engine.plan(row["question"], ranked))
                for i, bias in enumerate(BIASES):
                    biased[i] += margin is not None and margin > bias
            if source_coverage(question, sources, matcher) != UNCOVERED:
                continue
            top = float(sources[0].node.metadata.get(RELEVANCE_KEY, 0.0)) if sources else 0.0
            for i, threshold in enumerate(THRESHOLDS):
                declined[i] += threshold is None or top < threshold
        label = f"{name.split(':')[0]} ({len(rows)}):{name.split(':')[1]}"
        by_share[label], by_threshold[label] = shares, declined
        if args.model:
            by_bias[label] = biased

    _table(
        f"declined without generating, by which names count (default: written as names, common share {default_share})",
        ["every full name"] + [("no name is common" if s == float("inf") else f"common share ≥ {s}") for s in SHARES[1:]]
        + [f"common share ≥ {default_share}, sources on a topic named in part keep the answer (default)"],
        by_share,
    )
    _table(
        "declined without generating, by the re-ranker probability that overrules the topic names",
        [f"≥ {t}" if t is not None else "never (default)" for t in THRESHOLDS],
        by_threshold,
    )
    if args.model:
        _table(
            f"declined by the model where the names leave it open, by MEDQA_DECLINE_BIAS (default {settings.decline_bias})",
            [f"{b:g}" for b in BIASES],
            by_bias,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
