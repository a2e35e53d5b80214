"""The console in a real browser: Debian's Chromium driven by Playwright. An operator signs in,
adds a sandbox channel and tests it, creates a key, generates in the playground and sees the
image, finds it in the request log and the gallery, tops up an account and edits a price.

CONSOLE_SCREENSHOTS=1 also saves a screenshot of each page under docs/console/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    if os.environ.get("CONSOLE_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.long
def test_an_operators_first_session(browser, make_gateway, backend):
    if backend != "sqlite":
        pytest.skip("the browser walk runs once; the console's queries run on both in test_console.py")
    gateway = make_gateway(unpriced="refuse")
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    base = gateway.base_url

    page.goto(base + "/")
    assert page.url.endswith("/console/login")
    shot(page, "login")
    page.fill("input[name=key]", ADMIN_KEY)
    page.click("button:has-text('Sign in')")
    page.wait_for_url("**/console/overview")

    # a channel: add, then test with a real call
    page.goto(base + "/console/channels")
    form = page.locator("#add-channel")
    form.locator("input[name=name]").fill("studio")
    form.locator("select[name=provider]").select_option("sandbox")
    form.locator("input[name=models]").fill("sandbox-image")
    form.locator("input[name=priority]").fill("5")
    form.locator("button").click()
    page.wait_for_selector("#channel-studio")
    page.locator("#channel-studio button:has-text('Test')").click()
    page.wait_for_selector("#test-studio img")
    # the image loads after the element appears: wait for it (a loaded machine takes a while)
    page.wait_for_function("() => { const img = document.querySelector('#test-studio img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=15000)
    shot(page, "channels")

    # a price for the playground's model (unpriced models are refused)
    page.goto(base + "/console/prices")
    price = page.locator("#set-price")
    price.locator("input[name=model]").fill("sandbox-image")
    price.locator("input[name=amount]").fill("0.02")
    price.locator("button").click()
    page.wait_for_selector("td:has-text('console / admin API')")
    assert "0.02" in page.locator("tr:has-text('console / admin API')").first.inner_text()
    shot(page, "prices")

    # an account, topped up
    page.goto(base + "/console/accounts")
    page.fill("form.grid input[name=name]", "acme")
    page.fill("form.grid input[name=balance]", "10")
    page.click("button:has-text('Create account')")
    page.wait_for_selector("tr.selected")
    page.fill("tr.selected input[name=amount]", "5")
    page.fill("tr.selected input[name=reference]", "invoice-42")
    page.click("tr.selected button:has-text('Top up')")
    page.wait_for_selector("td:has-text('invoice-42')")
    assert page.locator("tr.selected td.balance").inner_text() == "$15.00"
    shot(page, "accounts")

    # a key, shown once
    page.goto(base + "/console/keys")
    page.fill("#create-key input[name=name]", "designer")
    page.click("#create-key button")
    key = page.locator("#new-key").inner_text()
    assert key.startswith("pg-")
    shot(page, "keys")

    # the playground: the image appears, with the same call as curl and SDK code
    page.goto(base + "/console/playground")
    page.select_option("select[name=model]", "sandbox-image")
    page.wait_for_selector("#pg-form textarea[name=prompt]")
    page.fill("#pg-form textarea[name=prompt]", "a red panda on a mossy log")
    page.uncheck("#pg-stream")
    page.click("#pg-form button")
    page.wait_for_selector("#pg-result img.result")
    assert page.locator("#pg-result img.result").evaluate("img => img.complete && img.naturalWidth > 0")
    assert "curl" in page.locator("#pg-result").inner_text() and "client.images.generate" in page.content()
    shot(page, "playground")
    request_id = page.locator("#pg-result a code").inner_text()
    # a streaming model shows partial images as they arrive, then the finished one
    page.check("#pg-stream")
    page.fill("#pg-form textarea[name=prompt]", "a fox in the snow")
    page.click("#pg-form button")
    page.wait_for_selector("#pg-live.done")
    # partial images were drawn before it (counted: they may follow each other within one frame)
    assert int(page.locator("#pg-live").get_attribute("data-partials") or 0) == 2
    assert page.locator("#pg-live").evaluate("img => img.src.startsWith('http') && img.complete && img.naturalWidth > 0")

    # the request log and its detail, the gallery
    page.goto(base + "/console/requests")
    page.click(f"a:has-text('{request_id[:16]}')")
    page.wait_for_selector("img.thumb")
    assert "sandbox-image" in page.content()
    shot(page, "request")
    page.goto(base + "/console/requests")
    shot(page, "requests")
    page.goto(base + "/console/gallery")
    assert page.locator("img.thumb").count() >= 2  # the channel test's image and the playground's
    shot(page, "gallery")

    page.goto(base + "/console/overview")
    page.wait_for_selector("#chart .u-over")  # the chart drew
    shot(page, "overview")
    page.goto(base + "/console/tasks")
    shot(page, "tasks")
    page.close()


@pytest.mark.long(15)
def test_the_playground_shows_a_tasks_progress_and_the_prices_filter(browser, make_gateway, backend):
    if backend != "sqlite":
        pytest.skip("the browser walk runs once")
    gateway = make_gateway()
    gateway.set_price("sandbox-image", "0.0025", dimensions={"size": "1024x1024", "quality": "high"})
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    base = gateway.base_url
    page.goto(base + "/console/login")
    page.fill("input[name=key]", ADMIN_KEY)
    page.click("button:has-text('Sign in')")
    page.wait_for_url("**/console/overview")

    # an asynchronous model: the task's progress shows while it runs, then its image
    page.goto(base + "/console/playground")
    page.select_option("select[name=model]", "sandbox-async")
    page.wait_for_selector("#pg-form input[name=seed]")
    page.fill("#pg-form textarea[name=prompt]", "a slow fox")
    page.fill("#pg-form input[name=size]", "64x64")
    page.uncheck("#pg-stream")
    page.click("#pg-form button")
    page.wait_for_selector("#pg-task progress#pg-progress")
    assert page.locator("#pg-task").get_attribute("data-status") in ("starting", "pending", "running")
    page.wait_for_selector("#pg-task[data-status=succeeded] img.result", timeout=30_000)
    assert page.locator("#pg-task img.result").evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator("#pg-progress").get_attribute("value") == "1.0"

    # the prices page filters as one types, and says what each price is for
    page.goto(base + "/console/prices")
    rows = page.locator("#price-table tbody tr:not(#price-none)")
    total = rows.count()
    page.fill("#price-search", "sandbox-image quality high")
    visible = page.locator("#price-table tbody tr:visible")
    assert visible.count() == 1 and "per image, 1024x1024, quality high" in visible.first.inner_text()
    assert "$0.0025" in visible.first.inner_text()
    page.fill("#price-search", "no such model anywhere")
    page.wait_for_selector("#price-none:visible")
    page.fill("#price-search", "")
    assert page.locator("#price-table tbody tr:visible").count() == total

    # disabling the key one is signed in with asks first; declining keeps it
    page.goto(base + "/console/keys")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.locator("form[hx-confirm] button").click()
    page.wait_for_timeout(300)
    assert asked and "signed in with" in asked[0]
    assert page.url.endswith("/console/keys") and page.locator("form[hx-confirm]").count() == 1
    page.close()
