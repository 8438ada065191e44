"""``cnnkit evaluate MODEL DATA``: accuracy, per-class precision and recall, and the confusion matrix.

For the predicted class ``p`` and the true class ``t`` of every image, the confusion matrix counts
``M[t, p]``. Per class ``k``: precision ``M[k, k] / sum_t M[t, k]`` (of the images called ``k``, the
fraction that are ``k``), recall ``M[k, k] / sum_p M[k, p]`` (of the images of ``k``, the fraction found)
and F1 their harmonic mean; accuracy is ``trace(M) / sum(M)``. The loss is the mean cross-entropy
``-log p_t`` of notes section 7.1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._args import DATASET_NAMES, add_threads_argument, positive_int

DESCRIPTION = f"""\
Evaluate a model saved by `cnnkit train` on labelled images, with the model's own preprocessing.
DATA is {" | ".join(DATASET_NAMES)} (their test split) or a folder with one sub-folder of images per
class (all its images; the sub-folder names must be class names of the model). Prints accuracy, loss,
per-class precision/recall/F1 and the confusion matrix (rows: true class, columns: predicted).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` parser."""
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy, per-class precision/recall and confusion matrix of a saved model",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="a .cnnkit model file written by `cnnkit train`")
    p.add_argument("data", metavar="DATA", help=f"{' | '.join(DATASET_NAMES)} | FOLDER")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--confusion-png", metavar="PATH", help="also draw the confusion matrix as a PNG")
    p.add_argument("--normalize-png", action="store_true", help="PNG rows divided by their totals (recall)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --confusion-png file")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (256)")
    p.add_argument("--strict", action="store_true", help="folders: a bad image file is an error")
    p.add_argument("--seed", type=int, default=0, help="shapes: the seed it was trained with (0)")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print; returns the exit status."""
    import json
    from pathlib import Path

    from ..data.preprocess import Preprocess
    from ..inference import class_names_of, load_model_for_inference
    from ._data import load_data
    from ._files import check_output_file, guard_outputs
    from ._threads import blas_threads

    png = Path(args.confusion_png) if args.confusion_png else None
    if png is not None:
        guard_outputs([png], args.force, hint="pass --force to overwrite it or give another --confusion-png")
        check_output_file(png, "--confusion-png")
    model = load_model_for_inference(args.model)
    pre = Preprocess.from_model(model)
    names = class_names_of(model)
    data = load_data(
        args.data,
        image_size=pre.image_size,
        color=pre.color,
        seed=args.seed,
        strict=args.strict,
        evaluation=True,
        on_bad_file=lambda path, reason: print(
            f"cnnkit evaluate: skipped bad file {path}: {reason}", file=sys.stderr
        ),
    )
    label_map = _label_map(data.class_names, names)
    with blas_threads(args.threads, "evaluate"):
        probs, labels = _predict(model, data.train, pre.normalize, args.batch_size)
    report = metrics(probs, label_map[labels], names)
    report["model"] = str(args.model)
    report["data"] = data.summary()
    report["skipped_files"] = [{"file": f, "error": e} for f, e in data.bad_files()]
    written = None
    if png is not None:
        written = _confusion_png(report["confusion_matrix"], names, png, args.normalize_png)
        report["confusion_png"] = str(written) if written else None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, data.describe()))
        if png is not None:
            print(f"wrote {written}" if written else "confusion PNG skipped: matplotlib is not installed")
    return 0


def _label_map(data_names: list[str], model_names: list[str]) -> Any:
    """Data label ``k`` -> model output index, matching class names (or positions when names are numbers)."""
    import numpy as np

    from ..errors import DataError

    index = {name: i for i, name in enumerate(model_names)}
    missing = [n for n in data_names if n not in index]
    if not missing:
        return np.array([index[n] for n in data_names], dtype=np.int64)
    if len(data_names) == len(model_names) and all(n.isdigit() for n in model_names):
        return np.arange(len(data_names), dtype=np.int64)  # a model without names: trust the order
    raise DataError(
        f"the data has class(es) the model does not know: {', '.join(missing)}; "
        f"the model's classes are: {', '.join(model_names)}"
    )


def _predict(model: Any, split: Any, normalize: Any, batch_size: int) -> tuple[Any, Any]:
    """Probabilities and labels of every image of ``split`` (arrays or a lazy folder)."""
    import numpy as np

    from ..data import DataLoader
    from ..training.fit import predict

    loader = DataLoader(split, batch_size, shuffle=False, transform=normalize)
    probs, labels = [], []
    for xb, yb in loader:
        probs.append(predict(model, xb, batch_size))
        labels.append(yb)
    if not probs:
        from ..errors import DataError

        raise DataError("no readable images to evaluate on")
    return np.concatenate(probs), np.concatenate(labels)


def metrics(probs: Any, labels: Any, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1/support and the confusion matrix ``M[true, pred]``."""
    import numpy as np

    k = len(class_names)
    pred = probs.argmax(axis=1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    n = int(matrix.sum())
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    p_true = probs[np.arange(len(labels)), labels].astype(np.float64)
    loss = float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean()) if n else float("nan")
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, name in enumerate(class_names)
    ]
    return {
        "images": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "loss": loss,
        "per_class": per_class,
        "classes": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def format_report(report: dict[str, Any], header: str = "") -> str:
    """The tables printed by ``cnnkit evaluate``."""
    from ._table import format_table

    lines = [header] if header else []
    lines.append(f"accuracy: {report['accuracy']:.4f} ({report['images']} images), loss {report['loss']:.4f}")
    lines.append("")
    rows = [(c["class"], c["precision"], c["recall"], c["f1"], c["support"]) for c in report["per_class"]]
    lines.append(format_table(["class", "precision", "recall", "f1", "support"], rows))
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted class)")
    names = report["classes"]
    short = [str(i) for i in range(len(names))]
    matrix_rows = [
        [f"{i} {name}", *row]
        for i, (name, row) in enumerate(zip(names, report["confusion_matrix"], strict=True))
    ]
    lines.append(format_table(["true \\ predicted", *short], matrix_rows))
    skipped = report.get("skipped_files") or []
    if skipped:
        lines.append(f"\nskipped {len(skipped)} unreadable file(s)")
    return "\n".join(lines)


def _confusion_png(matrix: Any, names: list[str], path: Any, normalize: bool) -> Any:
    try:
        from ..viz import plot_confusion

        return plot_confusion(matrix, names, path, normalize=normalize)
    except ImportError:
        return None
