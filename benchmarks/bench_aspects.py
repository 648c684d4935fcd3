"""Does a consumer message that names a condition and asks one thing get the page for that thing first?

    MEDQA_STORAGE_DIR=<full MedQuAD index> python benchmarks/bench_aspects.py --json /tmp/aspects.json

Messages are written for this benchmark (not MedQuAD's templates, not ``finetune.consumer``'s training phrasings):
a short story naming a condition, sometimes misspelt, then one question about one aspect of it (treatment,
inheritance, outlook, tests, ...). Topics come from the held-out MedQuAD test split (``<storage>/splits/test.jsonl``,
``python -m finetune.data``), so neither fine-tune nor re-ranker has seen their pages. Relevant: the topic's pages of
the asked question type in the index (the split keeps one page of each question; the same question asked by another
collection, "Is Peutz-Jeghers syndrome inherited ?" in GHR and in GARD, is as relevant; the figures counting only the
split's own pages are printed too). Each message is compared with the same question in MedQuAD's own template wording (the
pair's question, e.g. "What are the treatments for Gout ?"), through the same engine in the same run, with and
without the re-ranker (``build_query_engine().retrieve``). The figure is hit@1 of the consumer wording over hit@1 of
the template wording (target >= 0.9). Each topic and aspect is also asked in a second, held-out wording
(:data:`ASKS_HELD_OUT`) that the question-type cue words were not written from.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._rows import emit_rows  # noqa: E402

K = 10
#: How a person asks each aspect once the story has named the condition ("it" is the condition).
ASKS = {
    "treatment": ["What can be done to make it better?", "Which medicines or therapies are used for it?",
                  "what are the options for dealing with it", "Is there anything that helps with it?"],
    "inheritance": ["Could our children get it from us?", "Is this something passed down in families?",
                    "can i give it to my kids", "Does it run in families?"],
    "outlook": ["What can we expect in the long run?", "Will he be able to live a normal life with it?",
                "does it get better over time or worse", "What are the chances of getting over it?"],
    "exams and tests": ["How do doctors confirm it?", "What tests would they run to find out?", "how would a doctor know for sure"],
    "causes": ["Why does someone get this?", "What brings it on?", "what is behind it"],
    "symptoms": ["What signs should we watch for?", "How does it show itself?", "what does it do to the body"],
    "prevention": ["Is there a way to avoid getting it?", "What can I do so I don't get it?"],
    "susceptibility": ["Who is most likely to get it?", "Are some people more likely to get it than others?"],
    "genetic changes": ["Which gene is involved?", "Is there a gene change behind it?"],
    "frequency": ["How many people have it?", "Is it a common thing?"],
    "complications": ["What problems can it lead to later?", "Can it cause other health problems?"],
}
#: The same aspects asked another way, written apart from the cue words of ``rag_app.index.topics.TYPE_CUES`` and
#: never used to choose them: a check that the cues are not just this benchmark's phrasings.
ASKS_HELD_OUT = {
    "treatment": ["what should she be taking for it?", "Is there a pill or a shot for this?", "how do you get rid of it",
                  "What do doctors usually do about it?"],
    "inheritance": ["Will my grandkids have it too?", "did he get it from his father?", "is it genetic, like from the parents?",
                    "Could I have passed it to my baby?"],
    "outlook": ["will it ever go away?", "How long do people live with this?", "is it going to come back after treatment",
                "Will she get better?"],
    "exams and tests": ["How can we find out if he really has it?", "what kind of check-up shows it?", "Is there a blood test for it?"],
    "causes": ["How did she end up with this?", "what makes it happen", "Where does it come from?"],
    "symptoms": ["What does it feel like?", "how would I know if I have it", "What are the warning signs?"],
    "prevention": ["How do we keep the rest of the family from getting it?", "can it be stopped before it starts?"],
    "susceptibility": ["Who usually gets this?", "Am I at higher chance of having it too?"],
    "genetic changes": ["What is wrong in the DNA?", "which mutation causes it"],
    "frequency": ["How rare is it?", "do lots of people get this?"],
    "complications": ["What could go wrong because of it?", "Does it lead to other illnesses?"],
}
#: How GARD's symptom pages open: a table of Human Phenotype Ontology terms with frequencies, not prose.
HPO_TABLE = "Human Phenotype Ontology provides the following list"
STORIES = [
    "My {rel} was diagnosed with {t} last month.", "I've had {t} for a while now.", "Our doctor thinks my {rel} has {t}.",
    "my {rel} just found out she has {t}", "A friend told me about {t}.", "I'm worried about {t}.",
    "We were told at the clinic that my {rel} might have {t}.",
]
RELATIVES = ["mom", "dad", "son", "daughter", "wife", "husband", "grandfather", "sister", "neighbor's kid"]


def typo(word: str, rng: random.Random) -> str:
    """One slip of the keyboard in a long word: a letter dropped or two letters swapped."""
    if len(word) < 6:
        return word
    i = rng.randrange(2, len(word) - 2)
    return word[:i] + word[i + 1 :] if rng.random() < 0.5 else word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def message(topic: str, qtype: str, rng: random.Random, asks: dict[str, list[str]] = ASKS) -> str:
    """A consumer message naming ``topic`` in a short story and asking about ``qtype`` in one of ``asks``'s wordings."""
    name = topic.lower() if rng.random() < 0.6 else topic
    if rng.random() < 0.3:  # the condition misspelt, as people write it
        name = " ".join(typo(w, rng) for w in name.split())
    story = rng.choice(STORIES).format(rel=rng.choice(RELATIVES), t=name)
    return f"{story} {rng.choice(asks[qtype])}"


def aspect_set(rows: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` items from split rows, one per (topic, aspect) at most: a message asking in :data:`ASKS`'s wording, the
    same topic and aspect asked in :data:`ASKS_HELD_OUT`'s (``held_out``), the template question, the relevant ids."""
    from finetune.data import normalize_focus

    by_aspect: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        topic = normalize_focus(str(row.get("focus") or ""))
        if topic and row.get("question_type") in ASKS:
            by_aspect[(topic, row["question_type"])].append(row)
    # Only topics with more than one kind of page: otherwise there is nothing to choose between.
    kinds: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        kinds[normalize_focus(str(row.get("focus") or ""))].add(str(row.get("question_type") or ""))
    keys = sorted(k for k in by_aspect if len(kinds[k[0]]) > 1)
    rng, held_out_rng = random.Random(seed), random.Random(seed + 1)
    out = []
    for key in rng.sample(keys, min(n, len(keys))):
        pages = sorted(by_aspect[key], key=lambda r: r["doc_id"])
        page = rng.choice(pages)
        own = {r["doc_id"] for r in pages}
        out.append(
            {
                "message": message(str(page["focus"]), key[1], rng),
                "held_out": message(str(page["focus"]), key[1], held_out_rng, ASKS_HELD_OUT),
                "template": page["question"],
                "aspect": key[1],
                "topic": key[0],
                "relevant": own,  # with_same_questions replaces it by a larger set
                "own": own,
                "table": all(HPO_TABLE in str(r.get("answer") or "") for r in pages),
            }
        )
    return out


def with_same_questions(items: Sequence[dict[str, Any]], documents: Sequence[Any]) -> None:
    """Add to each item's relevant ids every indexed page on its topic of its question type.

    The split keeps one page per question (``finetune.data`` drops the others as duplicates); the index has them all,
    and another collection's answer to the same question answers the message as well.

    Example:
        >>> from types import SimpleNamespace as Doc
        >>> items = [{"topic": "gout", "aspect": "causes", "relevant": {"a"}}]
        >>> docs = [Doc(doc_id="b", metadata={"focus": "Gout", "question_type": "causes"}),
        ...         Doc(doc_id="c", metadata={"focus": "Gout", "question_type": "treatment"})]
        >>> with_same_questions(items, docs); sorted(items[0]["relevant"])
        ['a', 'b']
    """
    from finetune.data import normalize_focus

    pages: dict[tuple[str, str], set[str]] = defaultdict(set)
    for doc in documents:
        meta = doc.metadata or {}
        pages[(normalize_focus(str(meta.get("focus") or "")), str(meta.get("question_type") or ""))].add(doc.doc_id)
    for item in items:
        item["relevant"] = set(item["relevant"]) | pages.get((item["topic"], item["aspect"]), set())


def load_aspect_set(settings: Any, split: str = "test", n: int = 300, seed: int = 7, split_dir: Path | None = None) -> list[dict[str, Any]]:
    """:func:`aspect_set` of a split's topics, relevant: every indexed page on the topic of the asked type
    (:func:`with_same_questions`, the corpus read from ``settings.corpus``)."""
    from corpus import load_corpus
    from finetune.data import read_split

    split_dir = split_dir or settings.storage_dir / "splits"
    items = aspect_set(read_split(split_dir / f"{split}.jsonl", required=("question", "doc_id")), n, seed)
    documents, _ = load_corpus(settings.corpus)
    with_same_questions(items, documents)
    return items


def hit_at_1(engine: Any, items: Sequence[dict[str, Any]], field: str) -> tuple[float, float, dict[str, list[int]], list[int], list[int]]:
    """hit@1 and MRR@10 of ``engine.retrieve`` on ``items[field]``, the hits per aspect, each item's hit, and each
    item's hit counting only the split's own pages (``items["own"]``)."""
    hits, rr, own = [], [], []
    per: dict[str, list[int]] = defaultdict(list)
    for item in items:
        ranked = [n.node.ref_doc_id for n in engine.retrieve(item[field])]
        rank = next((i for i, d in enumerate(ranked[:K], start=1) if d in item["relevant"]), None)
        hits.append(int(rank == 1))
        rr.append(1.0 / rank if rank else 0.0)
        per[item["aspect"]].append(int(rank == 1))
        own.append(int(bool(ranked) and ranked[0] in item["own"]))
    return sum(hits) / len(hits), sum(rr) / len(rr), per, hits, own


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="messages (one per topic and aspect)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--split-dir", help="split folder (default: <storage>/splits)")
    parser.add_argument("--split", default="test", choices=("test", "val"),
                        help="topics of the test split (the benchmark) or the validation split (the aspect dev set tune_liveqa.py chooses on)")
    parser.add_argument("--show", type=int, default=0, help="print this many messages with their first source")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from llama_index.core.llms import MockLLM

    from rag_app.config import Settings
    from rag_app.answer.engine import build_query_engine
    from rag_app.llm.load import load_embed_model

    settings = Settings(top_k=K)
    split_dir = Path(args.split_dir) if args.split_dir else settings.storage_dir / "splits"
    items = load_aspect_set(settings, args.split, args.n, args.seed, split_dir)
    embed = load_embed_model(settings)
    engines = {
        "fielded": build_query_engine(settings, llm=MockLLM(), embed_model=embed, rerank=False),
        "re-ranked": build_query_engine(settings, llm=MockLLM(), embed_model=embed),
    }
    print(f"{len(items)} messages from {split_dir / f'{args.split}.jsonl'}; e.g. {items[0]['message']!r} (template {items[0]['template']!r})")
    figures = {}
    for name, engine in engines.items():
        for field in ("message", "held_out", "template"):
            figures[(name, field)] = hit_at_1(engine, items, field)
    print(f"| {'retrieval':<10} | {'wording':<9} | {'hit@1':>6} | {'MRR@10':>6} |")
    print(f"|{'-' * 12}|{'-' * 11}|{'-' * 8}|{'-' * 8}|")
    for (name, field), (hit, mrr, *_) in figures.items():
        print(f"| {name:<10} | {field:<9} | {hit:>6.3f} | {mrr:>6.3f} |")
    print("\nhit@1 per aspect, re-ranked (consumer wording / held-out wording / template wording; n):")
    consumer, held_out, template = (figures[("re-ranked", f)][2] for f in ("message", "held_out", "template"))
    for aspect in sorted(consumer):
        c, h, t = consumer[aspect], held_out[aspect], template[aspect]
        print(f"  {aspect:<16} {sum(c) / len(c):.2f} / {sum(h) / len(h):.2f} / {sum(t) / len(t):.2f}  ({len(c)})")
    prose = [i for i, item in enumerate(items) if not item["table"]]
    if len(prose) < len(items):  # the retriever ranks GARD below the overviews NLM's answers quote (the source prior)
        c, t = (sum(figures[("re-ranked", f)][3][i] for i in prose) / len(prose) for f in ("message", "template"))
        print(f"\nwithout the {len(items) - len(prose)} messages whose asked page is a GARD table of phenotype terms: re-ranked "
              f"consumer wording {c:.3f}, template wording {t:.3f} ({c / t:.2f}x)")
    c, t = (sum(figures[("re-ranked", f)][4]) / len(items) for f in ("message", "template"))
    print(f"counting only the split's own pages (one page per question): re-ranked consumer "
          f"wording {c:.3f}, template wording {t:.3f} ({c / t:.2f}x)")
    for item in items[: args.show]:
        top = engines["re-ranked"].retrieve(item["message"])[0].node
        print(f"  {item['message']!r} -> {top.metadata.get('question')!r} ({'relevant' if top.ref_doc_id in item['relevant'] else 'not relevant'})")
    rows = []
    for name in engines:
        t = figures[(name, "template")][0]
        for field, label in (("message", "consumer wording"), ("held_out", "held-out wording")):
            c = figures[(name, field)][0]
            rows.append((f"aspect page first, {label} ({name})", c, f"{t:.3f} (template wording)", f"{c / t:.2f}" if t else "-", ">= 0.9x"))
    print()
    emit_rows(rows, args.json, target_width=8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
