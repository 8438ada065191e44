"""``cnnkit summary MODEL|FILE``: the layer table of a zoo model or of a saved model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import arg_type, parse_shape, positive_int

DESCRIPTION = """\
Print the model.summary() table (layers, output shapes, parameters, multiply-adds) of a zoo model or of
a saved .cnnkit file. For a zoo name, --input-shape and --classes choose the input and output sizes
(default: the zoo model's own).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``summary`` parser."""
    parser = subparsers.add_parser(
        "summary",
        help="print the layer table of a zoo model or a saved model file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", metavar="MODEL|FILE", help="a zoo model name (e.g. lenet5) or a .cnnkit file"
    )
    parser.add_argument(
        "--input-shape",
        type=arg_type(parse_shape),
        metavar="C,H,W",
        help="input shape for a zoo model, e.g. 1,28,28",
    )
    parser.add_argument("--classes", type=positive_int, metavar="N", help="number of classes for a zoo model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary; returns the exit status."""
    path = Path(args.model)
    if path.is_file() or path.is_dir():
        from ..inference import load_model_for_inference

        model = load_model_for_inference(path)
        print(f"{path}")
        names = getattr(model, "class_names", None)
        if names:
            print(f"classes ({len(names)}): {', '.join(names)}")
    else:
        from ._models import get_zoo_model

        model = get_zoo_model(args.model, num_classes=args.classes, input_shape=args.input_shape)
    model.summary()
    return 0
