"""``cnnkit serve``: a local page showing a learner's own model thinking, layer by layer (below cli/).

The page (plain HTML, CSS and JavaScript shipped in ``static/``, no CDN: it works offline) uploads an
image, picks a data-set sample or takes a drawing, and shows the prediction, every layer's shape and
parameters (notes §5), every feature map, the first layer's filters, and the arithmetic of any one output
of a convolution (notes §3.3) or pooling layer (§4.2), taken from the real tensors.

Needs the optional extra ``cnnkit[serve]`` (Starlette, uvicorn, python-multipart); nothing here is
imported by ``import cnnkit``.

>>> from cnnkit.serve import create_app  # doctest: +SKIP
>>> app = create_app("runs/lenet5-fashion-mnist/model.cnnkit")  # an ASGI app  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any


def create_app(model: str | os.PathLike[str] | Any, **kwargs: Any) -> Any:
    """The Starlette app for ``model`` (a ``.cnnkit`` file or a built model); see :mod:`cnnkit.serve.app`."""
    from .app import create_app as _create

    return _create(model, **kwargs)


__all__ = ["create_app"]
