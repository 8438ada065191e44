"""``cnnkit serve``'s JSON API with an in-process client (httpx over ASGI), and the command itself."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import zlib

import httpx
import numpy as np
import pytest

from cnnkit.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU
from cnnkit.models import BasicBlock, Sequential
from cnnkit.ops.conv import conv2d
from cnnkit.ops.pool import max_pool2d
from cnnkit.serve import create_app
from cnnkit.serve import inspect as serve_inspect
from serve_helpers import FASHION_CLASSES, ServerProcess, blob_png, env, png_bytes, write_lenet_file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_lenet_file(tmp_path_factory.mktemp("serve") / "model.cnnkit")


@pytest.fixture(scope="module")
def app(model_file):
    return create_app(model_file)


def call(app, method: str, url: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def upload(data: bytes, **fields) -> dict:
    return {
        "files": {"file": ("image.png", data, "image/png")},
        "data": {k: str(v) for k, v in fields.items()},
    }


def model_input(model_file, data: bytes) -> np.ndarray:
    """The normalised input, computed here from the metadata (not by the server's code)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - 0.286) / 0.353).astype(np.float32)[None, None]


# ----------------------------------------------------------------------------------------- the model
def test_model_endpoint_lists_layers_shapes_parameters_and_classes(app):
    r = call(app, "GET", "/api/model")
    assert r.status_code == 200
    body = r.json()
    assert body["classes"] == FASHION_CLASSES
    names = [layer["name"] for layer in body["layers"]]
    assert names == [str(i) for i in range(12)]
    conv0 = body["layers"][0]
    assert conv0["kind"] == "Conv2D" and conv0["output_shape"] == [6, 28, 28]
    assert conv0["params"] == 6 * 5 * 5 + 6  # §5's arithmetic: 5x5x1 weights per filter, plus a bias
    assert body["total_params"] == sum(layer["params"] for layer in body["layers"]) == 61706
    assert any("parameters: 5*5*1*6 + 6 = 156" in line for line in conv0["working"])
    assert body["input"]["image_size"] == [28, 28] and body["input"]["color"] == "grey"
    assert body["first_conv"] == "0"


def test_filters_are_the_first_convolution_weights(app, model_file):
    from cnnkit import load_model

    body = call(app, "GET", "/api/filters").json()
    model = load_model(model_file)
    np.testing.assert_array_equal(np.asarray(body["weight"], np.float32), model[0].params["weight"])


def test_samples_are_fashion_mnist_test_images(app):
    body = call(app, "GET", "/api/samples").json()
    labels = [s["label"] for s in body["samples"]]
    assert labels == [c for c in FASHION_CLASSES for _ in range(2)]
    r = call(app, "GET", "/api/samples/3.png")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert call(app, "GET", "/api/samples/99.png").status_code == 404


# ----------------------------------------------------------------------------------------- predict
def test_predict_equals_cnnkit_predict_json(app, model_file, tmp_path):
    data = blob_png(1)
    image = tmp_path / "blob.png"
    image.write_bytes(data)
    body = call(app, "POST", "/api/predict", **upload(data)).json()
    assert body["classes"] == FASHION_CLASSES
    assert abs(sum(body["probabilities"]) - 1) < 1e-5
    out = subprocess.run(
        [sys.executable, "-m", "cnnkit", "predict", str(model_file), str(image), "--json", "--top-k", "10"],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )
    top = json.loads(out.stdout)["predictions"][0]["top"]
    assert len(top) == 10
    cli = {t["class"]: t["probability"] for t in top}
    assert cli == dict(zip(body["classes"], body["probabilities"], strict=True))  # exactly equal


def test_200_concurrent_predictions_all_succeed_and_agree(app):
    data = blob_png(2)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            single = (await client.post("/api/predict", **upload(data))).json()
            answers = await asyncio.gather(*(client.post("/api/predict", **upload(data)) for _ in range(200)))
            return single, answers

    single, answers = asyncio.run(go())
    assert [a.status_code for a in answers] == [200] * 200
    assert all(a.json() == single for a in answers)


# ----------------------------------------------------------------------------------------- feature maps
def test_activations_are_the_layers_real_outputs(app, model_file):
    from cnnkit import load_model

    data = blob_png(3)
    x = model_input(model_file, data)
    body = call(app, "POST", "/api/activations", **upload(data, layer="input")).json()
    np.testing.assert_allclose(np.asarray(body["maps"], np.float32)[0], x[0, 0], atol=1e-6)
    assert np.asarray(body["image"]).shape == (1, 28, 28)

    model = load_model(model_file)
    conv = model[0]
    expected = conv2d(x, conv.params["weight"], conv.params["bias"], padding=2)[0]
    body = call(app, "POST", "/api/activations", **upload(data, layer="0")).json()
    assert body["shape"] == [6, 28, 28] and body["source"] == "input"
    np.testing.assert_allclose(np.asarray(body["maps"], np.float32), expected, rtol=1e-5, atol=1e-5)
    body = call(app, "POST", "/api/activations", **upload(data, layer="2")).json()
    pooled = max_pool2d(np.maximum(expected, 0)[None], 2)[0]
    np.testing.assert_allclose(np.asarray(body["maps"], np.float32), pooled, rtol=1e-5, atol=1e-5)
    logits = call(app, "POST", "/api/activations", **upload(data, layer="11")).json()
    np.testing.assert_allclose(logits["vector"], model.forward(x, False)[0], rtol=1e-4, atol=1e-5)
    limited = call(app, "POST", "/api/activations", **upload(data, layer="3", offset=4, limit=3)).json()
    assert limited["offset"] == 4 and len(limited["maps"]) == 3 and limited["channels"] == 16


# ----------------------------------------------------------------------------------------- explain
def test_explain_conv_is_window_times_kernel_plus_bias_then_relu(app, model_file):
    from cnnkit import load_model

    data = blob_png(4)
    x = model_input(model_file, data)
    model = load_model(model_file)
    conv = model[0]
    out = conv2d(x, conv.params["weight"], conv.params["bias"], padding=2)[0]
    padded = np.pad(x[0, 0], 2)
    for f, i, j in [(2, 12, 9), (0, 0, 0), (5, 27, 3)]:  # the corner windows reach into the padding
        e = call(app, "POST", "/api/explain", **upload(data, layer="0", channel=f, row=i, col=j)).json()
        assert e["kind"] == "conv" and e["input_layer"] == "input"
        window = np.asarray(e["window"])
        np.testing.assert_allclose(window[0], padded[i : i + 5, j : j + 5], atol=1e-6)
        np.testing.assert_array_equal(np.asarray(e["kernel"], np.float32), conv.params["weight"][f])
        products = np.asarray(e["products"])
        np.testing.assert_allclose(products, window * np.asarray(e["kernel"]), rtol=1e-12)
        assert e["sum"] == pytest.approx(products.sum(), rel=1e-12)
        assert e["bias"] == pytest.approx(float(conv.params["bias"][f]))
        assert e["value"] == pytest.approx(e["sum"] + e["bias"], abs=1e-5)
        assert e["value"] == pytest.approx(float(out[f, i, j]), abs=1e-5)
        assert e["relu"] == {"layer": "1", "value": max(0.0, e["value"])}
    assert e["window_origin"] == [25, 1]


def test_explain_second_conv_sums_over_all_input_channels(app):
    data = blob_png(5)
    pooled = np.asarray(call(app, "POST", "/api/activations", **upload(data, layer="2")).json()["maps"])
    e = call(app, "POST", "/api/explain", **upload(data, layer="3", channel=7, row=4, col=6)).json()
    assert e["input_layer"] == "2" and len(e["window"]) == 6
    np.testing.assert_allclose(np.asarray(e["window"]), pooled[:, 4:9, 6:11], atol=1e-7)
    assert e["value"] == pytest.approx(sum(e["channel_sums"]) + e["bias"], abs=1e-5)


def test_explain_pool_shows_the_window_and_the_winner(app):
    data = blob_png(6)
    relu = np.asarray(call(app, "POST", "/api/activations", **upload(data, layer="1")).json()["maps"])
    e = call(app, "POST", "/api/explain", **upload(data, layer="2", channel=3, row=6, col=4)).json()
    window = relu[3, 12:14, 8:10]
    np.testing.assert_allclose(np.asarray(e["window"]), window, atol=0)
    assert e["pool"] == "max" and e["value"] == pytest.approx(float(window.max()))
    r, c = e["winner"]
    assert window[r, c] == window.max()


def test_explain_bad_positions_are_json_4xx(app):
    data = blob_png(7)
    cases = [
        ({"layer": "0", "channel": 6, "row": 0, "col": 0}, 422, "channel must be in 0..5"),
        ({"layer": "0", "channel": 0, "row": -1, "col": 0}, 422, "row must be in 0..27"),
        ({"layer": "nope", "channel": 0, "row": 0, "col": 0}, 422, "no layer 'nope'"),
        ({"layer": "7", "channel": 0, "row": 0, "col": 0}, 422, "has no feature maps"),
        ({"layer": "0", "channel": "x", "row": 0, "col": 0}, 400, "must be an integer"),
        ({"layer": "0", "row": 0, "col": 0}, 400, "missing form field 'channel'"),
    ]
    for fields, status, message in cases:
        r = call(app, "POST", "/api/explain", **upload(data, **fields))
        assert r.status_code == status, (fields, r.text)
        assert message in r.json()["error"]


# ----------------------------------------------------------------------------------------- containers
def test_tracer_walks_nested_and_residual_containers():
    model = Sequential(
        [
            Sequential([Conv2D(8, 3, padding=1), ReLU(), MaxPool2D(2)]),
            BasicBlock(8),
            BasicBlock(16, stride=2),
            GlobalAvgPool2D(),
            Flatten(),
            Dense(3),
        ],
        input_shape=(3, 16, 16),
        seed=0,
    )
    model.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    records = serve_inspect.Tracer(model).trace(x)
    names = [r.name for r in records]
    for name in ["0.0", "0.1", "0.2", "0", "1.conv1", "1.bn1", "1.conv2", "1.bn2", "1"]:
        assert name in names
    assert "2.downsample.0" in names and "2.downsample" in names
    by_name = {r.name: r for r in records}
    np.testing.assert_allclose(by_name["5"].output, model.forward(x, False)[0], rtol=1e-5, atol=1e-6)
    # the nested chain: every inner output, and the ReLU before the pooling
    np.testing.assert_allclose(by_name["0.1"].output, np.maximum(by_name["0.0"].output, 0))
    # a convolution inside a residual block is explained from the block's real input
    e = serve_inspect.explain(records, "2.conv1", 5, 3, 2)
    assert e["value"] == pytest.approx(e["sum"] + e["bias"], abs=1e-5)
    block_input = by_name["1"].output
    conv = model[2]["conv1"]
    expected = conv2d(block_input[None], conv.params["weight"], None, stride=2, padding=1)[0]
    assert e["value"] == pytest.approx(float(expected[5, 3, 2]), abs=1e-5)
    # the traced copy is the tracer's own: the model answering predictions is never patched
    assert "forward" not in model[1].__dict__ and "forward" not in model[1]["conv1"].__dict__


def test_app_from_a_model_object_without_metadata():
    model = Sequential([Conv2D(4, 3), ReLU(), Flatten(), Dense(2)], input_shape=(3, 8, 8), seed=0)
    app = create_app(model)
    body = call(app, "GET", "/api/model").json()
    assert body["classes"] == ["0", "1"] and body["input"]["color"] == "rgb"
    rgb = png_bytes(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert call(app, "POST", "/api/predict", **upload(rgb)).status_code == 200
    assert call(app, "GET", "/api/samples").json() == {"samples": []}


# ----------------------------------------------------------------------------------------- safety
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (with valid CRCs) and whose data is one tiny row."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 2))
        + chunk(b"IEND", b"")
    )


def _assert_json_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error"} and "Traceback" not in r.text


def test_bad_uploads_are_json_4xx_never_500(model_file):
    app = create_app(model_file, max_upload_bytes=20_000, max_pixels=300 * 300)
    good = blob_png(0)
    for url in ("/api/predict", "/api/activations", "/api/explain"):
        _assert_json_error(call(app, "POST", url, **upload(b"this is not an image")), 415)
        _assert_json_error(call(app, "POST", url, **upload(b"")), 400)
        _assert_json_error(call(app, "POST", url, files={"image": ("a.png", good, "image/png")}), 400)
        _assert_json_error(call(app, "POST", url), 415)  # no body at all
        empty = {"content-type": "multipart/form-data; boundary=x"}
        _assert_json_error(call(app, "POST", url, content=b"", headers=empty), 400)  # an empty multipart body
        _assert_json_error(call(app, "POST", url, content=good, headers={"content-type": "image/png"}), 415)
        _assert_json_error(call(app, "GET", url), 405)
        _assert_json_error(call(app, "PUT", url, **upload(good)), 405)
    # too many bytes (refused while reading), too many pixels (from the header), a decompression bomb
    _assert_json_error(call(app, "POST", "/api/predict", **upload(b"\x89PNG" + b"\0" * 30_000)), 413)
    big = png_bytes(np.zeros((301, 300), np.uint8))
    _assert_json_error(call(app, "POST", "/api/predict", **upload(big)), 413)
    _assert_json_error(call(app, "POST", "/api/predict", **upload(_png_claiming(200_000, 200_000))), 413)
    # a truncated image: the header is fine, the pixels are not
    truncated = _png_claiming(50, 50)
    r = call(app, "POST", "/api/predict", **upload(truncated))
    _assert_json_error(r, 422)
    assert r.json()["error"].startswith("the uploaded file: not a readable image") and "BytesIO" not in r.text
    # malformed multipart
    bad = call(
        app,
        "POST",
        "/api/predict",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert 400 <= bad.status_code < 500 and "error" in bad.json()
    _assert_json_error(call(app, "GET", "/api/nothing"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2fapp.py",
        "/static/..%2F..%2Fserve%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/static/../app.py",
        "/static/..\\app.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/....//app.py",
        "/static/static/../index.html",
        "/static/",
        "/static/index.html%00.js",
    ],
)
def test_no_path_leaves_the_static_assets(app, path):
    r = call(app, "GET", path)
    if r.status_code == 200:  # a client may normalise "../": then it must be one of the shipped files
        assert r.content in app.state.cnnkit.static.values()
    else:
        _assert_json_error(r, 404)
    assert b"import" not in r.content[:200] or r.content in app.state.cnnkit.static.values()


def test_page_and_assets_are_served_from_the_package(app):
    page = call(app, "GET", "/")
    assert page.status_code == 200 and "<title>" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: every asset is local
    for name in ("app.js", "style.css"):
        r = call(app, "GET", f"/static/{name}")
        assert r.status_code == 200 and len(r.content) > 500
        assert "https://" not in r.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


# ----------------------------------------------------------------------------------------- the command
def test_import_cnnkit_does_not_import_the_server():
    code = (
        "import sys, cnnkit, cnnkit.cli\n"
        "print(' '.join(m for m in ('starlette', 'uvicorn', 'multipart') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), check=True)
    assert out.stdout.strip() == ""


def test_cnnkit_serve_starts_answers_and_stops_on_ctrl_c(model_file):
    server = ServerProcess(str(model_file))
    try:
        assert server.url.startswith("http://127.0.0.1:")
        r = httpx.get(server.url + "api/model", timeout=30)
        assert r.status_code == 200 and r.json()["classes"] == FASHION_CLASSES
        r = httpx.post(
            server.url + "api/predict", files={"file": ("a.png", blob_png(0), "image/png")}, timeout=30
        )
        assert r.status_code == 200
    finally:
        code, out, err = server.interrupt()
    assert code == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_cnnkit_serve_warns_when_not_bound_to_localhost(model_file):
    server = ServerProcess(str(model_file), "--host", "0.0.0.0")
    try:
        code, _, err = server.interrupt()
    finally:
        server.kill()
    assert code == 0 and "warning: listening on 0.0.0.0" in err


def test_cnnkit_serve_without_a_model_says_how_to_make_one(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cnnkit", "serve"], capture_output=True, text=True, env=env(), cwd=tmp_path
    )
    assert out.returncode == 2
    assert "runs/lenet5-fashion-mnist/model.cnnkit does not exist" in out.stderr
    assert "cnnkit train" in out.stderr and "Traceback" not in out.stderr


def test_cnnkit_serve_on_a_busy_port_is_a_one_line_error(model_file):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "cnnkit", "serve", str(model_file), "--port", str(port)],
            capture_output=True,
            text=True,
            env=env(),
            timeout=60,
        )
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == f"cnnkit serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_a_broken_model_is_a_422_not_a_500():
    model = Sequential([Conv2D(2, 3), ReLU(), Flatten(), Dense(2)], input_shape=(1, 6, 6), seed=0)
    model[0].params["weight"][...] = np.nan
    app = create_app(model)
    data = png_bytes(np.full((6, 6), 100, np.uint8))
    for url, fields in (("/api/predict", {}), ("/api/activations", {"layer": "0"})):
        r = call(app, "POST", url, **upload(data, **fields))
        _assert_json_error(r, 422)
        assert "NaN" in r.json()["error"]


def test_an_unexpected_failure_is_a_json_500_without_traceback(model_file, monkeypatch):
    from cnnkit.serve import _inference

    app = create_app(model_file)

    def boom(*args):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(_inference, "probabilities", boom)

    async def go():
        # as a server does: the app answers, then re-raises for the server's log (which the client never sees)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/api/predict", **upload(blob_png(0)))

    r = asyncio.run(go())
    _assert_json_error(r, 500)
    assert "secret detail" not in r.text and "RuntimeError" in r.text


def test_tracer_shows_the_layers_inside_a_fused_layer(model_file):
    from cnnkit import load_model
    from cnnkit.layers.fused import FusedLayer

    model = load_model(model_file)
    model.eval()
    assert isinstance(model.children()["0"], FusedLayer)  # Conv2D, ReLU, MaxPool2D run as one layer
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    records = serve_inspect.Tracer(model).trace(x)
    names = [r.name for r in records]
    assert names == [str(i) for i in range(12)]  # the declared layers, once each, as explain network lists
    by_name = {r.name: r for r in records}
    assert [by_name[k].kind for k in "012"] == ["Conv2D", "ReLU", "MaxPool2D"]
    np.testing.assert_array_equal(by_name["1"].output, np.maximum(by_name["0"].output, 0))
    assert by_name["1"].source == "0" and by_name["2"].source == "1" and by_name["3"].source == "2"
    # the fused pass and the layer-by-layer pass agree (float rounding only)
    np.testing.assert_allclose(by_name["2"].output, model.children()["0"].forward(x, False)[0], atol=1e-5)
    np.testing.assert_allclose(by_name["11"].output, model.forward(x, False)[0], rtol=1e-4, atol=1e-5)
