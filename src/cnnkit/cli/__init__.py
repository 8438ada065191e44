"""The ``cnnkit`` command (floor 9): ``cnnkit train | evaluate | predict | summary | explain | show | bench | serve | export``.

Each subcommand lives in its own module ``cnnkit/cli/<name>.py`` with a ``register(subparsers)`` function
that adds its parser and sets ``func`` to a ``run(args) -> int`` callable. Modules import only
``argparse`` at top level; the heavy imports happen inside ``run``, so ``cnnkit --help`` and
``cnnkit predict`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import CnnkitError, TrainingError

SUBCOMMANDS = ("train", "evaluate", "predict", "summary", "explain", "show", "bench", "serve", "export")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="cnnkit",
        description="Convolutional neural networks from first principles on NumPy.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        # `cnnkit` alone is a usage error (exit 2, as argparse's own); `cnnkit train` alone is the main job.
        parser.print_usage(sys.stderr)
        print(
            f"cnnkit: error: a command is required: {', '.join(SUBCOMMANDS)} (cnnkit --help lists them)",
            file=sys.stderr,
        )
        return 2
    from .. import runtime

    runtime.tune()  # the command owns its process: OpenBLAS's spin, malloc thresholds (cnnkit.runtime)
    try:
        return int(args.func(args) or 0)
    except TrainingError as err:  # training itself failed (a NaN loss): not the user's input
        print(f"cnnkit {args.command}: error: {err}", file=sys.stderr)
        return 1
    except CnnkitError as err:  # bad input: one line, exit 2 like argparse's own errors
        print(f"cnnkit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cnnkit evaluate ... | head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line(err: BaseException) -> str:
    """The error's message on one line (a multi-line message's lines joined with "; ")."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
