"""The web page of ``deepfoundry serve`` in headless Chromium (Playwright driving Debian's ``chromium``; CI cannot
download Playwright's own browser): draw a digit on the canvas of a lenet5-digits run, read the answer, save a
screenshot. The answer shown must be the server's answer for the very example the page sent."""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("DEEPFOUNDRY_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium():
    if not (Path(CHROMIUM).is_file() and shutil.which(CHROMIUM)):
        reason = f"no Chromium at {CHROMIUM} (apt install chromium, or set DEEPFOUNDRY_CHROMIUM)"
        if os.environ.get("DEEPFOUNDRY_REQUIRE_BROWSER") == "1":  # .ci/run installs it: the page must be tested
            pytest.fail(f"{reason} (DEEPFOUNDRY_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return CHROMIUM


class Served:
    """``create_app(path)`` on a real socket in a background thread."""

    def __init__(self, path, **kwargs) -> None:
        from deepfoundry.deploy import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(path, **kwargs), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def draw(page, strokes):
    """Drag the mouse along each stroke (points in canvas fractions)."""
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def test_draw_a_digit_and_read_the_answer(chromium, digits_run, tmp_path):
    screenshot = Path(os.environ.get("DEEPFOUNDRY_SCREENSHOTS", tmp_path)) / "web-digits.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with Served(digits_run.path) as served, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.goto(served.url + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            assert page.locator("#image-input").is_visible() and not page.locator("#text-input").is_visible()
            assert page.locator("#image-size").inner_text() == "8\u00d78"
            # a "1": one vertical stroke down the middle, and a short flag at the top
            draw(page, [[(0.5, 0.12), (0.5, 0.88)], [(0.36, 0.25), (0.5, 0.12)]])
            with page.expect_request("**/v1/predict") as sent:
                page.click("#predict")
            page.wait_for_selector("#predictions li", timeout=20_000)
            answer = page.locator("#answer").inner_text()
            shown = page.locator("#predictions li").all_inner_texts()
            page.screenshot(path=str(screenshot), full_page=True)
            body = json.loads(sent.value.post_data)
        finally:
            browser.close()
        example = body["inputs"][0]
        assert len(example) == 1 and len(example[0]) == 8 and all(len(row) == 8 for row in example[0])
        values = [v for row in example[0] for v in row]
        assert max(values) > 0.5 and min(values) == 0.0  # strokes on a black background, resampled to 8x8
        middle = [example[0][y][3] + example[0][y][4] for y in range(8)]
        assert min(middle[1:7]) > 0.3  # the vertical stroke runs down the middle columns
        expected = httpx.post(served.url + "/v1/predict", json=body).json()["predictions"][0]
    assert answer == expected["label"]
    top = sorted(expected["probabilities"].items(), key=lambda kv: -kv[1])[:5]
    assert [s.split(":")[0] for s in shown] == [label for label, _ in top]
    assert shown[0].endswith(f"{100 * top[0][1]:.1f}%")
    assert screenshot.stat().st_size > 5_000


def test_the_page_asks_for_the_key(chromium, digits_run):
    with Served(digits_run.path, api_key="k3y") as served, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(served.url + "/")
            page.wait_for_selector("#key-panel:not([hidden])", timeout=20_000)
            assert not page.locator("#input-panel").is_visible()
            page.fill("#key", "k3y")
            page.click("#key-form button")
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            assert page.locator("#canvas").is_visible()
        finally:
            browser.close()
