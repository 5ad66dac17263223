"""Any OpenAI-compatible chat server, through `openai.AsyncOpenAI`.

Request building and response parsing are pure functions. A call goes through layers, each with
one policy: `complete` (turns a failure into `ModelCallError`) -> `_complete_in_mode` (which
structured-output mode) -> `_retrying` (llmnb's one retry layer, which also keeps the rate limits;
the SDK's own retries are switched off, so retries never multiply) -> `_send_once` (one request).

The HTTP client is the openai SDK's aiohttp transport unless `http_client=` says otherwise.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import random
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..errors import ModelCallError
from ..events import Call
from ..limits import RateLimits, estimate_tokens
from .base import Backend, Completion, Delta, PerLoop, Request

T = TypeVar("T")

# Statuses worth another try: the request may succeed unchanged a moment later.
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
# Statuses with which a server refuses a request field it lacks (json_schema structured outputs,
# stream_options): 400, 422 or 501 from most, 500 from llama.cpp's server ("Input should be 'text'
# or 'json_object'"). A 500 counts only when its text names the field, so a passing server error
# is retried as such.
REFUSED = frozenset({400, 422, 501})
FORMAT_WORDS = ("response_format", "json_schema", "json_object")
USAGE_WORDS = ("stream_options", "include_usage")
MAX_BACKOFF = 30.0
# Requests go through the SDK client's documented `post(path, cast_to=httpx2.Response, body=...)`
# rather than `chat.completions.create`: the client's auth, headers, timeouts and errors all apply,
# without the SDK converting every request dict against its typed parameters and every answer into
# pydantic models (together a third of the client's CPU time with 300 calls at once; llmnb's
# request is plain JSON already and it reads four fields of the answer).
CHAT_PATH = "/chat/completions"


def build_request(model: str, request: Request, schema_mode: str) -> dict[str, Any]:
    """The JSON body of the chat completions request for `request`.

    schema_mode "json_schema" uses OpenAI structured outputs; "json_object" is the fallback for
    servers without them: JSON mode, with the schema both in the system message (so any model
    knows the shape) and in `response_format` (which llama.cpp's server uses as a grammar).
    """
    body: dict[str, Any] = {"model": model, "messages": list(request.messages)}
    body.update({k: v for k, v in vars(request.gen).items() if v is not None})
    if request.schema is not None:
        if schema_mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema, "strict": False},
            }
        else:
            body["response_format"] = {"type": "json_object", "schema": request.schema}
            body["messages"] = with_schema_instruction(body["messages"], request.schema)
    return body


def with_schema_instruction(messages: list[dict], schema: dict) -> list[dict]:
    note = f"Reply with one JSON object that matches this JSON schema: {json.dumps(schema)}"
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n" + note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


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


def never(error: Exception) -> bool:
    return False


def stream_request(body: dict[str, Any], usage: bool) -> dict[str, Any]:
    """`body` for a streamed request; with `usage` the last chunk carries the token counts."""
    return {**body, "stream": True, **({"stream_options": {"include_usage": True}} if usage else {})}


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


def parse_response(body: Any) -> Completion:
    """A chat completion's JSON body (a dict): its text, token counts and finish reason."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices:
        raise ModelCallError("the server answered with no choices; check that the model name is right")
    choice, usage = choices[0], body.get("usage") or {}
    return Completion(
        text=(choice.get("message") or {}).get("content") or "",
        tokens_in=usage.get("prompt_tokens"),
        tokens_out=usage.get("completion_tokens"),
        finish=choice.get("finish_reason"),
    )


def event_data(line: str) -> dict | None:
    """The JSON of one line of a server-sent event stream, or None for a line that carries none
    (blank, a comment, an `event:` name, the closing `[DONE]`)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return None if data == "[DONE]" else json.loads(data)


def parse_chunk(chunk: dict) -> Delta:
    """One streamed chunk: a piece of text, the finish reason, or (last, with include_usage) the counts."""
    choice = (chunk.get("choices") or [{}])[0]
    usage = chunk.get("usage") or {}
    return Delta(
        text=(choice.get("delta") or {}).get("content") or "",
        tokens_in=usage.get("prompt_tokens"),
        tokens_out=usage.get("completion_tokens"),
        finish=choice.get("finish_reason"),
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


@dataclass(frozen=True)
class Opened:
    """A streamed response being read: the HTTP response and the deltas read from it."""

    response: Any
    deltas: AsyncGenerator[Delta, None]

    async def close(self) -> None:
        """Stop reading and close the connection (the server sees it close if the answer was not over)."""
        await self.deltas.aclose()
        await self.response.aclose()


class Clients:
    """The backend's HTTP clients, one per event loop, made so that no loop waits for one.

    Making an `AsyncOpenAI` client took 0.2-0.4 s the first time (the SDK imports its modules and
    sets up TLS) and 50-100 ms after (TLS again); made on a loop at the first call, that blocked
    every task on the loop and showed on the timeline. So one client is made, its modules loaded,
    with the model; the first loop that calls takes it. Another loop (the private one of the sync
    methods, say) gets its own made in a worker thread, off the loop. Entries are futures, so the
    calls that start together on a new loop share one client.
    """

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._spare = [loaded(make())]
        self._per_loop: PerLoop[asyncio.Future] = PerLoop(self._for_this_loop)

    async def get(self) -> Any:
        return await self._per_loop.get()

    def _for_this_loop(self) -> asyncio.Future:
        try:
            client = self._spare.pop()
        except IndexError:  # the spare went to another loop
            made: asyncio.Future = asyncio.ensure_future(asyncio.to_thread(lambda: loaded(self._make())))
        else:
            made = asyncio.get_running_loop().create_future()
            made.set_result(client)
        made.add_done_callback(close_with_its_loop)  # run on this loop, once the client is there
        _client_loops.add(asyncio.get_running_loop())
        return made

    def close(self) -> None:
        """Close every client on its own loop, from any thread; forget them."""
        for loop, made in self._per_loop.drain():
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: its sockets went with it
                    loop.call_soon_threadsafe(made.add_done_callback, close_made)


def close_made(made: asyncio.Future) -> None:
    """Runs on the client's loop, so a loop that stops before running the close leaves no
    never-awaited coroutine behind (a RuntimeWarning at exit)."""
    if not made.cancelled() and made.exception() is None:
        asyncio.ensure_future(made.result().close())


async def _closing_at_loop_end(client: Any):
    try:
        yield
    finally:
        await client.close()


def close_with_its_loop(made: asyncio.Future) -> None:
    """Close the client on its own loop when that loop shuts down (as `asyncio.run` does at its
    end), even if the model was never closed: an aiohttp session left open is reported as
    "Unclosed client session". The hook is the loop's finalisation of async generators: this one
    is started here, on the loop, so the loop knows it; it waits at its `yield` until then."""
    if made.cancelled() or made.exception() is not None:
        return
    client = made.result()
    closer = _closing_at_loop_end(client)
    with contextlib.suppress(StopIteration):
        closer.asend(None).send(None)
    client._llmnb_closer = closer  # alive as long as the client (the loop holds it weakly)


_client_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


@atexit.register
def _close_with_the_loops_left() -> None:
    """At exit, finalise the async generators of the loops that still hold clients (llmnb's sync
    loop, IPython's, any loop never shut down), which closes those clients as above."""
    for loop in list(_client_loops):
        if loop.is_closed():
            continue
        with contextlib.suppress(Exception):  # at exit, a loop that cannot do it now is let go
            if loop.is_running():  # in its own thread
                asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=2)
            else:
                loop.run_until_complete(loop.shutdown_asyncgens())


def http_client_for_loop(http_client: Any) -> Any:
    """The HTTP client of one `AsyncOpenAI`: by default the SDK's aiohttp transport (about 2.5x
    less CPU per call than its httpx one at a thousand calls at once); a client given to
    `Models.create(http_client=...)` as is; a class or function given there, called, so that each
    event loop gets its own (an aiohttp session belongs to the loop that made it)."""
    if http_client is None:
        import openai

        return openai.DefaultAioHttpClient()
    return http_client() if callable(http_client) else http_client  # a client instance is not callable


def loaded(client: Any) -> Any:
    """`client` with the modules its first request needs already imported (0.1-0.2 s)."""
    client.chat.completions  # noqa: B018 (the SDK imports its resource modules on first access)
    # The network layer loads anyio's asyncio backend at its first request, whoever made the client.
    with contextlib.suppress(ImportError):
        importlib.import_module("anyio._backends._asyncio")
    return client


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
        import httpx2  # the openai SDK's HTTP library
        import openai  # imported here so `import llmnb` stays light

        self._openai = openai
        self._http_response = httpx2.Response
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.schema_mode: str | None = None  # decided by the first structured call
        self.stream_usage: bool | None = None  # whether the server takes stream_options, found out likewise
        self.limits = RateLimits(rpm, tpm)  # shared by every call of the model
        # The key goes to the clients and is kept privately only to scrub it from error text;
        # no repr or message shows it.
        self._clients = Clients(lambda: openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout,
            http_client=http_client_for_loop(http_client)))
        self._slots = PerLoop(lambda: asyncio.Semaphore(max_concurrency))
        self._secret = api_key
        self._errors = (openai.APIError, json.JSONDecodeError, TimeoutError)  # what a retry may cure
        # A client left to the garbage collector with its connections open made concurrent
        # requests on new connections hang until their timeout (2 of 30 rounds of 10 calls with
        # a new model each time, as a notebook cell run again makes; none when closed or with gc
        # off). So a dropped backend closes its clients, each on its own loop.
        self._finalizer = weakref.finalize(self, self._clients.close)
        self._finalizer.atexit = False  # at exit the loops are gone or stopped: nothing to close on

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"OpenAIBackend({self.model!r}{where})"

    def slot(self):
        return self._slots.get()

    def close(self) -> None:
        """Close the HTTP clients (on their loops); a later call opens a new one."""
        self._clients.close()

    async def complete(self, request: Request, call: Call) -> Completion:
        try:
            return await self._complete_in_mode(request, call)
        except Failed as e:
            failed = e
        # Raised outside the handler, so the only chained error is the SDK's (or none).
        raise self._call_error(failed)

    async def _complete_in_mode(self, request: Request, call: Call) -> Completion:
        """The structured-output layer: which `response_format` a request is sent with."""
        def send(mode: str, give_up: Callable[[Exception], bool]) -> Awaitable[Completion]:
            body = build_request(self.model, request, mode)
            tokens = estimate_tokens(body)
            return self._retrying(lambda: self._send_once(body, tokens), give_up, call, tokens)

        if request.schema is None:
            return await send("json_schema", never)
        return await self._negotiated("schema_mode", ("json_schema", "json_object"), FORMAT_WORDS, send)

    async def stream(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        sent = 0

        def send(usage: bool, give_up: Callable[[Exception], bool]) -> Awaitable[tuple[Opened, Delta]]:
            body = stream_request(build_request(self.model, request, "json_schema"), usage)
            tokens = estimate_tokens(body)

            def attempt() -> Awaitable[tuple[Opened, Delta]]:
                nonlocal sent
                sent += 1
                return self._open_stream(body)

            return self._retrying(attempt, give_up, call, tokens)

        failed: Failed | None
        try:
            opened, first = await self._negotiated("stream_usage", (True, False), USAGE_WORDS, send)
        except Failed as e:
            failed = e
        else:
            failed = None
        if failed is not None:
            raise self._call_error(failed)  # outside the handler: the only chained error is the SDK's
        received: list[str] = []
        try:
            async for delta in self._pieces(opened, first):
                if delta.text:
                    if not received:
                        call.emit("first_token")
                    received.append(delta.text)
                    call.emit("progress", tokens_out=len(received))
                yield delta
        except self._errors as e:
            error = e
        else:
            return
        finally:  # also when the caller leaves early: the connection closes, the server sees it
            await opened.close()
        # Text already reached the caller: no retry, which would send it twice; the text is kept.
        failure = self._describe(error)
        broken = replace(failure, text=f"the stream stopped after {len(received)} piece(s) of text: {failure.text}")
        raise self._call_error(Failed(broken, error, sent), partial="".join(received))

    async def _negotiated(self, setting: str, forms: tuple[Any, Any], words: tuple[str, ...],
                          send: Callable[[Any, Callable[[Exception], bool]], Awaitable[T]]) -> T:
        """Send in the form of request (preferred, fallback) that the server is known to take; the
        first call finds it out. A refusal of the preferred form gets one try of the fallback; if
        that fails too for a reason not worth retrying, the refusal was the server's real answer
        (a passing 500 on OpenAI must not switch modes). The form is kept once a call worked."""
        known = getattr(self, setting)
        if known is not None:
            return await send(known, never)
        preferred, fallback = forms

        def refusal(error: Exception) -> bool:
            return refuses(error, words)

        try:
            result, form = await send(preferred, refusal), preferred
        except Failed as first:
            if not refusal(first.error):
                raise
            try:
                result, form = await send(fallback, never), fallback
            except Failed as failed:
                raise (failed if failed.failure.retryable else first) from None
        setattr(self, setting, form)
        return result

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], give_up: Callable[[Exception], bool],
                        call: Call, tokens: int) -> T:
        """The retry layer: run `attempt` (one request of about `tokens` tokens) until it succeeds,
        fails in a way not worth retrying (or that `give_up` names), or max_retries is spent; then
        raise `Failed`. Every request, first or retried, waits here for the rate limits first."""
        attempts = 0
        while True:
            attempts += 1
            if self.limits.active:
                await self.limits.admit(tokens, call.emit)
            try:
                return await attempt()
            except self._errors as e:
                error = e
            failure = self._describe(error)
            if not failure.retryable or attempts > self.max_retries or give_up(error):
                raise Failed(failure, error, attempts)
            if failure.status == 429 and isinstance(error, self._openai.APIStatusError):  # every call waits in admit
                self.limits.pause(error.response.headers, fallback=retry_delay(attempts, None))
            else:
                await asyncio.sleep(retry_delay(attempts, failure.retry_after))

    async def _send_once(self, body: dict[str, Any], tokens: int) -> Completion:
        """One request, bounded by the timeout as a whole (a body that trickles in counts too). The
        answer's headers tell the rate limits the server's, its usage the tokens it really took."""
        client = await self._clients.get()
        async with asyncio.timeout(self.timeout):
            response = await client.post(CHAT_PATH, cast_to=self._http_response, body=body)
        self.limits.observe(response.headers)
        completion = parse_response(response.json())
        self.limits.settle(tokens, None if completion.tokens_in is None else
                           completion.tokens_in + (completion.tokens_out or 0))
        return completion

    async def _open_stream(self, body: dict[str, Any]) -> tuple[Opened, Delta]:
        """One streamed request, read up to its first piece of text (or its end), within the
        timeout: until then nothing reached the caller, so a failure may still be retried."""
        client = await self._clients.get()
        opened = None
        try:
            async with asyncio.timeout(self.timeout):
                # The HTTP response, its body not read yet; Opened.close() closes it.
                response = await client.post(CHAT_PATH, cast_to=self._http_response, body=body, stream=True)
                self.limits.observe(response.headers)
                opened = Opened(response, self._deltas(response))
                async for delta in opened.deltas:
                    if delta.text or delta.finish or delta.tokens_out is not None:
                        return opened, delta
                return opened, Delta()
        except BaseException:
            if opened is not None:
                await opened.close()
            raise

    async def _deltas(self, response: Any) -> AsyncGenerator[Delta, None]:
        """The deltas of a streamed answer, its server-sent events read as JSON lines. (The SDK's
        own stream builds a pydantic model per chunk: a quarter of the client's CPU time, measured
        with 100 streams at once.)"""
        request = response.request
        lines = aiter(response.aiter_lines())
        while True:
            try:
                line = await anext(lines, None)
            except Exception as e:  # reading failed: the transport's read timeout, or the connection broke
                lost = self._openai.APITimeoutError if timed_out(e) else self._openai.APIConnectionError
                raise lost(request=request) from e
            if line is None:
                return
            chunk = event_data(line)
            if chunk is not None and chunk.get("error"):  # the server's error, sent within the stream
                error = chunk["error"]
                raise self._openai.APIError(str(error.get("message", error) if isinstance(error, dict) else error),
                                            request, body=chunk)
            if chunk is not None:
                yield parse_chunk(chunk)

    async def _pieces(self, opened: Opened, first: Delta) -> AsyncIterator[Delta]:
        """The deltas from `first` on; the timeout bounds each wait for the next one."""
        delta: Delta | None = first
        while delta is not None:
            yield delta
            async with asyncio.timeout(self.timeout):
                delta = await anext(opened.deltas, None)

    def _call_error(self, failed: Failed, partial: str | None = None) -> ModelCallError:
        where = f" at {self.base_url}" if self.base_url else ""
        kept = "; the text received is in .partial" if partial is not None else ""
        error = ModelCallError(
            f"{self.name}{where}: {failed.failure.text}, after {failed.attempts} attempt(s) "
            f"(max_retries={self.max_retries}){kept}",
            status=failed.failure.status,
            attempts=failed.attempts,
            partial=partial,
        )
        # The SDK's error keeps the server's text whole; a server that echoes the key would leak
        # it through the chained cause, so such a cause is dropped.
        leaks = self._secret in f"{failed.error} {getattr(failed.error, 'body', '')}"
        error.__cause__ = None if leaks else failed.error
        error.__suppress_context__ = True
        return error

    def _describe(self, error: Exception) -> Failure:
        openai = self._openai
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            return Failure(f"HTTP {status}: {self._clean(error.message)}", status, status in RETRYABLE,
                           error.response.headers.get("retry-after"))
        if isinstance(error, (TimeoutError, openai.APITimeoutError)):
            return Failure(f"no answer within timeout={self.timeout}s", retryable=True)
        if isinstance(error, openai.APIConnectionError):
            return Failure("connection failed", retryable=True)
        if isinstance(error, (json.JSONDecodeError, openai.APIResponseValidationError)):
            return Failure("the server's answer was not valid JSON", retryable=True)
        return Failure(f"{type(error).__name__}: {self._clean(str(error))}")

    def _clean(self, text: str) -> str:
        """Error text from a server, short and without the API key (some servers echo it)."""
        text = " ".join(str(text).split())
        if self._secret:
            text = text.replace(self._secret, "***")
        return text[:200]
