"""The learner's page in a real browser: Debian's chromium driven by Playwright.

The page is loaded from ``cnnkit serve`` (a subprocess), an image is uploaded, the prediction awaited, a
pixel of the first convolution's feature map clicked, and the arithmetic shown checked: the products add
up, with the bias, to the value shown, which is the layer's real output (computed here with cnnkit's ops
from the model file), and the ReLU after it is ``max(0, value)``. A screenshot is saved.

Chromium missing is a failure, not a skip: CI installs it (``apt-get install chromium``).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from serve_helpers import ServerProcess, blob_png, write_lenet_file

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


def _normalised_input(data: bytes, normalize: dict) -> np.ndarray:
    """The model input computed here from the file's metadata (standardize mode), not by the server."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    assert normalize["mode"] == "standardize"
    return ((x - normalize["mean"][0]) / normalize["std"][0]).astype(np.float32)[None, None]


def test_page_uploads_predicts_and_explains_a_feature_map_pixel(tmp_path):
    from playwright.sync_api import sync_playwright

    from cnnkit import load_model
    from cnnkit.ops.conv import conv2d

    model_path = Path(os.environ.get("CNNKIT_SERVE_TEST_MODEL") or write_lenet_file(tmp_path / "m.cnnkit"))
    data = blob_png(11)
    image = tmp_path / "blob.png"
    image.write_bytes(data)
    server = ServerProcess(str(model_path))
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            page.wait_for_selector("#model-line:has-text('parameters')")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#prediction .bar.top")
            bars = page.query_selector_all("#prediction .bar")
            probs = [float(b.get_attribute("data-probability")) for b in bars]
            assert len(bars) == 10 and sum(probs) == pytest.approx(1, abs=1e-5)

            canvas = page.wait_for_selector('canvas.map-canvas[data-layer="0"][data-channel="2"]')
            page.wait_for_selector('canvas.map-canvas[data-layer="11"], .maps[data-layer="11"] .vector')
            box = canvas.bounding_box()
            row, col = 13, 9  # click the middle of pixel (13, 9) of the 28x28 map
            canvas.click(
                position={"x": (col + 0.5) * box["width"] / 28, "y": (row + 0.5) * box["height"] / 28}
            )
            panel = page.wait_for_selector("#explain [data-role=value]")
            assert panel is not None
            shown = page.eval_on_selector(
                "#explain", "e => [e.dataset.layer, +e.dataset.channel, +e.dataset.row, +e.dataset.col]"
            )
            assert shown == ["0", 2, row, col]

            def values(selector: str) -> list[float]:
                return [
                    float(v)
                    for v in page.eval_on_selector_all(selector, "es => es.map(e => e.dataset.value)")
                ]

            def texts(selector: str) -> list[str]:
                return page.eval_on_selector_all(selector, "es => es.map(e => e.textContent)")

            products = values("#explain td[data-role=product]")
            (total,) = values("#explain [data-role=sum]")
            (bias,) = values("#explain [data-role=bias]")
            (value,) = values("#explain [data-role=value]")
            (relu,) = values("#explain [data-role=relu]")
            assert len(products) == 25
            # the arithmetic shown adds up: products -> sum, + bias -> the value, then the ReLU
            assert sum(products) == pytest.approx(total, rel=1e-9, abs=1e-9)
            assert total + bias == pytest.approx(value, abs=1e-5)
            assert relu == max(0.0, value)
            # and the rounded numbers on screen are those numbers
            assert texts("#explain [data-role=value]") == [f"{value:.4f}"]
            assert [float(t) for t in texts("#explain td[data-role=product]")] == pytest.approx(
                products, abs=6e-5
            )
            # the value is the layer's real output, recomputed here from the model file with cnnkit's ops
            model = load_model(model_path)
            conv = model[0]
            x = _normalised_input(data, model.metadata["preprocess"]["normalize"])
            out = conv2d(x, conv.params["weight"], conv.params["bias"], padding=2)
            assert value == pytest.approx(float(out[0, 2, row, col]), abs=1e-5)

            # a pooling pixel: the window and the value that won
            pool = page.query_selector('canvas.map-canvas[data-layer="2"][data-channel="2"]')
            pbox = pool.bounding_box()
            pool.click(position={"x": 6.5 * pbox["width"] / 14, "y": 4.5 * pbox["height"] / 14})
            page.wait_for_selector("#explain[data-layer='2'] [data-role=value]")
            window = values("#explain td[data-role=window]")
            (pooled,) = values("#explain [data-role=value]")
            assert len(window) == 4 and pooled == max(window)
            page.wait_for_timeout(200)

            # back to the convolution for the picture
            canvas.click(
                position={"x": (col + 0.5) * box["width"] / 28, "y": (row + 0.5) * box["height"] / 28}
            )
            page.wait_for_selector("#explain[data-layer='0'] [data-role=value]")
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("CNNKIT_SERVE_SCREENSHOTS")
            if keep:
                shutil.copy(shot, Path(keep) / shot.name)
                page.locator("#results").screenshot(path=str(Path(keep) / "serve-results.png"))

            # draw a vertical bar (a trouser, roughly) and classify the drawing
            page.evaluate("window.scrollTo(0, 0)")
            draw = page.locator("#draw")
            dbox = draw.bounding_box()
            page.mouse.move(dbox["x"] + dbox["width"] * 0.5, dbox["y"] + dbox["height"] * 0.15)
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(
                    dbox["x"] + dbox["width"] * 0.5, dbox["y"] + dbox["height"] * (0.15 + 0.07 * k)
                )
            page.mouse.up()
            page.click("#draw-go")
            page.wait_for_selector("#status:has-text('Done: your drawing')")
            # the model sees the stroke: bright pixels in the resized picture, in a column near the middle
            bright = page.eval_on_selector(
                "#resized",
                "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
                " for (let i = 0; i < d.length; i += 4) n += d[i] > 128; return [n, c.width * c.height]; }",
            )
            assert 0.02 < bright[0] / bright[1] < 0.4
            assert page.locator("#prediction .bar").count() == 10
            browser.close()
    finally:
        code, _, err = server.interrupt()
    assert code == 0 and "Traceback" not in err
    assert not errors, errors  # no script errors, no blocked (non-local) resources
