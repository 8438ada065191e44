"""One module per convolution path, each with ``forward(plan, x, w, b, flip_kernel) -> (out, cache)``
and ``backward(dout, cache, need_dx) -> (dx, dw, db)`` and a typed cache that names its path.

:func:`cnnkit.ops.conv_plan.conv_plan` picks the path; :mod:`cnnkit.ops.conv` validates the arguments,
runs the plan's module and flips ``dw`` back for ``flip_kernel``. ``common`` holds what the paths share
(geometry, padding, the window view, im2col/col2im, the input gradient). ``backward`` takes ``dout``
already checked against the output's shape, in any memory layout; ``dw`` comes back for the kernel the
forward pass used (``w`` already flipped for ``flip_kernel``).
"""
