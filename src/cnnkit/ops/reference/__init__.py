"""Slow, obvious loop versions of every kernel: the oracle the fast kernels are tested against."""

# --- conv (reference/conv.py) ---
# --- end conv ---
# --- pool and misc (reference/pool.py, reference/misc.py) ---
# --- end pool etc ---
