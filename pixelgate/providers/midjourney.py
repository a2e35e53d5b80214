"""Midjourney through an upstream midjourney-proxy (novicezk, trueai, mj-plus, or a relay such as
new-api that forwards `/mj/*` verbatim). Asynchronous: submit a task, then poll it.

Upstream (authority: ../shared/upstreams/midjourney-proxy.md), header `mj-api-secret`:
  POST /mj/submit/imagine  {"prompt": "a fox --ar 16:9", "base64Array": ["data:image/png;base64,..."],
                            "botType"?, "state"?}
    -> HTTP 200 {"code": 1, "description": "提交成功", "result": "<task id>", "properties": {...}}
       business outcomes all come back as HTTP 200 with a code: 1 submitted, 21 exists, 22 queued
       (all three carry the task id), 23 queue full, 24 banned prompt, 4 validation, 3, 9
  GET  /mj/task/{id}/fetch
    -> {"id", "action": "IMAGINE", "status": NOT_START | SUBMITTED | IN_PROGRESS | SUCCESS | FAILURE
        | CANCEL | MODAL, "progress": "45%", "imageUrl", "failReason", "buttons",
        "properties": {"finalPrompt"}}; an unknown id answers an empty body, `null` or 204
  POST /mj/submit/{blend,describe}  {"base64Array": [2-5 data URLs], "dimensions"} | {"base64"}
  POST /mj/submit/change  {"taskId", "action": UPSCALE|VARIATION|REROLL, "index"}
  POST /mj/submit/action  {"taskId", "customId"}   (a button of the task; trueai / mj-plus)
  POST /mj/submit/modal   {"taskId", "prompt"?, "maskBase64"?}  continues a task in status MODAL
  GET  /mj/task/{id}/image-seed  -> {"code": 1, "description": "成功", "result": "<seed>"} (trueai / mj-plus)
  POST /mj/task/{id}/cancel      -> HTTP 200, empty body (trueai; novicezk has no such endpoint: 404)
  HTTP 401 with an empty body: the channel's secret is wrong.
Speed modes are path prefixes (trueai, new-api): `/mj-turbo/mj/...`, `/mj-relax/mj/...`; the plain
`/mj/...` is the proxy's default, fast.

One imagine makes ONE picture: a 2x2 grid of four candidates, delivered as one image (on the
OpenAI API n is therefore 1; the predictions API makes n tasks). Splitting a grid (the U1..U4
buttons) belongs to the /mj surface.
The size becomes an `--ar W:H` flag appended to the prompt, unless the prompt has its own;
the grid's pixels are Midjourney's choice, so tiers (1K/2K/4K) and auto add nothing.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field

from pixelgate.domain import sizes
from pixelgate.domain.request import FOLLOW_UPS, ImageRequest, Operation
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered,
                              UpstreamError, UpstreamRateLimited, UpstreamRejected,
                              UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, Provider, UpstreamCall,
                                      UpstreamReply, VendorOptions, error_for_status)
from pixelgate.providers.midjourney_flags import check_flags

BLEND, DESCRIBE, CHANGE, ACTION, MODAL = (Operation.BLEND, Operation.DESCRIBE, Operation.CHANGE,
                                          Operation.ACTION, Operation.MODAL)

MB = 1024 * 1024
MAX_SEED = 4294967295
ACCEPTED = (1, 21, 22)
"""Submit codes that carry a task id: submitted, already exists, queued."""
REFUSED = {  # submit code -> the error class for a task that was not created
    23: UpstreamRateLimited,  # queue full: nothing accepted, another channel may have room
    24: UpstreamContentFiltered,  # the proxy's banned-word list
    4: UpstreamRejected,  # validation (blank prompt, malformed data URL)
    3: UpstreamRejected,  # referenced task not found
    9: UpstreamUnavailable,  # the proxy's own failure (Discord account down, ...)
}
PENDING = ("NOT_START", "SUBMITTED", "IN_PROGRESS")
# failReason wording of Midjourney's and the proxies' moderation ("Banned prompt detected",
# "Job action restricted", "... against our community standards", novicezk's "敏感词").
MODERATION_WORDS = ("banned", "moderat", "community standards", "restricted", "sensitive", "敏感")
INVALID_WORDS = ("invalid parameter", "unrecognized parameter", "invalid value", "参数错误")
_HAS_AR = re.compile(r"(?:^|\s)--(?:ar|aspect)\s", re.I)
_HAS_SEED = re.compile(r"(?:^|\s)--seed\s", re.I)
COMMON = ("botType", "state", "mode")
SUBMITS = {  # operation -> (submit path, the vendor options it takes)
    GENERATE: ("imagine", COMMON), EDIT: ("imagine", COMMON),
    BLEND: ("blend", COMMON + ("dimensions",)), DESCRIBE: ("describe", COMMON),
    CHANGE: ("change", COMMON + ("taskId", "action", "index")),
    ACTION: ("action", COMMON + ("taskId", "customId", "enableRemix", "strong")),
    MODAL: ("modal", ("taskId", "maskBase64", "mode")),
}
_MODE_ROOT = re.compile(r"(?:/mj-(?:fast|turbo|relax))?/mj$")
FACTS = ("status", "action", "prompt", "promptEn", "description", "buttons")
"""What a fetched task tells that the /mj surface shows (kept in Task.meta)."""


class MidjourneyOptions(VendorOptions):
    """Fields every proxy's submit takes besides the prompt (BaseSubmitDTO)."""

    botType: Literal["MID_JOURNEY", "NIJI_JOURNEY"] | None = None
    """trueai / mj-plus pick the Niji bot with it; novicezk ignores it."""
    mode: Literal["FAST", "TURBO", "RELAX"] | None = None
    """The speed mode, sent as the proxy's path prefix, not in the body (see Midjourney.root);
    priced as the `speed` dimension. None: whatever the channel's base_url says."""
    state: str | None = Field(default=None, max_length=255)
    """Opaque client data the proxy echoes in the task (trueai caps it at 255)."""
    # Follow-ups (the /mj surface sets these; which operation takes which: SUBMITS)
    taskId: str | None = None
    """The upstream task a follow-up acts on (never the gateway's own task id)."""
    customId: str | None = Field(default=None, max_length=256)
    action: Literal["UPSCALE", "VARIATION", "REROLL"] | None = None
    index: int | None = Field(default=None, ge=1, le=4)
    enableRemix: bool | None = None
    strong: bool | None = None
    dimensions: Literal["PORTRAIT", "SQUARE", "LANDSCAPE"] | None = None
    maskBase64: str | None = None
    """Vary Region's mask, a PNG data URL (painted area: redrawn)."""


def aspect(size: Size) -> tuple[int, int] | None:
    """The `--ar` for a parsed size: Midjourney v5+ takes any whole-number ratio, so an exact
    size or ratio is kept (reduced); a tier or auto leaves the ratio to Midjourney (1:1)."""
    if size.width and size.height:
        w, h = size.width, size.height
    elif size.ratio:
        w, h = size.ratio
    else:
        return None
    g = math.gcd(w, h)
    return w // g, h // g


_MIDJOURNEY = Capabilities(
    operations=frozenset({GENERATE, EDIT, BLEND, DESCRIBE, CHANGE, ACTION, MODAL}),
    max_prompt=6000,  # a Discord slash-command option holds at most 6000 characters
    check_prompt=check_flags,
    # One task is one grid. The OpenAI API delivers that grid as its one image; the predictions
    # API fans n (1-10, as the first source document allows) out to n tasks, n grids.
    max_n=10, surface_max_n={"openai": 1}, n_per_call=1, asynchronous=True, fit_size=aspect,
    output_formats=("png", "jpeg", "webp"), output_compression=True,  # the engine converts
    max_images=5,  # image prompts, uploaded to Discord by the proxy (as many as /blend takes)
    image_formats=("png", "jpeg", "webp", "gif"), image_max_bytes=10 * MB,  # Discord's upload cap
    options=MidjourneyOptions)


class Midjourney(Provider):
    name = "midjourney"
    # imageUrl: the Discord CDN, or re-hosted on the proxy itself (its own origin) (upstreams/midjourney-proxy.md)
    image_hosts = ("cdn.discordapp.com", "media.discordapp.net")
    needs_base_url = True
    timeout = 60.0  # one submit or fetch; the job itself is awaited by polling
    models = {"midjourney": _MIDJOURNEY, "mj": _MIDJOURNEY}
    cancellable = True  # trueai / mj-plus cancel tasks; on novicezk the cancel fails and the task runs on

    def root(self, channel: Channel, mode: str | None = None) -> str:
        """The proxy's `/mj` base; a channel may also name a speed mode itself, e.g. `.../mj-relax/mj`.
        A request's own mode replaces it: fast is the plain `/mj` (every proxy's default, the only
        one novicezk has), turbo and relax their prefixes."""
        base = self.base_url(channel)
        base = base if base.endswith("/mj") else base + "/mj"
        if mode is None:
            return base
        return _MODE_ROOT.sub("", base) + ("" if mode == "FAST" else f"/mj-{mode.lower()}") + "/mj"

    def headers(self, channel: Channel) -> dict[str, str]:
        # A proxy without a configured secret checks nothing; an empty header would not match.
        return {"mj-api-secret": channel.api_key} if channel.api_key else {}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        if req.mask is not None:
            # imagine has no mask; Vary Region (a modal on an upscale) is a /mj surface action.
            raise InvalidRequest("Model 'midjourney' takes image prompts but no mask.", field="mask",
                                 code="unsupported_parameter")
        if req.channel is not None and req.channel != channel.name:
            # A follow-up names an upstream task id that only the proxy holding it knows.
            raise UpstreamUnavailable(f"The Midjourney task lives on channel {req.channel!r}.",
                                      code="task_on_other_channel")
        path, takes = SUBMITS[req.operation]
        if unknown := sorted(set(req.extras) - set(takes)):
            raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", field=unknown[0],
                                 code="unknown_parameter")
        body: dict[str, Any] = {}
        if req.operation in (GENERATE, EDIT):
            body["prompt"] = prompt_with_flags(req)
        elif req.prompt:
            body["prompt"] = req.prompt.strip()
        urls = [f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}" for img in req.images]
        if urls:
            body.update({"base64": urls[0]} if req.operation is DESCRIBE else {"base64Array": urls})
        body.update({k: v for k, v in req.extras.items() if v is not None and k != "mode"})
        root = self.root(channel, req.extras.get("mode"))
        return UpstreamCall("POST", f"{root}/submit/{path}", self.headers(channel), json=body)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Submitted:
        body = reply.json()
        if not isinstance(body, dict) or not isinstance(body.get("code"), int):
            raise UpstreamBadResponse("The Midjourney proxy answered without a result code.")
        if body["code"] not in ACCEPTED:
            raise refusal(body)
        task_id = body.get("result")
        if not isinstance(task_id, (str, int)) or not str(task_id).strip():
            raise UpstreamBadResponse(f"The Midjourney proxy accepted the task (code {body['code']}) "
                                      "but gave no task id.")
        props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
        answer = {"code": body["code"], "description": str(body.get("description") or "")}
        if "numberOfQueues" in props:
            answer["numberOfQueues"] = props["numberOfQueues"]
        meta: dict[str, Any] = {"submit": answer}
        if props.get("status") == "MODAL":  # trueai's "Waiting for window confirm"
            meta["status"] = "MODAL"
        # 21: a task the proxy already had (the same upscale twice); a modal continues its task
        meta["existing"] = body["code"] == 21 or req.operation is MODAL
        return Submitted(job_id=str(task_id), meta=meta)

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        return self._task_call("GET", job.job_id, "fetch", channel)

    def build_cancel(self, job: Submitted, channel: Channel) -> UpstreamCall:
        return self._task_call("POST", job.job_id, "cancel", channel)

    def build_seed(self, job_id: str, channel: Channel) -> UpstreamCall:
        return self._task_call("GET", job_id, "image-seed", channel)

    def _task_call(self, method: str, job_id: str, what: str, channel: Channel) -> UpstreamCall:
        return UpstreamCall(method, f"{self.root(channel)}/task/{quote(job_id, safe='')}/{what}", self.headers(channel))

    def parse_seed(self, reply: UpstreamReply) -> str:
        """The seed of a finished task's image, from {"code": 1, "result": "<seed>"}."""
        body = reply.json_or_none()
        if not isinstance(body, dict) or not isinstance(body.get("code"), int):
            raise UpstreamBadResponse("The Midjourney proxy answered an image-seed without a result code.")
        if body["code"] != 1:
            raise refusal(body)
        seed = body.get("result")
        if not isinstance(seed, (str, int)) or not str(seed).strip():
            raise UpstreamBadResponse("The Midjourney proxy answered an image-seed without the seed.")
        return str(seed)

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        # Proxies answer an unknown (expired, lost) task with no body, `null` or HTTP 204.
        task = reply.json() if reply.payload is not None or reply.body.strip() else None
        if task is None:
            raise task_not_found()
        if not isinstance(task, dict):
            raise UpstreamBadResponse("The Midjourney proxy answered a task fetch with no task object.")
        status, url = task.get("status"), task.get("imageUrl")
        url = url if isinstance(url, str) and url else None
        if status in PENDING or (status == "MODAL" and req.operation in FOLLOW_UPS):
            # a follow-up may wait for /submit/modal, which the /mj surface passes on
            preview = UpstreamImage(url=url) if status == "IN_PROGRESS" and url else None
            return Pending(progress=progress(task.get("progress")), meta=facts(task), preview=preview)
        if status == "SUCCESS":
            if url is None:
                raise UpstreamBadResponse("The Midjourney task succeeded without an imageUrl.")
            props = task.get("properties") if isinstance(task.get("properties"), dict) else {}
            revised = props.get("finalPrompt") or task.get("promptEn") or None
            # facts ride on the image: Finished.meta is echoed by the OpenAI API, buttons are not
            return Finished([UpstreamImage(url=url, revised_prompt=revised, details=facts(task))], {})
        if status == "FAILURE":
            raise task_failure(str(task.get("failReason") or "no reason given"))
        if status == "CANCEL":
            raise UpstreamError("The Midjourney task was cancelled upstream.", code="upstream_job_failed")
        if status == "MODAL":
            raise UpstreamError("The Midjourney task waits for a confirmation (remix, custom zoom or "
                                "vary region) that this API cannot give.", code="upstream_job_failed")
        raise UpstreamBadResponse(f"The Midjourney task has an unknown status {status!r}.")

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        try:
            body = reply.json() if reply.body.strip() or reply.payload is not None else None
        except UpstreamError:
            body = None
        mj_body = isinstance(body, dict) and isinstance(body.get("code"), int) and "description" in body
        if reply.status == 404 and (body is None or (mj_body and body["code"] == 3)):
            # A lost task (trueai's code 3, or nothing at all); a wrong base_url shows a page.
            return task_not_found()
        if reply.status == 404:
            return UpstreamUnavailable("The Midjourney proxy has no such endpoint: it may not offer it "
                                       "(novicezk has no speed-mode prefixes, image-seed or cancel), or the "
                                       "channel's base_url is wrong (it should end at the host, or at `/mj`).")
        if mj_body and 400 <= reply.status < 500 and reply.status not in (401, 403, 429):
            return refusal(body)  # trueai / new-api send their business codes with a 4xx too
        return error_for_status(reply.status, f"The Midjourney proxy answered HTTP {reply.status}.")


def prompt_with_flags(req: ImageRequest) -> str:
    """The client's prompt, plus `--ar` from `size` and `--seed` from `seed` unless the prompt
    already sets them (Midjourney reads parameters only at the end of the prompt)."""
    prompt = (req.prompt or "").strip()
    ratio = aspect(sizes.parse(req.size)) if req.size else None
    if ratio and not _HAS_AR.search(prompt):
        prompt += f" --ar {ratio[0]}:{ratio[1]}"
    if req.seed is not None and not _HAS_SEED.search(prompt):
        if not 0 <= req.seed <= MAX_SEED:
            raise InvalidRequest(f"Invalid value: {req.seed}. 'seed' for Midjourney must be between 0 "
                                 f"and {MAX_SEED}.", field="seed")
        prompt += f" --seed {req.seed}"
    return prompt


def facts(task: dict) -> dict[str, Any]:
    out = {k: task[k] for k in FACTS if task.get(k) not in (None, "", [])}
    props = task.get("properties") if isinstance(task.get("properties"), dict) else {}
    if props.get("finalPrompt"):
        out["finalPrompt"] = props["finalPrompt"]
    return out


def progress(value: Any) -> float | None:
    """"45%" -> 0.45; the proxies send "" before the first update and on failure."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value) if isinstance(value, str) else None
    return min(1.0, float(m.group(1)) / 100) if m else None


def refusal(body: dict) -> UpstreamError:
    """The error for a submit the proxy did not accept."""
    code, text = body["code"], str(body.get("description") or "")
    props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
    cls = REFUSED.get(code)
    if cls is UpstreamContentFiltered:
        word = props.get("bannedWord")
        return cls(f"The Midjourney proxy refused the prompt ({text}"
                   + (f": '{word}'" if word else "") + ").", field="prompt")
    if cls is UpstreamRejected:
        return cls(f"The Midjourney proxy refused the request (code {code}): {text}")
    if cls is not None:
        return cls(f"The Midjourney proxy could not take the task (code {code}): {text}")
    return UpstreamBadResponse(f"The Midjourney proxy answered an unknown code {code}: {text}")


def task_failure(reason: str) -> UpstreamError:
    low = reason.lower()
    if any(word in low for word in MODERATION_WORDS):
        return UpstreamContentFiltered(f"Midjourney refused the prompt: {reason}", field="prompt")
    if any(word in low for word in INVALID_WORDS):
        # Midjourney checks the prompt's flags only after the proxy accepted the task.
        return UpstreamRejected(f"Midjourney refused the prompt's parameters: {reason}", field="prompt")
    return UpstreamError(f"The Midjourney task failed: {reason}", code="upstream_job_failed")


def task_not_found() -> UpstreamError:
    return UpstreamError("The Midjourney proxy no longer knows the task (expired or lost).",
                         code="upstream_job_failed")
