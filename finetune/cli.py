"""Shared command-line plumbing: TRL-style parsing that reports user mistakes as one line (exit status 2)."""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Sequence

from finetune import UserError

logger = logging.getLogger("finetune")


def make_parser(dataclass_types: Sequence[type], prog: str | None = None) -> Any:
    """A ``trl.TrlParser`` whose argparse errors raise :class:`UserError` instead of printing usage."""
    from trl import TrlParser

    class _Parser(TrlParser):
        def error(self, message: str) -> None:  # argparse calls this for bad values/unknown flags
            raise UserError(message)

    return _Parser(list(dataclass_types), prog=prog)


def parse_or_exit(dataclass_types: Sequence[type], argv: Sequence[str] | None, prog: str | None = None) -> tuple[Any, ...]:
    """Parse ``--config recipe.yaml`` plus ``--key value`` flags into the dataclasses.

    Raises:
        UserError: On an unknown recipe key or flag, a bad value, or a missing/invalid recipe file.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise UserError("--config needs a recipe file, e.g. --config finetune/recipes/tiny.yaml")
        from pathlib import Path

        if not Path(argv[index + 1]).is_file():
            raise UserError(f"recipe file {argv[index + 1]!r} does not exist")
    parser = make_parser(dataclass_types, prog=prog)
    try:
        *parsed, config_unknown, cli_unknown = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except UserError:
        raise
    except (ValueError, TypeError) as err:  # bad YAML mapping or a value the dataclass rejects
        raise UserError(f"invalid recipe or flags: {str(err).splitlines()[0]}") from None
    except Exception as err:  # yaml.YAMLError and friends
        if type(err).__module__.startswith("yaml"):
            raise UserError(f"recipe is not valid YAML: {str(err).splitlines()[0]}") from None
        raise
    if config_unknown:
        keys = [s.lstrip("-") for s in config_unknown if s.startswith("--")]
        raise UserError(f"unknown recipe key(s) {keys}; see `{prog or 'python -m finetune.train'} --help` for valid keys")
    if cli_unknown:
        raise UserError(f"unknown argument(s) {cli_unknown}; see `{prog or 'python -m finetune.train'} --help`")
    return tuple(parsed)


def run_cli(func: Callable[[], int]) -> int:
    """Run a CLI body; user mistakes become one ``error: ...`` line on stderr and exit status 2."""
    from rag_app.errors import MedQAError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return func()
    except MedQAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
