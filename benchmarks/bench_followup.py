"""Retrieval over two-turn conversations: does a follow-up find the right topic?

    MEDQA_STORAGE_DIR=<full MedQuAD index> python benchmarks/bench_followup.py --json /tmp/followup.json

A dev set built from MedQuAD's topics and question types, with phrasings written for this benchmark (not
MedQuAD's templates and not the resolver's own rules), in three kinds of 100 conversations each:

* **pronoun**: turn 1 asks what a topic is; turn 2 asks another of its question types referring back
  ("How is it treated?", "Can this condition be prevented?"). Relevant: that topic's pairs of that type.
* **ellipsis**: turn 1 asks a question type of topic A ("How is asthma treated?"); turn 2 names topic B only
  ("What about gout?", "And for gout?"). Relevant: B's pairs of the type asked in turn 1.
* **standalone**: turn 1 is about topic A; turn 2 is a complete question about topic B. Relevant: B's pairs
  of that type. Turn 2 must be left exactly as written.

Rows, all through the project's retriever, MRR@10 and hit@3 (a QA pair counts at its best rank):
* **turn 2 alone**: what every message got before conversations were understood;
* **turns joined**: turn 1 and turn 2 as one query;
* **ceiling**: turn 2 written out in full (the reference reworded with the topic: what a perfect rewrite gives);
* **medqa**: ``build_chat_engine().retrieve(turn 2, chat_history=[turn 1])``.
The extra latency of resolving a message (``standalone_question``) is timed per conversation.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._rows import emit_rows  # noqa: E402

K = 10
KINDS = ("pronoun", "ellipsis", "standalone")
#: Follow-ups referring back, per MedQuAD question type; "{t}" is the written-out form (the ceiling).
REFERRING = {
    "treatment": [("How is it treated?", "How is {t} treated?"), ("Can it be cured?", "Can {t} be cured?"),
                  ("What are the treatment options for this condition?", "What are the treatment options for {t}?")],
    "symptoms": [("What are its symptoms?", "What are the symptoms of {t}?"), ("What signs does it cause?", "What signs does {t} cause?")],
    "causes": [("What causes it?", "What causes {t}?"), ("Why does this disease happen?", "Why does {t} happen?")],
    "exams and tests": [("How is it diagnosed?", "How is {t} diagnosed?"), ("Is there a test for it?", "Is there a test for {t}?")],
    "inheritance": [("Is it inherited?", "Is {t} inherited?"), ("Can parents pass it to their children?", "Can parents pass {t} to their children?")],
    "genetic changes": [("Which genes are involved in it?", "Which genes are involved in {t}?"),
                        ("What genetic changes lead to this condition?", "What genetic changes lead to {t}?")],
    "frequency": [("How common is it?", "How common is {t}?"), ("How many people get it?", "How many people get {t}?")],
    "outlook": [("What is the outlook for people with it?", "What is the outlook for people with {t}?"),
                ("What is the prognosis for this condition?", "What is the prognosis for {t}?")],
    "prevention": [("Can it be prevented?", "Can {t} be prevented?"), ("How can I avoid it?", "How can I avoid {t}?")],
    "susceptibility": [("Who is at risk for it?", "Who is at risk for {t}?")],
    "research": [("Is any research being done on it?", "Is any research being done on {t}?")],
}
OPENERS = ["What is {t}?", "Can you tell me about {t}?", "I just heard about {t}. What is it?"]
ELLIPSES = ["What about {t}?", "And {t}?", "How about for {t}?", "Same question for {t}."]


def topics_by_type(documents: Sequence[Any]) -> dict[str, dict[str, set[str]]]:
    """``{topic: {question type: {doc ids}}}`` over MedQuAD documents (topics compared case-blind)."""
    from finetune.data import normalize_focus

    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    names: dict[str, str] = {}
    for doc in documents:
        meta = doc.metadata or {}
        focus, qtype = str(meta.get("focus") or ""), str(meta.get("question_type") or "")
        key = normalize_focus(focus)
        if key and qtype:
            names.setdefault(key, focus)
            out[names[key]][qtype].add(doc.id_)
    return out


def build_conversations(documents: Sequence[Any], n: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` conversations of each kind: ``{kind, turn1, turn2, ceiling, relevant}``."""
    rng = random.Random(seed)
    table = topics_by_type(documents)
    topics = sorted(table)
    with_info = [t for t in topics if "information" in table[t] and set(table[t]) & set(REFERRING)]
    typed = [(t, q) for t in topics for q in sorted(table[t]) if q in REFERRING]
    out: list[dict[str, Any]] = []
    for topic in rng.sample(with_info, n):
        qtype = rng.choice(sorted(set(table[topic]) & set(REFERRING)))
        follow, full = rng.choice(REFERRING[qtype])
        out.append({"kind": "pronoun", "turn1": rng.choice(OPENERS).format(t=topic), "turn2": follow,
                    "ceiling": full.format(t=topic), "relevant": sorted(table[topic][qtype])})
    for topic_a, qtype in rng.sample(typed, n):
        others = [t for t in topics if t != topic_a and qtype in table[t]]
        topic_b = rng.choice(others)
        _, full = rng.choice(REFERRING[qtype])
        out.append({"kind": "ellipsis", "turn1": full.format(t=topic_a), "turn2": rng.choice(ELLIPSES).format(t=topic_b),
                    "ceiling": full.format(t=topic_b), "relevant": sorted(table[topic_b][qtype])})
    for topic_b, qtype in rng.sample(typed, n):
        topic_a = rng.choice([t for t in topics if t != topic_b])
        _, full = rng.choice(REFERRING[qtype])
        question = full.format(t=topic_b)
        out.append({"kind": "standalone", "turn1": rng.choice(OPENERS).format(t=topic_a), "turn2": question,
                    "ceiling": question, "relevant": sorted(table[topic_b][qtype])})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="MedQuAD folder (default: MEDQA_CORPUS, else ../shared/data/medquad)")
    parser.add_argument("--per-kind", type=int, default=100, help="conversations of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    from llama_index.core.llms import MockLLM

    from bench_liveqa import _default_corpus
    from corpus import load_corpus
    from eval.metrics import ranking_metrics
    from rag_app.config import Settings
    from rag_app.answer.conversation import build_chat_engine, standalone_question
    from rag_app.retrieval.modes import topic_matcher

    settings = Settings(top_k=K)
    documents, _ = load_corpus([args.corpus or _default_corpus()])
    conversations = build_conversations(documents, args.per_kind, args.seed)
    engine = build_chat_engine(settings, llm=MockLLM())
    retrieve = engine.query_engine.retrieve
    matcher = topic_matcher(engine.query_engine.retriever)
    for conv in conversations[:3]:  # warm-up
        engine.retrieve(conv["turn2"], [{"role": "user", "content": conv["turn1"]}])

    ranked: dict[str, dict[str, list[list[str]]]] = {kind: defaultdict(list) for kind in KINDS}
    resolve_ms: list[float] = []
    unchanged = 0
    for conv in conversations:
        history = [{"role": "user", "content": conv["turn1"]}]
        queries = {"turn 2 alone": conv["turn2"], "turns joined": f"{conv['turn1']} {conv['turn2']}", "ceiling": conv["ceiling"]}
        for name, query in queries.items():
            ranked[conv["kind"]][name].append([n.node.ref_doc_id for n in retrieve(query)])
        started = time.perf_counter()
        resolution = standalone_question(conv["turn2"], history, matcher)
        resolve_ms.append((time.perf_counter() - started) * 1000)
        unchanged += conv["kind"] == "standalone" and resolution.question == conv["turn2"]
        ranked[conv["kind"]]["medqa"].append([n.node.ref_doc_id for n in engine.retrieve(conv["turn2"], history)])

    rows = []
    print(f"{len(conversations)} conversations ({args.per_kind} per kind) over {len(documents)} MedQuAD pairs\n")
    print("| kind | retrieval of turn 2 | hit@3 | MRR@10 |\n|---|---|---|---|")
    for kind in KINDS:
        relevant = [c["relevant"] for c in conversations if c["kind"] == kind]
        scores = {}
        for name, lists in ranked[kind].items():
            mrr = statistics.fmean(ranking_metrics(lists, relevant, K)[f"mrr@{K}"])
            hit = statistics.fmean(ranking_metrics(lists, relevant, 3)["hit@3"])
            scores[name] = mrr
            print(f"| {kind} | {name} | {hit:.3f} | {mrr:.3f} |")
        ratio = scores["medqa"] / scores["ceiling"] if scores["ceiling"] else float("nan")
        rows.append((f"follow-up MRR@10, {kind}", scores["medqa"], f"ceiling {scores['ceiling']:.3f}", f"{ratio:.2f}", ">= 0.9"))
    p50 = statistics.median(resolve_ms)
    print(f"\nstandalone follow-ups left unchanged: {unchanged}/{args.per_kind}; resolution p50 {p50:.2f} ms\n")
    rows.append(("follow-up resolution p50, ms", p50, "-", "-", "<= 10"))
    emit_rows(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.exit(main())
