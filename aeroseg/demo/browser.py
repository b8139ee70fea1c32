"""The demo page driven by a real browser: headless Chromium through selenium.

Used by the browser test (``tests/demo/test_browser.py``) and by the documentation's screenshot
(``tools/dev/web_demo_screenshot.py``). It needs selenium (the ``dev`` extra) and a Chromium with
its driver from the system's packages (Debian: ``apt-get install chromium chromium-driver``);
:func:`find_chromium` says what is missing. Nothing is downloaded: selenium is given both paths.
"""
import os
import shutil
import time
from pathlib import Path
from typing import List, Optional, Tuple

__all__ = ["BrowserUnavailable", "DemoPage", "find_chromium"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES = ("chromedriver",)


class BrowserUnavailable(RuntimeError):
    """No usable headless Chromium here (the message says what is missing)."""


def find_chromium() -> Tuple[str, str]:
    """(browser, driver) executables from ``$AEROSEG_CHROMIUM`` / ``$AEROSEG_CHROMEDRIVER`` or the PATH."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise BrowserUnavailable('selenium is not installed (pip install "aeroseg[dev]")') from None
    browser = os.environ.get("AEROSEG_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    driver = os.environ.get("AEROSEG_CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVER_NAMES)), None)
    missing = [what for what, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        raise BrowserUnavailable(f"{' and '.join(missing)} not found on the PATH "
                                 "(Debian: apt-get install chromium chromium-driver)")
    for path in (browser, driver):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BrowserUnavailable(f"{path} is not an executable file")
    return browser, driver


class DemoPage:
    """The demo at ``url`` in headless Chromium; downloads land in ``download_dir``.

    ``page.upload(path); page.set_classes("a, b|c"); page.segment()`` then ``page.legend()``,
    ``page.download("labels")``, ``page.screenshot(path)``; ``page.close()`` ends the browser.
    """

    def __init__(self, url: str, download_dir, window_size=(1400, 1100), timeout: float = 120):
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        browser, driver = find_chromium()
        self.download_dir = Path(download_dir).resolve()
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--disable-extensions", "--no-first-run", f"--window-size={window_size[0]},{window_size[1]}"):
            options.add_argument(arg)
        options.add_experimental_option("prefs", {"download.default_directory": str(self.download_dir),
                                                  "download.prompt_for_download": False})
        try:
            self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        except WebDriverException as exc:
            raise BrowserUnavailable(f"{browser} with {driver} did not start: {' '.join(str(exc).split())[:300]}") \
                from None
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": str(self.download_dir)})
        self.driver.get(url)
        self._wait(lambda d: d.find_elements("css selector", "#aeroseg-segment, #aeroseg-status"), "the page to load")
        # count the status line's changes: an answer equal to the last one is still seen to arrive
        self.driver.execute_script(
            "window.aerosegStatusChanges = 0; new MutationObserver(() => window.aerosegStatusChanges++)"
            ".observe(document.querySelector('#aeroseg-status'),"
            " {subtree: true, childList: true, characterData: true});")

    # ------------------------------------------------------------------ actions
    def upload(self, path) -> None:
        """Choose ``path`` in the image field and wait until the upload is done."""
        for clear in self.driver.find_elements("css selector", "#aeroseg-image button[aria-label=Clear]"):
            clear.click()  # a file is there already: the field comes back after Clear
        field = self._wait(lambda d: d.find_elements("css selector", "#aeroseg-image input[type=file]"),
                           "the image field")[0]
        field.send_keys(str(Path(path).resolve()))
        stem = Path(path).stem  # the page shows the name in two parts (stem, suffix)
        self._wait(lambda d: stem in d.find_element("css selector", "#aeroseg-image").text
                   and d.find_elements("css selector", "#aeroseg-image a[href]"), f"{Path(path).name} to upload")

    def set_classes(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.driver.find_element("css selector", "#aeroseg-classes textarea")
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(text)
        self._wait(lambda d: box.get_attribute("value") == text, "the classes box to take the text")

    def choose_preset(self, label: str) -> None:
        """Pick a dataset's vocabulary in the presets menu (fills the classes box)."""
        from selenium.webdriver.common.keys import Keys

        menu = self.driver.find_element("css selector", "#aeroseg-preset input")
        menu.click()
        menu.send_keys(label)
        menu.send_keys(Keys.ENTER)

    def segment(self) -> str:
        """Press Segment and wait for the answer; returns the status line (a summary or an error)."""
        from .app import SEGMENTING

        changes = self.driver.execute_script("return window.aerosegStatusChanges;")

        def answered(d):
            status = self.status()
            return (d.execute_script("return window.aerosegStatusChanges;") > changes and status
                    and status != SEGMENTING and not d.find_elements("css selector", "#aeroseg-status .pending"))

        self.driver.find_element("css selector", "#aeroseg-segment").click()
        self._wait(answered, "the segmentation")
        return self.status()

    # ------------------------------------------------------------------ what the page shows
    def status(self) -> str:
        """The status line's text (without the progress indicator Gradio lays over it)."""
        return self.driver.find_element("css selector", "#aeroseg-status [data-testid=markdown]").text.strip()

    def legend(self) -> List[Tuple[str, str]]:
        """(class name, colour "#rrggbb") of each legend entry, in order."""
        entries = self.driver.find_elements("css selector", "#aeroseg-legend .aeroseg-class")
        return [(e.find_element("css selector", ".aeroseg-name").text,
                 e.find_element("css selector", ".aeroseg-swatch").get_attribute("data-color")) for e in entries]

    def overlay_src(self) -> Optional[str]:
        images = self.driver.find_elements("css selector", "#aeroseg-overlay img")
        return images[0].get_attribute("src") if images else None

    def download(self, which: str = "labels") -> Path:
        """Click the download link of ``labels`` or ``classes-json`` and wait for the file."""
        link = self._wait(lambda d: d.find_elements("css selector", f"#aeroseg-{which} a[download], "
                                                                    f"#aeroseg-{which} a[href]"),
                          f"the {which} download link")[0]
        name = link.get_attribute("download") or link.text.strip()
        target = self.download_dir / name
        if target.exists():
            target.unlink()
        self.driver.execute_script("arguments[0].click();", link)
        self._wait(lambda d: target.exists() and not any(self.download_dir.glob("*.crdownload")),
                   f"{name} to download")
        return target

    def screenshot(self, path) -> None:
        self.driver.save_screenshot(str(path))

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ helpers
    def _wait(self, condition, what: str):
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, self.timeout, poll_frequency=0.2,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition)
        except TimeoutException:
            raise TimeoutError(f"waited {self.timeout:.0f} s for {what}; the page says: "
                               f"{' '.join(self.driver.find_element('tag name', 'body').text.split())[:500]}") \
                from None


def wait_for_server(url: str, timeout: float = 60) -> None:
    """Until ``url`` answers HTTP (the demo's server started)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
