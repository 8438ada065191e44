"""Models: Sequential, residual blocks, the zoo and the summary table (floor 7)."""

from .sequential import Sequential

# --- residual, zoo (models/residual.py, models/zoo.py) ---
# isort: split
from .residual import BasicBlock, Bottleneck, ResidualBlock
from .residual_sum import Residual
from .zoo import ZooEntry, get, info, names
# --- end residual, zoo ---
