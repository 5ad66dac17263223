"""The OpenAI backend: any OpenAI-compatible chat server, through `openai.AsyncOpenAI`.

A call goes through layers, each with one policy: `complete` (turns a failure into
`ModelCallError`) -> `_complete_in_mode` (which structured-output mode) -> `_retrying` (llmnb's one
retry layer, which also keeps the rate limits; the SDK's own retries are switched off, so retries
never multiply) -> `_send_once` (one request). The bodies and answers are built and read by `wire`,
failures judged by `failures`, the HTTP clients kept by `clients`.

The HTTP client is the openai SDK's aiohttp transport unless `http_client=` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ...errors import ModelCallError
from ...events import Call
from ...per_loop import PerLoop
from ...providers import Quirks
from ..base import Backend, Completion, Delta, Request
from .clients import Clients, http_client_for_loop
from .failures import (
    FORMAT_WORDS,
    RETRYABLE,
    USAGE_WORDS,
    Failed,
    Failure,
    never,
    refused_at,
    refuses,
    retry_delay,
    timed_out,
    tools_refused,
)
from .limits import Limiter, RateLimits, estimate_tokens
from .wire import CHAT_PATH, StreamedAnswer, build_request, event_data, parse_response, stream_request

T = TypeVar("T")


@dataclass(frozen=True)
class Opened:
    """A streamed response being read: the HTTP response and the deltas read from it."""

    response: Any
    deltas: AsyncGenerator[Delta, None]

    async def close(self) -> None:
        """Stop reading and close the connection (the server sees it close if the answer was not over)."""
        await self.deltas.aclose()
        await self.response.aclose()


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
        provider: str = "openai",
        quirks: Quirks | None = None,
    ):
        import httpx2  # the openai SDK's HTTP library
        import openai  # imported here so `import llmnb` stays light

        self._openai = openai
        self._http_response = httpx2.Response
        self.model = model
        self.name = f"{provider}:{model}"
        self.base_url = base_url
        # the server, as the SDK finds it: its own default, which it also reads from OPENAI_BASE_URL
        self.url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.quirks = quirks = quirks or Quirks()  # what the endpoint is known to refuse
        self.schema_mode: str | None = quirks.schema_mode  # unless known, decided by the first structured call
        # whether the server takes stream_options, found out likewise
        self.stream_usage: bool | None = False if "stream_options" in quirks.drop else None
        self.limits: Limiter = RateLimits(rpm, tpm)  # shared by every call of the model (a cluster may share it wider)
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

    async def client(self) -> Any:
        """This event loop's `openai.AsyncOpenAI` client (its `files` and `batches` run the Batch API)."""
        return await self._clients.get()

    def close(self) -> None:
        """Close the HTTP clients (on their loops); a later call opens a new one."""
        self._clients.close()

    async def complete(self, request: Request, call: Call) -> Completion:
        try:
            return await self._complete_in_mode(request, call)
        except Failed as e:
            failed = e
        # Raised outside the handler, so the only chained error is the SDK's (or none).
        raise self._call_error(failed, tools=bool(request.tools))

    async def _complete_in_mode(self, request: Request, call: Call) -> Completion:
        """The structured-output layer: which `response_format` a request is sent with."""
        def send(mode: str, give_up: Callable[[Exception], bool]) -> Awaitable[Completion]:
            body = build_request(self.model, request, mode, self.quirks.drop)
            tokens = estimate_tokens(body)
            return self._retrying(lambda: self._send_once(body, tokens), give_up, call, tokens)

        if request.schema is None:
            return await send("json_schema", never)
        return await self._negotiated("schema_mode", ("json_schema", "json_object"), FORMAT_WORDS, send)

    async def stream(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        sent = 0

        def send(usage: bool, give_up: Callable[[Exception], bool]) -> Awaitable[tuple[Opened, Delta]]:
            plain = build_request(self.model, request, self.schema_mode or "json_schema", self.quirks.drop)
            body = stream_request(plain, usage)
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
            # outside the handler: the only chained error is the SDK's
            raise self._call_error(failed, tools=bool(request.tools))
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
        request, answer = response.request, StreamedAnswer()
        lines = aiter(response.aiter_lines())
        while True:
            try:
                line = await anext(lines, None)
            except Exception as e:  # reading failed: the transport's read timeout, or the connection broke
                lost = self._openai.APITimeoutError if timed_out(e) else self._openai.APIConnectionError
                raise lost(request=request) from e
            if line is None:
                if (rest := answer.rest()) is not None:
                    yield rest
                return
            chunk = event_data(line)
            if chunk is not None and chunk.get("error"):  # the server's error, sent within the stream
                error = chunk["error"]
                raise self._openai.APIError(str(error.get("message", error) if isinstance(error, dict) else error),
                                            request, body=chunk)
            if chunk is not None:
                yield answer.delta(chunk)

    async def _pieces(self, opened: Opened, first: Delta) -> AsyncIterator[Delta]:
        """The deltas from `first` on; the timeout bounds each wait for the next one."""
        delta: Delta | None = first
        while delta is not None:
            yield delta
            async with asyncio.timeout(self.timeout):
                delta = await anext(opened.deltas, None)

    def _call_error(self, failed: Failed, partial: str | None = None, tools: bool = False) -> ModelCallError:
        """The error a caller sees; `tools`: the request had tools, which the server may have refused."""
        where = f" at {self.base_url}" if self.base_url else ""
        kept = "; the text received is in .partial" if partial is not None else ""
        text = (tools and tools_refused(failed.failure)) or failed.failure.text
        error = ModelCallError(
            f"{self.name}{where}: {text}, after {failed.attempts} attempt(s) "
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
        if isinstance(error, openai.APIConnectionError) and (where := refused_at(error)):
            # Checked first: the aiohttp transport reports a refused connection as a ConnectTimeout.
            return Failure(f"the connection to {where} was refused: no server is listening there; "
                           "start the server or check base_url", retryable=True)
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
