"""The browser playground: its wheel runs without NumPy, `layerdsl playground` serves it, and a real
headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) uses the page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

import layerdsl
from layerdsl import playground

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "out"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def test_layerdsl_wheel_diagnoses_summarizes_draws_and_compiles_with_numpy_blocked(tmp_path):
    """What the page runs (playground/glue.py), from the page's wheel, with `import numpy` failing."""
    wheel = playground.write_layerdsl_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "layerdsl/grammars/layers.lark" in names and "layerdsl/backends/numpy_runtime.py" in names
        assert not any("__pycache__" in name for name in names)
        assert "Requires-Dist" not in archive.read("layerdsl-0.1.0.dist-info/METADATA").decode()
        archive.extractall(tmp_path / "site")
    lark_dir = Path(__import__("lark").__file__).parent.parent
    script = f"""
import json, sys
sys.modules["numpy"] = None  # `import numpy` raises ImportError, as in a Pyodide without numpy
sys.path[:0] = [{str(tmp_path / "site")!r}, {str(lark_dir)!r}]
import layerdsl
assert layerdsl.__file__.startswith({str(tmp_path / "site")!r}), layerdsl.__file__
sys.path.insert(0, {str(ROOT / "playground")!r})
from glue import analyze
text = sys.stdin.read()
assert analyze(text) == analyze(text)  # a second edit works as the first (layerdsl.summary stays a function)
print(analyze(text))
"""
    model = (ROOT / "examples" / "resnet18.layers").read_text(encoding="utf-8")
    out = subprocess.run([sys.executable, "-I", "-c", script], input=model, capture_output=True, text=True,
                         timeout=300, check=True)
    result = json.loads(out.stdout)
    assert result["diagnostics"] == []
    assert result["total"] == layerdsl.parse(model).total_params
    assert "Trainable params: 11,689,512" in result["summary"]  # torchvision's count
    assert result["svg"].startswith("<svg")
    assert "import torch" in result["sources"]["torch"] and "import keras" in result["sources"]["keras"]
    assert "import numpy as np" in result["sources"]["numpy"]
    assert result["sources"]["numpy"] == layerdsl.compile(layerdsl.parse(model, "model.layers"), "numpy")
    assert "rng.standard_normal((2, 224, 224, 3)" in result["run"]

    out = subprocess.run([sys.executable, "-I", "-c", script], input="dense 10 in=3\nconv2d 3 3\n",
                         capture_output=True, text=True, timeout=300, check=True)
    (diagnostic,) = json.loads(out.stdout)["diagnostics"]
    assert (diagnostic["line"], diagnostic["column"], diagnostic["severity"]) == (2, 1, "error")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which("npm") is None and not (playground.cache_dir() / f"pyodide-{playground.PYODIDE_VERSION}.tgz").is_file():
        pytest.skip("npm is not installed (scripts/setup.sh installs it with apt)")
    folder = playground.build(tmp_path_factory.mktemp("playground") / "site")
    assert playground.is_current(folder)
    return folder


def test_built_folder_holds_pyodide_core_and_both_wheels_and_no_cdn_address(built):
    manifest = json.loads((built / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in (built / "pyodide").iterdir()) == sorted(playground.PYODIDE_CORE)
    assert [Path(w).name.split("-")[0] for w in manifest["wheels"]] == ["lark", "layerdsl"]
    assert all((built / w).is_file() for w in manifest["wheels"])
    assert "micropip" not in {p.name.split("-")[0] for p in (built / "wheels").iterdir()}
    assert set(manifest["examples"]) == {p.stem for p in (ROOT / "examples").glob("*.layers")}
    for page in ("index.html", "playground.js"):
        assert not re.search(r"https?://", (built / page).read_text(encoding="utf-8")), f"{page} names an address"


def test_cli_serves_the_built_folder_on_loopback_and_prints_the_url(built):
    process = subprocess.Popen(
        [sys.executable, "-m", "layerdsl", "playground", "--dir", str(built), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"layerdsl playground" in response.read()
        with urllib.request.urlopen(url + "pyodide/pyodide.asm.wasm", timeout=30) as response:
            assert response.headers["Content-Type"] == "application/wasm"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "building" not in process.stderr.read()  # the folder was current: nothing rebuilt


@pytest.fixture(scope="module")
def browser(built):
    webdriver = pytest.importorskip("selenium.webdriver")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup.sh installs them with apt)")
    from selenium.webdriver.chrome.service import Service

    server = playground.make_server(built)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # given explicitly: Selenium never looks for or downloads a browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield driver
    driver.quit()
    server.shutdown()
    server.server_close()


def _wait(driver, script: str, what: str, seconds: float = 240):
    """Poll a JavaScript expression until it is truthy (Pyodide's first start takes a while)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        failed = driver.execute_script("return document.body.dataset.failed")
        assert not failed, f"the page failed: {failed}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _open(driver, url: str) -> None:
    driver.get("about:blank")
    driver.get(url)
    _wait(driver, "document.body.dataset.ready === '1'", "Pyodide and layerdsl to load")


MODEL = "input 28x28x1\nconv2d 8 3 | relu\nmaxpool 2\nflatten\ndense 10 | softmax"


def test_typing_a_model_shows_its_total_and_diagram_and_a_typo_is_marked_at_its_line(browser):
    from selenium.webdriver.common.by import By

    _open(browser, browser.base_url + "index.html")
    editor = browser.find_element(By.ID, "source")
    editor.clear()
    editor.send_keys(MODEL)
    total = f"Total params: {layerdsl.parse(MODEL).total_params:,}"
    _wait(browser, f"document.getElementById('summary').textContent.includes({json.dumps(total)})", total)
    assert browser.find_element(By.ID, "diagnostics").text == "no errors"
    diagram = browser.find_element(By.CSS_SELECTOR, "#diagram svg")
    assert diagram.size["height"] > 200
    assert {"conv2d", "max_pooling2d", "dense"} <= {t.text for t in diagram.find_elements(By.TAG_NAME, "text")}

    editor.send_keys("\nflaten")  # a sixth line with a misspelled layer
    mark = _wait(browser, "document.querySelector('#backdrop mark')", "the underline")
    assert mark.text == "flaten"
    assert (mark.get_attribute("data-line"), mark.get_attribute("data-column")) == ("6", "1")
    (item,) = browser.find_elements(By.CSS_SELECTOR, "#diagnostics li.error")
    assert item.text.startswith("model.layers:6:1: error: unknown layer `flaten`")
    assert browser.find_element(By.CSS_SELECTOR, "#gutter span.error").text == "6"
    # The underline sits on the sixth line of the editor, under the word.
    offset = browser.execute_script(
        "const m = document.querySelector('#backdrop mark').getBoundingClientRect();"
        "const t = document.getElementById('source').getBoundingClientRect();"
        "const style = getComputedStyle(document.getElementById('source'));"
        "return [(m.top - t.top - parseFloat(style.paddingTop)) / parseFloat(style.lineHeight),"
        "        m.left - t.left - parseFloat(style.paddingLeft)];"
    )
    assert offset[0] == pytest.approx(5, abs=0.2) and offset[1] == pytest.approx(0, abs=2)
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "playground.png"))

    # The address keeps the text: opening the link again reproduces the model and its mistake.
    link = browser.current_url
    assert "#code=" in link
    _open(browser, link)
    assert browser.find_element(By.ID, "source").get_attribute("value") == MODEL + "\nflaten"
    _wait(browser, "document.querySelector('#backdrop mark')", "the underline after reloading the link")


def test_generated_sources_copy_button_run_tab_and_examples(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(browser, browser.base_url + "index.html#code=" + urllib.request.quote(MODEL))
    _wait(browser, "document.getElementById('summary').textContent.includes('Total params')", "the summary")
    for tab, expected in (("torch", "import torch"), ("keras", "import keras"), ("numpy", "import numpy as np")):
        browser.find_element(By.CSS_SELECTOR, f"#tabs button[data-tab={tab}]").click()
        code = browser.find_element(By.ID, "code").text
        assert expected in code
        assert code.strip() == layerdsl.compile(layerdsl.parse(MODEL, "model.layers"), tab).strip()
    browser.find_element(By.ID, "copy").click()
    _wait(browser, "document.getElementById('copy').textContent === 'Copied'", "the copy button to confirm")

    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=run]").click()
    assert "needs Python" in browser.find_element(By.ID, "code-note").text
    assert 'layerdsl.build(layerdsl.load("model.layers"), target="numpy")' in browser.find_element(By.ID, "code").text

    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=model]").click()
    Select(browser.find_element(By.ID, "examples")).select_by_value("resnet18")
    _wait(browser, "document.getElementById('summary').textContent.includes('Trainable params: 11,689,512')", "ResNet18")
    example = (ROOT / "examples" / "resnet18.layers").read_text(encoding="utf-8")
    assert browser.find_element(By.ID, "source").get_attribute("value") == example
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "playground-resnet18.png"))
