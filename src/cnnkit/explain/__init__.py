"""Teaching traces of the notes' worked examples (floor 8): every number computed by cnnkit's ops.

Each function returns a result object whose fields hold the numbers (so they can be checked) and whose
``.text`` (or ``str()``) is a step-by-step explanation in the notes' own style:

- :func:`conv` -- §3.3, a convolution window by window (and where the notes' printed output is wrong);
- :func:`pool` -- §4.2, max/average/min pooling window by window;
- :func:`size` -- §3.4, the output-size formula with the numbers put in, and why it rounds down;
- :func:`softmax` -- §6.2, the exponentials, their sum and the probabilities;
- :func:`im2col` -- §11.1, convolution as a matrix product;
- :func:`exercises` -- §14, exercises 1-3 solved and compared with the notes' answers;
- :func:`network` -- §5/§9, a model's shapes, parameters and multiply-adds layer by layer;
- :func:`backprop` -- §7.2/§7.3/§11.2, one training step of a tiny CNN with every gradient.

>>> from cnnkit import explain
>>> explain.conv().output.tolist()
[[0.0, 0.0], [-1.0, -1.0]]
>>> print(explain.size(6, 3, stride=2).text)  # doctest: +ELLIPSIS
Output size (notes §3.4)
...
"""

from ._format import Explanation
from .backprop import BackpropExplanation, backprop
from .conv import ConvExplanation, ConvStep, conv
from .exercises import ExerciseResult, ExercisesExplanation, exercises
from .im2col import Im2colExplanation, im2col
from .network import LayerStep, NetworkExplanation, network
from .pool import PoolExplanation, PoolWindow, pool
from .size import SizeExplanation, size
from .softmax import SoftmaxExplanation, softmax

__all__ = [
    "Explanation",
    "conv",
    "pool",
    "size",
    "softmax",
    "im2col",
    "exercises",
    "network",
    "backprop",
    "ConvExplanation",
    "ConvStep",
    "PoolExplanation",
    "PoolWindow",
    "SizeExplanation",
    "SoftmaxExplanation",
    "Im2colExplanation",
    "ExerciseResult",
    "ExercisesExplanation",
    "LayerStep",
    "NetworkExplanation",
    "BackpropExplanation",
]
