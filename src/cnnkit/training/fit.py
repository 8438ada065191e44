"""``fit``, ``evaluate`` and ``predict``: the public training loop (notes section 7).

``fit`` checks every argument and the data, builds the model from the first batch's shape, wraps the
data in adapters (:mod:`.data_adapters`: arrays and DataLoaders are one kind of per-epoch iterator with
one shuffling recipe) and hands the run to a :class:`~cnnkit.training.trainer.Trainer` (the training
step, checkpoints, signals; ``trainer_class=`` picks a subclass). Progress and history reach the user
through callbacks (:class:`~cnnkit.training.progress.ProgressLogger`, :class:`History`).

**Loss on logits**: see :mod:`cnnkit.training.head`.

**Reproducibility.** The order of the training samples in epoch ``e`` is the permutation
:func:`cnnkit.utils.random.epoch_order` draws from ``(seed, e)``, the recipe of
:class:`cnnkit.data.DataLoader` too (``seed=None`` draws a seed from the global generator, so
``cnnkit.set_seed`` makes it reproducible). Dropout draws from the layers' own generators. With seeded
layers and the same ``seed``, two runs give the same weights and metrics bit for bit.

**Checkpoints and resume.** ``checkpoint_path=`` saves, after every epoch, the model, the optimizer state
and a training state; ``resume_from=`` loads all of it and continues with the next epoch, so that 4
epochs in one run and 2 + 2 with a resume give identical weights. ``epochs`` is the total, as in Keras:
``fit(..., epochs=4, resume_from=p)`` after 2 saved epochs runs epochs 3 and 4.

**Failures and signals.** A non-finite loss or gradient stops training with
:class:`~cnnkit.errors.TrainingError` naming the epoch and batch; the model keeps the last good weights.
The first Ctrl-C or SIGTERM stops training cleanly at the end of the current step (a second one stops at
once): the weights after the last completed step are kept, callbacks' ``on_train_end`` run, and the
returned history has ``interrupted = True`` (:mod:`cnnkit.training.trainer`).

**Speed.** ``fit`` changes nothing in the process; :func:`cnnkit.runtime.tune` (which the ``cnnkit``
command calls) adds the process-wide BLAS and malloc tuning.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers.base import Layer
from ..optim.optimizers import Adam, Optimizer, get_optimizer
from ..optim.schedules import Schedule
from ..utils.checks import check_choice, check_int, check_number
from ..utils.random import global_rng
from .callbacks import Callback, LearningRateScheduler
from .data_adapters import (
    ArrayAdapter,
    first_batch_checked,
    make_adapter,
    split_validation,
    unpack_pair,
    validation_adapter,
)
from .head import LossHead, inference_mode, measure
from .history import History
from .inputs import check_batch, check_label_range, check_model, ensure_built, num_classes
from .progress import is_terminal
from .trainer import Trainer

__all__ = ["fit", "evaluate", "predict", "Trainer"]


def _normalise_callbacks(callbacks: Any) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (Callback, Schedule)):
        callbacks = [callbacks]
    if not isinstance(callbacks, Iterable):
        raise ConfigError(
            f"fit: callbacks must be a list of Callback objects, got {type(callbacks).__name__}"
        )
    out: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, Schedule):
            cb = LearningRateScheduler(cb)
        if not isinstance(cb, Callback):
            raise ConfigError(
                f"fit: every callback must be a cnnkit.training.Callback (or a schedule), got {type(cb).__name__}"
            )
        out.append(cb)
    return out


def fit(
    model: Layer,
    x: Any,
    y: Any = None,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: Any = None,
    validation_split: float = 0.0,
    optimizer: Optimizer | str | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int | None = None,
    shuffle: bool = True,
    verbose: int = 1,
    resume_from: str | None = None,
    checkpoint_path: str | None = None,
    clip_norm: float | None = None,
    class_names: Sequence[str] | None = None,
    trainer_class: type[Trainer] = Trainer,
    distributed: str | bool | None = None,
) -> History:
    """Train ``model`` to classify ``x`` as ``y`` with softmax cross-entropy; returns a :class:`History`.

    Parameters
    ----------
    x, y:
        Images ``(N, C, H, W)`` as floats (uint8 pixels are refused: scale them with
        ``x.astype(np.float32) / 255``) and integer class labels ``(N,)``, or the pair ``(x, y)`` as ``x``;
        or ``x`` a DataLoader yielding ``(images, labels)`` batches, with ``y`` None. A loader's own
        ``batch_size``, ``shuffle`` and seed apply (``fit`` calls ``loader.set_epoch(e)`` before epoch
        ``e``, so give the loader the same seed when resuming).
    epochs:
        The total number of epochs (with ``resume_from``, the epochs already done count).
    validation_data, validation_split:
        ``(x_val, y_val)`` or a DataLoader, or the fraction of ``(x, y)`` to hold out: the *last* samples,
        before shuffling (Keras). Adds ``val_loss`` and ``val_accuracy`` to the metrics.
    optimizer:
        An :class:`cnnkit.optim.Optimizer` or a name (``"sgd"``, ``"adam"``, ``"adamw"``); default
        ``Adam(lr=1e-3)`` (or, when resuming, the optimizer saved in the checkpoint).
    callbacks:
        :class:`Callback` objects; a :mod:`cnnkit.optim` schedule is wrapped in a LearningRateScheduler.
    seed:
        Seeds the shuffling (epoch ``e`` uses the generator seeded with ``(seed, e)``). Weight
        initialisation follows the model's own ``seed`` (or ``cnnkit.set_seed``).
    verbose:
        0 silent, 1 a progress bar per epoch (one line per epoch when stderr is not a terminal), 2 one
        line per epoch (all on stderr).
    resume_from, checkpoint_path:
        Continue from a checkpoint written by ``fit``/``ModelCheckpoint``; save one after every epoch.
    clip_norm:
        Clip the global L2 norm of the gradients to this value before each update.
    class_names:
        Label names (one per output), stored in ``model.class_names`` and saved with the model.
    trainer_class:
        The :class:`Trainer` subclass that runs the epochs (default :class:`Trainer`), e.g. a
        data-parallel trainer that overrides ``train_step``; see :mod:`cnnkit.training.trainer`.
    distributed:
        ``"mpi"``: train one model on every process of the MPI job (``batch_size`` is the global batch,
        split among them; :mod:`cnnkit.training.distributed`). None (default): the same when the process
        was started by ``mpiexec`` with more than one process, else one process. False: one process,
        even under ``mpiexec`` (each rank trains alone).

    The metrics per epoch are ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (with validation),
    ``lr``, ``time`` (seconds) and ``images_per_sec``. Every argument and the data are checked before the
    first step: wrong shapes, lengths, label ranges or settings raise ShapeError / DataError / ConfigError /
    DTypeError naming the expected and the actual value.
    """
    op = "fit"
    model = check_model(model, op)
    epochs = check_int(epochs, "epochs", op, 1)
    batch_size = check_int(batch_size, "batch_size", op, 1)
    check_choice(verbose, "verbose", op, (0, 1, 2))
    check_number(
        validation_split, "validation_split", op, low=0.0, high=1.0, high_open=True, kind="a fraction"
    )
    check_number(clip_norm, "clip_norm", op, low=0.0, low_open=True, optional=True)
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, Trainer)):
        raise ConfigError(
            f"{op}: trainer_class must be cnnkit.training.Trainer or a subclass of it, got {trainer_class!r}"
        )
    if seed is None:
        seed = int(global_rng().integers(0, 2**32))
    else:
        seed = check_int(seed, "seed", op, 0)
    optimizer_given = optimizer is not None
    if optimizer is None:
        opt: Optimizer = Adam(lr=1e-3)
    elif isinstance(optimizer, (Optimizer, str)):
        opt = get_optimizer(optimizer)
    else:
        raise ConfigError(
            f"{op}: optimizer must be a cnnkit.optim optimizer or a name, got {type(optimizer).__name__}"
        )
    cbs = _normalise_callbacks(callbacks)

    # ---- data and model
    x, y = unpack_pair(x, y)
    x, y, validation_data = split_validation(x, y, validation_split, validation_data)
    train = make_adapter(x, y, batch_size=batch_size, shuffle=bool(shuffle), seed=seed, op=op, name="x")
    if isinstance(train, ArrayAdapter):
        ensure_built(model, train.x.shape[1:], op, "x")
        classes = num_classes(model, op)
        check_label_range(train.y, classes, op, "y")
    else:
        xb, yb = first_batch_checked(train, model, op)
        ensure_built(model, xb.shape[1:], op, "x")
        classes = num_classes(model, op)
        check_batch(xb, yb, model, classes, op, "the DataLoader")
    val = validation_adapter(validation_data, batch_size, model, classes)
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(names) != classes:
            raise ConfigError(
                f"{op}: class_names has {len(names)} names, but the model has {classes} outputs"
            )
        model.class_names = names

    metrics = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if val is not None else [])
    params = {
        "epochs": epochs,
        "initial_epoch": 0,
        "batch_size": batch_size if isinstance(train, ArrayAdapter) else getattr(x, "batch_size", None),
        "steps": len(train),
        "samples": train.num_samples,
        "validation_samples": None if val is None else val.num_samples,
        "shuffle": bool(shuffle),
        "seed": seed,
        "clip_norm": clip_norm,
        "verbose": verbose,
        "metrics": [*metrics, "lr", "time", "images_per_sec"],
    }
    if distributed is not False:
        from .distributed_trainer import choose_trainer

        trainer_class = choose_trainer(distributed, trainer_class, params["batch_size"], op)
    trainer = trainer_class(
        model,
        train,
        val,
        classes=classes,
        optimizer=opt,
        callbacks=cbs,
        epochs=epochs,
        seed=seed,
        verbose=verbose,
        clip_norm=clip_norm,
        checkpoint_path=None if checkpoint_path is None else str(checkpoint_path),
        params=params,
    )
    if resume_from is not None:
        trainer.resume(str(resume_from), optimizer_given)
    with _no_input_grad(model):
        return trainer.train()


@contextlib.contextmanager
def _no_input_grad(model: Layer) -> Iterator[None]:
    """Skip dL/dx of the model's first layer while training: nothing reads the gradient of the images.

    The first convolution's input gradient is a third of its backward pass. The model's own setting is
    put back afterwards, so gradcheck and users calling ``model.backward`` still get dx.
    """
    if not hasattr(model, "needs_input_grad"):
        yield
        return
    previous = model.needs_input_grad
    model.needs_input_grad = False
    try:
        yield
    finally:
        model.needs_input_grad = previous


def evaluate(
    model: Layer,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 256,
    top_k: Sequence[int] = (1,),
    verbose: int = 0,
) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` of ``model`` on ``(x, y)`` (or a DataLoader).

    Runs in inference mode (dropout off, batch norm on its running statistics); every layer's previous
    mode is put back afterwards. ``top_k=(1, 5)`` adds ``top5_accuracy``: the fraction of samples whose
    label is among the ``k`` highest scores (every ``k > 1`` gets a ``top{k}_accuracy`` key).
    ``verbose=1`` shows a progress bar when stderr is a terminal.
    """
    op = "evaluate"
    model = check_model(model, op)
    batch_size = check_int(batch_size, "batch_size", op, 1)
    if isinstance(top_k, int):
        top_k = (top_k,)
    ks = tuple(check_int(k, "top_k", op, 1) for k in top_k)
    x, y = unpack_pair(x, y)
    source = make_adapter(x, y, batch_size=batch_size, shuffle=False, seed=0, op=op, name="x")
    if isinstance(source, ArrayAdapter):
        ensure_built(model, source.x.shape[1:], op, "x")
    elif not model.built:
        raise ConfigError(f"{op}: the model is not built; build it (input_shape=...) or train it first")
    classes = num_classes(model, op)
    if isinstance(source, ArrayAdapter):
        check_label_range(source.y, classes, op, "y")
    for k in ks:
        if k > classes:
            raise ConfigError(f"{op}: top_k={k} is more than the model's {classes} classes")
    bar = None
    if verbose and is_terminal(sys.stderr):  # a bar belongs on a terminal, not in a log
        from tqdm.auto import tqdm

        bar = tqdm(total=len(source), desc="Evaluate", unit="batch", file=sys.stderr, dynamic_ncols=True)
    try:
        out = measure(model, LossHead(model), source, classes, tuple(dict.fromkeys((1, *ks))), bar, op, "x")
    finally:
        if bar is not None:
            bar.close()
    del out["samples"]
    return out


def predict(model: Layer, x: Any, batch_size: int = 256, *, verbose: int = 0) -> np.ndarray:
    """Class probabilities ``(N, classes)`` (rows sum to 1) for the images ``x`` (or a DataLoader).

    The softmax of the logits (notes section 6.2), or the model's own output if it ends with a Softmax
    layer; computed in inference mode, in the model's dtype.
    """
    op = "predict"
    model = check_model(model, op)
    batch_size = check_int(batch_size, "batch_size", op, 1)
    source = make_adapter(
        x, None, batch_size=batch_size, shuffle=False, seed=0, op=op, name="x", labels=False
    )
    if isinstance(source, ArrayAdapter):
        if (
            model.built
            and source.x.ndim == len(model.input_shape)
            and source.x.shape == tuple(model.input_shape)
        ):
            raise ShapeError(
                f"{op}: x has the shape of one sample {source.x.shape}; pass a batch, e.g. x[None] for one image"
            )
        ensure_built(model, source.x.shape[1:], op, "x")
    elif not model.built:
        raise ConfigError(f"{op}: the model is not built; build it (input_shape=...) or train it first")
    classes = num_classes(model, op)
    head = LossHead(model)
    outputs = []
    bar = None
    if verbose and is_terminal(sys.stderr):  # a bar belongs on a terminal, not in a log
        from tqdm.auto import tqdm

        bar = tqdm(total=len(source), desc="Predict", unit="batch", file=sys.stderr, dynamic_ncols=True)
    try:
        with inference_mode(model), contextlib.closing(source.batches(0)) as batches:
            for xb, _ in batches:
                if not source.checked:
                    xb, _ = check_batch(xb, None, model, None, op, "the DataLoader")
                outputs.append(head.probabilities(xb))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not outputs:
        return np.zeros((0, classes), dtype=model.dtype)
    return np.concatenate(outputs, axis=0)
