"""/docs (Swagger UI) and /redoc (ReDoc) render the API in a real browser, Debian's Chromium
driven by Playwright, with every request that leaves 127.0.0.1 refused: the pages and their
scripts come from the package, no CDN."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.console.test_console_browser import browser  # noqa: F401  (the fixture: Chromium, headless)


@pytest.fixture
def offline_page(request, backend, browser):  # noqa: F811
    if backend != "sqlite":
        pytest.skip("the pages do not depend on the database")
    base = request.getfixturevalue("module_gateway").base_url
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    refused: list[str] = []

    def local_only(route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", local_only)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, base, refused, errors
    page.close()


@pytest.mark.long(20)
def test_swagger_ui_renders_every_api_offline(offline_page):
    page, base, refused, errors = offline_page
    page.goto(base + "/docs")
    page.wait_for_selector("text=Create images", timeout=30_000)
    for tag in ("OpenAI Images", "Predictions", "Replicate", "Ideogram", "Midjourney", "Files", "Admin"):
        assert page.locator(f"h3#operations-tag-{tag.replace(' ', '_')}").count() == 1, tag
    assert "Unable to render" not in page.content()
    # an operation opens with its error answers, in its API's shape
    page.locator("#operations-Ideogram-v3_edit_ideogram_v1_ideogram_v3_edit_post .opblock-summary").click()
    page.wait_for_selector("#operations-Ideogram-v3_edit_ideogram_v1_ideogram_v3_edit_post tr.response[data-code='422']")
    assert not refused and not errors, (refused, errors)


@pytest.mark.long(15)
def test_redoc_renders_every_api_offline(offline_page):
    page, base, refused, errors = offline_page
    page.goto(base + "/redoc")
    page.wait_for_selector("h2:text-is('Midjourney')", timeout=30_000)
    for heading in ("OpenAI Images", "Predictions", "Replicate", "Ideogram", "Files", "Admin", "Create images"):
        assert page.locator(f"h2:text-is('{heading}')").count() == 1, heading
    assert not refused and not errors, (refused, errors)
