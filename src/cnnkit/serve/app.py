"""The ASGI app behind ``cnnkit serve``: the learner's page and its JSON API (Starlette).

Routes (every error is JSON ``{"error": "..."}`` with a 4xx status; no traceback ever leaves the server):

- ``GET /``, ``GET /static/NAME``: the page; only the files shipped in ``cnnkit/serve/static`` (read
  once at start-up into memory, so no request path ever reaches the file system);
- ``GET /api/model``: layers (output shape, parameters, multiply-adds and the notes' §5 working, as
  ``cnnkit explain network`` computes them), class names, the saved preprocessing;
- ``GET /api/filters``: the first convolution's filters;
- ``GET /api/samples``, ``GET /api/samples/{i}.png``: a few images of the data set the model was trained
  on (Fashion-MNIST or shapes), when the model file says which;
- ``POST /api/predict`` (multipart field ``file``): ``{"classes": [...], "probabilities": [...]}`` in
  class order, what ``cnnkit predict --json`` gives for the same file;
- ``POST /api/activations`` (``file``, ``layer``, optional ``offset``/``limit``): one layer's feature
  maps; ``layer=input`` gives the image as the model sees it (resized, then normalised);
- ``POST /api/explain`` (``file``, ``layer``, ``channel``, ``row``, ``col``): the arithmetic of one output
  (notes §3.3 for a convolution, §4.2 for pooling).

Uploads are capped in bytes (read incrementally, so a large body is refused before it is stored) and in
pixels (from the image header, before anything is decoded; Pillow's decompression-bomb check turned into
an error). The network runs in worker threads, at most ``workers`` at a time, never on the event loop.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import CnnkitError
from ..layers.base import Layer
from . import _inference, inspect

#: Upload limits: bytes of the request body, and pixels (width x height) of the image.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
#: Traces (every layer's output for one image) kept for the follow-up requests of the page.
TRACE_CACHE = 8
#: Feature maps per /api/activations answer, at most.
MAX_MAPS = 256

_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'",
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    """A client error answered as JSON ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Trace:
    image: np.ndarray  # uint8 (C, H, W), resized
    x: np.ndarray  # float32 (1, C, H, W), normalised
    records: list[inspect.Record]


@dataclass
class ServeState:
    """Everything the routes share: the model, its preprocessing, limits, caches."""

    model: Layer
    pre: Any
    class_names: list[str]
    label: str
    max_bytes: int
    max_pixels: int
    limiter: anyio.CapacityLimiter
    tracer: inspect.Tracer
    network: Any
    static: dict[str, bytes]
    traces: OrderedDict[str, _Trace] = field(default_factory=OrderedDict)
    trace_lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[tuple[str, bytes]] | None = None
    samples_lock: threading.Lock = field(default_factory=threading.Lock)


def create_app(
    model: str | os.PathLike[str] | Layer,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
) -> Starlette:
    """The page and API for ``model``: a ``.cnnkit`` file (as ``cnnkit predict`` loads it) or a built model.

    A model object uses its ``metadata["preprocess"]`` when it has one, else its input shape and
    ``x / 255``. ``workers`` bounds the threads running the network at once (default: the CPU count).
    """
    if isinstance(model, Layer):
        net = model
        net.eval()
        pre, class_names = _inference.for_model(net)
        label = net.name
    else:
        net, pre, class_names = _inference.load(model)
        label = Path(model).name
    from ..explain import network

    state = ServeState(
        model=net,
        pre=pre,
        class_names=class_names,
        label=label,
        max_bytes=int(max_upload_bytes),
        max_pixels=int(max_pixels),
        limiter=anyio.CapacityLimiter(max(1, workers or os.cpu_count() or 1)),
        tracer=inspect.Tracer(net),
        network=network(net),
        static=_load_static(),
    )
    routes = [
        Route("/", _page(state), methods=["GET"]),
        Route("/static/{name:path}", _static(state), methods=["GET"]),
        Route("/api/model", _model(state), methods=["GET"]),
        Route("/api/filters", _filters(state), methods=["GET"]),
        Route("/api/samples", _samples(state), methods=["GET"]),
        Route("/api/samples/{index:int}.png", _sample_png(state), methods=["GET"]),
        Route("/api/predict", _predict(state), methods=["POST"]),
        Route("/api/activations", _activations(state), methods=["POST"]),
        Route("/api/explain", _explain(state), methods=["POST"]),
    ]
    handlers = {HTTPException: _http_error, ApiError: _api_error, Exception: _internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.cnnkit = state
    return app


# ----------------------------------------------------------------------------------------- errors
def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_SECURITY_HEADERS)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _json_error(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {
        404: f"not found: {request.url.path}",
        405: f"method {request.method} not allowed on {request.url.path}",
    }
    return _json_error(exc.status_code, messages.get(exc.status_code, str(exc.detail)))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: the client gets one JSON line; Starlette re-raises, so uvicorn prints the traceback on the
    server's console."""
    return _json_error(500, f"internal error ({type(exc).__name__}); the server's console shows where")


# ----------------------------------------------------------------------------------------- static files
def _load_static() -> dict[str, bytes]:
    """Every file shipped in ``cnnkit/serve/static``, by name (read once; requests never touch disk)."""
    folder = resources.files(__package__).joinpath("static")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


def _page(state: ServeState) -> Any:
    async def page(request: Request) -> Response:
        return Response(
            state.static["index.html"], media_type=_STATIC_TYPES[".html"], headers=_SECURITY_HEADERS
        )

    return page


def _static(state: ServeState) -> Any:
    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        body = state.static.get(name)  # a plain lookup: "../x", "a/b" or "%2e%2e" simply are not keys
        if body is None:
            raise ApiError(404, f"not found: /static/{name}")
        media = _STATIC_TYPES.get(Path(name).suffix, "application/octet-stream")
        return Response(body, media_type=media, headers=_SECURITY_HEADERS)

    return static


# ----------------------------------------------------------------------------------------- uploads
async def _read_form(request: Request, state: ServeState) -> tuple[bytes, dict[str, str]]:
    """The ``file`` part's bytes and the text fields of a multipart body, within the limits."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(
            415, f"expected multipart/form-data with the image in the field 'file', got {ctype or 'no body'}"
        )
    limit = state.max_bytes + 64 * 1024  # the file plus the multipart framing and the text fields
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"upload too large: {int(length)} bytes, the limit is {state.max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"upload too large: more than {state.max_bytes} bytes")
    done = False

    async def replay() -> dict[str, Any]:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except HTTPException as err:
        raise ApiError(400, f"malformed multipart body: {err.detail}") from None
    except Exception as err:  # python-multipart's own parse errors
        raise ApiError(400, f"malformed multipart body: {err}") from None
    try:
        upload = form.get("file")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        if not isinstance(upload, UploadFile):
            got = ", ".join(repr(k) for k in form.keys()) or "none"
            raise ApiError(400, f"the image must be in the multipart field 'file'; fields received: {got}")
        data = await upload.read()
    finally:
        await form.close()
    if not data:
        raise ApiError(400, "the uploaded file is empty")
    if len(data) > state.max_bytes:
        raise ApiError(413, f"upload too large: {len(data)} bytes, the limit is {state.max_bytes}")
    return data, fields


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the image header; ApiError for non-images and oversized images.

    Pillow reads only the header here. Its decompression-bomb warning is turned into an error, and the
    page's own pixel cap (lower than Pillow's) is applied before any pixel is decoded.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ApiError(413, f"image too large (decompression-bomb guard): {err}") from None
    except Exception as err:
        raise ApiError(
            415, f"not an image Pillow can read ({type(err).__name__}); send a PNG, JPEG, GIF, BMP or WebP"
        ) from None
    if width * height > max_pixels:
        raise ApiError(
            413, f"image has {width}x{height} = {width * height} pixels, the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise ApiError(415, f"image has size {width}x{height}")
    return width, height


async def _run(state: ServeState, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread (at most ``workers`` at once); cnnkit errors become 4xx."""
    try:
        return await anyio.to_thread.run_sync(fn, *args, limiter=state.limiter)
    except CnnkitError as err:
        raise ApiError(422, str(err)) from None


def _int_field(fields: dict[str, str], name: str, default: int | None = None) -> int:
    text = fields.get(name)
    if text is None:
        if default is None:
            raise ApiError(400, f"missing form field {name!r} (an integer)")
        return default
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"form field {name!r} must be an integer, got {text[:40]!r}") from None


def _traced(state: ServeState, data: bytes) -> _Trace:
    """Every layer's output for this image (cached by content, so the page's follow-ups are cheap)."""
    key = hashlib.sha256(data).hexdigest()
    with state.trace_lock:
        hit = state.traces.get(key)
        if hit is not None:
            state.traces.move_to_end(key)
            return hit
    image = _inference.decode(state.pre, data)
    x = _inference.model_input(state.pre, image)
    trace = _Trace(image, x, state.tracer.trace(x))
    broken = [r.name for r in trace.records if not np.all(np.isfinite(r.output))]
    if broken:
        raise ApiError(
            422, f"layer {broken[0]} gives NaN or infinite values for this image: the model is broken"
        )
    with state.trace_lock:
        state.traces[key] = trace
        while len(state.traces) > TRACE_CACHE:
            state.traces.popitem(last=False)
    return trace


# ----------------------------------------------------------------------------------------- API
def _model(state: ServeState) -> Any:
    async def model(request: Request) -> Response:
        net = state.network
        conv = inspect.first_conv(state.model)
        meta = getattr(state.model, "metadata", None) or {}
        return JSONResponse(
            {
                "name": state.label,
                "classes": state.class_names,
                "input": {"shape": list(net.input_shape), **_inference.describe(state.pre)},
                "layers": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "depth": s.depth,
                        "container": s.container,
                        "input_shape": list(s.input_shape) if s.input_shape is not None else None,
                        "output_shape": list(s.output_shape) if s.output_shape is not None else None,
                        "params": s.params,
                        "macs": s.macs,
                        "working": s.lines,
                    }
                    for s in net.steps
                ],
                "total_params": net.total_params,
                "total_macs": net.total_macs,
                "first_conv": conv[0] if conv else None,
                "data": (meta.get("data") or {}).get("name"),
                "limits": {"max_upload_bytes": state.max_bytes, "max_pixels": state.max_pixels},
            },
            headers=_SECURITY_HEADERS,
        )

    return model


def _filters(state: ServeState) -> Any:
    async def filters(request: Request) -> Response:
        conv = inspect.first_conv(state.model)
        if conv is None:
            raise ApiError(404, "this model has no convolution layer")
        name, layer = conv
        weight = layer.params["weight"]
        return JSONResponse(
            {"layer": name, "shape": list(weight.shape), "weight": weight.tolist()}, headers=_SECURITY_HEADERS
        )

    return filters


def _load_samples(state: ServeState) -> list[tuple[str, bytes]]:
    with state.samples_lock:
        if state.samples is None:
            from ._samples import sample_images

            meta = getattr(state.model, "metadata", None) or {}
            size = _inference.describe(state.pre)["image_size"]
            state.samples = sample_images(meta, (size[0], size[1]))
        return state.samples


def _samples(state: ServeState) -> Any:
    async def samples(request: Request) -> Response:
        items = await _run(state, _load_samples, state)
        listed = [{"index": i, "label": label} for i, (label, _) in enumerate(items)]
        return JSONResponse({"samples": listed}, headers=_SECURITY_HEADERS)

    return samples


def _sample_png(state: ServeState) -> Any:
    async def sample_png(request: Request) -> Response:
        items = await _run(state, _load_samples, state)
        index = request.path_params["index"]
        if not 0 <= index < len(items):
            raise ApiError(404, f"no sample {index}; there are {len(items)}")
        return Response(items[index][1], media_type="image/png", headers=_SECURITY_HEADERS)

    return sample_png


def _predict(state: ServeState) -> Any:
    async def predict(request: Request) -> Response:
        data, _ = await _read_form(request, state)
        check_image(data, state.max_pixels)
        probs = await _run(state, _inference.probabilities, state.model, state.pre, data)
        if not np.all(np.isfinite(probs)):
            raise ApiError(422, "the model gives NaN or infinite probabilities for this image: it is broken")
        return JSONResponse(
            {"classes": state.class_names, "probabilities": [float(p) for p in probs]},
            headers=_SECURITY_HEADERS,
        )

    return predict


def _activations(state: ServeState) -> Any:
    def answer(data: bytes, layer: str, offset: int, limit: int) -> Response:
        trace = _traced(state, data)
        if layer == "input":
            payload = inspect.maps_json(trace.x[0], offset, limit)
            payload.update(layer="input", kind="Input", image=trace.image.tolist())
        else:
            try:
                rec = inspect.find(trace.records, layer)
            except CnnkitError as err:
                raise ApiError(404, str(err)) from None
            payload = inspect.maps_json(rec.output, offset, limit)
            payload.update(layer=rec.name, kind=rec.kind, source=rec.source)
        return JSONResponse(payload, headers=_SECURITY_HEADERS)  # rendered here, in the worker thread

    async def activations(request: Request) -> Response:
        data, fields = await _read_form(request, state)
        check_image(data, state.max_pixels)
        layer = fields.get("layer", "input")
        offset = max(0, _int_field(fields, "offset", 0))
        limit = min(MAX_MAPS, max(1, _int_field(fields, "limit", 64)))
        return await _run(state, answer, data, layer, offset, limit)

    return activations


def _explain(state: ServeState) -> Any:
    def answer(data: bytes, layer: str, where: list[int]) -> Response:
        trace = _traced(state, data)
        try:
            payload = inspect.explain(trace.records, layer, *where)
        except CnnkitError as err:
            raise ApiError(422, str(err)) from None
        return JSONResponse(payload, headers=_SECURITY_HEADERS)

    async def explain(request: Request) -> Response:
        data, fields = await _read_form(request, state)
        check_image(data, state.max_pixels)
        if "layer" not in fields:
            raise ApiError(400, "missing form field 'layer' (a layer name from /api/model)")
        where = [_int_field(fields, k) for k in ("channel", "row", "col")]
        return await _run(state, answer, data, fields["layer"], where)

    return explain


__all__ = ["create_app", "check_image", "ApiError", "ServeState", "MAX_UPLOAD_BYTES", "MAX_PIXELS"]
