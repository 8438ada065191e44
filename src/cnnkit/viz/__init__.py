"""PNG pictures for learning and for checking a training run (floor 8): filters, feature maps, training
curves, confusion matrices.

matplotlib is optional (``pip install cnnkit[viz]``): it is imported only when a picture is made, and a
missing install raises :class:`~cnnkit.viz._mpl.MissingDependencyError` (a ``CnnkitError`` and an
``ImportError``) that says how to install it. Figures are drawn off screen (the Agg canvas, no pyplot,
nothing shown) and written atomically. Each ``plot_*`` function saves a PNG and returns its path; the
matching ``*_figure`` function returns the matplotlib Figure instead, for notebooks and tests.
"""

from ._mpl import MissingDependencyError
from .confusion import confusion_figure, plot_confusion
from .curves import curves_figure, metrics_from, plot_curves
from .feature_maps import feature_maps, feature_maps_figure, plot_feature_maps
from .filters import conv_layers, filters_figure, plot_filters

__all__ = [
    "MissingDependencyError",
    "plot_filters",
    "plot_feature_maps",
    "plot_curves",
    "plot_confusion",
    "filters_figure",
    "feature_maps_figure",
    "curves_figure",
    "confusion_figure",
    "feature_maps",
    "conv_layers",
    "metrics_from",
]
