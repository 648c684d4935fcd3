"""Retrieval-aware fine-tuning data (RAFT, Zhang et al. 2024): teach the model to answer *from* its sources.

Each training example is the exact prompt the query engine builds at inference (the question plus the
top-k passages from the project's own retriever, numbered by :func:`rag_app.text.prompts.rag_messages`):

- an *oracle* example (share ``raft_oracle_fraction``) holds the question's own QA pair (its first
  chunk) among ``k - 1`` retrieved distractors, at a random position; its target is the reference answer
  with the citation ``[n]`` of that passage after the first sentence;
- a *distractor-only* example holds ``k`` retrieved passages from other topics (no pair with the
  question's focus); its target is the engine's abstain answer (:data:`rag_app.text.prompts.ABSTAIN_ANSWER`).

No leakage: distractors come from the index restricted to train-split pairs (every other indexed pair,
validation and test included, is excluded from retrieval), so no validation or test QA pair ever appears
in a training prompt. Prompts are built once and cached in ``<storage>/raft/`` under a key made of the
split manifest hash and every option that shapes them.

    python -m finetune.raft --config finetune/recipes/smollm2-135m-raft-cpu.yaml   # build + cache the prompts
    python -m finetune.train --config finetune/recipes/smollm2-135m-raft-cpu.yaml  # (builds them too if needed)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from finetune import UserError
from finetune.arguments import RaftArguments
from rag_app.text.words import SENTENCE_END, STATEMENT_END, words

logger = logging.getLogger("finetune")

RAFT_FORMAT_VERSION = 2


@dataclass
class RaftExample:
    """One training example: the engine's messages and the assistant target."""

    doc_id: str
    kind: str  # "oracle" or "distractor"
    gold_position: int | None  # 1-based citation number of the gold passage; None for distractor-only
    messages: list[dict[str, str]]
    answer: str
    source_ids: list[str]
    source_nodes: list[str] = field(default_factory=list)  # chunk ids, in citation order
    style: str = "medquad"  # how the question is worded: "medquad", "sibling" or "consumer"


def focus_key(text: Any) -> str:
    """The normalised focus used to keep same-topic pairs out of distractor-only prompts."""
    from finetune.data import normalize_focus

    return normalize_focus(str(text or ""))


def covers(passage: str, answer: str, n: int = 5, n_words: int = 60, threshold: float = 0.3) -> bool:
    """True when ``passage`` holds a good part of the answer's opening (MedQuAD repeats answers across topics).

    Share of the word ``n``-grams of the answer's first ``n_words`` words that occur in the passage.
    """
    head = words(answer)[:n_words]
    grams = {tuple(head[i : i + n]) for i in range(max(len(head) - n + 1, 0))}
    if not grams:
        return False
    tokens = words(passage)
    have = {tuple(tokens[i : i + n]) for i in range(max(len(tokens) - n + 1, 0))}
    return len(grams & have) / len(grams) >= threshold


def cited_answer(answer: str, position: int, count: Callable[[str], int], max_tokens: int) -> str:
    """The reference answer cut to ``max_tokens`` at a sentence end, citing ``[position]`` after its first sentence.

    Args:
        answer: The reference answer.
        position: 1-based number of the gold passage in the prompt.
        count: Token counter of the model's tokenizer.
        max_tokens: Budget of the target.
    """
    from rag_app.text.prompts import truncate_to_tokens

    text = " ".join(answer.split())
    if count(text) > max_tokens:
        cut = truncate_to_tokens(text, max_tokens, count).removesuffix(" …")
        ends = [m.end() for m in SENTENCE_END.finditer(cut)]
        text = cut[: ends[-1]] if ends and ends[-1] > len(cut) * 0.4 else cut
    match = STATEMENT_END.search(text)  # cite after the first statement, not after a heading question
    if match is None:
        return f"{text} [{position}]"
    return f"{text[: match.start()]} [{position}]{text[match.start():]}"


class PromptBuilder:
    """Builds prompts with the query engine's own functions (:mod:`rag_app.text.prompts`), so they can't drift.

    Args:
        tokenizer: The model's tokenizer (its token counts set the passage budgets, as at inference).
        settings: Settings of the engine (``context_window``, ``max_new_tokens``, ``source_tokens``, ...).
    """

    def __init__(self, tokenizer: Any, settings: Any) -> None:
        from rag_app.text.prompts import token_counter

        self.settings = settings
        self.count = token_counter(tokenizer)  # the model's token counts set the passage budgets, as at inference

    def question(self, question: str) -> str:
        """The question as the engine cleans it."""
        from rag_app.text.prompts import clean_question

        return clean_question(question, self.count, self.settings.max_question_tokens)[0]

    def messages(self, question: str, nodes: Sequence[Any]) -> list[dict[str, str]]:
        """The engine's messages for a clean question and its sources."""
        from rag_app.text.prompts import answer_messages

        s = self.settings
        return answer_messages(
            question, list(nodes), self.count, context_window=s.context_window, max_new_tokens=s.max_new_tokens,
            source_tokens=s.source_tokens, top_source_tokens=s.top_source_tokens,
        )


def build_examples(
    rows: Sequence[dict[str, Any]],
    retrieve: Callable[[str], Sequence[Any]],
    gold_nodes: dict[str, Any],
    builder: PromptBuilder,
    args: RaftArguments,
    seed: int,
    topic_rows: Sequence[dict[str, Any]] | None = None,
) -> tuple[list[RaftExample], dict[str, int]]:
    """RAFT examples for split rows.

    Args:
        rows: Split rows (``question``, ``answer``, ``doc_id``, ``focus``, ``question_type``).
        retrieve: Returns ranked nodes (one per QA pair) from the train-only index for a question.
        gold_nodes: The first chunk of each row's own QA pair, by ``doc_id``.
        builder: The engine-backed prompt builder.
        args: RAFT options.
        seed: Seed of the oracle/distractor draw, the question wording and the gold positions.
        topic_rows: Every row of the split (default ``rows``): where same-topic questions of other
            collections and a topic's other question types are looked up.

    Returns:
        ``(examples, stats)``; rows without an indexed gold chunk, or with too few distractors, are
        skipped and counted.
    """
    from llama_index.core.schema import NodeWithScore

    from finetune.consumer import consumer_question, sibling_questions, topic_types
    from finetune.data import normalize_focus
    from rag_app.text.prompts import ABSTAIN_ANSWER

    rng = random.Random(seed)
    k = args.raft_top_k
    siblings = sibling_questions(topic_rows or rows, normalize_focus)
    types = topic_types(topic_rows or rows, normalize_focus)
    examples: list[RaftExample] = []
    stats = {
        "oracle": 0, "distractor": 0, "skipped_no_gold": 0, "skipped_few_distractors": 0, "gold_retrieved": 0,
        "gold_in_top_k": 0, "medquad": 0, "sibling": 0, "consumer": 0,
    }
    for row in rows:
        gold = gold_nodes.get(row["doc_id"])
        if gold is None:
            stats["skipped_no_gold"] += 1
            continue
        focus = focus_key(row.get("focus"))
        draw = rng.random()
        if draw < args.raft_consumer_fraction and row.get("focus"):
            style = "consumer"
            others = sorted(types.get(focus, set()) - {row.get("question_type")})
            question = consumer_question(str(row["focus"]), str(row.get("question_type") or ""), rng, others)
        elif draw < args.raft_consumer_fraction + args.raft_sibling_fraction and row["doc_id"] in siblings:
            style, question = "sibling", rng.choice(siblings[row["doc_id"]])
        else:
            style, question = "medquad", row["question"]
        question = builder.question(question)
        oracle = rng.random() < args.raft_oracle_fraction
        found = list(retrieve(question))
        stats["gold_retrieved"] += any(n.node.ref_doc_id == row["doc_id"] for n in found)
        top = found[:k]
        gold_rank = next((i for i, n in enumerate(top, start=1) if n.node.ref_doc_id == row["doc_id"]), None)
        stats["gold_in_top_k"] += gold_rank is not None
        # Distractor-only prompts must really lack the answer: no pair on the same topic, and no passage
        # repeating the answer's opening (MedQuAD copies text across related topics).
        distractors = [
            n for n in found
            if n.node.ref_doc_id != row["doc_id"]
            and (oracle or ((not focus or focus_key(n.node.metadata.get("focus")) != focus) and not covers(n.node.get_content(), row["answer"])))
        ]
        if oracle and args.raft_retrieved_order and gold_rank is not None:
            chosen, position = top, gold_rank  # exactly what the engine would show
        else:
            need = k - 1 if oracle else k
            if len(distractors) < need:
                stats["skipped_few_distractors"] += 1
                continue
            chosen = list(distractors[:need])
            position = None
            if oracle:
                position = rng.randint(1, k)
                chosen.insert(position - 1, NodeWithScore(node=gold, score=None))
        answer = cited_answer(row["answer"], position, builder.count, args.raft_answer_tokens) if oracle else ABSTAIN_ANSWER
        examples.append(
            RaftExample(
                doc_id=row["doc_id"],
                kind="oracle" if oracle else "distractor",
                gold_position=position,
                messages=builder.messages(question, chosen),
                answer=answer,
                source_ids=[n.node.ref_doc_id for n in chosen],
                source_nodes=[n.node.node_id for n in chosen],
                style=style,
            )
        )
        stats["oracle" if oracle else "distractor"] += 1
        stats[style] += 1
    return examples, stats


#: The settings that shape a RAFT prompt: retrieval (which sources, in which order) and the engine's budgets.
PROMPT_SETTINGS = (
    "retrieval_mode", "top_k", "candidate_k", "embed_model", "chunk_size", "chunk_overlap", "question_weight", "focus_weight",
    "type_weight", "overview_weight", "sentence_weight", "source_weight", "source_asked_weight", "source_prior", "pointer_weight", "typo_similarity", "source_tokens", "top_source_tokens",
    "context_window",
    "max_new_tokens", "max_question_tokens",
)


def prompt_settings(settings: Any) -> dict[str, Any]:
    """The values of :data:`PROMPT_SETTINGS` (recorded with a RAFT run, so its prompts can be rebuilt)."""
    return {name: getattr(settings, name) for name in PROMPT_SETTINGS if hasattr(settings, name)}


def cache_key(manifest_hash: str, split: str, n_rows: int, args: RaftArguments, seed: int, tokenizer_name: str, settings: Any) -> str:
    """Hash of everything that shapes the cached prompts."""
    blob = json.dumps(
        {
            "version": RAFT_FORMAT_VERSION,
            "manifest": manifest_hash,
            "split": split,
            "rows": n_rows,
            "seed": seed,
            "args": {f: getattr(args, f) for f in RaftArguments.__dataclass_fields__},
            "tokenizer": tokenizer_name,
            "engine": [settings.context_window, settings.max_new_tokens, settings.max_question_tokens, settings.source_tokens,
                       settings.top_source_tokens],
            "index": [settings.collection, settings.embed_model, settings.retrieval_mode, settings.chunk_size, settings.chunk_overlap],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_examples(path: Path, examples: Sequence[RaftExample]) -> None:
    """Write examples as JSONL atomically (a crash never leaves a half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from rag_app.files import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for ex in examples:
            handle.write(json.dumps(vars(ex), ensure_ascii=False) + "\n")


def read_examples(path: Path) -> list[RaftExample]:
    """Read cached examples."""
    return [RaftExample(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class TrainOnlyRetriever:
    """The project's retriever over the index, restricted to train-split QA pairs."""

    def __init__(self, settings: Any, train_ids: set[str], top_k: int, candidate_k: int) -> None:
        from rag_app.index.chroma import load_nodes
        from rag_app.retrieval.modes import build_retriever

        self.nodes = load_nodes(settings)
        indexed = {n.ref_doc_id for n in self.nodes}
        missing = len(train_ids - indexed)
        if missing == len(train_ids):
            raise UserError(
                f"none of the {len(train_ids)} train pairs is in the index {settings.collection!r} at {settings.storage_dir}; "
                "build it from the same corpus with `python -m rag_app.index`"
            )
        if missing:
            logger.warning("%d of %d train pairs are not in the index; they get no example", missing, len(train_ids))
        self.excluded = frozenset(indexed - train_ids)
        # Take more than k: the gold pair and same-focus pairs are dropped from distractor-only prompts.
        # float32 query vectors on every machine, so a recipe rebuilds the same prompts wherever it runs.
        ret_settings = settings.model_copy(update={"top_k": top_k, "candidate_k": candidate_k, "embed_dtype": "float32"})
        self.retriever = build_retriever(ret_settings, nodes=[n for n in self.nodes if n.ref_doc_id in train_ids], exclude=self.excluded)

    def gold_nodes(self) -> dict[str, Any]:
        """The first chunk of every indexed QA pair, by pair id."""
        first: dict[str, Any] = {}
        for node in self.nodes:
            doc = node.ref_doc_id
            if doc not in first or _chunk_no(node.node_id) < _chunk_no(first[doc].node_id):
                first[doc] = node
        return first

    def retrieve(self, question: str) -> list[Any]:
        """Ranked train-split passages (one per pair)."""
        return self.retriever.retrieve(question)


def _chunk_no(node_id: str) -> int:
    tail = node_id.rpartition("::")[2]
    return int(tail) if tail.isdigit() else 0


def load_or_build(
    split_rows: dict[str, list[dict[str, Any]]],
    train_ids: set[str],
    manifest: dict[str, Any],
    tokenizer: Any,
    tokenizer_name: str,
    args: RaftArguments,
    seed: int,
    storage_dir: Path,
    show_progress: bool = True,
    settings: Any = None,
    topic_rows: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> tuple[dict[str, list[RaftExample]], dict[str, Any]]:
    """RAFT examples for each split in ``split_rows`` (e.g. train and val), from the cache when it has them.

    Args:
        split_rows: Rows to turn into examples, by split name.
        train_ids: Every train-split pair id: the only pairs retrieval may return.
        manifest: The split manifest (its hash keys the cache).
        tokenizer: The model's tokenizer.
        tokenizer_name: Name recorded in the cache key.
        args: RAFT options.
        seed: Seed of the draws.
        storage_dir: Storage folder with the index; the cache goes to ``<storage_dir>/raft``.
        show_progress: Show a progress bar.
        settings: Engine and index settings (default: from the environment, with ``storage_dir``).
        topic_rows: Every row of each split, where same-topic questions are looked up (default: ``split_rows``).

    Raises:
        UserError: If the index is missing or doesn't hold the train pairs.
    """
    from tqdm.auto import tqdm

    from rag_app.config import Settings
    from rag_app.errors import IndexMissingError

    args.validate()
    settings = settings or Settings(storage_dir=storage_dir)
    out: dict[str, list[RaftExample]] = {}
    stats: dict[str, Any] = {"retrieval": prompt_settings(settings)}
    retriever: TrainOnlyRetriever | None = None
    builder = PromptBuilder(tokenizer, settings)
    for split, rows in split_rows.items():
        ids = ",".join(sorted(r["doc_id"] for r in rows))
        key = cache_key(manifest.get("content_hash", "") + hashlib.sha256(ids.encode()).hexdigest(), split, len(rows), args, seed, tokenizer_name, settings)
        path = Path(storage_dir) / "raft" / f"{split}-{key}.jsonl"
        if path.is_file():
            out[split] = read_examples(path)
            stats[split] = {"cache": str(path), "from_cache": True, **_kinds(out[split])}
            logger.info("RAFT %s: %d cached examples from %s", split, len(out[split]), path)
            continue
        if retriever is None:
            if not train_ids:
                raise UserError("RAFT needs the train split to build its train-only index filter")
            try:
                retriever = TrainOnlyRetriever(settings, train_ids, args.raft_top_k + 6, args.raft_candidate_k)
            except IndexMissingError as err:
                raise UserError(f"RAFT prompts need the index: {err}") from None
            gold = retriever.gold_nodes()
        rows_iter = tqdm(rows, desc=f"RAFT prompts ({split})", unit="q", disable=not show_progress)
        examples, counts = build_examples(
            rows_iter, retriever.retrieve, gold, builder, args, seed + (0 if split == "train" else 1), (topic_rows or {}).get(split)
        )
        write_examples(path, examples)
        out[split] = examples
        stats[split] = {"cache": str(path), "from_cache": False, **counts}
        logger.info("RAFT %s: %s -> %s", split, counts, path)
    return out, stats


def _kinds(examples: Sequence[RaftExample]) -> dict[str, int]:
    return {"oracle": sum(e.kind == "oracle" for e in examples), "distractor": sum(e.kind == "distractor" for e in examples)}


def main(argv: Sequence[str] | None = None) -> int:
    """Build and cache the RAFT prompts of a training recipe without training."""
    from finetune.cli import run_cli

    def _run() -> int:
        from transformers import AutoTokenizer

        from finetune.arguments import parse_args
        from finetune.data import select_rows
        from finetune.runs import resolve_base

        training_args, model_args, data_args = parse_args(argv)
        if not data_args.raft:
            raise UserError("this recipe does not set `raft: true`; pass --raft true to build retrieval-aware prompts")
        split_rows, train_ids, manifest, storage_dir, full_rows = select_rows(data_args, training_args.seed)
        resolved = resolve_base(model_args.model_name_or_path, storage_dir)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        _, stats = load_or_build(
            split_rows, train_ids, manifest, tokenizer, resolved.name, data_args, training_args.seed, storage_dir, topic_rows=full_rows
        )
        print(json.dumps(stats, indent=2))
        return 0

    return run_cli(_run)


if __name__ == "__main__":
    sys.exit(main())
