"""Backpropagation through a tiny CNN with every number shown (notes §7.2, §7.3 and §11.2).

The network: a 5x5 image -> Conv 2x2 (one filter, bias) -> ReLU -> MaxPool 2x2 -> Flatten (4) ->
Dense 4 -> 3 -> softmax + cross-entropy. The forward pass and every gradient come from the library's ops
(``conv2d_forward/backward``, ``relu_forward/backward``, ``max_pool2d_forward/backward``,
``flatten_forward/backward``, ``linear_forward/backward``, ``cross_entropy_forward/backward``); the
explanation only arranges them in the order of §7.2:

1. output layer: ``dL/dlogits = p - y`` (softmax and cross-entropy together),
2. fully connected layer: ``dL/dW = dL/dlogits^T x``, ``dL/db = dL/dlogits``, ``dL/dx = dL/dlogits W``,
3. pooling: each gradient goes to the position that held the max, the other three get 0,
4. ReLU passes the gradient where its input was positive, then the convolution:
   ``dL/dK = corr(I, dL/dO)`` (the input cross-correlated with the output gradient, §11.2) and
   ``dL/dI = full convolution of dL/dO with the kernel`` (a cross-correlation with the flipped kernel);

and then the update of §7.3, ``W_new = W_old - eta dL/dW``. A finite-difference estimate of ``dL/dK``
checks the chain rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ops.activations import relu_backward, relu_forward
from ..ops.conv import conv2d, conv2d_backward, conv2d_forward
from ..ops.linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from ..ops.losses import cross_entropy_backward, cross_entropy_forward
from ..ops.pool import max_pool2d_backward, max_pool2d_forward
from ..utils.checks import check_number
from ._format import Explanation, heading, matrix_lines, matrix_text, num, side_by_side, signed, wrap

IMAGE = np.array(
    [[1, 2, 3, 1, 3], [0, 1, 3, 2, 1], [2, 0, 1, 0, 2], [1, 3, 2, 1, 0], [0, 1, 0, 2, 1]], dtype=np.float64
)
KERNEL = np.array([[0.6, -0.4], [0.2, 0.5]], dtype=np.float64)
CONV_BIAS = -0.5
DENSE_W = np.array([[0.2, -0.1, 0.4, 0.3], [-0.3, 0.5, 0.1, -0.2], [0.1, 0.2, -0.4, 0.3]], dtype=np.float64)
DENSE_B = np.array([0.1, 0.0, -0.1], dtype=np.float64)
LABEL = 0


def _forward(
    x: np.ndarray, k: np.ndarray, bk: float, w: np.ndarray, bw: np.ndarray, label: int
) -> dict[str, Any]:
    """The forward pass with the library's ops; returns every intermediate and cache."""
    conv, conv_cache = conv2d_forward(x, k[None, None], np.array([bk], dtype=x.dtype))
    act, relu_cache = relu_forward(conv)
    pooled, pool_cache = max_pool2d_forward(act, 2)
    flat, flat_cache = flatten_forward(pooled)
    logits, lin_cache = linear_forward(flat, w, bw)
    loss, ce_cache = cross_entropy_forward(logits, np.array([label]))
    return {
        "conv": np.ascontiguousarray(conv),
        "relu": act,
        "pooled": pooled,
        "flat": flat,
        "logits": logits,
        "probs": ce_cache[0],
        "loss": loss,
        "caches": (conv_cache, relu_cache, pool_cache, flat_cache, lin_cache, ce_cache),
    }


@dataclass(frozen=True)
class BackpropExplanation(Explanation):
    """Every number of the worked example (see :func:`backprop`). Arrays drop the batch axis."""

    image: np.ndarray  # (5, 5)
    kernel: np.ndarray  # (2, 2)
    conv_bias: float
    dense_w: np.ndarray  # (3, 4)
    dense_b: np.ndarray  # (3,)
    label: int
    lr: float
    # forward
    conv: np.ndarray  # (4, 4) pre-activation
    relu: np.ndarray  # (4, 4)
    pooled: np.ndarray  # (2, 2)
    flat: np.ndarray  # (4,)
    logits: np.ndarray  # (3,)
    probs: np.ndarray  # (3,)
    loss: float
    # backward
    dlogits: np.ndarray  # (3,) = p - y
    dense_dw: np.ndarray  # (3, 4)
    dense_db: np.ndarray  # (3,)
    dflat: np.ndarray  # (4,)
    dpooled: np.ndarray  # (2, 2)
    drelu: np.ndarray  # (4, 4): dL/d(ReLU output), nonzero only at the max positions
    dconv: np.ndarray  # (4, 4): dL/dO, the gradient at the convolution's output
    dkernel: np.ndarray  # (2, 2) from conv2d_backward
    dconv_bias: float
    dimage: np.ndarray  # (5, 5) from conv2d_backward
    dkernel_by_correlation: np.ndarray  # conv2d(I, dL/dO): §11.2 as a cross-correlation
    dimage_by_full_conv: np.ndarray  # conv2d(pad(dL/dO), K, flip_kernel=True): the full convolution
    dkernel_numeric: np.ndarray  # central finite differences of the loss
    # update (§7.3)
    kernel_new: np.ndarray
    conv_bias_new: float
    dense_w_new: np.ndarray
    dense_b_new: np.ndarray
    loss_after: float

    @property
    def max_positions(self) -> list[tuple[int, int]]:
        """Where each pooling window's max sits in the 4x4 ReLU output (row, column)."""
        out = []
        for i in range(2):
            for j in range(2):
                window = self.relu[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                r, c = np.unravel_index(int(np.argmax(window)), window.shape)
                out.append((2 * i + int(r), 2 * j + int(c)))
        return out

    def render(self) -> str:
        y = np.zeros_like(self.probs)
        y[self.label] = 1.0
        lines = [heading("Backpropagation, one small example (notes §7.2, §7.3, §11.2)"), ""]
        lines.append(
            wrap(
                "Network: 5x5 image -> Conv 2x2 (one filter K, bias b) -> ReLU -> MaxPool 2x2 -> Flatten (4) "
                "-> Dense 4->3 -> softmax + cross-entropy. Every number below comes from cnnkit's ops."
            )
        )
        lines.append("")
        lines.append(heading("Forward", "-"))
        lines.append(
            side_by_side(
                [["Image I"] + matrix_lines(self.image), ["Kernel K"] + matrix_lines(self.kernel)],
                gap="      ",
            )
        )
        lines.append(f"Conv bias b = {num(self.conv_bias)}")
        lines.append("")
        lines.append(
            side_by_side(
                [
                    ["O = conv(I, K) + b"] + matrix_lines(self.conv),
                    ["ReLU(O)"] + matrix_lines(self.relu),
                    ["MaxPool 2x2"] + matrix_lines(self.pooled),
                ],
                gap="     ",
            )
        )
        lines.append(f"Flatten: [{', '.join(num(v) for v in self.flat)}]")
        lines.append("")
        lines.append(
            side_by_side(
                [["Dense W"] + matrix_lines(self.dense_w), ["b"] + matrix_lines(self.dense_b[:, None])]
            )
        )
        lines.append(f"logits z = W x + b = [{', '.join(num(v) for v in self.logits)}]")
        lines.append(f"p = softmax(z) = [{', '.join(num(v) for v in self.probs)}]   (§6.2)")
        lines.append(
            f"true class {self.label}: y = [{', '.join(num(v) for v in y)}]; "
            f"L = -log p[{self.label}] = -log {num(self.probs[self.label])} = {num(self.loss)}   (§7.1)"
        )
        lines.append("")
        lines.append(heading("Backward (§7.2), from the loss to the filter", "-"))
        lines.append("1. Output layer: softmax and cross-entropy together give dL/dz = p - y")
        lines.append(
            f"   dL/dz = [{', '.join(num(v) for v in self.probs)}] - [{', '.join(num(v) for v in y)}]"
            f" = [{', '.join(num(v) for v in self.dlogits)}]"
        )
        lines.append("")
        lines.append(
            "2. Fully connected layer: dL/dW = dL/dz (column) x x (row), dL/db = dL/dz, dL/dx = W^T dL/dz"
        )
        lines.append(
            side_by_side(
                [["dL/dW"] + matrix_lines(self.dense_dw), ["dL/db"] + matrix_lines(self.dense_db[:, None])],
                indent="   ",
            )
        )
        lines.append(
            f"   dL/dx = [{', '.join(num(v) for v in self.dflat)}]  (reshaped to 2x2 for the pooling layer)"
        )
        lines.append("")
        positions = ", ".join(f"({r}, {c})" for r, c in self.max_positions)
        lines.append(
            "3. Max pooling: each window's gradient goes to the position that held the max; the rest get 0"
        )
        lines.append(f"   max positions in the 4x4 ReLU output: {positions}")
        lines.append(
            side_by_side(
                [
                    ["dL/d(pooled)"] + matrix_lines(self.dpooled),
                    "->",
                    ["dL/d(ReLU out)"] + matrix_lines(self.drelu),
                ],
                indent="   ",
            )
        )
        lines.append("")
        lines.append("4. ReLU: the gradient passes where O > 0 and is 0 where O <= 0")
        lines.append(side_by_side([["dL/dO"] + matrix_lines(self.dconv)], indent="   "))
        blocked = int(np.count_nonzero((self.drelu != 0) & (self.conv <= 0)))
        if blocked == 0:
            lines.append(
                wrap(
                    "Here every max position had O > 0 (a pooled max of a ReLU output is positive unless "
                    "its whole window is 0), so nothing is blocked: dL/dO equals the gradient above.",
                    indent="   ",
                )
            )
        lines.append("")
        lines.append(
            "5. Convolution (§11.2): dL/dK is the input cross-correlated with dL/dO (dL/dO as the kernel)"
        )
        lines.append(
            wrap(
                "dL/dK[m, n] = sum_ij dL/dO[i, j] * I[i + m, j + n]: every weight collects the input pixels "
                "it touched, weighted by the gradient of the output it produced.",
                indent="   ",
            )
        )
        lines.append(
            side_by_side(
                [
                    ["dL/dK (conv2d_backward)"] + matrix_lines(self.dkernel),
                    ["corr(I, dL/dO) (conv2d)"] + matrix_lines(self.dkernel_by_correlation),
                    ["finite differences"] + matrix_lines(self.dkernel_numeric, places=6),
                ],
                gap="    ",
                indent="   ",
            )
        )
        lines.append(f"   dL/db = sum of dL/dO = {num(self.dconv_bias)}")
        err = float(np.max(np.abs(self.dkernel - self.dkernel_numeric)))
        lines.append(f"   largest difference from the finite-difference estimate: {err:.1e}")
        lines.append("")
        lines.append(
            wrap(
                "And the gradient for the layer below, dL/dI, is the *full* convolution of dL/dO with K "
                "(dL/dO padded by 1, K flipped by 180 degrees, as in §3.2):",
                indent="   ",
            )
        )
        same = np.allclose(self.dimage, self.dimage_by_full_conv)
        lines.append(matrix_text(self.dimage, indent="   "))
        lines.append(f"   (conv2d_backward and the full convolution agree: {same})")
        lines.append("")
        lines.append(heading(f"Update (§7.3): W_new = W_old - eta * dL/dW, eta = {num(self.lr)}", "-"))
        lines.append(
            side_by_side(
                [
                    ["K_old"] + matrix_lines(self.kernel),
                    "-",
                    [f"{num(self.lr)} *"],
                    ["dL/dK"] + matrix_lines(self.dkernel),
                    "=",
                    ["K_new"] + matrix_lines(self.kernel_new, places=6),
                ]
            )
        )
        lines.append(
            f"b_new = {num(self.conv_bias)} - {num(self.lr)} * {signed(self.dconv_bias)} = {num(self.conv_bias_new, 6)}"
        )
        lines.append("(the dense layer's W and b are updated the same way)")
        lines.append("")
        verdict = (
            "smaller: the step went downhill"
            if self.loss_after < self.loss
            else "not smaller: eta is too large"
        )
        lines.append(
            wrap(
                f"Loss before the step: {num(self.loss, 6)}; after one step on all weights: "
                f"{num(self.loss_after, 6)} ({verdict})."
            )
        )
        return "\n".join(lines) + "\n"


def _numeric_dkernel(
    x: np.ndarray, k: np.ndarray, bk: float, w: np.ndarray, bw: np.ndarray, label: int, h: float = 1e-6
) -> np.ndarray:
    """Central differences of the loss with respect to each kernel entry (float64)."""
    grad = np.zeros_like(k)
    for idx in np.ndindex(k.shape):
        plus, minus = k.copy(), k.copy()
        plus[idx] += h
        minus[idx] -= h
        lp = _forward(x, plus, bk, w, bw, label)["loss"]
        lm = _forward(x, minus, bk, w, bw, label)["loss"]
        grad[idx] = (lp - lm) / (2 * h)
    return grad


def backprop(lr: float = 0.1) -> BackpropExplanation:
    """Walk one training step of a tiny CNN through the chain rule of §7.2 with numbers.

    ``lr`` is the learning rate eta of §7.3's update. Everything is float64 so the finite-difference
    check (``dkernel_numeric``) agrees with the analytic gradient to about 1e-9.

    >>> r = backprop()
    >>> bool(abs(r.dkernel - r.dkernel_numeric).max() < 1e-6), r.loss_after < r.loss
    (True, True)
    """
    lr = check_number(lr, "lr", "explain.backprop", low=0.0, low_open=True, kind="a positive number")
    x = IMAGE[None, None]
    fwd = _forward(x, KERNEL, CONV_BIAS, DENSE_W, DENSE_B, LABEL)
    conv_cache, relu_cache, pool_cache, flat_cache, lin_cache, ce_cache = fwd["caches"]

    dlogits = cross_entropy_backward(1.0, ce_cache)
    dflat, dense_dw, dense_db = linear_backward(dlogits, lin_cache)
    dpooled = flatten_backward(dflat, flat_cache)
    drelu = max_pool2d_backward(dpooled, pool_cache)
    dconv = relu_backward(drelu, relu_cache)
    dimage, dkernel, dbias = conv2d_backward(dconv, conv_cache)

    # §11.2 written with the forward op: dL/dK = corr(I, dL/dO); dL/dI = full conv of dL/dO with K.
    dk_corr = conv2d(x, np.ascontiguousarray(dconv))[0, 0]
    kh, kw = KERNEL.shape
    di_full = conv2d(
        np.ascontiguousarray(dconv), KERNEL[None, None], padding=(kh - 1, kw - 1), flip_kernel=True
    )[0, 0]

    k_new = KERNEL - lr * dkernel[0, 0]
    b_new = CONV_BIAS - lr * float(dbias[0])
    w_new = DENSE_W - lr * dense_dw
    bw_new = DENSE_B - lr * dense_db
    after = _forward(x, k_new, b_new, w_new, bw_new, LABEL)["loss"]

    return BackpropExplanation(
        image=IMAGE.copy(),
        kernel=KERNEL.copy(),
        conv_bias=CONV_BIAS,
        dense_w=DENSE_W.copy(),
        dense_b=DENSE_B.copy(),
        label=LABEL,
        lr=lr,
        conv=fwd["conv"][0, 0],
        relu=fwd["relu"][0, 0],
        pooled=fwd["pooled"][0, 0],
        flat=fwd["flat"][0],
        logits=fwd["logits"][0],
        probs=fwd["probs"][0],
        loss=float(fwd["loss"]),
        dlogits=dlogits[0],
        dense_dw=dense_dw,
        dense_db=dense_db,
        dflat=dflat[0],
        dpooled=dpooled[0, 0],
        drelu=drelu[0, 0],
        dconv=np.ascontiguousarray(dconv[0, 0]),
        dkernel=dkernel[0, 0],
        dconv_bias=float(dbias[0]),
        dimage=dimage[0, 0],
        dkernel_by_correlation=dk_corr,
        dimage_by_full_conv=di_full,
        dkernel_numeric=_numeric_dkernel(x, KERNEL, CONV_BIAS, DENSE_W, DENSE_B, LABEL),
        kernel_new=k_new,
        conv_bias_new=b_new,
        dense_w_new=w_new,
        dense_b_new=bw_new,
        loss_after=float(after),
    )
