"""decaf serve in a real browser: Debian's headless chromium, driven by Selenium through
chromium-driver, against a uvicorn server on 127.0.0.1 with the pretrained EfficientNet-Lite0.

It uploads scikit-image's chelsea (a tabby cat), reads the top-5 from the page, opens the layer
view and checks that the page fits a phone-sized screen. Screenshots go to docs/img/serve.png and
docs/img/serve-phone.png (docs/serve.md shows them). Skipped only when chromium or its driver is
not installed (.ci/run installs both)."""
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"

pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs Debian's chromium and chromium-driver "
                                       "(apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def server_url(pretrained_file):
    import uvicorn

    import decaf
    from decaf.serve import Engine, create_app
    app = create_app(Engine(decaf.load(pretrained_file)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(20)
    sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                 "--window-size=1200,1700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, what, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message=f"waited for {what}")


def test_chelsea_in_the_browser(server_url, browser, photos):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server_url + "/")
    wait_for(browser, lambda d: "efficientnet" in d.find_element(By.ID, "model-line").text.lower(), "the model line")
    browser.find_element(By.ID, "file-input").send_keys(str(photos / "chelsea.png"))

    names = wait_for(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".card .class-name")],
                     "the top-5 of chelsea")
    assert len(names) == 5
    assert any("tiger cat" in n or "tabby" in n for n in names), names
    bars = browser.find_elements(By.CSS_SELECTOR, ".card .pred .bar div")
    assert len(bars) == 5 and bars[0].size["width"] > 0

    groups = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timing-chart .group")]
    assert "conv" in groups and "decode" in groups                  # the Figure 3 split, and the rest

    # the teaching view: a layer's feature maps for this image, and the first layer's filters
    select = Select(browser.find_element(By.ID, "layer-select"))
    assert len(select.options) > 5
    blobs = [o.get_attribute("value") for o in select.options]
    select.select_by_value(blobs[1])                                # an early layer: the cat is still visible
    browser.find_element(By.ID, "layer-show").click()
    wait_for(browser, lambda d: d.execute_script(
        "const i = document.getElementById('layer-maps'); return !i.hidden && i.complete && i.naturalWidth > 0"),
        "the feature-map grid")
    assert "maps shown" in browser.find_element(By.ID, "layer-line").text
    assert browser.execute_script("const i = document.getElementById('filters'); return i.naturalWidth") > 0
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(DOCS_IMG / "serve.png"))

    # a phone-sized screen: one column, nothing wider than the screen
    browser.set_window_size(390, 844)
    time.sleep(0.3)
    width = browser.execute_script("return document.documentElement.clientWidth")
    scroll = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll} px wide on a {width} px screen"
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert card.size["width"] <= width
    browser.save_screenshot(str(DOCS_IMG / "serve-phone.png"))
    browser.set_window_size(1200, 1700)


def test_a_bad_file_shows_its_error(server_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    browser.get(server_url + "/")
    wait_for(browser, lambda d: "efficientnet" in d.find_element(By.ID, "model-line").text.lower(), "the model line")
    browser.find_element(By.ID, "file-input").send_keys(str(bad))
    error = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".card .error"), "the error card")
    assert "bad_image" in error[0].text
