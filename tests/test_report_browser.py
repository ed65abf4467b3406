"""The HTML reports opened in a real headless browser (Debian's chromium, driven by Selenium through Debian's
chromedriver): the page loads without console errors, every plot image decodes and is visible when scrolled to,
the tables sort as they claim, the browser makes no request but the file itself (DevTools performance log), and a
full-page screenshot of each report is kept (under $EDGEOPT_TEST_ARTIFACTS, else pytest's tmp dir; the path is
printed). Controls show the checks can fail: a page that fetches from the network, or logs an error, is caught.

Without chromium/chromedriver/selenium the tests skip with the reason on a developer's machine and FAIL in CI
(``CI`` set): `apt-get install -y chromium chromium-driver`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from report_data import ci_result, search_data

from edgeopt.build.search import SearchResult
from edgeopt.report.html import html_report, search_report_html
from edgeopt.report.search import search_figure
from edgeopt.report.style import png

CHROMIUM = os.environ.get("EDGEOPT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGEOPT_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1280,900", "--hide-scrollbars"]


def missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the browser tests must run in CI (apt-get install -y chromium chromium-driver; "
                    "pip install selenium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            missing(f"{path} not found")
    profile = tempfile.mkdtemp(prefix="edgeopt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("EDGEOPT_TEST_ARTIFACTS")
    out = Path(root) / "report-screenshots" if root else tmp_path_factory.mktemp("report-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_page(driver: Any, path: Path) -> dict[str, Any]:
    """Load ``path``; return the console entries and every URL the page requested."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get_log("performance")  # drain: only this page's events from here on
    url = path.resolve().as_uri()
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[0];"
        "if (document.readyState === 'complete') { done(); } else { addEventListener('load', () => done()); }")
    requests, ids, blocked = [], {}, {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            requests.append(params["request"]["url"])
            ids[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[ids.get(params["requestId"], "?")] = params["blockedReason"]
    return {"url": url, "console": driver.get_log("browser"), "requests": requests, "blocked": blocked}


def foreign_requests(page: dict[str, Any]) -> list[str]:
    """Requests other than the file itself and inline data: URLs (what a self-contained file may not make)."""
    return [u for u in page["requests"] if u != page["url"] and not u.startswith("data:")]


def check_images(driver: Any) -> list[dict[str, Any]]:
    """Every <img>: decoded (naturalWidth > 0), rendered with a size, and inside the viewport once scrolled to."""
    n = driver.execute_script("return document.images.length")
    out = []
    for i in range(n):
        decoded = driver.execute_async_script(
            "const img = document.images[arguments[0]], done = arguments[1];"
            "img.decode().then(() => done(true), () => done(false));", i)
        info = driver.execute_script(
            "const img = document.images[arguments[0]]; img.scrollIntoView({block: 'center'});"
            "const r = img.getBoundingClientRect(), s = getComputedStyle(img);"
            "return {alt: img.alt, natural: img.naturalWidth, h: img.naturalHeight, complete: img.complete,"
            " w: r.width, top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
            " vw: innerWidth, vh: innerHeight, visible: s.visibility === 'visible' && s.display !== 'none'"
            "  && Number(s.opacity) > 0};", i)
        info["decoded"] = decoded
        out.append(info)
    return out


def check_sorting(driver: Any) -> int:
    """Click every header of every sortable table twice: numeric columns (data-v) come out ascending then
    descending, missing values last; text columns in locale order. Returns the number of columns checked."""
    checked = 0
    tables = driver.find_elements("css selector", "table.sortable")
    for t, table in enumerate(tables):
        heads = table.find_elements("css selector", "thead th")
        for col, head in enumerate(heads):
            for direction in ("ascending", "descending"):
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", head)
                assert head.get_attribute("aria-sort") == direction
                values = driver.execute_script(
                    "const rows = document.querySelectorAll('table.sortable')[arguments[0]].tBodies[0].rows;"
                    "return Array.from(rows, r => { const c = r.cells[arguments[1]];"
                    " return c.hasAttribute('data-v') ? (c.dataset.v === '' ? null : parseFloat(c.dataset.v))"
                    " : c.textContent.trim(); });", t, col)
                present = [v for v in values if v is not None]
                assert values[:len(present)] == present, f"missing values must sort last: {values}"
                if present and isinstance(present[0], str):
                    collated = driver.execute_script(
                        "return arguments[0].slice().sort((a, b) => a.localeCompare(b));", present)
                    expected = collated if direction == "ascending" else collated[::-1]
                else:
                    expected = sorted(present, reverse=direction == "descending")
                assert present == expected, f"table {t} column {col} {direction}: {values}"
            checked += 1
    return checked


def screenshot(driver: Any, path: Path) -> Path:
    """A full-page PNG (DevTools: beyond the viewport)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def assert_report_renders(driver: Any, path: Path, shots: Path, plots: int) -> dict[str, Any]:
    """Every check of the module docstring on one report file; returns what was seen."""
    page = open_page(driver, path)
    assert page["console"] == [], page["console"]
    assert foreign_requests(page) == [], page["requests"]
    assert driver.execute_script("return document.querySelector('meta[http-equiv=Content-Security-Policy]')"
                                 ".content").startswith("default-src 'none'")
    images = check_images(driver)
    assert len(images) == plots
    for img in images:
        assert img["complete"] and img["decoded"] and img["natural"] > 0 and img["h"] > 0, img
        assert img["visible"] and img["w"] > 100, img
        assert img["left"] >= 0 and img["right"] <= img["vw"] + 1, img  # fits the width: scaled, not cut
        assert img["bottom"] > 0 and img["top"] < img["vh"], img  # in the viewport once scrolled to
    columns = check_sorting(driver)
    assert columns > 0
    assert driver.get_log("browser") == []  # sorting raised nothing either
    shot = screenshot(driver, shots / f"{path.stem}.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")
    return {"images": images, "columns": columns, "screenshot": shot, "page": page}


def tie_search(n: int) -> SearchResult:
    data = search_data(n)
    rows = data["rows"]
    fast = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_p50_ms"])
    best = fast[1] if len(fast) > 1 else fast[0]
    tie = {"fastest": fast[0]["candidate"], "test": "the CI gate's test", "tested": True, "called": len(fast) > 1,
           "with": [best["candidate"]] if best is not fast[0] else [], "decided_by": "accuracy",
           "evidence": [{"candidate": r["candidate"], "tie": r is best, "status": "pass" if r is best else
                         "regression", "p_value": 0.41 if r is best else 1e-30, "ratio": 1.01 if r is best else 1.4,
                         "ci_low": 0.98, "ci_high": 1.04, "n_fastest": 200, "n_candidate": 200, "message": "…"}
                        for r in fast[1:]]}
    return SearchResult("synthetic", "latency", 1.0, rows,
                        {"candidate": best["candidate"], "why": "synthetic tie", "tie": tie}, "accuracy", False,
                        "synthetic", ["a note"])


@pytest.mark.parametrize("n", [2, 30])
def test_search_report_in_a_browser(browser: Any, screenshots_dir: Path, tmp_path: Path, n: int) -> None:
    result = tie_search(n)
    path = tmp_path / f"search-{n}-candidates.html"
    path.write_text(search_report_html(result, png(search_figure(result))))
    seen = assert_report_renders(browser, path, screenshots_dir, plots=1)
    assert seen["columns"] == 10 + (7 if n > 2 else 0)  # the candidates table (+ the tie evidence table)
    rows = browser.execute_script("return document.querySelectorAll('table.sortable')[0].tBodies[0].rows.length")
    assert rows == n


@pytest.mark.parametrize("devices", [2, 30])
def test_ci_report_in_a_browser(browser: Any, screenshots_dir: Path, tmp_path: Path, devices: int) -> None:
    path = tmp_path / f"ci-{devices}-devices.html"
    path.write_text(html_report(ci_result(devices)))
    seen = assert_report_renders(browser, path, screenshots_dir, plots=4)
    assert seen["columns"] == 12
    assert [i["alt"] for i in seen["images"]] == ["latency distributions", "accuracy vs latency vs size",
                                                 "per-device comparison", "baseline vs current"]


def test_the_checks_catch_a_page_that_fetches_or_fails(browser: Any, tmp_path: Path) -> None:
    """Controls: a network fetch is seen in the performance log, a script error in the console, a broken image
    as naturalWidth 0; and our Content-Security-Policy blocks a fetch a report might ever grow."""
    from edgeopt.report.html import page

    leaky = tmp_path / "leaky.html"
    leaky.write_text("<!DOCTYPE html><html><body><img alt='x' src='http://127.0.0.1:9/x.png'>"
                     "<script>console.error('boom')</script></body></html>")
    seen = open_page(browser, leaky)
    assert foreign_requests(seen) == ["http://127.0.0.1:9/x.png"]
    assert any("boom" in e["message"] for e in seen["console"])
    assert check_images(browser)[0]["natural"] == 0
    guarded = tmp_path / "guarded.html"
    guarded.write_text(page("guarded", "<img alt='x' src='http://127.0.0.1:9/y.png'>"))
    seen = open_page(browser, guarded)
    assert foreign_requests(seen) == ["http://127.0.0.1:9/y.png"]  # attempted...
    assert seen["blocked"] == {"http://127.0.0.1:9/y.png": "csp"}  # ...and stopped by the policy
    assert any("Content Security Policy" in e["message"] for e in seen["console"])
