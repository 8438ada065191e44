"""``cnnkit predict MODEL FILES|FOLDER``: the top-k classes of each image, with probabilities.

Each image goes through the preprocessing saved in the model file by ``cnnkit train`` (resize to the
model's input size, grey or RGB, the same normalisation), then through the network in inference mode,
then softmax (notes section 6.2). Files Pillow cannot read are reported and skipped.

A thin layer over :func:`cnnkit.inference.predict_files` (the same pipeline a Python program or a web
page uses). Kept lean on purpose: NumPy, Pillow and cnnkit's engine, data preprocessing and the
training floor's ``predict`` (no tqdm, no Numba for one image), so predicting one image takes a fraction
of a second.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._args import positive_int

DESCRIPTION = """\
Classify image files (or every image in a folder, recursively) with a model saved by `cnnkit train`.
The model's saved preprocessing is applied: resize, grey/RGB and normalisation. Prints the top-k classes
with their probabilities as a table, or JSON with --json. Unreadable files are reported, not fatal (exit
status 1 if no image could be read at all).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` parser."""
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a saved model (top-k classes and probabilities)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a .cnnkit model file written by `cnnkit train`")
    parser.add_argument("inputs", metavar="FILES|FOLDER", nargs="+", help="image files and/or folders")
    parser.add_argument("--top-k", type=positive_int, default=3, metavar="K", help="classes per image (3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (64)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict and print; returns the exit status."""
    from ..data.preprocess import Preprocess
    from ..inference import class_names_of, load_model_for_inference, predict_files
    from ._files import collect_image_files

    model = load_model_for_inference(args.model)
    Preprocess.from_model(model)  # an invalid saved recipe fails here, before any file is read
    classes = len(class_names_of(model))
    top_k = min(args.top_k, classes)
    if args.top_k > classes:
        print(
            f"cnnkit predict: note: --top-k {args.top_k} > the model's {classes} classes; showing {classes}",
            file=sys.stderr,
        )
    files, problems = collect_image_files(args.inputs)
    results, bad = predict_files(model, files, top_k=top_k, batch_size=args.batch_size)
    problems.extend(bad)
    if args.json:
        payload = {
            "model": str(args.model),
            "predictions": results,
            "errors": [{"file": f, "error": e} for f, e in problems],
        }
        print(json.dumps(payload, indent=2))
    elif results:
        _print_table(results, top_k)
    for path, reason in problems:
        print(f"cnnkit predict: skipped {path}: {reason}", file=sys.stderr)
    if not results:
        print("cnnkit predict: error: no image could be read", file=sys.stderr)
        return 1
    return 0


def _print_table(results: list[dict], top_k: int) -> None:
    from ._table import format_table

    headers = ["file"]
    for k in range(1, top_k + 1):
        headers += [f"top{k}", f"p{k}"]
    rows = []
    for res in results:
        row: list[object] = [res["file"]]
        for k in range(top_k):
            if k < len(res["top"]):
                row += [res["top"][k]["class"], f"{res['top'][k]['probability']:.4f}"]
            else:
                row += ["", ""]
        rows.append(row)
    print(format_table(headers, rows, "l" + "lr" * top_k))
