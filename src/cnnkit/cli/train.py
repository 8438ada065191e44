"""``cnnkit train``: train a zoo model on Fashion-MNIST, the synthetic shapes or an image folder.

With no arguments it trains LeNet-5 on Fashion-MNIST (notes section 10.1) with Adam and reports the test
accuracy. It writes three files into ``--out`` (default ``runs/<model>-<data>``):

- ``model.cnnkit``: architecture and weights, with the class names and the preprocessing (image size,
  grey/RGB, normalisation statistics) in the metadata, so ``cnnkit predict`` treats new images the same;
- ``metrics.json``: the per-epoch history, the test (or validation) metrics, the data source, timing and
  training throughput in images per second;
- ``curves.png``: loss and accuracy curves (skipped, with a note, when matplotlib is not installed).
"""

from __future__ import annotations

import argparse

from ._common import AUGMENT_PRESETS, DATASET_NAMES, parse_augment, parse_image_size, positive_int

#: Defaults of the main job (``cnnkit train`` with no arguments).
DEFAULTS = {
    "model": "lenet5",
    "data": "fashion-mnist",
    "epochs": 10,
    "batch_size": 64,
    "lr": 1e-3,
    "optimizer": "adam",
    "normalize": "standardize",
    "validation_split": 0.1,
}

DESCRIPTION = f"""\
Train a zoo model and save it with its preprocessing. `cnnkit train` alone trains LeNet-5 on Fashion-MNIST
({DEFAULTS["epochs"]} epochs, Adam lr {DEFAULTS["lr"]:g}, batch {DEFAULTS["batch_size"]}) and reports the test accuracy.

--data is fashion-mnist, shapes (synthetic circles/squares/triangles) or a folder with one sub-folder of
images per class (the sub-folder names are the class names). Writes model.cnnkit, metrics.json and
curves.png into --out; existing files are only replaced with --force.
"""

EPILOG = f"""\
--augment takes a preset ({", ".join(AUGMENT_PRESETS)}) or a list such as rotation=10,flip,zoom=0.1,translate=0.1
(bare names use rotation=15, zoom=0.1, translate=0.1).

examples:
  cnnkit train
  cnnkit train --epochs 3 --limit 5000
  cnnkit train --model cats_dogs_cnn --data photos/ --image-size 128 --rgb --augment standard
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train a model (default: LeNet-5 on Fashion-MNIST) and save it",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=DEFAULTS["model"], help="zoo model name (default: %(default)s)")
    p.add_argument(
        "--data",
        default=DEFAULTS["data"],
        metavar="DATA",
        help=f"{' | '.join(DATASET_NAMES)} | FOLDER (default: %(default)s)",
    )
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"], help="(default: %(default)s)")
    p.add_argument(
        "--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="(default: %(default)s)"
    )
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default: %(default)g)")
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        default=DEFAULTS["optimizer"],
        help="(default: %(default)s; sgd uses momentum 0.9)",
    )
    p.add_argument("--augment", type=parse_augment, metavar="SPEC", help="data augmentation (see below)")
    p.add_argument(
        "--normalize",
        choices=("unit", "symmetric", "standardize"),
        default=DEFAULTS["normalize"],
        help="pixels to [0,1], to [-1,1], or per-channel mean 0 std 1 (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=parse_image_size,
        metavar="SIZE|H,W",
        help="resize images to this size (folders and shapes; default: the model's or 28 / 32)",
    )
    color = p.add_mutually_exclusive_group()
    color.add_argument("--grey", "--gray", dest="color", action="store_const", const="grey", help="folders: grey")
    color.add_argument("--rgb", dest="color", action="store_const", const="rgb", help="folders: RGB (default)")
    p.add_argument(
        "--validation-split",
        type=float,
        default=DEFAULTS["validation_split"],
        metavar="F",
        help="fraction of the training images held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--early-stopping",
        type=positive_int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better validation loss; keep the best weights",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<model>-<data>)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--strict", action="store_true", help="folders: a bad image file is an error, not skipped")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only N training images (quick tries)")
    p.add_argument("--verbose", "-v", action="store_true", help="progress bars and per-epoch details")
    p.set_defaults(func=run, color=None)


def run(args: argparse.Namespace) -> int:
    """Train and save; returns the exit status."""
    from ._train_impl import train

    return train(args)
