"""Command line: ask a question, build the index, or show what is configured.

    python -m rag_app ask "What are the symptoms of glaucoma?"
    python -m rag_app ask --no-rag --stream "What is high blood pressure?"
    python -m rag_app index [--rebuild]
    python -m rag_app status [--check]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence


def _settings(args: argparse.Namespace):
    from rag_app.config import load_settings

    overrides = {}
    for key in ("top_k", "llm", "storage_dir", "corpus", "max_new_tokens", "temperature"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return load_settings(args.config, **overrides)


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer one question and print it with its sources."""
    from rag_app.engine import build_query_engine

    from rag_app.models import describe_llm, llm_info

    settings = _settings(args)
    engine = build_query_engine(settings, use_rag=not args.no_rag, streaming=args.stream)
    print(f"model: {describe_llm(engine.llm)}", file=sys.stderr)
    if args.no_rag and llm_info(engine.llm).get("kind") == "retrieval-aware fine-tune":
        print("note: this model is trained to answer from sources; without them (--no-rag) it often declines", file=sys.stderr)
    response = engine.query(args.question)
    if args.stream:
        for token in response.response_gen:
            print(token, end="", flush=True)
        print()
    else:
        print(str(response))
    for warning in (response.metadata or {}).get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if response.source_nodes:
        print("\nSources:")
        for i, node in enumerate(response.source_nodes, start=1):
            meta = node.node.metadata
            title = meta.get("focus") or meta.get("question") or meta.get("document_id")
            where = f" ({meta['collection']})" if meta.get("collection") else ""
            print(f"[{i}] {title}{where} — {meta.get('url') or 'no URL'}  score={node.score:.4f}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Build or update the index."""
    from rag_app.index import build_index

    stats = build_index(_settings(args), rebuild=args.rebuild, show_progress=not args.quiet)
    print(stats.summary())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the settings and the index status as JSON."""
    from rag_app.index import index_status

    settings = _settings(args)
    status = index_status(settings)
    if args.check:
        return 0 if status.get("exists") and status.get("chunks") else 1
    print(json.dumps({"settings": json.loads(settings.model_dump_json()), "index": status}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m rag_app`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m rag_app", description="Grounded medical QA over NIH sources.")
    parser.add_argument("--config", help="YAML/TOML settings file (MEDQA_* variables still apply)")
    parser.add_argument("--storage-dir", dest="storage_dir", help="storage folder (MEDQA_STORAGE_DIR)")
    parser.add_argument("--corpus", help="corpus path(s), comma-separated (MEDQA_CORPUS)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question with cited sources")
    ask.add_argument("question")
    ask.add_argument("--no-rag", action="store_true", help="answer from the model alone")
    ask.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    ask.add_argument("--top-k", dest="top_k", type=int, help="number of sources (MEDQA_TOP_K)")
    ask.add_argument(
        "--llm", help="model (MEDQA_LLM; default: the shipped fine-tune): bundled:smollm2-135m-instruct for the base, a directory or .gguf"
    )
    ask.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.set_defaults(func=cmd_ask)

    index = sub.add_parser("index", help="build or update the index")
    index.add_argument("--rebuild", action="store_true")
    index.add_argument("--quiet", action="store_true")
    index.set_defaults(func=cmd_index)

    status = sub.add_parser("status", help="show settings and index status")
    status.add_argument("--check", action="store_true", help="print nothing; exit 0 when a non-empty index exists, else 1")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one ``error:`` line and exit 2, never a traceback."""
    from rag_app.errors import MedQAError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "chromadb", "sentence_transformers", "transformers", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except MedQAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
