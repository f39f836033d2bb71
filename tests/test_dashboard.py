"""The presence dashboard at /dashboard, in a real headless Chromium (Debian's
chromium and chromedriver, driven by selenium) against the real server."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import base_config
from tests.support.clients import Client, eventually, http, make_token
from tests.support.procs import Proc, server_process

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "dashboard-test-key-0123456789abcdef"
WAIT = 15.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
)


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("dashboard")
    # An origin list without the server's own: the page must still reach its feed.
    config = base_config(
        api={"keys": [API_KEY]}, server={"cors_allowed_origins": ["https://app.example"]}
    )
    proc = server_process(tmp, config).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver_path, "chromium/chromium-driver missing (make test installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


async def in_browser(fn: Callable[..., Any], *args: Any) -> Any:
    """Selenium blocks; run it off the loop that serves the test's Socket.IO client."""
    return await asyncio.to_thread(fn, *args)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)


def text_of(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def shown(driver: WebDriver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def feed_has(user_id: str, status: str) -> Callable[[WebDriver], bool]:
    selector = f'#feed li[data-user="{user_id}"][data-status="{status}"]'
    return lambda d: bool(d.find_elements(By.CSS_SELECTOR, selector))


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(f"{url}/dashboard")
    wait_for(driver, lambda d: shown(d, "signin"))
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "signin-button").click()


async def test_without_a_key_only_the_sign_in_form(dashboard_server, browser):
    url = dashboard_server.url
    await in_browser(sign_in, browser, url, "wrong-key")
    refused = await in_browser(wait_for, browser, lambda d: text_of(d, "signin-error"))
    assert "refused" in refused
    assert not await in_browser(shown, browser, "app")
    status, body = await http("GET", f"{url}/api/v1/presence/stats")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    feed = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await feed.connect(url, None, namespaces=["/dashboard"], auth={"api_key": "wrong"})
    await feed.close()
    assert feed.refusals[0]["data"]["code"] == "unauthorized"


async def test_sign_in_watch_search_and_disconnect_a_user(dashboard_server, browser, tmp_path):
    url = dashboard_server.url
    await in_browser(sign_in, browser, url, API_KEY)
    await in_browser(wait_for, browser, lambda d: text_of(d, "feed-state") == "live")
    # The key is in the tab's session storage, never in the URL.
    assert API_KEY not in browser.current_url
    stored = await in_browser(
        browser.execute_script, "return sessionStorage.getItem('sanic_rt_dashboard_key')"
    )
    assert stored == API_KEY

    zoe = await Client().connect(url, make_token("zoe"), namespaces=["/chats", "/orders"])
    try:
        await in_browser(wait_for, browser, feed_has("zoe", "online"))
        await in_browser(wait_for, browser, lambda d: "zoe" in text_of(d, "online-list"))
        await in_browser(wait_for, browser, lambda d: text_of(d, "online-users") == "1")
        # The two namespace connections land one after the other: poll the live table.
        await in_browser(
            wait_for,
            browser,
            lambda d: {"/chats 1", "/orders 1"} <= set(text_of(d, "by-namespace").splitlines()),
        )

        def search() -> None:
            browser.find_element(By.ID, "search-id").send_keys("zoe")
            browser.find_element(By.ID, "search-button").click()
            wait_for(browser, lambda d: text_of(d, "detail-user") == "zoe")

        await in_browser(search)
        assert await in_browser(text_of, browser, "detail-status") == "online"
        assert await in_browser(text_of, browser, "detail-namespaces") == "/chats, /orders"
        assert await in_browser(text_of, browser, "detail-connections") == "2"
        await in_browser(_screenshot, browser, tmp_path)

        await in_browser(lambda: browser.find_element(By.ID, "disconnect-button").click())
        await eventually(lambda: not zoe.sio.connected)
        await in_browser(wait_for, browser, feed_has("zoe", "offline"))
        await in_browser(wait_for, browser, lambda d: text_of(d, "detail-status") == "offline")
        assert "closed 2 connection(s)" in await in_browser(text_of, browser, "disconnect-result")
    finally:
        await zoe.close()


def _screenshot(driver: WebDriver, tmp_path: Path) -> None:
    # docs/dashboard.png is refreshed on request only: a test run leaves the tree clean.
    path = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(path))
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(path, ROOT / "docs" / "dashboard.png")
