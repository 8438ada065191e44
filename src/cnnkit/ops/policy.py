"""When the fast kernels run: every size threshold of the ops, and the one question whether compiled
(Numba) kernels may run. The convolution planner (:func:`cnnkit.ops.conv_plan.conv_plan`), the fused
block (:mod:`cnnkit.ops.fused`), pooling and batch norm all read this table; nothing else decides.

The numbers were measured on the development machine (AMD EPYC, 2 cores, AVX2; see the modules that use
them for the measurements). Tests lower them (``monkeypatch.setattr(policy, "COMPILED_MIN_ELEMENTS", 0)``)
to reach the compiled paths with small arrays.
"""

from __future__ import annotations

from . import _jit

# ----------------------------------------------------------------------------- compiled kernels
#: Fewest elements (of the input a kernel reads; padded where the kernel reads the padded input) for a
#: compiled kernel: one small image (``cnnkit predict``) stays on NumPy and never imports Numba.
#: At 1 << 16 a LeNet-5 training step took 17.8 -> 15.5 ms and inference 6.6 -> 5.7 ms.
COMPILED_MIN_ELEMENTS = 1 << 16

# ----------------------------------------------------------------------------- convolution paths
#: Up to this many input channels (a first layer on grey or RGB images) a one-group convolution runs
#: *planar* (:mod:`cnnkit.ops.conv_paths.planar`). Measured in one process: notes §5's RGB first layer
#: (64x3x32x32, 32 filters) forward 4.7 -> 3.1 ms and weight gradient 4.9 -> 3.2 ms; LeNet-5's grey one
#: (128x1x28x28, 6 filters 5x5) 4.7 -> 2.6 and 8.8 -> 5.2 ms. With 6 channels (LeNet-5's second layer) it
#: was slower than the channels-last path (a LeNet-5 step 23 -> 32 ms).
PLANAR_MAX_CHANNELS = 3
#: Filter sizes of the direct first-layer kernels (fused forward and weight gradient; notes §5 and §9:
#: 3x3; LeNet-5's C1: 5x5).
DIRECT_KERNELS = ((3, 3), (5, 5))
#: Winograd F(4x4, 3x3): fewest input channels and filters (the 36 GEMMs have inner size C, and dx's F).
WINOGRAD_MIN_CHANNELS = 16
#: Winograd: at least one 4x4 output tile (over the batch) per this many channels (the larger of C and F);
#: below it the transformed weights and thin GEMMs cost more than the multiplications saved (see
#: :func:`cnnkit.ops.conv_plan.conv_plan`).
WINOGRAD_CHANNELS_PER_TILE = 4
#: Below this many input channels a one-group im2col convolution computes dX transposed (one contiguous
#: plane per tap and channel, see :mod:`cnnkit.ops.conv_paths.im2col`).
NARROW_CHANNELS = 8
#: Streamed im2col: columns are unfolded and multiplied this many bytes at a time (fits in L2/L3).
CHUNK_BYTES = 1 << 22
#: The compiled col2im: ``dY @ W`` is computed and scattered this many bytes at a time.
DX_CHUNK_BYTES = 1 << 20

# ----------------------------------------------------------------------------- pooling
#: Fewest channels for the compiled channels-last 2x2 max pooling (where it was measured to pay).
POOL_MIN_CHANNELS = 16


def numba_on() -> bool:
    """Whether compiled kernels may run: Numba importable and ``CNNKIT_NO_NUMBA`` not set.

    The only place that asks (it reads :func:`cnnkit.ops._jit.numba_available` through the module, so a
    test that switches it sees every op follow).
    """
    return _jit.numba_available()


def compiled(elements: int) -> bool:
    """Whether a compiled kernel runs on ``elements`` numbers: enough of them (checked first, so a small
    input never imports Numba) and :func:`numba_on`."""
    return elements >= COMPILED_MIN_ELEMENTS and numba_on()
