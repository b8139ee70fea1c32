"""The web demo in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) uploads an image, types classes, presses Segment and downloads the labels."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_scene


@pytest.fixture(scope="module")
def page(demo_server, tmp_path_factory):
    from aeroseg.demo.browser import BrowserUnavailable, DemoPage

    try:
        browser = DemoPage(demo_server[0], tmp_path_factory.mktemp("downloads"), timeout=60)
    except BrowserUnavailable as exc:
        pytest.skip(f"no headless Chromium: {exc}")
    yield browser
    browser.close()


def test_upload_type_classes_segment_and_download_in_a_browser(page, tmp_path):
    image = synthetic_scene(tmp_path / "browser_scene.png", rows=2, cols=2, seed=5)  # 128 x 128
    page.upload(tmp_path / "browser_scene.png")
    page.set_classes("building|roof, road, swimming pool, tree")
    status = page.segment()
    assert status.startswith("128×128 px, 4 classes, 9 windows"), status
    assert page.overlay_src() and page.overlay_src().endswith("browser_scene_overlay.png")
    # the legend shows the typed names, in their order, in the colours of the classes file
    legend = page.legend()
    assert [name for name, _ in legend] == ["building", "road", "swimming pool", "tree"]
    classes = json.loads(page.download("classes-json").read_text())
    assert [c["name"] for c in classes["classes"]] == ["building", "road", "swimming pool", "tree"]
    assert [colour for _, colour in legend] == ["#%02x%02x%02x" % tuple(c["color"]) for c in classes["classes"]]
    # the downloaded labels file: one class index per pixel of the image
    labels = Image.open(page.download("labels"))
    assert labels.size == (image.shape[1], image.shape[0]) and labels.mode == "L"
    assert np.asarray(labels).max() < 4


def test_a_bad_class_list_is_a_message_in_the_page(page, tmp_path):
    synthetic_scene(tmp_path / "browser_bad.png", rows=1, cols=1, seed=6)
    page.upload(tmp_path / "browser_bad.png")
    page.set_classes("road, tree, road")
    for _ in range(2):  # the same answer twice is still waited for
        status = page.segment()
        assert status.startswith("Error: classes 'road, tree, road': duplicate class names ('road' = 'road';")
    assert "Traceback" not in page.driver.find_element("tag name", "body").text
