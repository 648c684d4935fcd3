"""Command line: ask a question, build the index, or show what is configured.

    python -m rag_app ask "What are the symptoms of glaucoma?"
    python -m rag_app ask --no-rag --stream "What is high blood pressure?"
    python -m rag_app index [--rebuild]            # also: python -m rag_app.index [--rebuild]
    python -m rag_app status [--check]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from rag_app.answer.engine import build_query_engine
from rag_app.config import Settings, load_settings
from rag_app.errors import MedQAError
from rag_app.index.build import build_index
from rag_app.index.chroma import index_status
from rag_app.llm.info import model_info


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for key in ("top_k", "llm", "storage_dir", "corpus", "max_new_tokens", "temperature"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return load_settings(args.config, **overrides)


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer one question and print it with its sources."""
    settings = _settings(args)
    engine = build_query_engine(settings, use_rag=not args.no_rag, streaming=args.stream)
    print(f"model: {model_info(engine.llm).describe()}", file=sys.stderr)
    if args.no_rag and model_info(engine.llm).retrieval_aware:
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
    stats = build_index(_settings(args), rebuild=args.rebuild, show_progress=not args.quiet, discard_damaged=args.discard_damaged)
    print(stats.summary())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the settings and the index status as JSON."""
    settings = _settings(args)
    status = index_status(settings)
    if args.check:
        return 0 if status.get("exists") and status.get("chunks") else 1
    print(json.dumps({"settings": json.loads(settings.model_dump_json()), "index": status}, indent=2))
    if status.get("damaged"):
        print(f"error: {status['error']}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m rag_app`` argument parser; the common options go before or after the command."""
    def common_options(default: object) -> argparse.ArgumentParser:
        common = argparse.ArgumentParser(add_help=False, argument_default=default)
        common.add_argument("--config", help="YAML/TOML settings file (MEDQA_* variables still apply)")
        common.add_argument("--storage-dir", dest="storage_dir", help="storage folder (MEDQA_STORAGE_DIR)")
        common.add_argument("--corpus", help="corpus path(s), comma-separated (MEDQA_CORPUS)")
        common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        return common

    # After the command they must not reset what was given before it: there they have no defaults.
    common = common_options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="python -m rag_app", description="Grounded medical QA over NIH sources.", parents=[common_options(None)]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question with cited sources", parents=[common], argument_default=argparse.SUPPRESS)
    ask.add_argument("question")
    ask.add_argument("--no-rag", action="store_true", default=False, help="answer from the model alone")
    ask.add_argument("--stream", action="store_true", default=False, help="print tokens as they are generated")
    ask.add_argument("--top-k", dest="top_k", type=int, help="number of sources (MEDQA_TOP_K)")
    ask.add_argument(
        "--llm", help="model (MEDQA_LLM; default: the shipped fine-tune): bundled:smollm2-135m-instruct for the base, a directory or .gguf"
    )
    ask.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.set_defaults(func=cmd_ask)

    index = sub.add_parser("index", help="build or update the index", parents=[common], argument_default=argparse.SUPPRESS)
    index.add_argument("--rebuild", action="store_true", default=False, help="drop the index and build it from scratch")
    index.add_argument(
        "--discard-damaged", dest="discard_damaged", action="store_true", default=False,
        help="with --rebuild: delete a damaged index instead of moving it aside",
    )
    index.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    index.set_defaults(func=cmd_index)

    status = sub.add_parser("status", help="show settings and index status", parents=[common], argument_default=argparse.SUPPRESS)
    status.add_argument("--check", action="store_true", default=False, help="print nothing; exit 0 when a non-empty index exists, else 1")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user mistakes print one ``error:`` line and exit 2, never a traceback."""
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
