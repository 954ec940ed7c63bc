"""The dashboard in a real browser: Debian's chromium, driven by Playwright for Python (no
browser download), against a real `faasd-py up` started as a user starts it.

One platform serves the module's tests (it deploys the sample functions, which takes a while);
each test gets a page of its own, and every request that page makes is checked to have gone to
the gateway and nowhere else. With FAASD_SCREENSHOTS=DIR the tests save what they look at
there (docs/screenshots: `make screenshots`).
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests._ci import in_ci
from tests.e2e.conftest import FAASD_PY, clean_environment, free_port, terminate, wait_healthy

CHROMIUM = os.environ.get("FAASD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY_TIMEOUT = 120.0  # seconds for the sample functions to deploy: only catches hangs
# What Playwright waits for an element at most (ms): generous, only to catch hangs on a busy
# machine; nothing here waits for a fixed time.
EXPECT_TIMEOUT = 60_000


ECHO = """
import json

def handle(event, context):
    text = event.body.decode()
    print("echo got " + text, flush=True)
    # A read through the app's cache (a hit from the second call on), for its charts.
    if context.storage.get("settings") is None:
        context.storage.put("settings", "x" * 2048)
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    return {"statusCode": 200, "body": {"echo": body, "method": event.method}}
"""

STACK = """
version: 1.0
provider: {name: openfaas, gateway: http://127.0.0.1:8080}
functions:
  echo:
    lang: python3-http
    handler: ./echo
    image: echo:latest
"""


def _need_browser() -> None:
    if not Path(CHROMIUM).exists():
        reason = f"the dashboard's browser tests need chromium at {CHROMIUM} (apt install)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Gateway:
    """A running `faasd-py up`."""

    url: str
    data_dir: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def password(self) -> str:
        return (self.data_dir / "credentials" / "basic-auth-password").read_text().strip()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path)
        request.add_header("Authorization", _basic("admin", self.password))
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        terminate(self.process)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def start_up(data_dir: Path, port: int, log: Path, *extra: str) -> Gateway:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [FAASD_PY, "up", "--port", str(port), "--data-dir", str(data_dir), *extra],
            env=clean_environment(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, log)
    return Gateway(url, data_dir, port, log, process)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`faasd-py up --deploy examples/stack.yml` (the sample functions), with a second
    function's package (echo:latest) built into its store for the dashboard to deploy."""
    _need_browser()
    root = tmp_path_factory.mktemp("dashboard")
    examples = Path(__file__).resolve().parents[2] / "examples"
    running = start_up(
        root / "data", free_port(), root / "up.log", "--deploy", str(examples / "stack.yml")
    )
    try:
        source = root / "src"
        (source / "echo").mkdir(parents=True)
        (source / "echo" / "handler.py").write_text(ECHO)
        (source / "stack.yml").write_text(STACK)
        built = subprocess.run(
            [FAASD_PY, "build", "-f", "stack.yml"],
            cwd=source,
            env={**clean_environment(), "FAASD_DATA_DIR": str(running.data_dir)},
            capture_output=True,
            timeout=READY_TIMEOUT,
            check=False,
        )
        assert built.returncode == 0, built.stderr.decode(errors="replace")
        _until_hello_is_ready(running)
        yield running
    finally:
        running.stop()


def _until_hello_is_ready(gateway: Gateway) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        functions = {f["name"]: f for f in gateway.get("/system/functions")}
        if functions.get("hello", {}).get("availableReplicas", 0) >= 1:
            return
        time.sleep(0.2)
    pytest.fail(f"the sample function did not become ready:\n{gateway.log.read_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _need_browser()
    with sync_playwright() as playwright:
        launched = _launch(playwright)
        yield launched
        launched.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@dataclass
class Session:
    page: Page
    gateway: Gateway
    requests: list[str]

    def open(self) -> None:
        self.page.goto(self.gateway.url + "/ui/")

    def log_in(self) -> None:
        self.open()
        self.page.get_by_label("Password").fill(self.gateway.password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_role("status")).to_have_text("● live")

    @property
    def screenshots(self) -> bool:
        return bool(os.environ.get("FAASD_SCREENSHOTS"))

    def traffic(self, function: str, seconds: float) -> None:
        """For screenshots only: calls at a rate that rises and falls, so that the charts
        have a shape to show."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            rate = 20 + 18 * math.sin(now / 3)
            body = json.dumps({"at": round(now, 3)}).encode()
            request = urllib.request.Request(f"{self.gateway.url}/function/{function}", body)
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            time.sleep(1 / rate)

    def screenshot(self, name: str, *, full_page: bool = False) -> None:
        directory = os.environ.get("FAASD_SCREENSHOTS")
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=full_page)


def page_session(browser: Browser, gateway: Gateway, width: int = 1280) -> Iterator[Session]:
    """A page of its own; afterwards, every request it made went to the gateway."""
    expect.set_options(timeout=EXPECT_TIMEOUT)
    context = browser.new_context(viewport={"width": width, "height": 860})
    context.set_default_timeout(EXPECT_TIMEOUT)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        yield Session(page, gateway, requests)
    finally:
        context.close()
    elsewhere = [
        url
        for url in requests
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != gateway.host
    ]
    assert requests and elsewhere == []


@pytest.fixture
def session(browser: Browser, gateway: Gateway) -> Iterator[Session]:
    yield from page_session(browser, gateway)
