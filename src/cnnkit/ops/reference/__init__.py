"""Slow, obvious loop versions of every kernel: the oracle the fast kernels are tested against."""

# --- conv (reference/conv.py) ---
from .conv import conv2d_backward_reference, conv2d_reference, im2col_reference

# --- end conv ---
# --- pool and misc (reference/pool.py, reference/misc.py) ---
# isort: split
from .misc import (
    batch_norm_backward_reference,
    batch_norm_reference,
    cross_entropy_backward_reference,
    cross_entropy_reference,
    dropout_reference,
    flatten_reference,
    leaky_relu_backward_reference,
    leaky_relu_reference,
    linear_backward_reference,
    linear_reference,
    log_softmax_backward_reference,
    log_softmax_reference,
    relu_backward_reference,
    relu_reference,
    softmax_backward_reference,
    softmax_reference,
)
from .pool import (
    adaptive_avg_pool2d_backward_reference,
    adaptive_avg_pool2d_reference,
    avg_pool2d_backward_reference,
    avg_pool2d_reference,
    global_avg_pool2d_backward_reference,
    global_avg_pool2d_reference,
    max_pool2d_backward_reference,
    max_pool2d_reference,
    min_pool2d_backward_reference,
    min_pool2d_reference,
)
# --- end pool etc ---
