"""Failures of a request, described: which are worth another try, which mean the server refuses a
request field, and how long to wait before the next try."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Statuses worth another try: the request may succeed unchanged a moment later.
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
# Statuses with which a server refuses a request field it lacks (json_schema structured outputs,
# stream_options): 400, 422 or 501 from most, 500 from llama.cpp's server ("Input should be 'text'
# or 'json_object'"). A 500 counts only when its text names the field, so a passing server error
# is retried as such.
REFUSED = frozenset({400, 422, 501})
FORMAT_WORDS = ("response_format", "json_schema", "json_object")
USAGE_WORDS = ("stream_options", "include_usage")
TOOL_WORDS = ("tool", "function")
# ...together with one of these: the server lacks tools, rather than finding fault with one
# (OpenAI's "Invalid schema for function ..." is the caller's to fix, and says so itself).
LACKING_WORDS = ("support", "unrecognized", "unknown", "not allowed", "not permitted", "extra_forbidden",
                 "--enable", "--jinja")
MAX_BACKOFF = 30.0


def refuses(error: Exception, words: tuple[str, ...]) -> bool:
    """Whether `error` may mean the server lacks the request field named by `words`."""
    status, message = getattr(error, "status_code", None), getattr(error, "message", "")
    return status in REFUSED or (status == 500 and any(w in message for w in words))


def timed_out(error: BaseException | None) -> bool:
    """Whether a transport's error comes from a timeout: each transport has its own exception
    types, but they are, or are caused by, a TimeoutError."""
    while error is not None:
        if isinstance(error, TimeoutError):
            return True
        error = error.__cause__ or error.__context__
    return False


def tools_refused(failure: Failure) -> str | None:
    """What to say when `failure` (of a request with tools) means the server takes no tools: a
    refusal status whose text speaks of tools; None otherwise."""
    text = failure.text.lower()
    refused = failure.status in REFUSED or failure.status == 500
    if not refused or not any(w in text for w in TOOL_WORDS) or not any(w in text for w in LACKING_WORDS):
        return None
    return (f"the server does not support tool calls ({failure.text}); use a model and server that do "
            "(llama.cpp's llama-server needs --jinja; vLLM needs --enable-auto-tool-choice), or call without tools=")


def refused_at(error: BaseException) -> str | None:
    """"host:port" when `error` comes from a refused connection (a ConnectionRefusedError in its
    chain of causes), else None."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ConnectionRefusedError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    url = getattr(getattr(error, "request", None), "url", None)
    if url is None:
        return "the server"
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def never(error: Exception) -> bool:
    return False


@dataclass(frozen=True)
class Failure:
    """One failed request, described: for the error message and the decision to retry."""

    text: str  # what went wrong, short and without the API key
    status: int | None = None  # the HTTP status, when there was one
    retryable: bool = False  # whether the same request may succeed a moment later
    retry_after: str | None = None  # the server's Retry-After header


class Failed(Exception):
    """The sending layer gave up: the failure, the SDK's error and how many requests were made.
    Internal: `complete` turns it into a `ModelCallError`."""

    def __init__(self, failure: Failure, error: Exception, attempts: int):
        super().__init__()  # no text: the error's may hold what the server echoed
        self.failure, self.error, self.attempts = failure, error, attempts


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's Retry-After if it gave one,
    else exponential backoff with jitter."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF)
        except ValueError:
            pass  # an HTTP date; rare for APIs, fall back to backoff
    return min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.8, 1.2)
