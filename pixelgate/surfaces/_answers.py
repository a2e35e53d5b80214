"""What each surface answers, as /openapi.json describes it: the success bodies and the error
shape of every API. Documentation only (the handlers build their dicts themselves); the
surfaces name these in their route declarations through `_openapi.answers`, and
tests/test_openapi.py checks real answers against the document. Money is a decimal string."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Money = str
"""A decimal amount as a string ("0.28"), exact."""


class Open(BaseModel):
    """A body that may carry more fields than these (a vendor's extras, newer fields)."""

    model_config = ConfigDict(extra="allow")


# ---- the error shapes ----

class OpenAIErrorDetail(Open):
    message: str
    type: str
    param: str | None = Field(description="The field at fault, when one is")
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error shape, also that of the predictions, files and admin APIs."""

    error: OpenAIErrorDetail


class InvalidField(Open):
    type: str | None
    field: str
    description: str


class ReplicateProblem(Open):
    """Replicate's problem details (application/problem+json); 422 names the field."""

    title: str
    detail: str
    status: int
    invalid_fields: list[InvalidField] | None = None


class IdeogramError(BaseModel):
    """Ideogram's one error shape: the message names the field."""

    error: str


class MidjourneyResult(Open):
    """midjourney-proxy's answer to a submit or a task action, and its error shape (HTTP 200 for
    every outcome but 401 and an unknown task's 404): code 1 submitted, 21 exists or waits for a
    modal, 22 queued, 23 queue full or rate limited, 24 banned prompt, 3 no such task, 4 invalid
    request, 9 any other failure; `result` is the task id."""

    code: int
    description: str
    result: str | None
    properties: dict[str, Any] | None = None


# ---- OpenAI Images ----

class ImageData(Open):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(Open):
    """The images made; with `stream: true`, server-sent events instead (image_generation.partial_image,
    image_generation.completed, or the image_edit ones; `error` on failure)."""

    created: int
    data: list[ImageData]


class ImageTask(Open):
    """An image request run as a task (`Prefer: respond-async`), still running: poll `polling_url`
    until it answers 200 with the images (or the error)."""

    id: str
    object: Literal["image.task"]
    status: str
    progress: float | None
    created_at: int
    polling_url: str


# ---- Chat completions and Responses ----

class ImageURL(BaseModel):
    url: str = Field(description="A data URL, or with image_response \"url\" a signed link")


class ChatImage(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessage(Open):
    role: Literal["assistant"]
    content: str = Field(description="The revised prompt, if any, and each image as markdown (chat_markdown_images)")
    images: list[ChatImage]


class ChatChoice(Open):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop"]


class ChatUsage(Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(Open):
    """OpenRouter's answer of an image model; with `stream: true`, chat.completion.chunk events
    (`data: {...}`), `: keep-alive` comments, then `data: [DONE]`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class ImageGenerationCall(Open):
    id: str
    type: Literal["image_generation_call"]
    status: Literal["completed"]
    result: str = Field(description="The image, base64")
    revised_prompt: str | None = None


class ResponseUsage(Open):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ResponseObject(Open):
    """OpenAI's Response with image_generation_call items; with `stream: true`, the Responses
    server-sent events (response.created ... response.completed)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "in_progress", "queued", "failed", "cancelled"]
    model: str
    output: list[ImageGenerationCall]
    usage: ResponseUsage | None


class ModelInfo(Open):
    id: str
    object: Literal["model"]
    owned_by: str
    created: int
    status: str
    successor: str | None
    shutdown_date: str | None


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelInfo]


class UsageReport(Open):
    """Spend and images per group (model, key, day, ...) since `since`."""

    currency: str
    group_by: str
    since: str
    data: list[dict[str, Any]]
    total_cost: Money
    total_images: int


# ---- predictions ----

class PredictionImage(Open):
    url: str | None = None
    b64_json: str | None = None


class Prediction(Open):
    """A finished synchronous prediction, or a task (GET /tasks/{id}): status pending, running,
    succeeded, failed or canceled; `progress` from 0 to 1 on tasks."""

    id: str
    model: str
    status: str
    output: list[PredictionImage] | None
    error: dict[str, Any] | None
    created_at: str | None
    completed_at: str | None
    metrics: dict[str, Any]


class TaskRef(BaseModel):
    taskId: str
    polling_url: str


class Submitted(Open):
    """An asynchronous prediction, accepted: poll `polling_url` or wait for the webhook."""

    id: str
    status: str
    output: list[TaskRef]


# ---- Replicate ----

class ReplicatePrediction(Open):
    id: str
    model: str
    version: str
    input: dict[str, Any] | None
    logs: str
    output: list[str] | None
    error: str | None
    status: Literal["starting", "processing", "succeeded", "failed", "canceled"]
    created_at: str | None
    urls: dict[str, str]
    metrics: dict[str, Any]


class WebhookSecret(BaseModel):
    key: str


# ---- Ideogram ----

class IdeogramImage(Open):
    prompt: str
    resolution: str | None
    is_image_safe: bool
    seed: int | None
    url: str | None
    style_type: str | None = None
    upscaled_resolution: str | None = None


class IdeogramImages(Open):
    created: str
    data: list[IdeogramImage]


class IdeogramDescription(BaseModel):
    text: str


class IdeogramDescribed(Open):
    descriptions: list[IdeogramDescription]


# ---- Midjourney ----

class MidjourneyTask(Open):
    """A task as midjourney-proxy shows it (also the notifyHook body)."""

    id: str
    action: str
    status: Literal["NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL", "SUCCESS", "FAILURE", "CANCEL"]
    prompt: str
    promptEn: str
    description: str
    state: str | None
    submitTime: int | None
    startTime: int | None
    finishTime: int | None
    progress: str
    imageUrl: str | None
    failReason: str | None
    buttons: list[dict[str, Any]]
    properties: dict[str, Any]


# ---- admin ----

class KeyView(Open):
    id: int
    name: str
    prefix: str
    is_admin: bool
    enabled: bool
    expires_at: str | None
    allowed_models: list[str] | None
    account_id: int | None
    rate_limit_rpm: int | None
    max_concurrent: int | None
    group: str | None
    created_at: str


class NewKey(KeyView):
    key: str = Field(description="The key itself, shown this once")


class KeyList(BaseModel):
    data: list[KeyView]


class ChannelView(Open):
    name: str
    provider: str
    base_url: str | None
    has_api_key: bool
    api_key_hint: str | None
    models: list[str]
    priority: int
    weight: int
    enabled: bool


class NewChannel(ChannelView):
    warnings: list[str]


class ChannelList(BaseModel):
    data: list[ChannelView]


class RequestList(BaseModel):
    data: list[dict[str, Any]] = Field(description="The newest request log rows first")


class AccountView(Open):
    id: int
    name: str
    balance: Money | None
    reserved: Money
    spent: Money
    spend_limit: Money | None
    markup: Money
    available: Money | None


class PriceList(BaseModel):
    currency: str
    data: list[dict[str, Any]] = Field(description="The effective price table: defaults, config file, admin")


class NewPrice(Open):
    id: int
    model: str
    currency: str


class AdminTask(Open):
    """Any key's task with its webhook deliveries and upstream jobs."""

    id: str
    key_id: int | None
    model: str
    status: str
    channel: str | None
    webhooks: list[dict[str, Any]]


class Health(Open):
    status: Literal["ok"]
    version: str


# ---- Gemini ----

class GeminiErrorDetail(Open):
    code: int
    message: str = Field(description="Names the field at fault: `* GenerateContentRequest.<field>: ...`")
    status: str = Field(description="INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, "
                                    "RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED...")
    details: list[dict[str, Any]] = Field(description="google.rpc ErrorInfo (reason), BadRequest "
                                                      "(fieldViolations), RetryInfo (retryDelay)")


class GeminiError(BaseModel):
    """Google's error shape (google.rpc.Status)."""

    error: GeminiErrorDetail


class GeminiCandidate(Open):
    content: dict[str, Any] = Field(description='{"role": "model", "parts": [{"text"}?, {"inlineData": '
                                                '{"mimeType", "data"}}]}')
    finishReason: str = Field(description="STOP; IMAGE_SAFETY when the vendor refused (no parts)")
    index: int


class GeminiResponse(Open):
    candidates: list[GeminiCandidate]
    usageMetadata: dict[str, Any]
    modelVersion: str
    responseId: str


class GeminiOperation(Open):
    """A google.longrunning Operation: `done`, then `response` (GeminiResponse) or `error`."""

    name: str
    done: bool
    metadata: dict[str, Any]
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class GeminiModel(Open):
    name: str = Field(description="models/<id>")
    displayName: str
    supportedGenerationMethods: list[str]


class GeminiModelList(Open):
    models: list[GeminiModel]
    nextPageToken: str | None = None

class StabilityError(BaseModel):
    """Stability AI's error shape: `errors` name the field (`"<field>: <message>"`)."""

    id: str
    name: str
    errors: list[str]


class StabilityImage(Open):
    """An image as JSON (`Accept: application/json`); with `Accept: image/*` the bytes themselves."""

    image: str
    finish_reason: str
    seed: int


class StabilityJob(Open):
    """An accepted asynchronous request (the creative upscale, or `Prefer: respond-async`)."""

    id: str


class StabilityInProgress(Open):
    id: str
    status: str
