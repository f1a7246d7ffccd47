"""Browser tier: Debian's Chromium, headless, driven by Playwright, against real ``bentoml serve`` processes.

Every test leaves a screenshot of the page as it finished in ``test-artifacts/browser/`` (not committed), so a
failure can be looked at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import Server, own_home, start_server, stop_server

ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
API_KEY = "browser-test-key"


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API runs an event loop in this thread until it closes, which would break
    the asyncio.run() of the tests that run after this tier."""
    path = _chromium()
    if path is None:
        pytest.skip("No Chromium found: apt-get install chromium (bash .ci/run does), or set CHROMIUM=/path")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    messages: list[str] = []
    tab.on("console", lambda msg: messages.append(f"{msg.type}: {msg.text}"))
    tab.on("pageerror", lambda err: messages.append(f"pageerror: {err}"))
    tab.console_messages = messages
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def ui_server(species_dev_model, aesthetic_models, zero_shot_models, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp("ui-serve")
    srv = start_server(tmp / "bentoml.log", env={"GATEWAY_WORKERS": "1", "BENTOML_HOME": own_home(tmp / "home")})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def keyed_server(species_dev_model, aesthetic_models, zero_shot_models, tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp("ui-keyed")
    srv = start_server(tmp / "bentoml.log", env={"GATEWAY_WORKERS": "1", "API_KEY": API_KEY,
                                                 "BENTOML_HOME": own_home(tmp / "home")})
    yield srv
    stop_server(srv)
