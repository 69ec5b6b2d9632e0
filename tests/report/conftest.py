"""Fixtures for the report tests: a refit of the test model and a headless Chromium.

The browser is the system's Chromium driven by selenium through the system
chromedriver. Nothing is downloaded: the driver path is given explicitly and
selenium-manager runs offline (``SE_OFFLINE``). Each browser gets a fresh
profile folder and the switches that stop Chromium's own background traffic,
so any network request a page makes is the page's doing. Without Chromium the
browser tests skip on a developer machine; in CI (``CI`` set) they fail.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from threadpoolctl import threadpool_limits

from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.trainer.release.refit import PersonaAggregates, RefitResult, refit_bundle
from edgepersona.trainer.release.train import TrainResult

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SWITCHES = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-quic", "--hide-scrollbars", "--force-device-scale-factor=1")
INSTALL = "apt-get install -y chromium chromium-driver; pip install -e '.[test]'"


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread() -> Iterator[None]:
    # KMeans' OpenMP start-up dominates small fits on small machines; see tests/trainer.
    with threadpool_limits(limits=1):
        yield


Aggregate = Callable[..., PersonaAggregates]


def aggregate(result: TrainResult, rows: npt.NDArray[np.float64],
              weights: npt.NDArray[np.float64] | None = None) -> PersonaAggregates:
    """What the collector holds if every user synced once; ``weights`` scales each persona."""
    params = result.manifest.assigner
    labels = numpy_assign(params, rows)[0]
    t = model_space(params, rows)
    k = len(params.centroids)
    scale = np.ones(k) if weights is None else weights
    counts = np.bincount(labels, minlength=k).astype(float) * scale
    sums = np.vstack([t[labels == p].sum(axis=0) for p in range(k)]) * scale[:, None]
    sumsq = np.vstack([(t[labels == p] ** 2).sum(axis=0) for p in range(k)]) * scale[:, None]
    return PersonaAggregates(counts, sums, sumsq)


@pytest.fixture(scope="session")
def aggregates_of() -> Aggregate:
    """:func:`aggregate`: (trained result, rows, per-persona weights) -> collector aggregates."""
    return aggregate


@pytest.fixture(scope="session")
def refit_v2(trained: TrainResult, bundle_training_rows: npt.NDArray[np.float64],
             signing_key: Ed25519PrivateKey) -> RefitResult:
    """Version 2 refitted from aggregates in which persona P1 tripled: held for review."""
    weights = np.array([3.0, 1.0, 1.0, 1.0])
    return refit_bundle(trained.manifest, aggregate(trained, bundle_training_rows, weights),
                        signing_key, k_min=5)


def _missing_browser() -> str | None:
    """What the browser tests lack here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session.

    Skips only on a machine without Chromium that is not CI; in CI, or with
    Chromium present but its driver or selenium missing, the tests fail.
    """
    missing = _missing_browser()
    if missing is not None:
        if not CHROMIUM.exists() and not os.environ.get("CI"):
            pytest.skip(f"no headless browser: {missing} (install: {INSTALL})")
        pytest.fail(f"the report's browser tests cannot run: {missing}; {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with (pytest.MonkeyPatch.context() as patch,
          tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile):
        patch.setenv("SE_OFFLINE", "true")  # selenium-manager must not fetch a driver or browser
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for switch in (*SWITCHES, f"--user-data-dir={profile}", "--window-size=1280,1000"):
            options.add_argument(switch)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


def full_page_png(driver: Any, width: int, height: int | None = None) -> bytes:
    """A PNG of the loaded page: ``height`` px of it, or all of it (also see ``page_png``)."""
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, height or full)
    driver.execute_script("window.scrollTo(0, 0)")
    png: bytes = driver.get_screenshot_as_png()
    return png


@pytest.fixture(scope="session")
def page_png() -> Callable[..., bytes]:
    """:func:`full_page_png`: (driver, width, height=None) -> PNG bytes."""
    return full_page_png
