"""``cnnkit serve [MODEL]``: a local page showing a model thinking, layer by layer (:mod:`cnnkit.serve`).

Needs the optional extra ``cnnkit[serve]`` (Starlette, uvicorn, python-multipart), imported inside ``run``.
"""

from __future__ import annotations

import argparse
import sys

#: The main job's model (``cnnkit train`` with no arguments writes it).
DEFAULT_MODEL = "runs/lenet5-fashion-mnist/model.cnnkit"

DESCRIPTION = f"""\
Start a local web page for a trained model: upload an image, pick a data-set sample or draw one, and see
the prediction, every layer's output shape and parameters, every feature map, the first layer's filters,
and, for any pixel of a convolution or pooling map you click, the arithmetic that produced it
(window x kernel, the sum, the bias, the ReLU). The same numbers are served as JSON under /api/.

With no MODEL it uses the main job's model, {DEFAULT_MODEL};
when that file does not exist it says how to make it (`cnnkit train`, a few minutes) and stops.
It binds to 127.0.0.1 (this computer only) unless --host says otherwise; Ctrl-C stops it.

Needs the optional packages: pip install 'cnnkit[serve]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` parser."""
    parser = subparsers.add_parser(
        "serve",
        help="a local web page showing a model's layers, feature maps and arithmetic",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", help=f"a .cnnkit model file ({DEFAULT_MODEL})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, bind, print the URL, serve until Ctrl-C; returns the exit status."""
    import importlib.util
    from pathlib import Path

    missing = [m for m in ("starlette", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"cnnkit serve: error: needs {', '.join(missing)}; install them: pip install 'cnnkit[serve]'",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print(f"cnnkit serve: error: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    path = args.model or DEFAULT_MODEL
    if args.model is None and not Path(path).is_file():
        print(
            f"cnnkit serve: error: no MODEL given and {DEFAULT_MODEL} does not exist.\n"
            "  Make it with `cnnkit train` (LeNet-5 on Fashion-MNIST, minutes), then run `cnnkit serve`;\n"
            "  or give any model file written by `cnnkit train`: cnnkit serve path/to/model.cnnkit",
            file=sys.stderr,
        )
        return 2

    from ..serve.server import serve

    return serve(path, args.host, args.port)
