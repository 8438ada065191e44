"""``cnnkit show filters|maps|curves|confusion``: write PNG pictures (see :mod:`cnnkit.viz`).

Needs matplotlib (``pip install cnnkit[viz]``). Existing output files are only replaced with ``--force``.
"""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Draw a PNG picture (needs matplotlib: pip install cnnkit[viz]).

pictures:
  filters    the first convolution's filters of a model             cnnkit show filters model.cnnkit
  maps       an image's feature maps after each conv and pool layer  cnnkit show maps model.cnnkit cat.png
  curves     loss and accuracy per epoch, training and validation    cnnkit show curves metrics.json
  confusion  a confusion matrix as an annotated heat map             cnnkit show confusion confusion.json

An existing output file is replaced only with --force.
"""

CONFUSION_HELP = (
    'a JSON file: {"matrix": [[...], ...], "class_names": [...]} (also "confusion_matrix"/"classes"/'
    '"labels", or nested one level, e.g. in metrics.json), or a bare list of rows'
)


def _add_output(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--out", "-o", default=default, metavar="PNG", help=f"output file (default: {default})"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``show`` parser and its pictures."""
    parser = subparsers.add_parser(
        "show",
        help="draw filters, feature maps, training curves or a confusion matrix as PNG",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="picture", metavar="PICTURE")
    parser.set_defaults(func=_no_picture, _parser=parser)

    p = kinds.add_parser(
        "filters",
        help="a convolution layer's filters as a grid",
        description="Draw a convolution layer's filters (default: the first one) as a grid.",
    )
    p.add_argument(
        "model", metavar="MODEL|FILE", help="a .cnnkit model file (or a zoo name: untrained weights)"
    )
    p.add_argument("--layer", help="dotted name of the convolution layer (default: the first)")
    p.add_argument("--max-filters", type=int, default=64, help="draw at most this many filters (default: 64)")
    _add_output(p, "filters.png")
    p.set_defaults(func=run)

    p = kinds.add_parser(
        "maps",
        help="feature maps of one image, layer by layer",
        description="Run one image through a model and draw the feature maps after each "
        "convolution and pooling layer. The image is resized and normalised the way the model "
        "file's metadata says (as cnnkit predict does).",
    )
    p.add_argument(
        "model", metavar="MODEL|FILE", help="a .cnnkit model file (or a zoo name: untrained weights)"
    )
    p.add_argument("image", help="an image file (PNG, JPEG, ...) or a .npy array shaped like the model input")
    p.add_argument("--max-maps", type=int, default=16, help="feature maps drawn per layer (default: 16)")
    _add_output(p, "feature_maps.png")
    p.set_defaults(func=run)

    p = kinds.add_parser(
        "curves",
        help="loss and accuracy curves from a metrics or history JSON file",
        description="Draw loss and accuracy per epoch from metrics.json (written by "
        "cnnkit train) or a History JSON file (History.to_json).",
    )
    p.add_argument("metrics", help="metrics.json or a History JSON file")
    _add_output(p, "curves.png")
    p.set_defaults(func=run)

    p = kinds.add_parser(
        "confusion",
        help="a confusion matrix as an annotated heat map",
        description=f"Draw a confusion matrix. Input: {CONFUSION_HELP}.",
    )
    p.add_argument("matrix", metavar="JSON", help="the confusion-matrix JSON file")
    p.add_argument("--normalize", action="store_true", help="divide each row by its total (recall per class)")
    _add_output(p, "confusion.png")
    p.set_defaults(func=run)


def _no_picture(args: argparse.Namespace) -> int:
    args._parser.print_help()
    return 2


def _read_json(path: str, what: str) -> Any:
    import json

    from ..errors import DataError
    from ._files import require_path

    p = require_path(path, what)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{what} {p}: not readable JSON ({err})") from None


_MATRIX_KEYS = ("matrix", "confusion_matrix", "confusion")
_NAME_KEYS = ("class_names", "classes", "labels")


def _find_confusion(data: Any, path: str) -> tuple[Any, Any]:
    """``(matrix, class_names)`` from the JSON forms ``show confusion`` accepts."""
    from ..errors import DataError

    if isinstance(data, list):
        return data, None
    if isinstance(data, dict):
        for scope in [data, *[v for v in data.values() if isinstance(v, dict)]]:
            for key in _MATRIX_KEYS:
                value = scope.get(key)
                if isinstance(value, dict):  # {"confusion": {"matrix": ..., "class_names": ...}}
                    inner = _find_confusion(value, path)
                    if inner[0] is not None:
                        names = inner[1] or next((data[k] for k in _NAME_KEYS if k in data), None)
                        return inner[0], names
                if isinstance(value, list):
                    names = next((scope[k] for k in _NAME_KEYS if k in scope), None)
                    if names is None:
                        names = next((data[k] for k in _NAME_KEYS if k in data), None)
                    return value, names
    raise DataError(f"{path}: no confusion matrix found; expected {CONFUSION_HELP}")


def _load_model(spec: str) -> tuple[Any, Any]:
    """A model (inference mode) and its image preprocessing, from a model file or a zoo name."""

    from ..data.preprocess import Preprocess

    model = _model(spec)
    return model, Preprocess.from_model(model)


def _model(spec: str) -> Any:
    """A model file in inference mode, or a zoo model with random weights, which its name then says
    (the name is in the picture's title)."""
    from pathlib import Path

    from ..inference import load_model_for_inference
    from ._models import get_zoo_model

    if Path(spec).is_file() or Path(spec).is_dir():
        return load_model_for_inference(spec)
    model = get_zoo_model(spec, seed=0)
    model.eval()
    model.name = f"{spec} (untrained: random weights, seed 0)"
    return model


def _load_image(path: str, pre: Any) -> Any:
    """An image file, decoded, resized and normalised as for prediction; or a .npy array as it is."""
    import numpy as np

    from ..errors import DataError
    from ._files import require_path

    p = require_path(path, "image")
    if p.suffix.lower() == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{p}: not a readable .npy array ({err})") from None
    return pre.prepare(p)


def run(args: argparse.Namespace) -> int:
    """Draw the chosen picture; returns the exit status."""
    from pathlib import Path

    from ._files import check_output_file, guard_outputs

    out = Path(args.out)
    guard_outputs([out], args.force, hint="pass --force to overwrite it or --out to choose another file")
    check_output_file(out, "--out")
    from .. import viz

    picture = args.picture
    if picture == "filters":
        model = _model(args.model)
        written = viz.plot_filters(model, out, layer=args.layer, max_filters=args.max_filters)
    elif picture == "maps":
        model, pre = _load_model(args.model)
        image = _load_image(args.image, pre)
        written = viz.plot_feature_maps(model, image, out, max_maps=args.max_maps)
    elif picture == "curves":
        written = viz.plot_curves(_read_json(args.metrics, "metrics file"), out)
    elif picture == "confusion":
        matrix, names = _find_confusion(_read_json(args.matrix, "confusion-matrix file"), args.matrix)
        written = viz.plot_confusion(matrix, names, out, normalize=args.normalize)
    else:  # pragma: no cover - argparse restricts the pictures
        return 2
    print(f"wrote {written}")
    return 0
