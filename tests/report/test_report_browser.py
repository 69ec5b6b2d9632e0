"""The persona report in a real browser: headless Chromium shows it, loads nothing, prints it.

Each check opens the page from a file, as someone who received it would, and
asks the browser: every persona card and every chart is laid out with a size,
the console is silent, the Resource Timing API saw no request, and printing
puts each persona on its own page. A page with an injected external image is
the negative control: both checks must see it, and the page's policy must refuse it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgepersona.sdk import Manifest
from edgepersona.trainer.release.refit import RefitResult
from edgepersona.trainer.release.train import TrainResult
from edgepersona.trainer.report import render_persona_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pages(trained: TrainResult, refit_v2: RefitResult,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Manifest]]:
    folder = tmp_path_factory.mktemp("reports")
    first = render_persona_report(trained.manifest, previous=None, drift_markdown=None)
    refit = render_persona_report(refit_v2.manifest, previous=trained.manifest,
                                  drift_markdown=refit_v2.drift.to_markdown(1, 2))
    (folder / "v1.html").write_text(first, encoding="utf-8")
    (folder / "v2.html").write_text(refit, encoding="utf-8")
    return {"v1": (folder / "v1.html", trained.manifest),
            "v2": (folder / "v2.html", refit_v2.manifest)}


def problems(driver: Any) -> list[dict[str, Any]]:
    """Console messages at warning level or worse since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def open_page(driver: Any, path: Path) -> None:
    driver.set_window_size(1280, 1000)
    driver.get(path.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_report_shows_every_card_and_chart_and_loads_nothing(
        chromium: Any, pages: dict[str, tuple[Path, Manifest]], version: str,
        tmp_path: Path, page_png: Callable[..., bytes]) -> None:
    from selenium.webdriver.common.by import By

    path, manifest = pages[version]
    problems(chromium)  # drain anything an earlier page left
    open_page(chromium, path)
    for card in manifest.personas:
        element = chromium.find_element(By.ID, f"persona-{card.id}")
        assert element.is_displayed() and element.size["width"] > 300 and element.size["height"] > 150
        assert card.name in element.text
    charts = chromium.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == len(manifest.personas) + 2 + (2 if version == "v2" else 0)
    for chart in charts:
        assert chart.is_displayed() and chart.size["width"] > 200 and chart.size["height"] > 50, \
            chart.get_attribute("id")
    assert problems(chromium) == []
    assert chromium.execute_script("return performance.getEntriesByType('resource').length") == 0
    links = chromium.execute_script(
        "return [...document.querySelectorAll('[src],[href]')]"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'))")
    assert links and all(link.startswith("#") for link in links)
    shot = tmp_path / f"report-{version}.png"
    shot.write_bytes(page_png(chromium, 1280))
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000


def test_printing_puts_each_persona_on_its_own_page(
        chromium: Any, pages: dict[str, tuple[Path, Manifest]]) -> None:
    from selenium.webdriver.common.print_page_options import PrintOptions

    path, manifest = pages["v1"]
    open_page(chromium, path)
    pdf = base64.b64decode(chromium.print_page(PrintOptions()))
    assert pdf.startswith(b"%PDF")
    page_count = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    assert page_count >= 1 + len(manifest.personas)  # the overview, then one page per card
    chromium.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        backgrounds = chromium.execute_script(
            "return [document.documentElement, document.body, ...document.querySelectorAll("
            "'.persona, .panel')].map(e => getComputedStyle(e).backgroundColor)")
        breaks = chromium.execute_script(
            "return [...document.querySelectorAll('.persona')]"
            ".map(e => getComputedStyle(e).breakBefore)")
    finally:
        chromium.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert set(backgrounds) <= {"rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"}
    assert set(breaks) == {"page"}


def test_the_page_policy_blocks_an_injected_request(
        chromium: Any, pages: dict[str, tuple[Path, Manifest]], tmp_path: Path) -> None:
    path, _ = pages["v1"]
    injected = path.read_text(encoding="utf-8").replace(
        "</main>", '<img alt="" src="https://tracker.invalid/pixel.png"></main>')
    bad = tmp_path / "injected.html"
    bad.write_text(injected, encoding="utf-8")
    problems(chromium)
    open_page(chromium, bad)
    # Both checks of the real pages see the attempt: Resource Timing lists it, the console
    # reports that the page's policy refused it.
    attempted = chromium.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert attempted == ["https://tracker.invalid/pixel.png"]
    refused = problems(chromium)
    assert any("Content Security Policy" in e["message"] for e in refused), refused
