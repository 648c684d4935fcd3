"""When may the re-ranker overrule the topic names? Decided on two dev sets, neither of them a reported one.

    python benchmarks/tune_declines.py        # the index named by MEDQA_* (the full MedQuAD index)

A question that names a topic in full with no source about it is declined without generating
(:func:`rag_app.answer.plan.source_coverage` says ``uncovered``). This prints, for thresholds on the re-ranker's
probability for the top source above which that decline would be overruled, how many questions would be declined:

* answerable LiveQA *tune*-half questions (a MedQuAD pair holds a reference answer): every decline there is lost;
* 200 questions of the *validation* split with their topics taken out of retrieval (knowledge absent, as
  ``python -m eval.compare --exclude_test_from_index`` does for the test split): declining is right there.

"never" is the engine's rule (topic names first; the re-ranker decides only where they say nothing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THRESHOLDS = (0.5, 0.7, 0.9, 0.95, None)


def main() -> int:
    from llama_index.core.llms import MockLLM
    from tqdm.auto import tqdm

    from eval.arguments import CompareArguments
    from eval.questions import exclusion_set, load_liveqa_rows, load_test_split
    from rag_app.answer.engine import build_query_engine
    from rag_app.answer.plan import UNCOVERED, source_coverage
    from rag_app.config import Settings
    from rag_app.index.chroma import load_nodes
    from rag_app.retrieval.modes import build_retriever, topic_matcher
    from rag_app.retrieval.rerank import RELEVANCE_KEY

    settings = Settings()
    nodes = load_nodes(settings)
    liveqa, _ = load_liveqa_rows(CompareArguments(questions="liveqa", half="tune", limit=1000), settings)
    absent, _ = load_test_split(CompareArguments(split_dir=str(settings.storage_dir / "splits-val"), limit=200), settings)
    sets = {
        "LiveQA tune half, answerable": ([r for r in liveqa if r["relevant"]], frozenset()),
        "validation split, knowledge absent": (absent, exclusion_set(absent, nodes)),
    }
    counts: dict[str, list[int]] = {}
    for name, (rows, exclude) in sets.items():
        candidates = max(settings.candidate_k, 60 if exclude else 20)
        retriever = build_retriever(settings.model_copy(update={"candidate_k": candidates}), nodes=nodes, exclude=exclude)
        engine = build_query_engine(settings, llm=MockLLM(), retriever=retriever)
        matcher = topic_matcher(retriever)
        declined = [0] * len(THRESHOLDS)
        for row in tqdm(rows, desc=name, unit="q"):
            question = engine.clean_question(row["question"])[0]
            sources = engine.select_sources(question, engine.ranked(question))
            if source_coverage(question, sources, matcher) != UNCOVERED:
                continue
            top = float(sources[0].node.metadata.get(RELEVANCE_KEY, 0.0)) if sources else 0.0
            for i, threshold in enumerate(THRESHOLDS):
                declined[i] += threshold is None or top < threshold
        counts[f"{name} ({len(rows)})"] = declined

    print("\ndeclined without generating, by the re-ranker probability that overrules the topic names")
    print("| set | " + " | ".join(f"≥ {t}" if t is not None else "never (default)" for t in THRESHOLDS) + " |")
    print("|---|" + "---|" * len(THRESHOLDS))
    for name, declined in counts.items():
        print(f"| {name} | " + " | ".join(str(d) for d in declined) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
