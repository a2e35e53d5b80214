"""ComfyUI: a self-hosted server running the operator's own workflows. Asynchronous.

Upstream (ComfyUI's server.py; no key of its own: keep it on a private network):
  POST /upload/image  multipart image=<file>, overwrite=true -> {"name", "subfolder", "type": "input"}
  POST /prompt  {"prompt": <API-format workflow>, "client_id", "prompt_id"}
       -> {"prompt_id", "number", "node_errors": {}}
       | 400 {"error": {"type", "message", "details", "extra_info"},
              "node_errors": {node_id: {"errors": [{"type", "message", "details"}], "class_type"}}}
  GET  /history/{prompt_id}  -> {} until done, then {prompt_id: {"outputs": {node_id: {"images":
       [{"filename", "subfolder", "type"}]}}, "status": {"status_str": "success" | "error",
       "completed", "messages": [[event, {...}], ...]}}}
  GET  /view?filename=&subfolder=&type=output -> the image
  WS   /ws?clientId=  {"type": "progress", "data": {"value", "max", "prompt_id", "node"}}, ...
       (only the submitting client_id hears its prompt's progress: we send prompt_id = client_id)

Each model name of a channel runs one workflow (options `workflows`, pixelgate.providers.workflow),
its placeholders filled from the request. Input images are uploaded before the prompt
(Provider.build_uploads, made by the engine) under names fixed by their content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixelgate.domain import masks
from pixelgate.domain.images import InputImage
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.errors import InvalidRequest, UpstreamBadResponse, UpstreamError
from pixelgate.providers import stable_diffusion as sd
from pixelgate.providers.base import (Channel, FilePart, Listen, Provider, UpstreamCall, UpstreamReply,
                                      error_for_status)
from pixelgate.providers.workflow import Workflow, load

PROGRESS_LISTEN = 2.0
"""Seconds a task's poll listens on the websocket for its prompt's next step."""


class ComfyUIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflows: dict[str, dict[str, Any]] = Field(min_length=1)
    """Model name -> the path of an API-format workflow file (read and checked when the
    configuration is loaded, and kept with the channel), or the workflow itself."""

    @field_validator("workflows", mode="before")
    @classmethod
    def _load(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {name: load(source, f"workflows.{name}").graph for name, source in value.items()}


class NodeFailed(UpstreamError):
    """The workflow does not run on this server (a checkpoint it lacks, a node it does not have):
    the operator's to fix, not the client's; another server may have what it needs."""

    code = "upstream_workflow_failed"
    retry_elsewhere = True


class ComfyUI(Provider):
    name = "comfyui"
    needs_base_url = True
    key_required = False
    # one image a prompt (the engine sends n prompts, each with its own seed); submit, then poll
    generic = dataclasses.replace(sd.CAPABILITIES, n_per_call=1, asynchronous=True)
    channel_options = ComfyUIOptions
    timeout = 300.0

    def build_uploads(self, req: ImageRequest, model: str, channel: Channel) -> list[UpstreamCall]:
        return [self._upload(name, data, mime, channel) for name, data, mime in _inputs(req)]

    def _upload(self, name: str, data: bytes, mime: str, channel: Channel) -> UpstreamCall:
        form = [("image", FilePart(data, name, mime)), ("overwrite", "true")]
        return UpstreamCall("POST", f"{self.base_url(channel)}/upload/image", form=form)

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        workflow = _workflow(channel, req.model, model)
        names = {kind: name for kind, name in zip(("image", "mask"), (n for n, _, _ in _inputs(req)))}
        if req.images and "image" not in workflow.marks:
            raise InvalidRequest(f"Model '{req.model}' takes no input image (its workflow has no "
                                 "{{image}}).", field="image", code="unsupported_parameter")
        if req.mask is not None and "mask" not in workflow.marks:
            raise InvalidRequest(f"Model '{req.model}' takes no mask (its workflow has no {{{{mask}}}}).",
                                 field="mask", code="unsupported_parameter")
        if not req.images and "image" in workflow.marks:
            raise InvalidRequest(f"Model '{req.model}' edits an image: 'image' is required.", field="image",
                                 code="missing_required_parameter")
        if req.images and req.mask is None and "mask" in workflow.marks:
            raise InvalidRequest(f"Model '{req.model}' repaints a masked area: 'mask' is required.",
                                 field="mask", code="missing_required_parameter")
        width, height = sd.dimensions(req)
        values = {"prompt": req.prompt or "", "negative_prompt": sd.setting(req, "negative_prompt"),
                  "width": width, "height": height, "seed": sd.seed(req), "steps": sd.setting(req, "steps"),
                  "cfg": sd.setting(req, "cfg_scale"), "sampler_name": sd.setting(req, "sampler_name"),
                  "denoise": sd.setting(req, "denoising_strength"), **names}
        prompt_id = str(uuid.uuid4())
        return UpstreamCall("POST", f"{self.base_url(channel)}/prompt",
                            json={"prompt": workflow.fill(values), "client_id": prompt_id, "prompt_id": prompt_id})

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Submitted:
        body = reply.json()
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if not isinstance(prompt_id, str) or not prompt_id:
            raise UpstreamBadResponse("ComfyUI accepted the prompt without a prompt_id.")
        return Submitted(job_id=prompt_id)

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        return UpstreamCall("GET", f"{self.base_url(channel)}/history/{quote(job.job_id)}")

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        body = reply.json()
        entry = next(iter(body.values()), None) if isinstance(body, dict) and body else None
        if entry is None:
            return Pending()  # queued or running: the history has it only once done
        status = entry.get("status") or {}
        messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2]
        failed = next((data for event, data in messages if event == "execution_error"), None)
        if status.get("status_str") == "error" or failed is not None:
            raise _execution_error(failed or {})
        if any(event == "execution_interrupted" for event, _ in messages):
            raise UpstreamError("The ComfyUI prompt was interrupted on the server.", code="upstream_job_failed")
        images = [item for outputs in (entry.get("outputs") or {}).values() if isinstance(outputs, dict)
                  for item in outputs.get("images") or [] if isinstance(item, dict) and item.get("filename")]
        saved = [item for item in images if item.get("type") == "output"] or images
        if not saved:
            raise UpstreamBadResponse("The ComfyUI workflow finished without an image (has it a SaveImage node?).")
        base = reply.url.rsplit("/history/", 1)[0]  # the files are the server's that answered
        return Finished([UpstreamImage(url=f"{base}/view?" + urlencode(
            {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
             "type": item.get("type", "output")})) for item in saved])

    def build_progress(self, job: Submitted, channel: Channel) -> UpstreamCall:
        def enough(message: Any) -> bool:
            data = message.get("data") if isinstance(message, dict) else None
            return isinstance(data, dict) and data.get("prompt_id") == job.job_id and (
                message.get("type") == "progress" or (message.get("type") == "executing" and data.get("node") is None))

        return UpstreamCall("GET", f"{self.base_url(channel)}/ws?clientId={quote(job.job_id)}",
                            listen=Listen(PROGRESS_LISTEN, enough))

    def parse_progress(self, job: Submitted, reply: UpstreamReply) -> float | None:
        steps = [m["data"] for m in reply.payload or [] if isinstance(m, dict) and m.get("type") == "progress"
                 and isinstance(m.get("data"), dict) and m["data"].get("prompt_id") == job.job_id]
        if not steps or not steps[-1].get("max"):
            return None
        return round(min(0.99, steps[-1]["value"] / steps[-1]["max"]), 3)  # 1 only once delivered

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        if reply.status == 400 and isinstance(body, dict) and ("node_errors" in body or "error" in body):
            return _refusal(body)
        return error_for_status(reply.status, f"ComfyUI answered HTTP {reply.status}")


def _workflow(channel: Channel, model: str, upstream: str) -> Workflow:
    graphs = channel.options.get("workflows") or {}
    graph = graphs.get(model) or graphs.get(upstream)
    if graph is None:
        raise NodeFailed(f"Channel {channel.name!r} has no workflow for model '{model}' (options.workflows).",
                         code="upstream_misconfigured")
    return Workflow(graph)


def _inputs(req: ImageRequest) -> list[tuple[str, bytes, str]]:
    """(upload name, bytes, mime) of the image and the mask, named by their content so that
    `build` knows the names; the mask as a PNG whose transparent pixels mark what to repaint
    (what LoadImage's MASK output, or LoadImageMask on `alpha`, reads as 1)."""
    found = []
    if req.images:
        image: InputImage = req.images[0]
        found.append((_name(image.data, image.format), image.data, image.mime))
    if req.mask is not None:
        data = masks.convert(req.mask.data, req.mask_convention, "alpha")
        found.append((_name(data, "png", "mask"), data, "image/png"))
    return found


def _name(data: bytes, fmt: str, kind: str = "image") -> str:
    return f"pixelgate-{kind}-{hashlib.sha256(data).hexdigest()[:32]}.{'jpg' if fmt == 'jpeg' else fmt}"


def _refusal(body: dict) -> UpstreamError:
    """A prompt ComfyUI would not queue, naming the nodes at fault."""
    nodes = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
    said = []
    for node_id, found in nodes.items():
        found = found if isinstance(found, dict) else {}
        errors = [e for e in found.get("errors") or [] if isinstance(e, dict)]
        what = "; ".join(f"{e.get('message')}: {e.get('details')}" if e.get("details") else str(e.get("message"))
                         for e in errors) or "invalid"
        said.append(f"node {node_id} ({found.get('class_type', '?')}): {what}")
    error = body.get("error") if isinstance(body.get("error"), dict) else {"message": body.get("error")}
    if not said:
        detail = f" ({error.get('details')})" if error.get("details") else ""
        said.append(f"{error.get('message') or 'invalid prompt'}{detail}")
    return NodeFailed("ComfyUI refused the workflow: " + "; ".join(said))


def _execution_error(data: dict) -> UpstreamError:
    node = f"node {data.get('node_id', '?')} ({data.get('node_type', '?')})"
    why = ": ".join(str(p) for p in (data.get("exception_type"), data.get("exception_message")) if p)
    # the prompt was accepted and ran: final, not a hiccup to poll again nor to take elsewhere
    return UpstreamError(f"ComfyUI failed running {node}: {why or 'execution error'}", code="upstream_job_failed")
