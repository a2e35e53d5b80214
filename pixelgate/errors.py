"""The gateway's exception tree. Surfaces render these in their own wire shape.

    GatewayError                      500  anything we did not foresee
    ├── InvalidRequest                400  the client's request is wrong; `field` names the parameter
    ├── Unauthorized                  401  missing, unknown, expired or disabled key
    ├── InsufficientBalance           402  the key's balance or spending limit cannot cover the request
    ├── Forbidden                     403  the key may not use this model or route
    │   └── NotPriced                 403  the model has no price and unpriced models are refused
    ├── NotFound                      404
    │   └── ModelNotFound             404  no enabled channel serves the model
    ├── Conflict                      409  contradicts an earlier request (an Idempotency-Key reused
    │                                       with another body)
    ├── ModelRetired                  410  the vendor shut the model down and the operator refuses it
    ├── PayloadTooLarge               413
    ├── RateLimited                   429  the key's requests per minute or in flight are exhausted
    ├── NoChannelAvailable            503  the model exists but every channel is disabled
    ├── LeaseLost                     503  a worker's lease on a task ran out and another took over
    ├── ServiceUnavailable            503  a store the gateway needs failed: nothing was charged; the
    │   │                                   answer says when to try again (Retry-After)
    │   ├── StorageUnavailable        503  the image store did not answer (in storage_timeout_seconds)
    │   └── DatabaseUnavailable       503  the database connection dropped or cannot be opened
    └── UpstreamError                 502  the vendor failed; carries the attempts made
        ├── UpstreamUnavailable       502  connection refused / 5xx / bad channel key: nothing accepted,
        │                                   so another channel may be tried (retry_elsewhere)
        ├── UpstreamRateLimited       429  the vendor said 429: nothing accepted (retry_elsewhere)
        ├── UpstreamTimeout           504  no answer in time: the vendor may still bill, never retried
        ├── UpstreamBadResponse       502  the vendor answered something we cannot read
        ├── UpstreamRejected          400  the vendor refused the request itself (its 4xx): not retried
        └── UpstreamContentFiltered   400  the vendor's safety system refused the prompt or image

Each class carries `status`, `code`, `type` (OpenAI's error "type" vocabulary, which other
surfaces map from) and `retry_elsewhere`. Nothing in here knows any response shape.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    type = "server_error"
    retry_elsewhere = False

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_value"
    type = "invalid_request_error"


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    code = "invalid_api_key"
    type = "invalid_request_error"


class Forbidden(GatewayError):
    status = 403
    code = "model_not_allowed"
    type = "invalid_request_error"


class NotPriced(Forbidden):
    code = "model_not_priced"


class InsufficientBalance(GatewayError):
    status = 402
    code = "insufficient_balance"
    type = "insufficient_quota"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limit_exceeded"
    type = "requests"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelRetired(GatewayError):
    status = 410
    code = "model_retired"
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"
    type = "invalid_request_error"


class NoChannelAvailable(GatewayError):
    status = 503
    code = "no_channel_available"


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.attempts: list[dict] = []


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    retry_elsewhere = True


class UpstreamRateLimited(UpstreamError):
    status = 429
    code = "upstream_rate_limited"
    type = "rate_limit_error"
    retry_elsewhere = True


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamBadResponse(UpstreamError):
    code = "upstream_bad_response"


class UpstreamRejected(UpstreamError):
    status = 400
    code = "upstream_rejected"
    type = "invalid_request_error"


class UpstreamContentFiltered(UpstreamError):
    status = 400
    code = "content_policy_violation"
    type = "invalid_request_error"


class LeaseLost(GatewayError):
    """This worker's lease on a task ran out (it stalled, or lost the database) and another
    worker took the task over: this one stops, writing nothing, and the other carries on."""

    status = 503
    code = "task_taken_over"



class ServiceUnavailable(GatewayError):
    """A store the gateway depends on failed mid-request. Nothing was charged (the request's
    hold is released); the client may try again after `retry_after` seconds."""

    status = 503
    code = "service_unavailable"
    retry_after = 5

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(self.retry_after))


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    retry_after = 1
