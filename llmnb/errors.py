"""The few exceptions llmnb raises. Every message says what to do next."""

from __future__ import annotations


class LlmnbError(Exception):
    """Base class: catch this to handle any llmnb failure."""


class ConfigError(LlmnbError, ValueError):
    """Bad input to llmnb itself: an unknown model name, a missing file or key, bad labels."""


class SchemaError(ConfigError, TypeError):
    """A target type that cannot be turned into a JSON schema."""


class ModelCallError(LlmnbError):
    """A model call failed after every allowed attempt (HTTP error, timeout, lost connection).

    `status` is the HTTP status when there was one, `attempts` how many requests were made.
    `partial` is the text a stream delivered before it broke (None when nothing was streamed);
    from `extract_stream_async`, `partial_value` is the value read from it (None: none yet).
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1, partial: str | None = None):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.partial = partial
        self.partial_value: object = None


class ExtractError(LlmnbError):
    """The model's output did not validate against the requested type.

    `raw` holds the model's text exactly as it came back, `target` the requested type, so nothing
    the model produced is lost.
    """

    def __init__(self, message: str, *, raw: str, target: object):
        super().__init__(message)
        self.raw = raw
        self.target = target


class MaxStepsError(LlmnbError):
    """The model still asked for tools at its last allowed turn (`max_steps=`).

    `asked` counts the tool calls it asked for, by tool name; `messages` holds the conversation
    up to that turn, tool results included, so nothing the tools returned is lost.
    """

    def __init__(self, message: str, *, asked: dict[str, int], messages: tuple[dict, ...]):
        super().__init__(message)
        self.asked = asked
        self.messages = messages


class NotKept(LlmnbError):
    """Inside `llmnb.cache.kept_only()`, a model turn whose answer the cache does not hold.

    `request` is the turn's Request, `key` its cache key: an answer kept under that key (for
    instance with `cache.keep(key, model, completion)`) answers the turn next time.
    """

    def __init__(self, request: object, key: str):
        super().__init__(f"no kept answer for this turn (key {key[:12]}…); it was not sent")
        self.request = request
        self.key = key
