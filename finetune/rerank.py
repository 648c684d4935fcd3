"""Train the cross-encoder re-ranker (:mod:`rag_app.retrieval.rerank`) on the MedQuAD training split, on a CPU.

    python -m finetune.data                      # once: <storage>/splits/{train,val,test}.jsonl
    python -m rag_app.index                      # once: the index its hard negatives are mined from
    python -m finetune.rerank --config finetune/recipes/minilm-rerank-cpu.yaml
    python -m finetune.rerank --config finetune/recipes/minilm-rerank-cpu.yaml --max_steps 20 --output_dir runs/rerank-smoke
    MEDQA_RERANK_MODEL=runs/minilm-rerank python -m rag_app ask "Is gout hereditary?"

Recipes are YAML files whose keys are fields of sentence-transformers' ``CrossEncoderTrainingArguments``
(``learning_rate``, ``per_device_train_batch_size``, ``max_steps``, ...) or of :class:`RerankDataArguments`; any key
can be overridden with a flag of the same name.

Examples come only from ``<storage>/splits/train.jsonl``. Each sampled pair is asked the way people write
(:func:`finetune.consumer.consumer_question`: a story, the topic as "it", misspellings; another NIH collection's
question on the same topic and type; or MedQuAD's own question; some messages ask a second thing). The pair
(and any pair with the same topic and question type, e.g. GHR's and GARD's copies) is a positive; negatives are the
project's own retriever's top candidates for that message over the train pairs alone (same topic with other
question types, other topics with similar words), the topic's other pages and one random pair. Validation asks the
validation pairs the same way and re-ranks the retriever's candidates over the whole index. LiveQA is never read.

The output folder holds the model in 16-bit safetensors, a model card (``README.md``) and ``medqa_rerank_run.json``
(the recipe, data counts, validation before and after, training time); ``MEDQA_RERANK_MODEL`` points the engine at it.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from finetune import UserError
from finetune.arguments import SplitArguments
from finetune.cli import parse_or_exit, run_cli
from finetune.consumer import ASKS, PRONOUNS, consumer_question, sibling_questions
from finetune.data import normalize_focus, select_rows
from finetune.raft import TrainOnlyRetriever
from rag_app.config import Settings
from rag_app.errors import IndexMissingError
from rag_app.files import atomic_path, write_json_atomic
from rag_app.index.topics import OVERVIEW_TYPE
from rag_app.llm.resolve import resolve_embed_model
from rag_app.retrieval.modes import build_retriever
from rag_app.retrieval.rerank import candidate_text, message_text

logger = logging.getLogger("finetune")

RUN_RECORD = "medqa_rerank_run.json"


@dataclass
class RerankDataArguments(SplitArguments):
    """Model and data options that ``CrossEncoderTrainingArguments`` doesn't cover.

    Attributes:
        model_name_or_path: Starting weights (the bundled all-MiniLM-L6-v2 by default); a classification head is added.
        num_layers: Keep only the first n transformer layers (each layer costs the same time at inference).
        max_length: Token budget of a (message, candidate) pair.
        max_train_samples: Training pairs asked (a seeded sample drawn by source prior); all when unset.
        max_eval_samples: Validation pairs asked; all when unset.
        queries_per_pair: Messages written for each sampled pair.
        consumer_fraction: Share of messages in consumer style; ``sibling_fraction`` another collection's question;
            the rest MedQuAD's own question.
        sibling_fraction: See ``consumer_fraction``.
        second_ask_fraction: Share of consumer messages that also ask a second thing the topic has a page for (both
            pages are positives).
        hard_negatives: Negatives per message from the retriever's top candidates.
        topic_negatives: Negatives per message from the topic's other pages (when not already among the hard ones).
        random_negatives: Negatives per message drawn at random.
        candidate_k: Retriever candidates mined per message (and re-ranked in validation).
        long_rate: Share of consumer messages written long (``finetune.consumer.consumer_question``'s ``long_rate``:
            several story sentences, sometimes another condition, more ways to ask).
        overview_negative: When a message asks something other than the overview, the topic's overview page is one of
            its topic negatives (a story naming a condition pulls the overview up; the asked page must beat it).
        type_balance: Draw training pairs less by how common their question type is (``finetune.data.select_rows``):
            at 0 a type is drawn as often as the split has it (overviews and symptoms crowd out causes and tests), at 1
            every type about equally.
        recipe: The recipe file, recorded in the run record (set by ``--config``).
    """

    model_name_or_path: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "Starting weights."})
    num_layers: int | None = field(default=None, metadata={"help": "Keep only the first n transformer layers."})
    max_length: int = field(default=128, metadata={"help": "Token budget of a (message, candidate) pair."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Training pairs asked."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validation pairs asked."})
    queries_per_pair: int = field(default=1, metadata={"help": "Messages written per sampled pair."})
    consumer_fraction: float = field(default=0.6, metadata={"help": "Share of consumer-style messages."})
    sibling_fraction: float = field(default=0.2, metadata={"help": "Share of another collection's question."})
    second_ask_fraction: float = field(default=0.2, metadata={"help": "Share of consumer messages asking a second thing."})
    hard_negatives: int = field(default=5, metadata={"help": "Negatives from the retriever's top candidates."})
    topic_negatives: int = field(default=2, metadata={"help": "Negatives from the topic's other pages."})
    random_negatives: int = field(default=1, metadata={"help": "Random negatives."})
    candidate_k: int = field(default=20, metadata={"help": "Retriever candidates per message."})
    weight_by_source: bool = field(default=True, metadata={"help": "Draw training pairs weighted by their collection's source prior."})
    long_rate: float = field(default=0.0, metadata={"help": "Share of consumer messages written long (a story of several sentences)."})
    overview_negative: bool = field(default=False, metadata={"help": "Always take the topic's overview as a negative when another aspect is asked."})
    type_balance: float = field(default=0.0, metadata={"help": "Draw pairs of rare question types more often (0: as the split has them, 1: evenly)."})

    def validate(self) -> None:
        """Raise :class:`UserError` for out-of-range values."""
        if self.max_length < 32:
            raise UserError(f"max_length={self.max_length} is too small for a message and a candidate; use e.g. 128")
        if self.num_layers is not None and self.num_layers < 1:
            raise UserError(f"num_layers={self.num_layers} must be at least 1 (or unset for all layers)")
        if not 0.0 <= self.long_rate <= 1.0:
            raise UserError(f"long_rate={self.long_rate} must be between 0 and 1")
        if not 0.0 <= self.type_balance <= 1.0:
            raise UserError(f"type_balance={self.type_balance} must be between 0 and 1")
        if not 0.0 <= self.consumer_fraction + self.sibling_fraction <= 1.0:
            raise UserError("consumer_fraction + sibling_fraction must be between 0 and 1")
        if self.queries_per_pair < 1 or self.candidate_k < 1:
            raise UserError("queries_per_pair and candidate_k must be at least 1")
        if self.hard_negatives + self.topic_negatives + self.random_negatives < 1:
            raise UserError("at least one negative per message is needed (hard_negatives, topic_negatives, random_negatives)")


def parse_args(argv: Sequence[str] | None = None) -> tuple[Any, RerankDataArguments, str | None]:
    """Parse a recipe and flags into ``(CrossEncoderTrainingArguments, RerankDataArguments, recipe path)``.

    Raises:
        UserError: On unknown keys, bad values, or a missing recipe file.
    """
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = argv[argv.index("--config") + 1] if "--config" in argv and argv.index("--config") + 1 < len(argv) else None
    training_args, data_args = parse_or_exit([CrossEncoderTrainingArguments, RerankDataArguments], argv, prog="python -m finetune.rerank")
    data_args.validate()
    return training_args, data_args, recipe


# ---- examples ----------------------------------------------------------------------------------------------------


@dataclass
class Message:
    """One training or validation message: its text, the pairs that answer it, and how it was worded."""

    text: str
    positives: list[str]
    style: str


def topic_index(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], dict[tuple[str, str], list[str]]]:
    """``({topic: its rows}, {(topic, question type): pair ids})`` over split rows (topics normalised)."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    by_aspect: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        key = normalize_focus(str(row.get("focus") or ""))
        if not key:
            continue
        by_topic.setdefault(key, []).append(row)
        by_aspect.setdefault((key, str(row.get("question_type") or "")), []).append(row["doc_id"])
    return by_topic, by_aspect


def write_messages(
    row: dict[str, Any],
    args: RerankDataArguments,
    rng: random.Random,
    siblings: dict[str, list[str]],
    by_topic: dict[str, list[dict[str, Any]]],
    by_aspect: dict[tuple[str, str], list[str]],
    other_topics: Sequence[str] = (),
) -> list[Message]:
    """``args.queries_per_pair`` messages asking what ``row``'s page answers, with every pair that answers each.

    A consumer-style message (:func:`finetune.consumer.consumer_question`; some ask a second thing the topic has a
    page for, whose pages are answers too), another collection's question on the same topic and type, or MedQuAD's
    own question. The pair and its copies of the same topic and type answer it. A long message's story may name one
    of ``other_topics`` too.
    """
    topic = normalize_focus(str(row.get("focus") or ""))
    qtype = str(row.get("question_type") or "")
    same = by_aspect.get((topic, qtype), [row["doc_id"]]) if topic else [row["doc_id"]]
    out = []
    for _ in range(args.queries_per_pair):
        draw = rng.random()
        positives = list(dict.fromkeys([row["doc_id"], *same]))
        if draw < args.consumer_fraction and row.get("focus"):
            text = consumer_question(str(row["focus"]), qtype, rng, long_rate=args.long_rate, other_topics=other_topics)
            style = "consumer"
            others = sorted({str(r.get("question_type") or "") for r in by_topic.get(topic, [])} - {qtype, ""})
            if others and rng.random() < args.second_ask_fraction:
                extra = rng.choice(others)
                text += " " + rng.choice(ASKS.get(extra) or ASKS["information"]).format(t=rng.choice(PRONOUNS[:2]))
                positives += [d for d in by_aspect.get((topic, extra), []) if d not in positives]
                style = "consumer, two asks"
        elif draw < args.consumer_fraction + args.sibling_fraction and row["doc_id"] in siblings:
            text, style = rng.choice(siblings[row["doc_id"]]), "sibling"
        else:
            text, style = row["question"], "medquad"
        out.append(Message(text, positives, style))
    return out


def pick_negatives(
    message: Message,
    found: Sequence[str],
    topic_rows: Sequence[dict[str, Any]],
    all_ids: Sequence[str],
    args: RerankDataArguments,
    rng: random.Random,
) -> dict[str, str]:
    """``{pair id: kind}`` of a message's negatives: the retriever's best non-answers, the topic's other pages, random."""
    answers = set(message.positives)
    chosen: dict[str, str] = {}
    for doc_id in found:
        if len(chosen) >= args.hard_negatives:
            break
        if doc_id not in answers:
            chosen[doc_id] = "retrieved"
    others = [r["doc_id"] for r in topic_rows if r["doc_id"] not in answers and r["doc_id"] not in chosen]
    wanted = args.topic_negatives
    if args.overview_negative and wanted:
        overviews = [r["doc_id"] for r in topic_rows if r.get("question_type") == OVERVIEW_TYPE and r["doc_id"] in others]
        if overviews:
            first = rng.choice(overviews)
            chosen[first] = "topic"
            others.remove(first)
            wanted -= 1
    for doc_id in rng.sample(others, min(wanted, len(others))):
        chosen[doc_id] = "topic"
    for _ in range(args.random_negatives):
        doc_id = rng.choice(all_ids)
        if doc_id not in answers and doc_id not in chosen:
            chosen[doc_id] = "random"
    return chosen


def build_examples(
    rows: Sequence[dict[str, Any]],
    topic_rows: Sequence[dict[str, Any]],
    retrieve: Callable[[str], Sequence[Any]],
    text_of: Callable[[str], str | None],
    args: RerankDataArguments,
    seed: int,
    show_progress: bool = True,
) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Training columns ``query``/``passage``/``label`` for ``rows``.

    Args:
        rows: The sampled training pairs.
        topic_rows: Every training row (where a topic's other pages and other collections' questions are found).
        retrieve: Ranked candidate nodes (one per pair) for a message, over the training pairs only.
        text_of: The re-ranker's text of a pair (:func:`rag_app.retrieval.rerank.candidate_text` of its first chunk), or None.
        args: Data options.
        seed: Seed of every draw.

    Returns:
        ``(columns, stats)``: stats count messages by wording and negatives by kind.
    """
    rng = random.Random(seed)
    siblings = sibling_questions(topic_rows, normalize_focus)
    by_topic, by_aspect = topic_index(topic_rows)
    all_ids = sorted(r["doc_id"] for r in topic_rows)
    other_topics = sorted({str(r["focus"]) for r in topic_rows if r.get("focus")})
    columns: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    stats: dict[str, int] = {"messages": 0, "positives": 0, "retrieved": 0, "topic": 0, "random": 0, "answer_retrieved_first": 0}
    for row in tqdm(rows, desc="re-ranker examples", unit="pair", disable=not show_progress):
        topic = normalize_focus(str(row.get("focus") or ""))
        for message in write_messages(row, args, rng, siblings, by_topic, by_aspect, other_topics):
            found = [n.node.ref_doc_id for n in retrieve(message.text)]
            stats["answer_retrieved_first"] += bool(found) and found[0] in message.positives
            negatives = pick_negatives(message, found, by_topic.get(topic, []), all_ids, args, rng)
            labelled = [(d, 1) for d in message.positives] + [(d, 0) for d in negatives]
            for doc_id, label in labelled:
                text = text_of(doc_id)
                if text is None:
                    continue
                columns["query"].append(message_text(message.text))
                columns["passage"].append(text)
                columns["label"].append(float(label))
            stats["messages"] += 1
            stats[message.style] = stats.get(message.style, 0) + 1
            stats["positives"] += len(message.positives)
            for kind in negatives.values():
                stats[kind] += 1
    return columns, stats


def validation_samples(
    rows: Sequence[dict[str, Any]],
    retrieve: Callable[[str], Sequence[Any]],
    args: RerankDataArguments,
    seed: int,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Re-ranking samples for the validation pairs: each asked as a message, with the retriever's candidates in order.

    Returns:
        ``CrossEncoderRerankingEvaluator`` samples (``query``, ``positive``, ``documents``), texts as the model reads them.
    """
    rng = random.Random(seed)
    siblings = sibling_questions(rows, normalize_focus)
    by_topic, by_aspect = topic_index(rows)
    samples = []
    for row in tqdm(rows, desc="validation messages", unit="pair", disable=not show_progress):
        for message in write_messages(row, args, rng, siblings, by_topic, by_aspect):
            nodes = list(retrieve(message.text))
            documents = [candidate_text(n.node) for n in nodes]
            positive = [candidate_text(n.node) for n in nodes if n.node.ref_doc_id in message.positives]
            samples.append({"query": message_text(message.text), "positive": positive or ["(not retrieved)"], "documents": documents})
    return samples


# ---- model --------------------------------------------------------------------------------------------------------


def starting_model(data_args: RerankDataArguments, device: str) -> tuple[Any, str]:
    """A ``CrossEncoder`` (one logit) built on the starting weights, cut to ``num_layers``; and the weights' path.

    sentence-transformers converts a bi-encoder folder (the bundled MiniLM) itself: its transformer weights and
    tokenizer are kept and a one-logit head is added.
    """
    from sentence_transformers.cross_encoder import CrossEncoder

    path = resolve_embed_model(data_args.model_name_or_path)
    config: dict[str, Any] = {"num_labels": 1}
    if data_args.num_layers:
        config["num_hidden_layers"] = data_args.num_layers
    try:
        model = CrossEncoder(path, max_length=data_args.max_length, device=device, config_kwargs=config, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"starting weights {data_args.model_name_or_path!r} could not be loaded: {str(err).splitlines()[0]}") from None
    return model, path


def is_cross_encoder(path: str) -> bool:
    """Whether the starting weights at ``path`` are already a re-ranker (a sequence-classification head), so training
    continues it rather than adding a new head."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def model_card(record: dict[str, Any]) -> str:
    """The ``README.md`` of a trained re-ranker: what it reads, its data, training, validation and use."""
    data, hp, val = record["data"], record["hyperparameters"], record.get("validation") or {}
    recipe = record.get("recipe") or {}
    values = recipe.get("values") or {}  # a run without a recipe file has flags only
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: text-ranking",
        "tags: [sentence-transformers, cross-encoder, reranker, medqa, medquad]",
        "license: apache-2.0",
        "---",
        "",
        f"# {record['name']}: a re-ranker for consumer health messages over MedQuAD",
        "",
        (
            f"A cross-encoder trained further from `{record['base_model']}` (a re-ranker of {hp['num_layers']} transformer layers) "
            if record.get("continued")
            else f"A cross-encoder built on `{record['base_model']}` (the first {hp['num_layers']} transformer layers, a new one-logit head), "
        )
        + "trained by `python -m finetune.rerank` (project medqa). It reads a message and a candidate QA pair's question "
        "with the first words of its answer, and scores whether the pair answers the message.",
        "",
        "## Data",
        "",
        f"- MedQuAD training split only (`{data['splits_dir']}/train.jsonl`, manifest hash `{data.get('manifest_hash')}`); "
        "splits are grouped by topic, so validation and test topics never appear here. LiveQA questions are never read.",
        f"- {data['messages']} messages for {data['pairs']} pairs: " + ", ".join(f"{n} {k}" for k, n in data["wording"].items()) + ".",
        *(
            [f"- Pairs drawn by question type to the power -{data['type_balance']} (`type_balance`): " + ", ".join(f"{n} {k}" for k, n in data["types"].items()) + "."]
            if data.get("type_balance")
            else []
        ),
        f"- {data['examples']} labelled pairs: {data['positives']} positives (the pair and any pair on the same topic and type), "
        f"negatives mined with the project's retriever over the training pairs ({data['retrieved']}), the topic's other pages "
        f"({data['topic']}) and random pairs ({data['random']}).",
        "",
        "## Training",
        "",
        f"- `BinaryCrossEntropyLoss` (positive weight {hp['pos_weight']:.2f}); {record['global_step']} steps of batch "
        f"{hp['per_device_train_batch_size']}, learning rate {hp['learning_rate']} ({hp['lr_scheduler_type']}, warmup "
        f"{values.get('warmup_ratio', hp['warmup_ratio'])}), max length {hp['max_length']}, "
        f"seed {hp['seed']}.",
        f"- {record['train_runtime_s']:.0f} s of training on {record['device']} ({record['wall_time_s']:.0f} s in all, data included).",
        "",
        "## Validation",
        "",
        f"Validation pairs asked the same way ({val.get('n', 'n/a')} messages); the project's retriever's top {hp['candidate_k']} "
        "candidates over the whole index, before and after re-ranking (MRR@10 counts the pair or its same-type copies):",
        "",
        "| order | MRR@10 | NDCG@10 |",
        "|---|---|---|",
        f"| retriever | {val.get('base_mrr@10', float('nan')):.4f} | {val.get('base_ndcg@10', float('nan')):.4f} |",
        f"| re-ranked | {val.get('mrr@10', float('nan')):.4f} | {val.get('ndcg@10', float('nan')):.4f} |",
        "",
        "## Use",
        "",
        "```bash",
        f"python -m finetune.rerank --config {recipe.get('path') or '<recipe>'}   # reproduces it",
        f"MEDQA_RERANK_MODEL={values.get('output_dir', record['output_dir'])} python -m rag_app ask \"Is gout hereditary?\"",
        "```",
        "",
        "The engine fuses its probability with the retriever's score (`MEDQA_RERANK_WEIGHT`). Data: MedQuAD "
        "(Ben Abacha & Demner-Fushman 2019), CC BY 4.0.",
        "",
    ]
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Build the examples, train, validate and write the model; the body of :func:`main`.

    Returns:
        The run record written to ``<output_dir>/medqa_rerank_run.json``.
    """
    training_args, data_args, recipe = parse_args(argv)

    import torch
    import yaml
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import set_seed


    started = time.time()
    device = "cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu"
    if device == "cpu":
        training_args.bf16 = training_args.fp16 = False
    show = not training_args.disable_tqdm
    output_dir = Path(training_args.output_dir)

    split_rows, train_ids, manifest, storage_dir, full_rows = select_rows(
        data_args, training_args.seed, data_args.weight_by_source, data_args.type_balance
    )
    settings = Settings(storage_dir=storage_dir, embed_dtype="float32")  # float32 queries: the same negatives on every CPU
    try:
        train_retriever = TrainOnlyRetriever(settings, train_ids, data_args.candidate_k, max(data_args.candidate_k, 20))
        val_retriever = build_retriever(settings.model_copy(update={"top_k": data_args.candidate_k}))
    except IndexMissingError as err:
        raise UserError(f"the re-ranker's hard negatives are mined with the index: {err}") from None
    first_chunks = train_retriever.gold_nodes()

    def text_of(doc_id: str) -> str | None:
        node = first_chunks.get(doc_id)
        return candidate_text(node) if node is not None else None

    columns, stats = build_examples(
        split_rows["train"], full_rows["train"], train_retriever.retrieve, text_of, data_args, training_args.seed, show
    )
    samples = validation_samples(split_rows["val"], val_retriever.retrieve, data_args, training_args.seed + 1, show)
    positives = sum(columns["label"])
    pos_weight = (len(columns["label"]) - positives) / max(positives, 1.0)
    logger.info("re-ranker data: %d labelled pairs from %d messages (%s), %d validation messages", len(columns["label"]), stats["messages"], stats, len(samples))

    set_seed(training_args.seed)
    model, base_path = starting_model(data_args, device)
    continued = is_cross_encoder(base_path)
    evaluator = CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name="val", batch_size=64)
    before = evaluator(model)
    dataset = Dataset.from_dict(columns).shuffle(seed=training_args.seed)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight))
    training_args.output_dir = str(storage_dir / "rerank-trainer")  # checkpoints and logs stay out of the model folder
    trainer = CrossEncoderTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss, evaluator=evaluator)
    result = trainer.train()
    after = evaluator(model)

    validation = {
        "n": len(samples),
        **{f"base_{k}": before.get(f"val_base_{k}") for k in ("mrr@10", "ndcg@10")},
        **{k: after.get(f"val_{k}") for k in ("mrr@10", "ndcg@10")},
        "untrained_mrr@10": before.get("val_mrr@10"),
    }
    wording = {k: v for k, v in stats.items() if k in {"consumer", "consumer, two asks", "sibling", "medquad"}}
    record: dict[str, Any] = {
        "name": output_dir.name,
        "base_model": data_args.model_name_or_path,
        "base_model_path": base_path,
        "continued": continued,
        "output_dir": str(output_dir),
        "device": device,
        "recipe": {"path": recipe, "values": yaml.safe_load(Path(recipe).read_text()) if recipe else None},
        "data": {
            "splits_dir": str(storage_dir / "splits"),
            "manifest_hash": manifest.get("content_hash"),
            "pairs": len(split_rows["train"]),
            "type_balance": data_args.type_balance,
            "types": dict(Counter(str(r.get("question_type") or "") for r in split_rows["train"]).most_common()),
            "messages": stats["messages"],
            "wording": wording,
            "examples": len(columns["label"]),
            "positives": int(positives),
            **{k: stats[k] for k in ("retrieved", "topic", "random", "answer_retrieved_first")},
        },
        "hyperparameters": {
            "num_layers": data_args.num_layers or model.model.config.num_hidden_layers,
            "max_length": data_args.max_length,
            "candidate_k": data_args.candidate_k,
            "pos_weight": pos_weight,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "learning_rate": training_args.learning_rate,
            "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
            "warmup_ratio": training_args.warmup_ratio,
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "seed": training_args.seed,
        },
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "validation": validation,
        "log_history": trainer.state.log_history,
    }
    record["wall_time_s"] = round(time.time() - started, 1)
    model.model.to(torch.bfloat16)  # 16-bit weights to commit; the engine loads them in float32 or bfloat16
    with atomic_path(output_dir, directory=True) as tmp:
        model.save_pretrained(str(tmp), create_model_card=False)
        (tmp / "README.md").write_text(model_card(record), encoding="utf-8")
        write_json_atomic(tmp / RUN_RECORD, record, sort_keys=True)
    logger.info(
        "done in %.0f s: %d steps, validation MRR@10 %.4f -> %.4f (retriever %.4f); model in %s",
        record["wall_time_s"], record["global_step"], validation["untrained_mrr@10"] or 0, validation["mrr@10"] or 0,
        validation["base_mrr@10"] or 0, output_dir,
    )
    print(json.dumps({k: record[k] for k in ("data", "validation", "train_runtime_s", "wall_time_s")}, indent=2))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for user mistakes)."""
    return run_cli(lambda: (run(argv), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
