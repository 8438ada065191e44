"""Pure functions on arrays: forward and backward kernels, no state (floor 2).

Each op ``name`` comes as ``name`` (forward only), ``name_forward -> (out, cache)`` and
``name_backward(dout, cache)``. Slow loop references live in :mod:`cnnkit.ops.reference`.
"""

# --- conv (ops/conv.py) ---
from .conv import col2im, conv2d, conv2d_backward, conv2d_forward, conv_output_size, im2col
from .conv_plan import ConvPlan, conv_plan

# --- end conv ---
# --- pool, activations, losses, linear, dropout, norm ---
# isort: split
from .activations import (
    leaky_relu,
    leaky_relu_backward,
    leaky_relu_forward,
    log_softmax,
    log_softmax_backward,
    log_softmax_forward,
    relu,
    relu_backward,
    relu_forward,
    softmax,
    softmax_backward,
    softmax_forward,
)
from .dropout import dropout, dropout_backward, dropout_forward
from .linear import flatten, flatten_backward, flatten_forward, linear, linear_backward, linear_forward
from .losses import cross_entropy, cross_entropy_backward, cross_entropy_forward
from .norm import batch_norm, batch_norm_backward, batch_norm_forward
from .pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool2d_forward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
    min_pool2d,
    min_pool2d_backward,
    min_pool2d_forward,
)
# --- end pool etc ---
