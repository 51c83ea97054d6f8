"""The console as a person meets it: `python -m services.web` in its own process over the in-process services,
and a real Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.stack import free_ports

REPO = Path(__file__).resolve().parents[2]
# screenshots of every page: a test artifact CI keeps (build/ is ignored by git)
SCREENSHOTS = Path(os.environ.get("WORKBENCH_TEST_ARTIFACTS", REPO / "build" / "test-artifacts")) / "web"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@dataclasses.dataclass
class Console:
    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str, **headers) -> tuple[int, str, dict]:
        """A plain HTTP GET (no browser): status, body and headers; redirects are not followed."""
        return http(self.url + path, headers=headers)


def start_console(gateway_address: str, tmp_path: Path) -> Console:
    port = free_ports(1)[0]
    log = tmp_path / "web.log"
    env = {**os.environ, "WORKBENCH_WEB_LISTEN": f"127.0.0.1:{port}", "WORKBENCH_ADDRESS": gateway_address,
           "WORKBENCH_LOG_FORMAT": "text"}
    env.pop("WORKBENCH_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "services.web"], env=env, cwd=REPO,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    console = Console(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if console.get("/healthz")[0] == 200:
                return console
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the console did not start:\n{log.read_text()}")
        time.sleep(0.1)


def stop_console(console: Console) -> None:
    console.process.terminate()
    try:
        console.process.wait(10)
    except subprocess.TimeoutExpired:
        console.process.kill()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def http(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None
         ) -> tuple[int, str, dict]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace"), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)


@pytest.fixture
def console(workbench, tmp_path):
    """The console over this test's services (no gateway token)."""
    console = start_console(workbench.servers["gateway"].address, tmp_path)
    yield console
    stop_console(console)


@pytest.fixture(scope="session")
def browser():
    """Chromium from the system (Playwright's own download cannot work offline); no Chromium fails the test."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("no Chromium for the console's browser tests: install it with `apt-get install -y chromium` "
                    "(.ci/run does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context (own cookies) and page; console errors in the page fail the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
