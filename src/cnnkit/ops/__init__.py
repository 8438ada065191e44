"""Pure functions on arrays: forward and backward kernels, no state (floor 1).

Each op ``name`` comes as ``name`` (forward only), ``name_forward -> (out, cache)`` and
``name_backward(dout, cache)``. Slow loop references live in :mod:`cnnkit.ops.reference`.
"""

# --- conv (ops/conv.py) ---
# --- end conv ---
# --- pool, activations, losses, linear, dropout, norm ---
# --- end pool etc ---
