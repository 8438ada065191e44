"""``cnnkit export MODEL.cnnkit OUT.onnx``: a saved model as an ONNX graph for ONNX Runtime and friends."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write a saved .cnnkit model as an ONNX file (opset 13, dynamic batch axis). The graph takes NCHW float32
images, normalised as in training, and gives class probabilities, as `cnnkit predict` computes them.
--logits gives the raw scores instead; --include-preprocessing puts the saved normalisation in as the
first nodes, so the graph takes pixels scaled to [0, 1] (pixels / 255). Class names and the cnnkit
version are stored in the file's metadata_props. Needs the onnx package: pip install 'cnnkit[onnx]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = subparsers.add_parser(
        "export",
        help="write a saved model as an ONNX file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL.cnnkit", help="a model file written by cnnkit train or model.save")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--logits", action="store_true", help="output raw scores instead of probabilities")
    p.add_argument(
        "--include-preprocessing",
        action="store_true",
        help="fold the saved normalisation in: the graph takes pixels in [0, 1]",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT.onnx if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, convert, write; returns the exit status."""
    from pathlib import Path

    from ..errors import ConfigError, DataError
    from ..io.model_file import load_model
    from ..onnx import export

    src, out = Path(args.model), Path(args.out)
    if not src.is_file():
        raise DataError(f"model file {src} {'is a folder' if src.is_dir() else 'does not exist'}")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"the output file should end in .onnx, got {out}")
    if out.exists() and not args.force:
        raise ConfigError(f"output file {out} already exists; pass --force to overwrite it")
    model = load_model(src)
    model.eval()
    export(model, out, logits=args.logits, include_preprocessing=args.include_preprocessing)
    kind = "logits" if args.logits else "probabilities"
    pre = ", preprocessing included (input: pixels in [0, 1])" if args.include_preprocessing else ""
    print(f"wrote {out}: {model.name}, input (N, {', '.join(map(str, model.input_shape))}), {kind}{pre}")
    return 0
