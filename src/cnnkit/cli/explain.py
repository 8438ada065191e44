"""``cnnkit explain conv|pool|size|softmax|im2col|exercises|network|backprop``: the notes' worked examples,
step by step, with every number computed by cnnkit (see :mod:`cnnkit.explain`)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Print a step-by-step explanation of one of the lecture notes' worked examples, computed by cnnkit's own
ops. With no options each topic uses the notes' numbers (and says where the notes print something else).
Run `cnnkit explain TOPIC --help` for a topic's options.
"""

MATRIX_HELP = 'rows separated by ";", entries by spaces or commas, e.g. "1 0 1; 0 2 1; 1 1 0"'


def _add_common_window(parser: argparse.ArgumentParser, default_stride: str) -> None:
    parser.add_argument("--stride", type=int, default=None, help=f"window step (default: {default_stride})")
    parser.add_argument("--padding", type=int, default=0, help="zeros around the input (default: 0)")
    parser.add_argument("--dilation", type=int, default=1, help="spacing of the window's taps (default: 1)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``explain`` parser and its topics."""
    parser = subparsers.add_parser(
        "explain",
        help="step-by-step explanations of the notes' worked examples",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    topics = parser.add_subparsers(dest="topic", metavar="TOPIC")
    parser.set_defaults(func=_no_topic, _parser=parser)

    p = topics.add_parser(
        "conv",
        help="a convolution window by window (notes 3.3)",
        description="Slide a kernel over an image and show every window, product and sum (notes 3.2-3.4). "
        "Default: the notes' 4x4 image and 3x3 edge filter.",
    )
    p.add_argument("--image", help=f"input matrix; {MATRIX_HELP}")
    p.add_argument("--kernel", help="kernel matrix, same format")
    _add_common_window(p, "1")
    p.add_argument("--flip", action="store_true", help="flip the kernel: the true convolution of notes 3.2")
    p.set_defaults(func=run)

    p = topics.add_parser(
        "pool",
        help="pooling window by window (notes 4.2)",
        description="Max, average or min pooling, window by window (notes 4.2). Default: the notes' 4x4 matrix.",
    )
    p.add_argument("--image", "--matrix", dest="image", help=f"input matrix; {MATRIX_HELP}")
    p.add_argument("--kind", choices=("max", "avg", "min"), default="max", help="pooling kind (default: max)")
    p.add_argument("--size", type=int, default=2, help="window size (default: 2)")
    _add_common_window(p, "the window size")
    p.set_defaults(func=run)

    p = topics.add_parser(
        "size",
        help="the output-size formula with numbers (notes 3.4)",
        description="Evaluate (W - F + 2P)/S + 1 for one axis, show the exact fraction and why it rounds down.",
    )
    p.add_argument("input", type=int, nargs="?", help="input size W (default: the notes' 32, with F=3, P=1)")
    p.add_argument("kernel", type=int, nargs="?", help="filter size F (default: the notes' 3)")
    p.add_argument("--stride", type=int, default=1, help="stride S (default: 1)")
    p.add_argument(
        "--padding", type=int, default=None, help="padding P (default: 0; 1 in the notes' example)"
    )
    p.add_argument("--dilation", type=int, default=1, help="dilation (default: 1)")
    p.set_defaults(func=run)

    p = topics.add_parser(
        "softmax",
        help="softmax with the exponentials written out (notes 6.2)",
        description="Softmax of a score vector, step by step (notes 6.2). Default scores: 2.0 1.0 0.1.",
    )
    p.add_argument("scores", nargs="*", type=float, help="the scores (default: 2.0 1.0 0.1)")
    p.set_defaults(func=run)

    p = topics.add_parser(
        "im2col",
        help="convolution as a matrix product (notes 11.1)",
        description="The patch matrix, the weight column and their product (notes 11.1). Default: "
        "exercise 2's 3x3 image and 2x2 kernel.",
    )
    p.add_argument("--image", help=f"input matrix; {MATRIX_HELP}")
    p.add_argument("--kernel", help="kernel matrix, same format")
    p.add_argument("--kernel-size", type=int, default=2, help="square kernel size when --kernel is not given")
    p.add_argument("--stride", type=int, default=1, help="window step (default: 1)")
    p.add_argument("--padding", type=int, default=0, help="zeros around the input (default: 0)")
    p.set_defaults(func=run)

    p = topics.add_parser(
        "exercises",
        help="the notes' exercises 1-3, solved (notes 14)",
        description="Solve the notes' exercises 1-3 with cnnkit and compare with the notes' answers.",
    )
    p.set_defaults(func=run)

    p = topics.add_parser(
        "network",
        help="a model layer by layer: shapes, parameters, multiply-adds (notes 5, 9)",
        description="Walk through a zoo model or a saved model file layer by layer: each output shape from "
        "(W - F + 2P)/S + 1, each layer's parameters and multiply-adds (as notes 5 and 9 do).",
    )
    p.add_argument(
        "model",
        metavar="MODEL|FILE",
        nargs="?",
        default="simple_cnn",
        help="a zoo model name or a .cnnkit file (default: simple_cnn, the notes' section 5 network)",
    )
    p.add_argument("--input-shape", metavar="C,H,W", help="input shape for a zoo model, e.g. 1,28,28")
    p.add_argument("--classes", type=int, metavar="N", help="number of classes for a zoo model")
    p.set_defaults(func=run)

    p = topics.add_parser(
        "backprop",
        help="one training step of a tiny CNN with every gradient (notes 7.2, 7.3)",
        description="Forward and backward through conv -> ReLU -> max pool -> dense -> softmax "
        "cross-entropy with numbers, then the weight update W_new = W_old - eta dL/dW.",
    )
    p.add_argument("--lr", type=float, default=0.1, help="learning rate eta (default: 0.1)")
    p.set_defaults(func=run)


def _no_topic(args: argparse.Namespace) -> int:
    args._parser.print_help()
    return 2


def run(args: argparse.Namespace) -> int:
    """Compute and print the chosen explanation; returns the exit status."""
    from .. import explain

    topic = args.topic
    if topic == "conv":
        result = explain.conv(
            args.image,
            args.kernel,
            stride=1 if args.stride is None else args.stride,
            padding=args.padding,
            dilation=args.dilation,
            flip_kernel=args.flip,
        )
    elif topic == "pool":
        result = explain.pool(
            args.image, args.kind, args.size, stride=args.stride, padding=args.padding, dilation=args.dilation
        )
    elif topic == "size":
        width, kernel, padding = args.input, args.kernel, args.padding
        if width is None and kernel is None:  # the notes' section 5 example: 32x32 input, 3x3 filters, P=1
            width, kernel, padding = 32, 3, 1 if padding is None else padding
        elif width is None or kernel is None:
            from ..errors import ConfigError

            raise ConfigError("explain size: give both W and F, or neither (the notes' example)")
        result = explain.size(width, kernel, padding=padding or 0, stride=args.stride, dilation=args.dilation)
    elif topic == "softmax":
        result = explain.softmax(args.scores) if args.scores else explain.softmax()
    elif topic == "im2col":
        result = explain.im2col(
            args.image, args.kernel_size, kernel=args.kernel, stride=args.stride, padding=args.padding
        )
    elif topic == "exercises":
        result = explain.exercises()
    elif topic == "network":
        from pathlib import Path

        from ._args import parse_shape
        from ._models import get_zoo_model

        shape = parse_shape(args.input_shape) if args.input_shape else None
        if Path(args.model).is_file():
            model = args.model
        else:
            model = get_zoo_model(args.model, num_classes=args.classes, input_shape=shape, seed=0)
        result = explain.network(model)
    elif topic == "backprop":
        result = explain.backprop(lr=args.lr)
    else:  # pragma: no cover - argparse restricts the topics
        return 2
    print(result.text, end="")
    return 0
