"""``cnnkit bench``: training-step and inference throughput of zoo models (the cnnkit half of the benchmark).

The measuring code lives in :mod:`cnnkit.bench`; this module parses arguments and prints the table.
"""

from __future__ import annotations

import argparse
import sys

from ._args import add_threads_argument, positive_int

DESCRIPTION = """\
Measure cnnkit's speed without PyTorch: for each model, images/s of a training step (forward, cross-entropy,
backward, SGD update) and of inference, the median over timed steps after warm-up, on random inputs. Also
reports the process's peak memory (RSS) and which BLAS NumPy uses. Default models and batch sizes:
simple_cnn (64), lenet5 (128), cats_dogs_cnn (32), resnet18_small (64). The machine should be otherwise
idle for meaningful numbers.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` parser."""
    p = subparsers.add_parser(
        "bench",
        help="measure training and inference speed (images/s) of zoo models",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        metavar="NAMES",
        help="comma-separated zoo models (default: simple_cnn,lenet5,cats_dogs_cnn,resnet18_small)",
    )
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps per measurement (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default: 2)")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="one batch size for every model")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default: 0)")
    p.add_argument("--json", metavar="PATH", help="also write the results and environment as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print a table; returns the exit status."""
    from pathlib import Path

    from .. import bench
    from ..errors import ConfigError
    from ._files import check_output_file, guard_outputs, write_json
    from ._table import format_table
    from ._threads import blas_threads

    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if args.json:
        guard_outputs([Path(args.json)], args.force, hint="pass --force to overwrite it")
        check_output_file(args.json, "--json")
    sizes = None
    if args.batch_size:
        sizes = {name: args.batch_size for name in (models or bench.BENCH_MODELS)}
    with blas_threads(args.threads, "bench"):
        env = bench.environment()
        print(f"numpy {env['numpy']}, BLAS: {env['blas']}, {env['cpu_count']} CPUs")
        results = bench.run_benchmarks(
            models,
            args.steps,
            warmup=args.warmup,
            batch_sizes=sizes,
            seed=args.seed,
            progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True),
        )
    rows = [
        (
            r["model"],
            "x".join(map(str, r["input_shape"])),
            r["batch_size"],
            f"{r['train']['images_per_s']:.1f}",
            f"{r['train']['median_s'] * 1000:.1f}",
            f"{r['inference']['images_per_s']:.1f}",
            f"{r['inference']['median_s'] * 1000:.1f}",
            f"{r['peak_rss_mb']:.0f}",
        )
        for r in results
    ]
    headers = [
        "model",
        "input",
        "batch",
        "train img/s",
        "train ms/step",
        "infer img/s",
        "infer ms/batch",
        "peak RSS MiB",
    ]
    print(format_table(headers, rows, "llrrrrrr"))
    scope = "each model's run" if all(r["rss_scope"] == "model" for r in results) else "the process so far"
    print(f"(medians over timed steps; peak RSS of {scope})")
    if args.json:
        write_json(
            args.json, {"environment": env, "steps": args.steps, "warmup": args.warmup, "results": results}
        )
        print(f"wrote {args.json}")
    return 0
