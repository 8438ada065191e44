"""``cnnkit train``: train a zoo model on Fashion-MNIST, the synthetic shapes or an image folder.

With no arguments it trains LeNet-5 on Fashion-MNIST (notes section 10.1) with Adam and reports the test
accuracy. It writes three files into ``--out`` (default ``runs/<model>-<data>``):

- ``model.cnnkit``: architecture and weights, with the class names and the preprocessing (image size,
  grey/RGB, normalisation statistics) in the metadata, so ``cnnkit predict`` treats new images the same;
- ``metrics.json``: the per-epoch history, the test (or validation) metrics, the data source, timing and
  training throughput in images per second;
- ``curves.png``: loss and accuracy curves (skipped, with a note, when matplotlib is not installed);
- ``checkpoint.cnnkit``: after every epoch, the model, the optimizer state and the run's settings, so
  ``cnnkit train --resume DIR`` continues an interrupted run and ends bit-identical to an uninterrupted
  one (:func:`cnnkit.training.fit`'s ``resume_from``).

Every output path is checked before the data is loaded. Ctrl-C (or SIGTERM) stops after the current
step and saves everything; a second one stops at once and still leaves consistent files.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._args import (
    AUGMENT_PRESETS,
    DATASET_NAMES,
    add_threads_argument,
    arg_type,
    fraction,
    parse_augment,
    parse_image_size,
    positive_float,
    positive_int,
)

#: Defaults of the main job (``cnnkit train`` with no arguments).
DEFAULTS = {
    "model": "lenet5",
    "data": "fashion-mnist",
    "epochs": 8,
    "batch_size": 64,
    "lr": 1e-3,
    "optimizer": "adam",
    "schedule": "cosine",
    "normalize": "standardize",
    "validation_split": 0.1,
}

DESCRIPTION = f"""\
Train a zoo model and save it with its preprocessing. `cnnkit train` alone trains LeNet-5 on
Fashion-MNIST ({DEFAULTS["epochs"]} epochs, batch {DEFAULTS["batch_size"]}, Adam lr {DEFAULTS["lr"]:g} with cosine decay, standardized pixels,
10% of the training images held out for validation) and reports the test accuracy.

--data is fashion-mnist, shapes (6,000 generated images of 10 shapes, 20% of them the test split) or a
folder with one sub-folder of images per class (the sub-folder names are the class names), or with
train/ and test/ (and optionally val/) folders that each hold one sub-folder per class. Writes
model.cnnkit, metrics.json, curves.png and checkpoint.cnnkit (after every epoch) into --out; existing
files are only replaced with --force. `cnnkit train --resume DIR` continues a run from DIR's checkpoint
with its saved settings (--epochs may extend it; --threads and --verbose may change).
"""

EPILOG = f"""\
--augment takes a preset ({", ".join(AUGMENT_PRESETS)}) or a list such as rotation=10,flip,zoom=0.1,translate=0.1
(bare names use rotation=15, zoom=0.1, translate=0.1).

examples:
  cnnkit train
  cnnkit train --epochs 3 --limit 5000
  cnnkit train --resume runs/lenet5-fashion-mnist --epochs 12
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
    p.add_argument("--epochs", type=positive_int, help=f"(default: {DEFAULTS['epochs']})")
    p.add_argument(
        "--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="(default: %(default)s)"
    )
    p.add_argument(
        "--lr", type=positive_float, default=DEFAULTS["lr"], help="learning rate (default: %(default)g)"
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        default=DEFAULTS["optimizer"],
        help="(default: %(default)s; sgd uses momentum 0.9)",
    )
    p.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default=DEFAULTS["schedule"],
        help="learning rate per epoch: cosine decay from --lr to --lr/100, or constant (default: %(default)s)",
    )
    p.add_argument(
        "--augment", type=arg_type(parse_augment), metavar="SPEC", help="data augmentation (see below)"
    )
    p.add_argument(
        "--normalize",
        choices=("unit", "symmetric", "standardize"),
        default=DEFAULTS["normalize"],
        help="pixels to [0,1], to [-1,1], or per-channel mean 0 std 1 (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=arg_type(parse_image_size),
        metavar="SIZE|H,W",
        help="resize images to SIZE x SIZE or H x W (default: 28 for fashion-mnist, else the model's default)",
    )
    color = p.add_mutually_exclusive_group()
    color.add_argument(
        "--grey",
        "--gray",
        dest="color",
        action="store_const",
        const="grey",
        help="grey images (default for fashion-mnist, and folders for 1-channel models)",
    )
    color.add_argument(
        "--rgb",
        dest="color",
        action="store_const",
        const="rgb",
        help="RGB images (default for shapes, and folders for 3-channel models)",
    )
    p.add_argument(
        "--validation-split",
        type=fraction,
        default=DEFAULTS["validation_split"],
        metavar="F",
        help="fraction of the training images held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--test-split",
        type=fraction,
        default=0.0,
        metavar="F",
        help="a folder of class sub-folders: fraction of each class held out as the test split (default: 0)",
    )
    p.add_argument(
        "--early-stopping",
        type=positive_int,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better validation loss; keep the best weights",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="the model's floating-point type (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<model>-<data>)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument(
        "--resume", metavar="DIR", help="continue the run whose checkpoint.cnnkit is in DIR (its settings)"
    )
    p.add_argument("--strict", action="store_true", help="folders: a bad image file is an error, not skipped")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only N training images (quick tries)")
    add_threads_argument(p)
    p.add_argument(
        "--init-weights",
        metavar="FILE",
        help="start from a .safetensors state dict (torchvision names), .cnnkit or .onnx",
    )
    p.add_argument(
        "--new-head",
        action="store_true",
        help="with --init-weights: a new last Dense layer when the class count differs",
    )
    p.add_argument(
        "--freeze",
        metavar="PREFIX[,PREFIX]",
        help="keep the parameters under these dotted names fixed (e.g. features)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="a progress bar per epoch even when stderr is not a terminal (on a terminal it is the default; "
        "otherwise one line per epoch)",
    )
    p.set_defaults(func=run, color=None)


#: Settings that a resumed run may change (they do not change the results).
NOT_SAVED = ("func", "command", "threads", "verbose", "force", "resume", "out", "rank", "processes")


def run(args: argparse.Namespace) -> int:
    """Train and save; returns the exit status."""
    import time
    from pathlib import Path

    from ..errors import ConfigError
    from ..training.finetune import check_finetuning
    from ._data import data_label
    from ._files import check_output_dir, guard_outputs
    from ._models import require_model_name
    from ._threads import blas_threads
    from .signals import sigterm_as_sigint

    start = time.perf_counter()
    args.rank, args.processes = _processes(args)  # under mpiexec: before any work, mpi4py must be there
    resume = None
    if args.resume:
        args, resume = _resumed_args(args)
    elif args.epochs is None:
        args.epochs = DEFAULTS["epochs"]
    if args.early_stopping and args.validation_split == 0.0:
        raise ConfigError("--early-stopping needs validation data: give --validation-split > 0")
    if args.test_split and args.data in DATASET_NAMES:
        raise ConfigError(f"--test-split is for folders; {args.data} has its own test split")
    require_model_name(args.model)
    if resume is None:  # a resumed run takes its weights from the checkpoint
        check_finetuning(args.init_weights, args.new_head, args.freeze)
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{data_label(args.data)}"
    names = ("model.cnnkit", "metrics.json", "curves.png", "checkpoint.cnnkit")
    paths = {name: out / name for name in names}
    if args.rank == 0:  # the one process that writes
        if resume is None:
            guard_outputs(paths.values(), args.force)
        check_output_dir(out, "--out")
    with sigterm_as_sigint(), blas_threads(args.threads, "train") as threads, _quiet_unless(args.rank == 0):
        return _train(args, out, paths, start, threads, resume)


def _processes(args: argparse.Namespace) -> tuple[int, int]:
    """``(rank, processes)`` under ``mpiexec`` (one model trained on all of them), else ``(0, 1)``."""
    from ..errors import ConfigError
    from ..training.distributed import process_group

    rank, size = process_group()
    if size > 1 and args.batch_size < size:
        raise ConfigError(
            f"--batch-size {args.batch_size} is smaller than the {size} processes: it is the global batch, "
            f"split among them; give at least {size}"
        )
    return rank, size


def _quiet_unless(chief: bool) -> Any:
    """Only rank 0 prints to stdout (errors still reach stderr from every process)."""
    import contextlib
    import os

    if chief:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 - closed with the process


def _resumed_args(args: argparse.Namespace) -> tuple[argparse.Namespace, Any]:
    """The saved run's settings (``--epochs`` may extend it) and its checkpoint."""
    from pathlib import Path

    from ..errors import ConfigError, DataError
    from ..io.model_file import read_checkpoint

    folder = Path(args.resume)
    path = folder / "checkpoint.cnnkit" if folder.is_dir() else folder
    if not path.is_file():
        raise DataError(f"--resume {args.resume}: no checkpoint.cnnkit there (written by `cnnkit train`)")
    ckpt = read_checkpoint(path)
    settings = (ckpt.metadata or {}).get("cli_settings")
    state = ckpt.training_state or {}
    if not isinstance(settings, dict) or "epoch" not in state:
        raise ConfigError(f"--resume {path}: not a checkpoint written by `cnnkit train` (no saved settings)")
    _check_saved(settings, path)
    saved = argparse.Namespace(**vars(args))  # options newer than the checkpoint keep their defaults
    for key, value in settings.items():
        setattr(saved, key, tuple(value) if key == "image_size" and value is not None else value)
    saved.out = str(path.parent)
    done = int(state["epoch"])
    if args.epochs is not None:
        if args.epochs < done:
            raise ConfigError(f"--epochs {args.epochs}: the run to resume has already done {done} epochs")
        saved.epochs = args.epochs
    saved.resume = str(path)
    return saved, ckpt


def _check_saved(settings: dict, path: Any) -> None:
    """The saved settings a resumed run trusts: types and ranges as the command line checks them."""
    import math

    from ..errors import ConfigError

    def is_int(v: Any, low: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    checks = {
        "model": lambda v: isinstance(v, str),
        "data": lambda v: isinstance(v, str),
        "epochs": lambda v: is_int(v, 1),
        "batch_size": lambda v: is_int(v, 1),
        "seed": lambda v: is_int(v, -(2**63)),
        "lr": lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
        "validation_split": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
        "test_split": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
        "optimizer": lambda v: v in ("sgd", "adam", "adamw"),
        "schedule": lambda v: v in ("cosine", "constant"),
        "normalize": lambda v: v in ("unit", "symmetric", "standardize"),
        "limit": lambda v: v is None or is_int(v, 1),
        "early_stopping": lambda v: v is None or is_int(v, 1),
        "augment": lambda v: v is None or isinstance(v, dict),
        "dtype": lambda v: v in ("float32", "float64"),
    }
    for key, ok in checks.items():
        if key in settings and not ok(settings[key]):
            raise ConfigError(f"--resume {path}: the saved setting {key} = {settings[key]!r:.80} is invalid")


def _settings(args: argparse.Namespace) -> dict:
    """The run's settings as saved in the checkpoint (JSON)."""
    out = {}
    for key, value in vars(args).items():
        if key in NOT_SAVED:
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _train(
    args: argparse.Namespace,
    out: Any,
    paths: dict,
    start: float,
    threads: int | None,
    resume: Any = None,
) -> int:
    import sys
    import time

    from ..data import Normalize
    from ..data.preprocess import Preprocess
    from ..errors import DataError
    from ..training.finetune import prepare_finetuning
    from ..training.fit import fit
    from ._data import build_for_data, fit_normalize, load_data
    from ._models import make_optimizer

    data = load_data(
        args.data,
        model_name=args.model,
        image_size=args.image_size,
        color=args.color,
        validation_split=args.validation_split,
        test_split=args.test_split,
        seed=args.seed,
        strict=args.strict,
        limit=args.limit,
        on_bad_file=lambda path, reason: print(
            f"cnnkit train: skipped bad file {path}: {reason}", file=sys.stderr
        ),
    )
    print(data.describe())
    sizes = data.sizes()
    if not sizes["train"]:
        raise DataError(
            f"no training images left (--limit {args.limit}, --validation-split {args.validation_split})"
        )
    if args.validation_split > 0 and sizes["validation"] == 0:
        raise DataError(
            f"--validation-split {args.validation_split:g} of {sizes['train']} training images holds out "
            "none of them (it is taken per class); use more images (--limit) or --validation-split 0"
        )
    model = build_for_data(args.model, data, seed=args.seed)
    fresh = resume is None  # a resumed run keeps the freeze; its weights come from the checkpoint
    prepare_finetuning(
        model,
        args.init_weights if fresh else None,
        new_head=args.new_head and fresh,
        freeze_prefixes=args.freeze,
    )
    if args.dtype != "float32":
        model.astype(args.dtype)
    print(
        f"model: {args.model}, input {'x'.join(map(str, data.input_shape))}, {model.count_params():,} parameters"
    )
    if resume is not None:
        normalize = Preprocess.from_metadata(resume.metadata["preprocess"]).normalize
    else:
        normalize = fit_normalize(Normalize(args.normalize), data.train, seed=args.seed)
    preprocess = Preprocess(tuple(data.image_size), data.color, normalize)
    train_loader, val_loader, augment = _loaders(args, data, normalize)
    done = int(resume.training_state["epoch"]) if resume is not None else 0
    print(
        f"training: {args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr:g} "
        f"({args.schedule}), normalize {args.normalize}"
        + (f", augment {augment.get_config()}" if augment is not None else "")
        + (f", {threads} BLAS thread(s)" if threads else "")
        + (f"; resuming after epoch {done} from {args.resume}" if resume is not None else "")
    )
    if _numba():
        print("note: the first epoch also compiles cnnkit's Numba kernels (cached on disk), so it is slower")
    model.metadata = {
        "preprocess": preprocess.to_metadata(),
        "data": data.summary(),
        "cli_settings": _settings(args),
    }
    load_s = time.perf_counter() - start
    t0 = time.perf_counter()
    history = fit(
        model,
        train_loader,
        epochs=args.epochs,
        validation_data=val_loader,
        optimizer=make_optimizer(args.optimizer, args.lr),
        callbacks=_callbacks(args),
        seed=args.seed,
        verbose=1 if args.verbose or sys.stderr.isatty() else 2,
        class_names=data.class_names,
        checkpoint_path=str(paths["checkpoint.cnnkit"]),
        resume_from=None if resume is None else str(args.resume),
    )
    timing = {"load_s": load_s, "train_s": time.perf_counter() - t0}
    final_name, final_data, final = _final_metrics(
        model, data, normalize, history.interrupted, args.processes
    )
    if args.rank != 0:  # rank 0 writes the files
        return 130 if history.interrupted else 0
    metadata = {
        **model.metadata,
        "training": {
            "epochs": len(history),
            "batch_size": args.batch_size,
            "optimizer": args.optimizer,
            "lr": args.lr,
            "schedule": args.schedule,
            "augment": augment.get_config() if augment is not None else None,
            "seed": args.seed,
            "blas_threads": threads,
            "dtype": args.dtype,
            "processes": args.processes,
        },
        f"{final_name}_metrics": final,
    }
    timing["total_s"] = time.perf_counter() - start
    with _signals_deferred():  # the files below are written as one consistent set
        model.metadata = metadata  # as load_model would give it back
        model.save(paths["model.cnnkit"], metadata=metadata)
        png = _curves(history, paths["curves.png"])
        metrics = _metrics(args, model, data, history, final_name, final, timing, png)
        _write_json(paths["metrics.json"], metrics)
    _report(history, final_name, final, final_data, metrics, paths, png, out)
    return 130 if history.interrupted else 0


def _numba() -> bool:
    from ..ops._jit import numba_available

    return numba_available()


def _curves(history: Any, path: Any) -> Any:
    from ._models import save_curves

    return save_curves(history, path)


def _write_json(path: Any, data: Any) -> None:
    from ._files import write_json

    write_json(path, data)


def _signals_deferred() -> Any:
    from .signals import signals_deferred

    return signals_deferred()


def _loaders(args: argparse.Namespace, data: Any, normalize: Any) -> tuple[Any, Any, Any]:
    """Training loader (shuffled, augmented), validation loader (or None) and the Augment (or None)."""
    from ..data import Augment, DataLoader

    augment = None
    if args.augment:
        augment = Augment(**_pixels(args.augment, data.image_size), seed=args.seed)
    train = DataLoader(
        data.train, args.batch_size, shuffle=True, seed=args.seed, transform=normalize, augment=augment
    )
    val = None
    if data.validation is not None:
        val = DataLoader(data.validation, 256, shuffle=False, transform=normalize)
    return train, val, augment


def _callbacks(args: argparse.Namespace) -> list:
    """Early stopping (keeping the best weights) and the cosine learning-rate decay, as asked."""
    from ..optim import CosineAnnealingLR
    from ..training.callbacks import EarlyStopping, LearningRateScheduler

    callbacks: list = []
    if args.early_stopping:
        callbacks.append(EarlyStopping("val_loss", patience=args.early_stopping, restore_best_weights=True))
    if args.schedule == "cosine" and args.epochs > 1:
        callbacks.append(LearningRateScheduler(CosineAnnealingLR(args.epochs, eta_min=args.lr / 100)))
    return callbacks


def _final_metrics(
    model: Any, data: Any, normalize: Any, interrupted: bool = False, processes: int = 1
) -> tuple[str, Any, dict | None]:
    """Loss and accuracy on the test split when the data set has one, else on the validation split
    (shared among the processes under mpiexec).

    After an interruption, another Ctrl-C skips this measurement (the files are written without it).
    """
    import sys

    from ..data import DataLoader
    from ..training.fit import evaluate

    name, split = ("test", data.test) if data.test is not None else ("validation", data.validation)
    if split is None:
        return name, None, None
    if interrupted:
        print(f"measuring {name} accuracy (Ctrl-C again to skip it)", file=sys.stderr)
    loader = DataLoader(split, 256, shuffle=False, transform=normalize)
    try:
        if processes > 1:
            from ..training.distributed_trainer import evaluate_shared

            return name, split, evaluate_shared(model, loader)
        return name, split, evaluate(model, loader)
    except KeyboardInterrupt:
        if not interrupted:
            raise
        return name, split, None


def _metrics(
    args: argparse.Namespace,
    model: Any,
    data: Any,
    history: Any,
    final_name: str,
    final: dict | None,
    timing: dict,
    png: Any,
) -> dict:
    """The content of metrics.json."""
    epoch_s = [float(t) for t in history.history.get("time", [])]
    ips = [float(v) for v in history.history.get("images_per_sec", [])]
    return {
        "model": args.model,
        "params": model.count_params(),
        "input_shape": list(data.input_shape),
        "data": data.summary(),
        "preprocess": model.metadata["preprocess"],
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "command", "rank")},
        "history": history.to_dict(),
        "epochs_run": len(history),
        "interrupted": bool(history.interrupted),
        "stopped_epoch": history.stopped_epoch,
        f"{final_name}_metrics": final,
        "final": {"split": final_name, **(final or {})},
        "timing": {
            **timing,
            "epoch_s": epoch_s,
            "mean_epoch_s": sum(epoch_s) / len(epoch_s) if epoch_s else None,
            "images_per_s": sum(ips) / len(ips) if ips else None,
            "first_epoch_compiles": _numba() and not args.resume,
        },
        "bad_files": [{"file": p, "error": r} for p, r in data.bad_files()],
        "curves_png": str(png) if png else None,
    }


def _report(
    history: Any,
    final_name: str,
    final: dict | None,
    final_data: Any,
    metrics: dict,
    paths: dict,
    png: Any,
    out: Any = None,
) -> None:
    """The closing lines: accuracy, time, skipped files, files written."""
    if history.interrupted:
        done = len(history)
        print(
            f"interrupted after {done} completed epoch(s): {paths['model.cnnkit']} holds the weights after the "
            f"last completed step, {paths['checkpoint.cnnkit']} the end of epoch {done}; continue with: "
            f"cnnkit train --resume {out}"
            if done
            else f"interrupted in the first epoch: {paths['model.cnnkit']} holds the weights after the last "
            "completed step; no epoch finished, so there is no checkpoint to resume from"
        )
    elif history.stopped_epoch is not None:
        print(f"early stopping after epoch {history.stopped_epoch + 1}; kept the best weights")
    if final is None and history.interrupted and final_data is not None:
        print(f"{final_name} accuracy: not measured (interrupted)")
    elif final is not None:
        print(
            f"{final_name} accuracy: {final['accuracy']:.4f} (loss {final['loss']:.4f}, {_count(final_data)} images)"
        )
    else:
        accuracy = history.last().get("accuracy", float("nan"))
        print(f"training accuracy: {accuracy:.4f} (no test or validation split)")
    t = metrics["timing"]
    print(
        f"time: {t['total_s']:.1f} s total, {t['train_s']:.1f} s training "
        f"({t['mean_epoch_s'] or 0:.1f} s/epoch, {t['images_per_s'] or 0:.0f} images/s)"
        + ("; the first epoch includes Numba's compile time" if t.get("first_epoch_compiles") else "")
    )
    if metrics["bad_files"]:
        print(f"skipped {len(metrics['bad_files'])} unreadable file(s) (listed in metrics.json)")
    print(
        f"wrote {paths['model.cnnkit']}, {paths['metrics.json']}"
        + (f", {png}" if png else "")
        + (f", {paths['checkpoint.cnnkit']}" if paths["checkpoint.cnnkit"].exists() else "")
    )
    if not png:
        print("curves.png skipped: matplotlib is not installed (pip install cnnkit[viz])")


def _pixels(kwargs: dict, image_size: tuple[int, int]) -> dict:
    """``translate`` below 1 is a fraction of the image size; Augment takes whole pixels."""
    out = dict(kwargs)
    t = out.get("translate")
    if t is not None:
        if t < 1:
            out["translate"] = (int(round(t * image_size[0])), int(round(t * image_size[1])))
        else:
            out["translate"] = int(round(t))
    return out


def _count(split: Any) -> int:
    """Images in a split: ``(x, y)`` arrays or a lazy folder."""
    return len(split[0]) if isinstance(split, tuple) else len(split)
