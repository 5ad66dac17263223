"""A stand-in for a remote model: an OpenAI-compatible chat server on 127.0.0.1 that answers
every request after a fixed latency, many requests at once, with no model behind it. Asked to
stream (`"stream": true`), it sends its answer a token at a time as server-sent events: the first
after `latency`, each next one `per_token` later. What it answers (a fixed sentence, a value of
the requested schema, tool calls) is llmnb.demo_answers'; this module adds the time and the HTTP.

For teaching and benchmarking offline: it shows what concurrency buys against a real API, where
the time is spent waiting for the network and the server, not computing locally.

    with DemoServer(latency=0.5) as server:
        model = Models.create("openai:demo", base_url=server.base_url)

or standalone: `python -m llmnb.demo_server --port 8000 --latency 0.5`. `rate_limit=RateLimit(
requests=50)` (or `--rpm 3000`) makes it answer as a rate-limited API does: 429 with Retry-After
beyond the limit, and OpenAI's x-ratelimit-* headers on every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import threading
import time
from dataclasses import dataclass, field

from .demo_answers import PROMPT_TOKENS, REPLY, Answer, Answers, tokens


@dataclass
class RateLimit:
    """At most `requests` requests and `tokens` tokens (prompt and answer, as the usage reports
    them) in each window of `window` seconds; beyond that, 429 until the window ends. The headers
    speak per minute, as OpenAI's do."""

    requests: int | None = None
    tokens: int | None = None
    window: float = 1.0
    headers: bool = True  # send OpenAI's x-ratelimit-* headers (False: only Retry-After, on a 429)
    rejected: int = 0  # answers of 429 so far
    _start: float = field(default_factory=time.monotonic)
    _used: dict = field(default_factory=dict)  # window number -> [requests, tokens]

    def admit(self, tokens: int) -> tuple[bool, dict[str, str]]:
        """Count a request of `tokens` tokens: (allowed, headers for its answer)."""
        elapsed = time.monotonic() - self._start
        number = math.floor(elapsed / self.window)
        used = self._used.setdefault(number, [0, 0])
        self._used = {number: used}
        costs = ((self.requests, 1), (self.tokens, tokens))
        allowed = all(limit is None or used[i] + cost <= limit for i, (limit, cost) in enumerate(costs))
        if allowed:
            used[0], used[1] = used[0] + 1, used[1] + tokens
        else:
            self.rejected += 1
        reset = (number + 1) * self.window - elapsed
        headers = {}
        for i, (kind, limit) in enumerate((("requests", self.requests), ("tokens", self.tokens))):
            if limit is not None and self.headers:
                headers.update({f"x-ratelimit-limit-{kind}": str(round(limit * 60 / self.window)),
                                f"x-ratelimit-remaining-{kind}": str(max(limit - used[i], 0)),
                                f"x-ratelimit-reset-{kind}": f"{math.ceil(reset * 1000)}ms"})
        if not allowed:
            headers["retry-after"] = f"{reset:.3f}"
        return allowed, headers


@dataclass
class Streamed:
    """An answer to send as server-sent events, one by one (`events()`)."""

    answer: Answer
    include_usage: bool = False

    def events(self) -> list[bytes]:
        chunks = [f"data: {json.dumps(c)}\n\n".encode() for c in self.answer.chunks(self.include_usage)]
        return [*chunks, b"data: [DONE]\n\n"]


class DemoServer:
    """The server: HTTP/1.1 with keep-alive, each request answered after `latency` (and
    `per_token` a token), `rate_limit` in front, on an event loop of its own in a daemon thread.
    What it answers is `answers`' (by default `Answers(reply, tool_rounds)`).

    Counters, for what a test or a notebook wants to see: `requests` (received), `in_flight` and
    `max_in_flight` (being answered now, and at most so far), `closed_early` (answers the client
    hung up on before their end).

    A subclass (the tests' fault server) may override three steps of an answer. The latency, the
    counters and the reading of requests stay the server's; what each step must keep:
    - `respond(body, headers)`: the answer to a request (its JSON body and lower-cased headers),
      called once the latency has passed: (status, headers, payload), payload the body's bytes or
      a `Streamed` (`deliver` makes either from an `Answer`); or None to close the connection
      unanswered. It may take its time (a slow or hung server).
    - `send(writer, head, payload)`: write all of `head` and `payload` (the head's Content-Length
      counts the payload), as slowly as it likes.
    - `send_event(writer, stream, index, event, hangup)`: write `event` as one chunk of the
      chunked body (as this one does) and return True, or return False to end the stream there
      and close its connection (index 0 is the role chunk, then one per token; `hangup` completes
      when the client closes the connection).
    """

    def __init__(self, latency: float = 0.5, per_token: float = 0.0, port: int = 0, reply: str = REPLY,
                 rate_limit: RateLimit | None = None, tool_rounds: int = 1, answers: Answers | None = None):
        self.latency, self.per_token, self.port, self.rate_limit = latency, per_token, port, rate_limit
        self.answers = answers if answers is not None else Answers(reply, tool_rounds)
        self.in_flight = self.max_in_flight = self.requests = self.closed_early = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def reply(self) -> str:
        """What a plain answer says."""
        return self.answers.reply

    def start(self) -> DemoServer:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            # A deep accept queue: thousands of clients connecting at once must not wait for SYN retries.
            serving = asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=4096)
            self._server = server = self._loop.run_until_complete(serving)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="llmnb-demo-server", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop = None

    async def _shutdown(self) -> None:
        """Close the listener and every open connection, so keep-alive handlers end at EOF."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*handlers, return_exceptions=True)

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the three steps a subclass may override (see the class docstring) ----------------------
    async def respond(self, body: dict, headers: dict[str, str]) -> tuple[int, dict, bytes | Streamed] | None:
        """The demo's answer, delivered."""
        return await self.deliver(body, self.answers.answer(body, self.requests))

    async def deliver(self, body: dict, answer: Answer) -> tuple[int, dict, bytes | Streamed]:
        """`answer` as request `body` asks for it: streamed, or whole after `per_token` a token."""
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return 200, {"Content-Type": "text/event-stream"}, Streamed(answer, usage)
        await asyncio.sleep(self.per_token * len(answer.pieces))
        return 200, {"Content-Type": "application/json"}, json.dumps(answer.completion()).encode()

    async def send(self, writer: asyncio.StreamWriter, head: bytes, payload: bytes) -> None:
        writer.write(head + payload)
        await writer.drain()

    async def send_event(self, writer: asyncio.StreamWriter, stream: Streamed, index: int, event: bytes,
                         hangup: asyncio.Future) -> bool:
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        try:
            await writer.drain()
        except ConnectionError:
            return False
        return True

    # -- the HTTP around them ---------------------------------------------------------------------
    def _admit(self, body: dict) -> tuple[bool, dict[str, str]]:
        if self.rate_limit is None:
            return True, {}
        return self.rate_limit.admit(PROMPT_TOKENS + len(tokens(self.answers.text(body))))

    async def _send_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Streamed) -> bool:
        """Send a streamed answer, a token every `per_token` seconds, in chunked encoding so the
        connection stays open for the next request. False if the client hung up first (counted)."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        hangup = asyncio.ensure_future(reader.read(1))  # the client sends nothing more until answered
        try:
            for i, event in enumerate(stream.events()):
                if 1 < i <= len(stream.answer.pieces):  # the role chunk and the first token go out at once
                    await asyncio.wait([hangup], timeout=self.per_token)
                if hangup.done() or not await self.send_event(writer, stream, i, event, hangup):
                    self.closed_early += 1
                    return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            hangup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hangup  # the next request may read the connection once this read has let go

    async def _answer_unless_closed(self, reader: asyncio.StreamReader, body: dict, headers: dict[str, str]):
        """Wait the latency and build the answer, unless the client hangs up first (counted)."""
        async def work():
            await asyncio.sleep(self.latency)
            return await self.respond(body, headers)

        answer = asyncio.ensure_future(work())
        hangup = asyncio.ensure_future(reader.read(1))  # the client sends nothing more until answered
        done, _ = await asyncio.wait({answer, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if answer in done:
            hangup.cancel()
            return answer.result(), hangup
        answer.cancel()
        self.closed_early += 1
        return None, None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await self._serve_one(reader, writer):  # keep-alive: one connection serves many requests
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; False when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers.get("content-length") or 0)) or b"{}")
        self.requests += 1
        allowed, limit_headers = self._admit(body)
        if allowed:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                answer, hangup = await self._answer_unless_closed(reader, body, headers)
            finally:
                self.in_flight -= 1
        else:  # refused at once, as a rate limiter in front of a server does
            answer, hangup = too_many_requests(), None
        if answer is None:
            return False
        status, answer_headers, payload = answer
        if isinstance(payload, Streamed):
            return await self._send_stream(reader, writer, payload)
        lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", f"Content-Length: {len(payload)}",
                 *(f"{k}: {v}" for k, v in {**answer_headers, **limit_headers}.items())]
        await self.send(writer, ("\r\n".join(lines) + "\r\n\r\n").encode(), payload)
        with contextlib.suppress(asyncio.CancelledError):
            if hangup is not None:
                await hangup
        return True


def too_many_requests() -> tuple[int, dict, bytes]:
    payload = json.dumps({"error": {"message": "Rate limit reached; try again after the time in Retry-After",
                                    "type": "requests", "code": "rate_limit_exceeded"}}).encode()
    return 429, {"Content-Type": "application/json"}, payload


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llmnb.demo_server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.5,
                        help="seconds before each answer (its first token when streamed)")
    parser.add_argument("--per-token", type=float, default=0.0, help="extra seconds per output token")
    parser.add_argument("--rpm", type=int, help="allow this many requests a minute (counted per second); 429 beyond")
    parser.add_argument("--tpm", type=int, help="allow this many tokens a minute (counted per second); 429 beyond")
    args = parser.parse_args()
    limit = None
    if args.rpm or args.tpm:
        limit = RateLimit(requests=args.rpm and args.rpm // 60, tokens=args.tpm and args.tpm // 60)
    server = DemoServer(args.latency, args.per_token, args.port, rate_limit=limit).start()
    print(f"serving {server.base_url} (latency {args.latency} s); Ctrl-C stops", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
