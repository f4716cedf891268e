"""The web UI in Debian's Chromium (Playwright, sync API) against a real `onward serve` and the
scripted LLM. One server and one LLM for the suite (test_screens has its own server); a fresh
browser context per test, signed in through the login screen once per module; tests keep apart by
their own conversations and a unique marker in their message that selects their script.

Pages fail the test on any uncaught script error. Screenshots go to tests/e2e/artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api

CHROMIUM = os.environ.get("ONWARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
WEB_INDEX = Path(__file__).resolve().parents[2] / "src" / "onward" / "web" / "index.html"
SERVER_SETTINGS = {
    "llm_read_timeout_s": 5,
    "llm_retry_base_s": 0.05,
    "llm_max_retries": 2,
    "shutdown_grace_s": 1,
    "sse_heartbeat_s": 2,
}

expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not WEB_INDEX.is_file():
        pytest.fail(f"the web UI is not built: {WEB_INDEX} is missing (run make web)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (make system-deps installs Debian's)")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture(scope="session")
def server(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnwardServer]:
    """One server for the suite (a module may override it with its own)."""
    srv = OnwardServer(tmp_path_factory.mktemp("home"), llm.base_url, **SERVER_SETTINGS)
    with srv:
        yield srv


@pytest.fixture
def api(server: OnwardServer) -> Iterator[Api]:
    client = Api(server.url, server.auth_headers())
    yield client
    client.http.close()


class PageErrors:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        return page


@pytest.fixture
def page_errors() -> Iterator[PageErrors]:
    errors = PageErrors()
    yield errors
    assert not errors.errors, "uncaught errors in the page:\n" + "\n".join(errors.errors)


def new_context(browser: Browser, base_url: str, storage_state: Any = None) -> BrowserContext:
    return browser.new_context(
        base_url=base_url,
        viewport={"width": 1280, "height": 800},
        locale="en-US",
        color_scheme="light",
        reduced_motion="reduce",
        storage_state=storage_state,
    )


@pytest.fixture(scope="module")
def auth_state(browser: Browser, server: OnwardServer) -> Any:
    """Sign in through the login screen once per module; tests start from its cookies."""
    ctx = new_context(browser, server.url)
    try:
        sign_in(ctx, server)
        return ctx.storage_state()
    finally:
        ctx.close()


@pytest.fixture
def context(browser: Browser, server: OnwardServer, auth_state: Any) -> Iterator[BrowserContext]:
    ctx = new_context(browser, server.url, auth_state)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, page_errors: PageErrors) -> Page:
    return page_errors.watch(context.new_page())


def sign_in(ctx: BrowserContext, server: OnwardServer) -> None:
    """Sign in as the admin through the login screen (a server without accounts shows none)."""
    page = ctx.new_page()
    page.goto("/")
    login = page.get_by_role("button", name="Sign in")
    composer = page.get_by_test_id("composer")
    expect(login.or_(composer)).to_be_visible()
    if login.is_visible():
        password = getattr(server, "admin_password", None)
        if not password:
            pytest.fail("the server asks for a login but OnwardServer has no admin_password")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(str(password))
        login.click()
    expect(composer).to_be_visible()
    page.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot as a test artifact; with ONWARD_UPDATE_SCREENSHOTS=1 also into docs/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("ONWARD_UPDATE_SCREENSHOTS") == "1":
        docs = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        (docs / f"{name}.png").write_bytes(path.read_bytes())
    return path
