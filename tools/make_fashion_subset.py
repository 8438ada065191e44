"""Make the class-balanced Fashion-MNIST subset that ships inside cnnkit.

Reads the original IDX files (by default Debian's ``/usr/share/datasets/fashion-mnist``), draws
``--train`` training and ``--test`` test images per class with a fixed seed (kept in their original
order), and writes gzip IDX files plus the licence notice to ``src/cnnkit/data/_assets``. The output is
byte-for-byte reproducible (gzip without time stamp).

    python tools/make_fashion_subset.py [--source DIR] [--train 800] [--test 200] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnkit.data.datasets import ASSETS_DIR, BUNDLED_PREFIX, DEFAULT_FASHION_DIR, FASHION_FILES, _search
from cnnkit.data.idx import read_idx_pair, write_idx
from cnnkit.utils.atomic import write_text_atomic

NOTICE = """\
The files fashion-mnist-subset-*-ubyte.gz in this folder are a class-balanced subset of Fashion-MNIST
(https://github.com/zalandoresearch/fashion-mnist): {n_train} training images ({train} per class) and
{n_test} test images ({test} per class), chosen with seed {seed} by tools/make_fashion_subset.py,
in the original IDX format. Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.

Fashion-MNIST is distributed under the MIT License:

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def balanced_indices(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each class, drawn without replacement, in their original order."""
    chosen = []
    for k in range(10):
        idx = np.flatnonzero(y == k)
        if len(idx) < per_class:
            raise SystemExit(f"class {k} has only {len(idx)} images, {per_class} requested")
        chosen.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_FASHION_DIR)
    parser.add_argument("--out", type=Path, default=ASSETS_DIR)
    parser.add_argument("--train", type=int, default=800, help="training images per class")
    parser.add_argument("--test", type=int, default=200, help="test images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    found = _search(args.source)
    if found is None:
        raise SystemExit(f"no Fashion-MNIST files in {args.source}")
    files = found[1]
    rng = np.random.default_rng(args.seed)
    for part, (img_path, lbl_path), per_class in (
        ("train", files[0:2], args.train),
        ("t10k", files[2:4], args.test),
    ):
        x, y = read_idx_pair(img_path, lbl_path, num_classes=10, image_shape=(28, 28))
        keep = balanced_indices(y, per_class, rng)
        images_name, labels_name = FASHION_FILES[0:2] if part == "train" else FASHION_FILES[2:4]
        write_idx(args.out / f"{BUNDLED_PREFIX}{images_name}.gz", x[keep, 0])
        write_idx(args.out / f"{BUNDLED_PREFIX}{labels_name}.gz", y[keep].astype(np.uint8))
        print(f"{part}: {len(keep)} images ({per_class} per class) from {img_path}")
    notice = NOTICE.format(
        n_train=10 * args.train, n_test=10 * args.test, train=args.train, test=args.test, seed=args.seed
    )
    write_text_atomic(args.out / "FASHION-MNIST-LICENSE.txt", notice)
    for p in args.out.glob(f"{BUNDLED_PREFIX}*"):
        p.chmod(0o644)  # atomic writes create 0600 files; package data must be world-readable
    (args.out / "FASHION-MNIST-LICENSE.txt").chmod(0o644)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
