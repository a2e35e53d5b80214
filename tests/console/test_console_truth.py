"""The console tells the truth and guides: its totals are /admin/usage's (tasks included), money
reads as money, the gallery holds every kept image with its prompt, a channel's Test picks a
model it can make, the playground follows tasks and offers Midjourney's buttons."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import time
from decimal import Decimal

import httpx
import pytest
from PIL import Image

from pixelgate.console.render import money, price_terms
from tests.conftest import ADMIN_KEY
from tests.console.test_console import csrf, sign_in


def _wait_task(api: httpx.Client, task_id: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while (task := api.get(f"/tasks/{task_id}").json())["status"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    return task


def _stats(html: str) -> list[str]:
    return re.findall(r'<div class="stat"><b>(.*?)</b>', html)


def _table(html: str, title: str) -> dict[str, list[str]]:
    section = html.split(f"<h2>{title}</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", section)
    return {r[0]: list(r[1:]) for r in rows}


def test_money_shows_the_currencys_minor_units_and_every_significant_digit():
    assert money(Decimal("0E-8"), "USD") == "$0.00"
    assert money(Decimal("5.00000000"), "USD") == "$5.00"
    assert money(Decimal("0.0025"), "USD") == "$0.0025"
    assert money(0.8216839999999999, "USD") == "$0.821684"  # a float's noise never shows
    assert money(Decimal("1234567.5"), "EUR") == "€1,234,567.50"
    assert money(Decimal("-3"), "USD") == "-$3.00"
    assert money(Decimal("150"), "JPY") == "¥150"
    assert money(Decimal("1.5"), "KWD") == "1.500 KWD"
    assert money(Decimal("1E+3"), "CHF") == "1,000.00 CHF"
    assert money(None, "USD") == "—"
    assert price_terms("*", {"size": "1024x1024", "quality": "high"}) == "per image, 1024x1024, quality high"
    assert price_terms("edit", {}, tokens=object()) == "per 1M tokens, edit only"


def test_the_overview_totals_are_admin_usage_with_tasks_and_read_as_money(make_gateway):
    gateway = make_gateway()
    gateway.set_price("sandbox-image", "0.0025")
    gateway.set_price("sandbox-async", "0.04")
    key = gateway.create_key()
    with gateway.http(key) as api:
        for _ in range(3):
            assert api.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "a fox",
                                                            "size": "32x32", "response_format": "url"}).status_code == 200
        task = api.post("/models/sandbox/sandbox-async/predictions",
                        json={"input": {"prompt": "a slow fox", "size": "32x32", "n": 2}}).json()
        assert _wait_task(api, task["id"])["status"] == "succeeded"
    usage = {r["model"]: r for r in gateway.http().get("/admin/usage", params={"days": 1}).json()["data"]}
    assert usage["sandbox-async"]["images"] == 2 and Decimal(usage["sandbox-async"]["cost"]) == Decimal("0.08")
    page = sign_in(gateway).get("/console/overview").text
    requests, images, spend, _ = _stats(page)
    assert int(requests) == sum(r["requests"] for r in usage.values())
    assert int(images) == 5 and spend == "$0.0875"
    models = _table(page, "By model")
    assert models["sandbox-async"][:3] == ["1", "2", "$0.08"]  # the task's images and spend
    assert models["sandbox-image"][:3] == ["3", "3", "$0.0075"]
    assert "0E-8" not in page and not re.search(r"\d\.\d{9,}", page)
    # a key holder sees only its own figures, and its account's balance
    account_id, payer = gateway.paying_key("10")
    holder = sign_in(gateway, payer)
    mine = holder.get("/console/overview").text
    assert _stats(mine)[:3] == ["0", "0", "$0.00"]
    assert re.search(r'class="balance">\$10\.00<', mine)


def test_the_gallery_holds_every_kept_image_with_its_prompt_past_many_polls(make_gateway):
    gateway = make_gateway()
    key = gateway.create_key()
    with gateway.http(key) as api:
        for i in range(3):
            assert api.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": f"sync fox {i}",
                                                            "size": "32x32", "response_format": "url"}).status_code == 200
        # base64 answers keep no image: not in the gallery, and not counted against a page
        assert api.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "kept nowhere",
                                                        "size": "32x32", "response_format": "b64_json"}).status_code == 200
        task = api.post("/models/sandbox/sandbox-async/predictions",
                        json={"input": {"prompt": "task fox", "size": "32x32"}}).json()
        _wait_task(api, task["id"])
        for _ in range(70):  # polls are logged too, newer than every image
            api.get(f"/tasks/{task['id']}")
    for client in (sign_in(gateway), sign_in(gateway, key)):
        page = client.get("/console/gallery").text
        prompts = re.findall(r'class="prompt">(.*?)</span>', page)
        assert prompts == ["task fox", "sync fox 2", "sync fox 1", "sync fox 0"], prompts
    assert 'id="older"' not in page


def test_the_gallery_pages_through_older_images(make_gateway):
    gateway = make_gateway()
    with gateway.http() as api:
        for i in range(62):
            assert api.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": f"fox {i}",
                                                            "size": "16x16", "response_format": "url"}).status_code == 200
    client = sign_in(gateway)
    first = client.get("/console/gallery").text
    assert first.count('class="thumb"') == 60 and 'id="older"' in first
    second = client.get("/console/gallery?page=1").text
    assert re.findall(r'class="prompt">(.*?)</span>', second) == ["fox 1", "fox 0"]


def test_a_channels_test_picks_a_current_model_that_generates(make_gateway):
    gateway = make_gateway(simulate_vendors=True, unpriced="refuse", retired_models={})  # a fresh install
    client = sign_in(gateway)
    page = client.get("/console/channels").text
    offered = dict(re.findall(r'id="channel-([\w.-]+)".*?aria-label="model to test">(.*?)</select>', page, re.S))
    openai = re.findall(r"<option>(.*?)</option>", offered["simulated-openai"])
    assert "chatgpt-image-latest" in openai and openai[0] != "chatgpt-image-latest"  # retired: not first
    assert re.findall(r"<option>(.*?)</option>", offered["simulated-ark"])[0] != "doubao-seededit-3-0-i2i-250628"
    for name in ("sandbox", "simulated-openai", "simulated-ark", "simulated-qianfan"):
        resp = client.post(f"/console/channels/{name}/test", data={"csrf": csrf(client)})
        assert resp.status_code == 200 and 'class="ok"' in resp.text, resp.text
    chosen = client.post("/console/channels/simulated-openai/test", data={"csrf": csrf(client), "model": openai[1]})
    assert f"({openai[1]})" in chosen.text and 'class="ok"' in chosen.text
    refused = client.post("/console/channels/sandbox/test", data={"csrf": csrf(client), "model": "dall-e-3"})
    assert refused.status_code == 400 and "<code>model</code>" in refused.text


def _playground(client: httpx.Client, **fields) -> httpx.Response:
    files = fields.pop("files", None)
    return client.post("/console/playground", data={"csrf": csrf(client), **fields}, files=files,
                       headers={"hx-request": "true"})


def test_the_playground_follows_a_task_and_takes_a_seed_and_an_image_to_edit(gateway):
    client = sign_in(gateway)
    form = client.get("/console/playground?model=sandbox-async").text
    assert 'name="seed"' in form and 'type="file" name="image"' in form
    resp = _playground(client, model="sandbox-async", prompt="a slow fox", size="32x32", seed="7")
    assert resp.status_code == 200, resp.text
    task_id = re.search(r'hx-get="/console/playground/tasks/(task_\w+)"', resp.text).group(1)
    deadline = time.monotonic() + 30
    while 'data-status="succeeded"' not in (view := client.get(f"/console/playground/tasks/{task_id}").text):
        assert time.monotonic() < deadline and 'data-status="failed"' not in view, view
        time.sleep(0.2)
    assert "hx-trigger" not in view and view.count('class="result"') == 1
    with gateway.http() as admin:
        assert admin.get(f"/admin/tasks/{task_id}").json()["status"] == "succeeded"
    # an uploaded image makes it an edit
    png = io.BytesIO()
    Image.new("RGBA", (32, 32), (200, 30, 30, 255)).save(png, "PNG")
    edit = _playground(client, model="sandbox-image", prompt="make it blue", size="32x32",
                       files={"image": ("red.png", png.getvalue(), "image/png")})
    assert edit.status_code == 200 and 'class="result"' in edit.text, edit.text
    assert "/v1/images/edits" in edit.text and "-F image=@image.png" in edit.text and "client.images.edit(" in edit.text
    request_id = re.search(r'<code>(req_\w+)</code>', edit.text).group(1)
    assert gateway.log_row(request_id)["operation"] == "edit"


@pytest.mark.long(20)
def test_the_playground_offers_midjourneys_buttons_on_a_finished_grid(make_gateway, backend):
    if backend != "sqlite":
        pytest.skip("the simulated Midjourney job takes seconds; the services run on both in tests/surfaces")
    gateway = make_gateway(simulate_vendors=True, retired_models={})
    client = sign_in(gateway)
    form = client.get("/console/playground?model=dall-e-3").text
    assert 'id="pg-stream"' not in form  # dall-e-3 cannot stream: no partial images are asked of it
    refused = client.post("/console/playground/stream", data={"csrf": csrf(client), "model": "dall-e-3",
                                                              "prompt": "a fox"})
    assert refused.status_code == 400 and "<code>stream</code>" in refused.text
    resp = _playground(client, model="midjourney", prompt="a castle in the clouds")
    task_id = re.search(r'/console/playground/tasks/(task_\w+)', resp.text).group(1)

    def finished(task: str) -> str:
        deadline = time.monotonic() + 60
        while 'data-status="succeeded"' not in (view := client.get(f"/console/playground/tasks/{task}").text):
            assert time.monotonic() < deadline and 'data-status="failed"' not in view, view
            time.sleep(0.3)
        return view

    grid = finished(task_id)
    labels = re.findall(r'hx-post="/console/playground/tasks/[\w]+/action"[^>]*>(.*?)</button>', grid)
    assert {"U1", "U4", "V1", "V4"} <= set(labels)
    custom = re.search(r'hx-vals=\'\{"custom_id": "(MJ::JOB::upsample::1::[^"]+)"\}\'', grid).group(1)
    upscale = client.post(f"/console/playground/tasks/{task_id}/action", data={"csrf": csrf(client),
                                                                               "custom_id": custom})
    assert upscale.status_code == 200, upscale.text
    child = re.search(r'id="pg-task" data-status="\w+"[^>]*/console/playground/tasks/(task_\w+)', upscale.text)
    child_id = child.group(1) if child else re.search(r"<code>(task_\w+)</code>", upscale.text).group(1)
    assert child_id != task_id
    finished(child_id)
    with gateway.http() as admin:
        assert admin.get(f"/admin/tasks/{child_id}").json()["status"] == "succeeded"
    # as through /mj/submit/action: a button the grid does not have is refused, naming it
    bad = client.post(f"/console/playground/tasks/{task_id}/action", data={"csrf": csrf(client), "custom_id": "x"},
                      headers={"hx-request": "true"})
    assert bad.status_code == 400 and "customId" in bad.text


def test_the_prices_page_searches_and_says_what_a_price_is_for(gateway):
    gateway.set_price("sandbox-image", "0.0025", dimensions={"size": "1024x1024", "quality": "high"})
    page = sign_in(gateway).get("/console/prices").text
    assert 'id="price-search"' in page
    assert "per image, 1024x1024, quality high" in page and "$0.0025" in page
    assert "{'size'" not in page


def test_disabling_your_own_key_asks_first(gateway):
    other = gateway.create_key(is_admin=True)
    client = sign_in(gateway, other)
    page = client.get("/console/keys").text
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<td>(\d+)</td>.*?</tr>', page, re.S)}
    own = [row for row in rows.values() if "hx-confirm" in row]
    assert len(own) == 1 and other[:8] in own[0]


def test_the_playgrounds_chat_completion_call_runs_as_shown(gateway, tmp_path):
    """The playground shows the same call as a chat completion; the shell runs it as printed (an
    edit's image read from image.png) and gets an image back."""
    if shutil.which("curl") is None or shutil.which("base64") is None:
        pytest.skip("the example is a curl command")
    client = sign_in(gateway)
    Image.new("RGB", (24, 16), (10, 200, 10)).save(tmp_path / "image.png", "PNG")
    for fields in ({"prompt": "it's a fox", "size": "32x32"}, {"prompt": "make it green"}):
        files = {"image": ("image.png", (tmp_path / "image.png").read_bytes(), "image/png")} if "size" not in fields else None
        shown = _playground(client, model="sandbox-image", files=files, **fields)
        command = html.unescape(re.search(r"<h3>As a chat completion</h3><pre>(.*?)</pre>", shown.text, re.S).group(1))
        assert command.startswith(f"curl {gateway.base_url}/v1/chat/completions")
        ran = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PG_KEY": ADMIN_KEY})
        answer = json.loads(ran.stdout)
        url = answer["choices"][0]["message"]["images"][0]["image_url"]["url"]
        made = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert made.size == ((32, 32) if "size" in fields else (24, 16)), answer  # the edit keeps the input's size
