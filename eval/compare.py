"""Score base, fine-tuned and retrieval-augmented systems on held-out questions.

    python -m eval.compare                                   # base, ft, base+rag, ft+rag, raft, raft+rag on 200 test questions
    python -m eval.compare --questions liveqa --systems base,base+rag,extractive,raft,raft+rag   # real consumer questions
    python -m eval.compare --limit 50 --exclude_test_from_index
    python -m eval.compare --ft_model runs/smollm2-135m-lora/merged --systems base,ft,ft+rag
    python -m eval.compare --config eval/recipes/smollm2-cpu.yaml

The test questions come from exactly ``<storage>/splits/test.jsonl`` written by ``python -m finetune.data``
(its manifest hash goes in the report). ``--questions liveqa`` scores real consumer messages instead: the
TREC 2017 LiveQA training questions with their NLM reference answers (evaluation only, never trained on), in
the fixed half ``--half`` (``report`` is held out; ``tune`` is the one to choose settings on), split into
*answerable* (a MedQuAD pair is relevant, :func:`corpus.liveqa.derive_labels`) and *rest*. Generation is greedy and batched over the query engine's own
prompts. Writes ``<storage>/reports/<timestamp>/`` with report.md, metrics.json, details.jsonl and plots,
and prints the table.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from rag_app.errors import MedQAError

logger = logging.getLogger("eval")

DEFAULT_SYSTEMS = "base,ft,base+rag,ft+rag,raft,raft+rag"
#: Where ``python -m finetune.train --config finetune/recipes/smollm2-135m-lora-cpu.yaml`` writes its merged model.
DEFAULT_FT_MODEL = "runs/smollm2-135m-lora/merged"
#: Pairs compared with a paired bootstrap test, when both systems ran.
PAIRS = [
    ("ft", "base"),
    ("base+rag", "base"),
    ("ft+rag", "ft"),
    ("ft+rag", "base+rag"),
    ("ft+rag", "base"),
    ("raft+rag", "ft+rag"),
    ("raft+rag", "ft"),
    ("raft+rag", "base"),
    ("raft+rag", "raft"),
    ("raft+rag", "base+rag"),
    ("raft+rag", "extractive"),
    ("raft+rag", "oracle"),
    ("oracle", "extractive"),
]
#: Systems whose model is a fine-tune this project trains: a missing model is reported and skipped.
FINETUNED_SYSTEMS = {"ft", "ft+rag", "raft", "raft+rag"}


class EvalError(MedQAError, ValueError):
    """A user mistake in the evaluation set-up (missing split, bad system spec, ...)."""


@dataclass
class CompareArguments:
    """Options of ``python -m eval.compare`` (also settable in a YAML file passed with ``--config``)."""

    systems: str = field(
        default=DEFAULT_SYSTEMS,
        metadata={
            "help": "Comma-separated systems: base, ft, base+rag, ft+rag, raft, raft+rag (the retrieval-aware fine-tune), "
            "reference (returns the reference answer: a sanity upper bound), extractive (the top source's answer "
            "text cut to the answer budget, citing [1]), oracle (of the top-k sources' answer texts cut the same way, the one "
            "that scores best against the reference: the ceiling of answering by copying one source)."
        },
    )
    extra_systems: list[str] = field(
        default_factory=list,
        metadata={"help": "More systems as NAME=MODEL[:rag][:k=N], e.g. raft+rag=runs/raft/merged:rag:k=3."},
    )
    base_model: Optional[str] = field(default=None, metadata={"help": "Base model (default: the bundled SmolLM2-135M-Instruct)."})
    ft_model: str = field(default=DEFAULT_FT_MODEL, metadata={"help": "Merged question->answer fine-tune (finetune/recipes/smollm2-135m-lora-cpu.yaml)."})
    raft_model: Optional[str] = field(
        default=None, metadata={"help": "Merged retrieval-aware (RAFT) fine-tune (default: MEDQA_FINETUNED_LLM, what the chat offers)."}
    )
    questions: str = field(
        default="medquad",
        metadata={"help": "Question set: medquad (the held-out test split) or liveqa (real consumer questions, TREC 2017 LiveQA train)."},
    )
    liveqa: Optional[str] = field(
        default=None, metadata={"help": "LiveQA training XML folder (default: ../shared/data/liveqa-train, else data/liveqa-train)."}
    )
    half: str = field(default="report", metadata={"help": "liveqa: the half to score: report (held out), tune or all."})
    corpus: Optional[str] = field(default=None, metadata={"help": "Corpus (MedQuAD folder) the index was built from (default: MEDQA_CORPUS)."})
    split_dir: Optional[str] = field(default=None, metadata={"help": "Folder with test.jsonl + manifest.json (default: <storage>/splits)."})
    limit: int = field(default=200, metadata={"help": "Number of test questions (a seeded random sample)."})
    seed: int = field(default=0, metadata={"help": "Seed for the question sample and bootstrap."})
    top_k: Optional[int] = field(default=None, metadata={"help": "Sources per RAG answer (default: MEDQA_TOP_K)."})
    exclude_test_from_index: bool = field(
        default=False,
        metadata={"help": "Knowledge-absent setting: retrieval never returns the test questions' own QA pairs nor any pair with the same focus."},
    )
    batch_size: int = field(default=8, metadata={"help": "Questions per generation batch (batches group prompts of similar length)."})
    cache: bool = field(
        default=True,
        metadata={"help": "Reuse answers already generated for the same model weights, prompt and budget (<storage>/cache/eval-answers.jsonl); an interrupted run resumes."},
    )
    max_new_tokens: int = field(default=200, metadata={"help": "Answer length budget (greedy decoding)."})
    output_dir: Optional[str] = field(default=None, metadata={"help": "Report folder (default: <storage>/reports/<timestamp>)."})
    storage_dir: Optional[str] = field(default=None, metadata={"help": "Storage folder (default: MEDQA_STORAGE_DIR)."})
    judge_llm: Optional[str] = field(
        default=None, metadata={"help": "Judge for ragas Faithfulness/ResponseRelevancy: hub id, local dir or .gguf. Off by default."}
    )
    judge_api_base: Optional[str] = field(default=None, metadata={"help": "OpenAI-compatible judge endpoint (e.g. a local vLLM server)."})
    judge_model: Optional[str] = field(default=None, metadata={"help": "Model name at --judge_api_base."})
    no_plots: bool = field(default=False, metadata={"help": "Skip the PNG plots."})


@dataclass
class SystemSpec:
    """One system under evaluation."""

    name: str
    model: Optional[str]  # None for the reference, extractive and oracle systems
    rag: bool
    top_k: int
    kind: str = "llm"  # "llm", "reference", "extractive" or "oracle"


def parse_args(argv: Sequence[str] | None = None) -> CompareArguments:
    """Parse CLI flags, with defaults from ``--config FILE.yaml`` when given."""
    import yaml
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(CompareArguments, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file of options; flags given on the command line win")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise EvalError("--config needs a YAML file")
        path = Path(argv[i + 1])
        if not path.is_file():
            raise EvalError(f"config file {str(path)!r} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        known = {f for f in CompareArguments.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EvalError(f"unknown option(s) {unknown} in {path}; see `python -m eval.compare --help`")
        parser.set_defaults(**values)
    (args, extra) = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=False)
    return args


def system_specs(args: CompareArguments, settings: Any) -> list[SystemSpec]:
    """The systems to run, from ``--systems`` and ``--extra_systems``.

    Raises:
        EvalError: For an unknown system name or a malformed spec.
    """
    top_k = args.top_k or settings.top_k
    from rag_app.config import BUNDLED_LLM

    base = args.base_model or BUNDLED_LLM
    ft = args.ft_model or DEFAULT_FT_MODEL
    raft = args.raft_model or settings.finetuned_llm
    builtin = {
        "base": SystemSpec("base", base, False, top_k),
        "ft": SystemSpec("ft", ft, False, top_k),
        "base+rag": SystemSpec("base+rag", base, True, top_k),
        "ft+rag": SystemSpec("ft+rag", ft, True, top_k),
        "raft": SystemSpec("raft", raft, False, top_k),
        "raft+rag": SystemSpec("raft+rag", raft, True, top_k),
        "reference": SystemSpec("reference", None, False, top_k, kind="reference"),
        "extractive": SystemSpec("extractive", None, True, top_k, kind="extractive"),
        "oracle": SystemSpec("oracle", None, True, top_k, kind="oracle"),
    }
    specs = []
    for name in [s.strip() for s in args.systems.split(",") if s.strip()]:
        if name not in builtin:
            raise EvalError(f"unknown system {name!r}; use {sorted(builtin)} or --extra_systems NAME=MODEL[:rag][:k=N]")
        specs.append(builtin[name])
    for spec in args.extra_systems:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise EvalError(f"bad system spec {spec!r}; expected NAME=MODEL[:rag][:k=N]")
        parts = rest.split(":")
        model, flags = parts[0], parts[1:]
        rag, k = False, top_k
        for flag in flags:
            if flag == "rag":
                rag = True
            elif flag.startswith("k=") and flag[2:].isdigit():
                k = int(flag[2:])
            else:
                raise EvalError(f"bad flag {flag!r} in system spec {spec!r}; use :rag and :k=N")
        specs.append(SystemSpec(name, model, rag, k))
    if not specs:
        raise EvalError("no systems to evaluate; pass --systems")
    return specs


def load_test_split(args: CompareArguments, settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A seeded sample of ``--limit`` questions from exactly ``test.jsonl``, and its manifest.

    Raises:
        EvalError: If the split or its manifest is missing.
    """
    from finetune.data import read_manifest, read_split

    split_dir = Path(args.split_dir) if args.split_dir else settings.storage_dir / "splits"
    test = split_dir / "test.jsonl"
    manifest = read_manifest(split_dir)
    if not test.is_file() or manifest is None:
        raise EvalError(f"no test split in {split_dir}; write it with `python -m finetune.data` (or pass --split_dir)")
    rows = read_split(test, required=("question", "answer", "doc_id"))
    if args.limit <= 0:
        raise EvalError(f"--limit must be positive, got {args.limit}")
    rows = sorted(rows, key=lambda r: r["doc_id"])
    rows = random.Random(args.seed).sample(rows, min(args.limit, len(rows)))
    rows = [{**r, "references": [r["answer"]], "relevant": [r["doc_id"]], "subset": None} for r in rows]
    return rows, manifest


def default_liveqa_dir() -> Path:
    """``../shared/data/liveqa-train`` when it exists (beside a checkout), else ``data/liveqa-train``."""
    shared = Path("..") / "shared" / "data" / "liveqa-train"
    return shared if shared.is_dir() else Path("data") / "liveqa-train"


def load_liveqa_rows(args: CompareArguments, settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The LiveQA training questions of ``--half`` as evaluation rows, with their relevant MedQuAD pairs.

    Each row: ``question`` (``SUBJECT. MESSAGE`` as written), ``references`` (NLM's answers; ROUGE scores the
    best-matching one), ``relevant`` (MedQuAD pair ids holding >= 80% of a reference's 5-grams), ``subset``
    (``answerable`` when there is one, else ``rest``).

    Raises:
        EvalError: For an unknown half or a missing LiveQA folder.
    """
    import hashlib

    from corpus import load_corpus
    from corpus.liveqa import answers_of, derive_labels, half_of, load_liveqa

    if args.half not in ("tune", "report", "all"):
        raise EvalError(f"--half {args.half!r} is not one of tune, report, all")
    path = Path(args.liveqa) if args.liveqa else default_liveqa_dir()
    if not path.exists():
        raise EvalError(f"no LiveQA questions at {path}; get them with `python -m corpus.download liveqa-train` or pass --liveqa")
    questions = load_liveqa([path])
    documents, _ = load_corpus(settings.corpus)
    labels = derive_labels(questions, answers_of(documents))
    rows = [
        {
            "question": q.query,
            "answer": q.answers[0] if q.answers else "",
            "references": q.answers,
            "relevant": sorted(labels.get(q.qid, ())),
            "subset": "answerable" if q.qid in labels else "rest",
            "doc_id": q.qid,
            "focus": "; ".join(f for f in q.focus if f),
        }
        for q in questions
        if q.answers and (args.half == "all" or half_of(q.qid) == args.half)
    ]
    if args.limit <= 0:
        raise EvalError(f"--limit must be positive, got {args.limit}")
    rows = sorted(rows, key=lambda r: r["doc_id"])
    if args.limit < len(rows):
        rows = sorted(random.Random(args.seed).sample(rows, args.limit), key=lambda r: r["doc_id"])
    digest = hashlib.sha256(json.dumps([[r["doc_id"], r["relevant"]] for r in rows]).encode()).hexdigest()[:12]
    return rows, {"content_hash": digest, "source": f"LiveQA {args.half} half ({path})"}


def exclusion_set(rows: Sequence[dict[str, Any]], nodes: Sequence[Any]) -> frozenset[str]:
    """Ids of the test questions' own pairs and of every indexed pair sharing a test question's focus.

    Topics are compared with the splits' own normaliser (:func:`finetune.data.normalize_focus`), so a topic
    the splits hold out as one group is excluded as one.
    """
    from finetune.data import normalize_focus

    focuses = {normalize_focus(str(r.get("focus") or "")) for r in rows} - {""}
    ids = {r["doc_id"] for r in rows}
    ids |= {n.ref_doc_id for n in nodes if normalize_focus(str(n.metadata.get("focus") or "")) in focuses}
    return frozenset(ids)


def extractive_answer(nodes: Sequence[Any], max_tokens: int, count: Any, position: int = 1) -> str:
    """Source ``position``'s answer text cut to ``max_tokens`` at a sentence end, citing ``[position]`` (a baseline).

    Args:
        nodes: Retrieved sources in rank order.
        max_tokens: The answer budget.
        count: Token counter of the model's tokenizer.
        position: 1-based number of the source to answer with (default: the top one).
    """
    from finetune.raft import cited_answer

    if len(nodes) < position:
        return ""
    from rag_app.prompts import answer_text

    return cited_answer(answer_text(nodes[position - 1].node.get_content()), position, count, max_tokens)


def oracle_answer(nodes: Sequence[Any], reference: Any, max_tokens: int, count: Any) -> str:
    """Of the sources' extractive answers (:func:`extractive_answer`), the one scoring best against ``reference``.

    It cites the source's own number and looks at the reference (ROUGE-L), so it is a ceiling to read other
    systems against, not a system a user could run: no answer copied from one of these sources scores higher.

    Args:
        nodes: Retrieved sources in rank order.
        reference: The reference answer, or a list of them (the best-matching one counts).
        max_tokens: The answer budget.
        count: Token counter of the model's tokenizer.
    """
    from eval.metrics import rouge_scores

    if not nodes:
        return ""
    candidates = [extractive_answer(nodes, max_tokens, count, position) for position in range(1, len(nodes) + 1)]
    scores = rouge_scores(candidates, [reference] * len(candidates))["rougeL"]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "chromadb", "sentence_transformers", "transformers", "urllib3", "bm25s", "llama_index", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = parse_args(argv)
        return run(args)
    except MedQAError as err:  # set-up mistakes here or in rag_app (no index, no model, bad settings)
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: CompareArguments) -> int:
    """Evaluate every system and write the report. See the module docstring."""
    import numpy as np
    from tqdm.auto import tqdm

    from eval import metrics as M
    from rag_app.config import load_settings
    from rag_app.decoding import repeats
    from rag_app.engine import build_query_engine
    from rag_app.models import llm_info, load_llm

    overrides = {"storage_dir": args.storage_dir, "corpus": args.corpus}
    settings = load_settings(**{k: v for k, v in overrides.items() if v})
    specs = system_specs(args, settings)
    if args.questions == "medquad":
        rows, manifest = load_test_split(args, settings)
    elif args.questions == "liveqa":
        if args.exclude_test_from_index:
            raise EvalError("--exclude_test_from_index applies to the MedQuAD test split only")
        rows, manifest = load_liveqa_rows(args, settings)
    else:
        raise EvalError(f"--questions {args.questions!r} is not one of medquad, liveqa")
    started = time.time()
    questions = [r["question"] for r in rows]
    references = [r["answer"] for r in rows]
    # ROUGE against the best-matching reference when a question has several (LiveQA).
    scored_refs: list[Any] = [r["references"] if len(r["references"]) > 1 else r["answer"] for r in rows]
    relevant = [set(r["relevant"]) for r in rows]
    notes: list[str] = []

    # ---- retrieval, once for all RAG systems: the engine's own (retriever, then re-ranker) -----------------
    rag_k = max([s.top_k for s in specs if s.rag] or [0])
    ranked: list[list[Any]] = [[] for _ in rows]
    sources: list[list[Any]] = [[] for _ in rows]
    index_note = "no RAG system ran"
    retriever = reranker = None
    if rag_k:
        from llama_index.core.llms import MockLLM

        from rag_app.index import load_nodes
        from rag_app.retrieval import build_retriever

        nodes = load_nodes(settings)
        indexed = {n.ref_doc_id for n in nodes}
        present = sum(bool(rel & indexed) for rel in relevant)
        exclude = exclusion_set(rows, nodes) if args.exclude_test_from_index else frozenset()
        ret_settings = settings.model_copy(update={"candidate_k": max(settings.candidate_k, 60 if exclude else 20)})
        retriever = build_retriever(ret_settings, nodes=nodes, exclude=exclude)
        if exclude:
            index_note = (
                f"knowledge absent: {present}/{len(rows)} test QA pairs are in the index, but retrieval excludes them and "
                f"every pair sharing a test question's focus ({len(exclude)} pairs excluded)"
            )
        elif args.questions == "liveqa":
            index_note = f"{present}/{len(rows)} questions have a relevant MedQuAD pair in the index"
        else:
            index_note = f"open book: {present}/{len(rows)} test questions' own QA pairs are in the index"
        # No model yet: the question is cut by the estimated token count. Ten sources, for the retrieval metrics.
        ranker = build_query_engine(settings, llm=MockLLM(), retriever=retriever, top_k=max(rag_k, 10))
        reranker = ranker.reranker
        for i, q in enumerate(tqdm(questions, desc="Retrieving", unit="q")):
            clean = ranker.clean_question(q)[0]
            ranked[i] = ranker.ranked(clean)
            sources[i] = ranker.select_sources(clean, ranked[i])

    # ---- generation -----------------------------------------------------------------
    from eval.generate import AnswerCache, answer_plans

    answers: dict[str, list[str]] = {}
    used_sources: dict[str, list[list[Any]]] = {}
    model_info: dict[str, Any] = {}
    llm_cache: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "reference":
            answers[spec.name] = list(references)
            used_sources[spec.name] = [[] for _ in rows]
            model_info[spec.name] = {"name": "reference answers"}
            continue
        if spec.kind == "extractive":
            from rag_app.prompts import _default_counter

            used_sources[spec.name] = [s[: spec.top_k] for s in sources]
            answers[spec.name] = [extractive_answer(s, args.max_new_tokens, _default_counter) for s in used_sources[spec.name]]
            model_info[spec.name] = {"name": "top source's answer text, cut to the answer budget"}
            continue
        if spec.kind == "oracle":
            from rag_app.prompts import _default_counter

            used_sources[spec.name] = [s[: spec.top_k] for s in sources]
            answers[spec.name] = [
                oracle_answer(s, refs, args.max_new_tokens, _default_counter) for s, refs in zip(used_sources[spec.name], scored_refs)
            ]
            model_info[spec.name] = {"name": f"best of the top {spec.top_k} sources' answer texts by ROUGE-L against the reference"}
            continue
        if spec.name in FINETUNED_SYSTEMS or spec.model == settings.finetuned_llm:
            path = Path(spec.model)
            if not spec.model.lower().endswith(".gguf") and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
                recipe = "smollm2-135m-raft-cpu" if spec.name.startswith("raft") else "smollm2-135m-lora-cpu"
                notes.append(
                    f"system {spec.name!r} skipped: no fine-tuned model at {spec.model} "
                    f"(train one with `python -m finetune.train --config finetune/recipes/{recipe}.yaml`)"
                )
                logger.warning(notes[-1])
                continue
        if spec.model not in llm_cache:
            llm_cache.clear()  # one model in memory at a time
            llm_cache[spec.model] = load_llm(settings.model_copy(update={"llm": spec.model}), max_new_tokens=args.max_new_tokens)
        llm = llm_cache[spec.model]
        model_info[spec.name] = llm_info(llm)
        # The engine plans each answer from the ranked sources (and reads its topic names from the retriever).
        engine = build_query_engine(
            settings, use_rag=spec.rag, llm=llm, retriever=retriever if spec.rag else None, reranker=reranker if spec.rag else None,
            top_k=spec.top_k, max_new_tokens=args.max_new_tokens, medical_notice=False,
        )
        plans = [engine.plan(q, ranked=r if spec.rag else None) for q, r in zip(questions, ranked)]
        cache = AnswerCache(settings.storage_dir / "cache" / "eval-answers.jsonl", llm) if args.cache else None
        answers[spec.name] = answer_plans(engine, plans, args.batch_size, cache, desc=f"Generating {spec.name}")
        used_sources[spec.name] = [plan.sources for plan in plans]
    llm_cache.clear()
    ran = [s for s in specs if s.name in answers]
    if not ran:
        raise EvalError("no system could run; " + "; ".join(notes))

    # ---- metrics ------------------------------------------------------------------------
    per_q: dict[str, dict[str, list[float]]] = {}
    for spec in ran:
        scores: dict[str, list[float]] = dict(M.rouge_scores(answers[spec.name], scored_refs))
        scores["abstention"] = [float(M.is_abstention(a)) for a in answers[spec.name]]
        scores["words"] = [float(len(a.split())) for a in answers[spec.name]]
        scores["repetition"] = [float(repeats(a)) for a in answers[spec.name]]
        if spec.rag:
            srcs = used_sources[spec.name]
            passages = [[n.node.get_content() for n in s] for s in srcs]
            scores["grounding"] = [M.grounding_score(a, p) for a, p in zip(answers[spec.name], passages)]
            scores["citation_support"] = [M.citation_support(a, p) for a, p in zip(answers[spec.name], passages)]
            golds = [[i for i, n in enumerate(s, start=1) if n.node.ref_doc_id in rel] for s, rel in zip(srcs, relevant)]
            scores["citation_accuracy"] = [M.citation_correct(a, p) for a, p in zip(answers[spec.name], golds)]
        per_q[spec.name] = scores

    subsets = {name: [i for i, r in enumerate(rows) if r["subset"] == name] for name in dict.fromkeys(r["subset"] for r in rows) if name}
    retrieval: dict[str, dict[str, Any]] = {}
    if rag_k:
        k = rag_k
        scored = [i for i, rel in enumerate(relevant) if rel]  # LiveQA: the answerable questions
        ranked = [[n.node.ref_doc_id for n in sources[i]] for i in scored]
        gold = [sorted(relevant[i]) for i in scored]
        ret = {f"pair_{m}": v for m, v in M.ranking_metrics(ranked, gold, k).items()}
        ret.update({f"pair_{m}": v for m, v in M.ranking_metrics(ranked, gold, 10).items() if m.startswith("mrr")})
        if args.questions == "medquad":
            doc_key = lambda meta: f"{meta.get('collection', '')}/{meta.get('document_id', '')}"  # noqa: E731
            ranked_docs = [[doc_key(n.node.metadata) for n in s] for s in sources]
            gold_docs = [[f"{r.get('collection', '')}/{r.get('document_id', '')}"] for r in rows]
            ret.update({f"document_{m}": v for m, v in M.ranking_metrics(ranked_docs, gold_docs, k).items()})
            ctx = [[n.node.get_content() for n in s[:k]] for s in sources]
            ref_ctx = [[f"Question: {r['question']}\nAnswer: {r['answer']}"] for r in rows]
            ret.update(M.ragas_context_scores(ctx, ref_ctx, [r[:k] for r in ranked], gold))
        retrieval = {name: M.summarize(vals, seed=args.seed) for name, vals in ret.items()}

    judge_scores = _judge(args, ran, questions, answers, used_sources, notes)
    for name, extra in judge_scores.items():
        per_q[name].update(extra)

    summary = {name: {m: M.summarize(v, seed=args.seed) for m, v in scores.items()} for name, scores in per_q.items()}
    by_subset = {
        subset: {name: {m: M.summarize([v[i] for i in idx], seed=args.seed) for m, v in scores.items()} for name, scores in per_q.items()}
        for subset, idx in subsets.items()
    }
    tests = []
    for a, b in PAIRS:
        if a in per_q and b in per_q:
            for m in M.ROUGE_TYPES:
                diff = float(np.mean(per_q[a][m]) - np.mean(per_q[b][m]))
                tests.append({"a": a, "b": b, "metric": m, "diff": diff, "p": M.paired_bootstrap_pvalue(per_q[a][m], per_q[b][m], seed=args.seed)})

    # ---- outputs ------------------------------------------------------------------------
    from eval.report import write_report

    out_dir = Path(args.output_dir) if args.output_dir else settings.storage_dir / "reports" / time.strftime("%Y%m%d-%H%M%S")
    context = {
        "args": vars(args),
        "manifest_hash": manifest.get("content_hash"),
        "n_questions": len(rows),
        "question_note": (
            f"{len(rows)} test questions from `test.jsonl` (split manifest hash `{manifest.get('content_hash')}`)"
            if args.questions == "medquad"
            else f"{len(rows)} questions from the {manifest['source']} (" + ", ".join(f"{n} {k}" for k, n in ((k, len(v)) for k, v in subsets.items()))
            + f"; question set hash `{manifest.get('content_hash')}`)"
        ),
        "subsets": by_subset,
        "index_note": index_note,
        "notes": notes,
        "models": model_info,
        "systems": [vars(s) for s in ran],
        "seconds": time.time() - started,
    }
    details = []
    for i, r in enumerate(rows):
        details.append(
            {
                "question": r["question"],
                "reference": r["answer"],
                "doc_id": r["doc_id"],
                "relevant": r["relevant"],
                "subset": r["subset"],
                "answers": {s.name: answers[s.name][i] for s in ran},
                "sources": [
                    {"rank": j, "doc_id": n.node.ref_doc_id, "focus": n.node.metadata.get("focus"), "url": n.node.metadata.get("url"), "score": n.score}
                    for j, n in enumerate(sources[i][:rag_k], start=1)
                ],
                "scores": {name: {m: v[i] for m, v in sc.items()} for name, sc in per_q.items()},
            }
        )
    table = write_report(out_dir, summary, retrieval, tests, details, per_q, context, plots=not args.no_plots)
    print(table)
    print(f"\nreport: {out_dir / 'report.md'}")
    return 0


def _judge(args, ran, questions, answers, used_sources, notes) -> dict[str, dict[str, list[float]]]:
    """ragas Faithfulness and ResponseRelevancy with a configured judge; nothing when none is configured."""
    if not (args.judge_llm or args.judge_api_base):
        return {}
    from eval.judge import judge_scores

    try:
        return judge_scores(args, ran, questions, answers, used_sources)
    except Exception as err:  # the judge is optional: report and go on
        notes.append(f"judge metrics skipped: {err}")
        logger.warning(notes[-1])
        return {}



if __name__ == "__main__":
    sys.exit(main())
