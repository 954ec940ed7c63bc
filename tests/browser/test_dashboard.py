"""The dashboard as a user works it, in a real Chromium against a real `faasd-py up`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import Gateway, Session, page_session, start_up
from tests.e2e.conftest import free_port


def test_log_in_see_the_sample_function_and_log_out(session: Session) -> None:
    page = session.page
    session.open()
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Wrong user or password.")).to_be_visible()

    session.log_in()
    hello = page.get_by_role("row").filter(has=page.get_by_role("link", name="hello", exact=True))
    expect(hello).to_contain_text("hello:latest")
    expect(hello).to_contain_text("1/1")  # ready instances
    expect(hello).to_contain_text("loaded")  # the app's keep-alive state
    session.screenshot("functions")
    # The credentials are in the page's memory only: not in its URL, storage or cookies.
    assert session.gateway.password not in page.url
    stored = page.evaluate(
        "() => [localStorage.length, sessionStorage.length, document.cookie.length]"
    )
    assert stored == [0, 0, 0]

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.get_by_role("link", name="hello", exact=True)).to_have_count(0)


def test_the_table_sorts_and_filters(session: Session) -> None:
    page = session.page
    session.log_in()
    links = page.locator("tbody tr:not([hidden]) td:first-child a")
    expect(page.get_by_role("link", name="trace-func")).to_be_visible()
    expect(links).to_have_text(["hello", "trace-func"])
    # Sorted by name at first: a click on its header sorts the other way.
    page.get_by_role("button", name=re.compile(r"^Name\b(?!space)")).click()
    expect(links).to_have_text(["trace-func", "hello"])
    page.get_by_label("Filter functions").fill("trace")
    expect(links).to_have_text(["trace-func"])


def test_deploy_invoke_and_watch_a_function(session: Session) -> None:
    page = session.page
    session.log_in()
    page.get_by_role("link", name="Deploy a function").click()
    page.get_by_label("Function name").fill("echo-ui")
    page.get_by_label("Package (image)").fill("echo:latest")
    page.get_by_label("Environment").fill("greeting=hi")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("heading", name="echo-ui")).to_be_visible()

    page.get_by_label("Request body").fill('{"greeting": "hi"}')
    page.get_by_role("button", name="Invoke").click()
    expect(page.get_by_test_id("invoke-status")).to_have_text(re.compile(r"^200"))
    expect(page.get_by_role("img", name=re.compile("^Server-Timing:.*execution"))).to_be_visible()
    # The JSON answer, pretty-printed.
    expect(page.get_by_label("Response body")).to_contain_text('"greeting": "hi"')

    invocations = page.locator('dd[data-figure="Invocations"]')
    expect(invocations).to_have_text("1")
    rate = page.get_by_role("figure", name="Requests per second")
    expect(rate).to_contain_text(re.compile(r"peak (0\.\d*[1-9]|[1-9])"))  # the chart rose
    logs = page.get_by_role("list", name="Log lines")
    expect(logs).to_contain_text('echo got {"greeting": "hi"}')

    for n in range(3):
        page.get_by_label("Request body").fill(f"line-{n}")
        page.get_by_role("button", name="Invoke").click()
        expect(page.get_by_label("Response body")).to_contain_text(f"line-{n}")
    expect(invocations).to_have_text("4")
    expect(logs).to_contain_text("echo got line-2")  # a new line, followed live
    # Filtered by stream: the function printed to stdout only.
    page.get_by_label("Stream").select_option("stderr")
    expect(logs.get_by_text("echo got line-2")).to_be_hidden()
    page.get_by_label("Stream").select_option("stdout")
    expect(logs.get_by_text("echo got line-2")).to_be_visible()
    # The idle times between those calls, in the app's histogram (as the worker saves it,
    # every 30 s), with the windows the keep-alive policy gives.
    histogram = page.get_by_role("figure", name="Idle times")
    expect(histogram).to_contain_text(re.compile(r"[1-9]\d* idle times in range"))
    expect(page.get_by_text(re.compile(r"App echo-ui is loaded"))).to_be_visible()
    # Its reads through the app's cache: hits, and the bytes it holds.
    hit_rate = page.get_by_role("figure", name="Cache hit rate")
    expect(hit_rate).to_contain_text(re.compile(r"peak (0\.\d*[1-9]|1)\)"))
    cached = page.get_by_role("figure", name="Bytes cached")
    expect(cached).to_contain_text(re.compile(r"peak [1-9]"))
    if session.screenshots:
        session.traffic("echo-ui", 45)
        page.get_by_role("button", name="Invoke").click()
        expect(page.get_by_label("Response body")).to_contain_text("line-2")
        session.screenshot("function", full_page=True)

    page.get_by_role("link", name="Gateway").click()
    expect(page.get_by_role("figure", name="Requests per second")).to_contain_text("peak")
    session.screenshot("gateway")

    page.get_by_role("link", name="Functions").click()
    page.get_by_role("link", name="echo-ui").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("link", name="hello", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="echo-ui")).to_have_count(0)


def test_a_bad_deploy_shows_the_gateways_400_next_to_its_field(session: Session) -> None:
    page = session.page
    session.log_in()
    page.get_by_role("link", name="Deploy", exact=True).click()
    page.get_by_label("Function name").fill("bad-memory")
    page.get_by_label("Package (image)").fill("echo:latest")
    page.get_by_label("Memory limit").fill("lots")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_label("Memory limit")).to_have_accessible_description(
        re.compile(r"^limits\.memory: expected a size")
    )
    session.screenshot("deploy-error")

    page.get_by_label("Memory limit").fill("")
    page.get_by_label("Function name").fill("Not A Name")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_label("Function name")).to_have_accessible_description(
        re.compile(r"^service: 'Not A Name' is not a valid function name")
    )
    expect(page.get_by_label("Memory limit")).to_have_accessible_description("")

    page.get_by_label("Function name").fill("no-package")
    page.get_by_label("Package (image)").fill("nowhere:latest")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_label("Package (image)")).to_have_accessible_description(
        re.compile(r"^image 'nowhere:latest' is not in the package store")
    )


def test_create_and_remove_a_secret_and_a_namespace(session: Session) -> None:
    page = session.page
    session.log_in()
    page.get_by_role("link", name="Secrets & namespaces").click()
    page.get_by_label("Secret name").fill("ui-secret")
    page.get_by_label("Secret value").fill("s3cr3t-value")
    page.get_by_role("button", name="Create secret").click()
    secrets = page.get_by_role("table", name="Secrets")
    expect(secrets.get_by_role("cell", name="ui-secret", exact=True)).to_be_visible()
    expect(page.get_by_label("Secret value")).to_have_value("")
    assert "s3cr3t-value" not in page.content()  # never shown back

    page.get_by_label("Namespace name").fill("ui-team")
    page.get_by_role("button", name="Create namespace").click()
    namespaces = page.get_by_role("table", name="Namespaces")
    expect(namespaces.get_by_role("cell", name="ui-team", exact=True)).to_be_visible()
    session.screenshot("secrets")

    page.get_by_role("button", name="Remove secret ui-secret").click()
    expect(secrets.get_by_role("cell", name="ui-secret", exact=True)).to_have_count(0)
    page.get_by_role("button", name="Remove namespace ui-team").click()
    expect(namespaces.get_by_role("cell", name="ui-team", exact=True)).to_have_count(0)


@pytest.fixture
def narrow(browser: Browser, gateway: Gateway) -> Iterator[Session]:
    yield from page_session(browser, gateway, width=390)


def test_a_narrow_window_keeps_the_page_within_it(narrow: Session) -> None:
    page = narrow.page
    narrow.log_in()
    expect(page.get_by_role("link", name="hello", exact=True)).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    narrow.screenshot("narrow")
    page.get_by_role("link", name="hello", exact=True).click()
    expect(page.get_by_role("button", name="Invoke")).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")


@pytest.fixture
def restartable(tmp_path: Path, browser: Browser) -> Iterator[tuple[Session, Gateway]]:
    """A gateway of its own (no functions: it starts fast), which the test restarts."""
    port = free_port()
    gateway = start_up(tmp_path / "data", port, tmp_path / "up.log")
    sessions = page_session(browser, gateway)
    try:
        yield next(sessions), gateway
    finally:
        gateway.stop()
        for _ in sessions:  # the page's own checks
            pass


def test_the_page_reconnects_when_the_gateway_restarts(
    restartable: tuple[Session, Gateway],
) -> None:
    session, gateway = restartable
    session.log_in()
    gateway.stop()
    expect(session.page.get_by_role("status")).to_have_text("◌ reconnecting…")
    again = start_up(gateway.data_dir, gateway.port, gateway.log)
    gateway.process = again.process
    expect(session.page.get_by_role("status")).to_have_text("● live")
