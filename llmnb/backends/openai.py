"""Any OpenAI-compatible chat server, through `openai.AsyncOpenAI`.

Request building and response parsing are pure functions; `OpenAIBackend.complete` holds the few
lines of I/O and the one retry layer of llmnb (the SDK's own retries are switched off, so retries
never multiply).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import weakref
from typing import Any

from ..errors import ModelCallError
from ..events import Call
from ..limits import RateLimits, estimate_tokens
from .base import Backend, Completion, PerLoop, Request

# Statuses worth another try: the request may succeed unchanged a moment later.
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
# Statuses with which a server that lacks json_schema structured outputs refuses them: 400, 422
# or 501 from most, 500 from llama.cpp's server ("Input should be 'text' or 'json_object'"). A 500
# counts only when its text names the format, so a passing server error is retried as such.
SCHEMA_REFUSED = frozenset({400, 422, 501})
FORMAT_WORDS = ("response_format", "json_schema", "json_object")
MAX_BACKOFF = 30.0


def build_request(model: str, request: Request, schema_mode: str) -> dict[str, Any]:
    """The keyword arguments of `chat.completions.create` for a request.

    schema_mode "json_schema" uses OpenAI structured outputs; "json_object" is the fallback for
    servers without them: JSON mode, with the schema both in the system message (so any model
    knows the shape) and in `response_format` (which llama.cpp's server uses as a grammar).
    """
    kwargs: dict[str, Any] = {"model": model, "messages": list(request.messages)}
    kwargs.update({k: v for k, v in vars(request.gen).items() if v is not None})
    if request.schema is not None:
        if schema_mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema, "strict": False},
            }
        else:
            kwargs["response_format"] = {"type": "json_object", "schema": request.schema}
            kwargs["messages"] = with_schema_instruction(kwargs["messages"], request.schema)
    return kwargs


def with_schema_instruction(messages: list[dict], schema: dict) -> list[dict]:
    note = f"Reply with one JSON object that matches this JSON schema: {json.dumps(schema)}"
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n" + note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def refuses_json_schema(status: int | None, message: str) -> bool:
    """Whether an error on a json_schema request may mean the server lacks structured outputs."""
    return status in SCHEMA_REFUSED or (status == 500 and any(w in message for w in FORMAT_WORDS))


def parse_response(response: Any) -> Completion:
    if not response.choices:
        raise ModelCallError("the server answered with no choices; check that the model name is right")
    usage = getattr(response, "usage", None)
    return Completion(
        text=response.choices[0].message.content or "",
        tokens_in=getattr(usage, "prompt_tokens", None),
        tokens_out=getattr(usage, "completion_tokens", None),
    )


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's Retry-After if it gave one,
    else exponential backoff with jitter."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF)
        except ValueError:
            pass  # an HTTP date; rare for APIs, fall back to backoff
    return min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.8, 1.2)


def http_client_for_loop(http_client: Any) -> Any:
    """The HTTP client of one event loop's `AsyncOpenAI`: by default the SDK's aiohttp transport
    (about 2.5x less CPU per call than its httpx one at a thousand calls at once); a client given
    to `Models.create(http_client=...)` as is; a class or function given there, called (so each
    loop gets its own, as an aiohttp session belongs to the loop that made it)."""
    if http_client is None:
        import openai

        return openai.DefaultAioHttpClient()
    return http_client() if callable(http_client) and not hasattr(http_client, "send") else http_client


async def _closing_at_loop_end(client: Any):
    try:
        yield
    finally:
        await client.close()


def closed_with_its_loop(client: Any) -> Any:
    """`client`, closed on its own loop when that loop shuts down (as `asyncio.run` does at its
    end), even if the model was never closed: an aiohttp session left open is reported as
    "Unclosed client session". The hook is the loop's finalisation of async generators: this
    one is started here, so the running loop knows it, and waits at its `yield` until then."""
    closer = _closing_at_loop_end(client)
    with contextlib.suppress(StopIteration):
        closer.asend(None).send(None)
    client._llmnb_closer = closer  # kept alive as long as the client (the loop holds it weakly)
    return client


def close_clients(clients: PerLoop) -> None:
    """Close every client of `clients` on its own loop, from any thread; forget them."""
    for loop, client in clients.drain():
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: its sockets went with it
                # The coroutine is made on the loop, so a loop that stops before running this
                # leaves no never-awaited coroutine behind (a RuntimeWarning at exit).
                loop.call_soon_threadsafe(lambda loop=loop, client=client: loop.create_task(client.close()))


class OpenAIBackend(Backend):
    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        max_concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 3,
        rpm: float | None = None,
        tpm: float | None = None,
        http_client: Any = None,
    ):
        import openai  # imported here so `import llmnb` stays light

        self._openai = openai
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.schema_mode: str | None = None  # decided by the first structured call
        self.limits = RateLimits(rpm, tpm)
        # The key goes to the clients and is kept privately only to scrub it from error text;
        # no repr or message shows it.
        self._clients = PerLoop(lambda: closed_with_its_loop(openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout,
            http_client=http_client_for_loop(http_client))))
        self._slots = PerLoop(lambda: asyncio.Semaphore(max_concurrency))
        self._secret = api_key
        # A client left to the garbage collector with its connections open made concurrent
        # requests on new connections hang until their timeout (2 of 30 rounds of 10 calls with
        # a new model each time, as a notebook cell run again makes; none when closed or with gc
        # off). So a dropped backend closes its clients, each on its own loop.
        self._finalizer = weakref.finalize(self, close_clients, self._clients)
        self._finalizer.atexit = False  # at exit the loops are gone or stopped: nothing to close on

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"OpenAIBackend({self.model!r}{where})"

    def slot(self):
        return self._slots.get()

    def close(self) -> None:
        """Close the HTTP clients (on their loops); a later call opens a new one."""
        close_clients(self._clients)

    async def complete(self, request: Request, call: Call) -> Completion:
        client = self._clients.get()
        mode = self.schema_mode or "json_schema"
        refusal: Exception | None = None  # a json_schema request the server refused, while JSON mode is tried
        attempt = 0
        while True:
            attempt += 1
            try:
                completion = await self._send_once(client, build_request(self.model, request, mode), call)
            except (self._openai.APIError, json.JSONDecodeError, TimeoutError) as e:
                error = e
            else:
                if request.schema is not None and self.schema_mode is None:
                    self.schema_mode = mode  # remembered only once a structured call has worked
                return completion
            refused = refuses_json_schema(getattr(error, "status_code", None), getattr(error, "message", ""))
            if request.schema is not None and self.schema_mode is None and refusal is None and refused:
                # Maybe a server without json_schema: try JSON mode once, unpaid. If that fails too,
                # the refusal was a real error (a passing 500 on OpenAI must not switch modes).
                mode, refusal = "json_object", error
                attempt -= 1
                continue
            what, status, retryable, retry_after = self._describe(error)
            if refusal is not None:  # JSON mode failed too
                if not retryable:  # refused as well: the first refusal was the server's real answer
                    mode, error = "json_schema", refusal
                    what, status, retryable, retry_after = self._describe(error)
                refusal = None  # a passing fault (429, timeout) retries in JSON mode
            if not retryable or attempt > self.max_retries:
                where = f" at {self.base_url}" if self.base_url else ""
                # The SDK's error keeps the server's text whole; a server that echoes the key
                # would leak it through the chained cause, so such a cause is dropped.
                leaks = self._secret in f"{error} {getattr(error, 'body', '')}"
                raise ModelCallError(
                    f"{self.name}{where}: {what}, after {attempt} attempt(s) (max_retries={self.max_retries})",
                    status=status,
                    attempts=attempt,
                ) from (None if leaks else error)
            await self._wait_to_retry(error, attempt, retry_after)

    async def _send_once(self, client: Any, kwargs: dict[str, Any], call: Call) -> Completion:
        """One request, once the rate limits let it go, bounded by the timeout as a whole (a body
        that trickles in counts too); what the answer says of the limits is learned."""
        tokens = estimate_tokens(kwargs)
        if self.limits.active:
            await self.limits.admit(tokens, call.emit)
        async with asyncio.timeout(self.timeout):
            raw = await client.chat.completions.with_raw_response.create(**kwargs)
            response = raw.parse()
        self.limits.observe(raw.headers)
        completion = parse_response(response)
        usage = getattr(response, "usage", None)
        self.limits.settle(tokens, getattr(usage, "total_tokens", None))
        return completion

    async def _wait_to_retry(self, error: Exception, attempt: int, retry_after: str | None) -> None:
        """A 429 pauses the whole model (every call waits in `_send_once`); other failures wait
        for this call only."""
        if getattr(error, "status_code", None) == 429:
            self.limits.pause(error.response.headers, fallback=retry_delay(attempt, None))
        else:
            await asyncio.sleep(retry_delay(attempt, retry_after))

    def _describe(self, error: Exception) -> tuple[str, int | None, bool, str | None]:
        """What went wrong, for the message: (text, HTTP status, worth retrying, Retry-After)."""
        openai = self._openai
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            return f"HTTP {status}: {self._clean(error.message)}", status, status in RETRYABLE, error.response.headers.get("retry-after")
        if isinstance(error, (TimeoutError, openai.APITimeoutError)):
            return f"no answer within timeout={self.timeout}s", None, True, None
        if isinstance(error, openai.APIConnectionError):
            return "connection failed", None, True, None
        if isinstance(error, (json.JSONDecodeError, openai.APIResponseValidationError)):
            return "the server's answer was not valid JSON", None, True, None
        return f"{type(error).__name__}: {self._clean(str(error))}", None, False, None

    def _clean(self, text: str) -> str:
        """Error text from a server, short and without the API key (some servers echo it)."""
        text = " ".join(str(text).split())
        if self._secret:
            text = text.replace(self._secret, "***")
        return text[:200]
