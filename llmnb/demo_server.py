"""A stand-in for a remote model: an OpenAI-compatible chat server on 127.0.0.1 that answers
every request after a fixed latency, many requests at once, with no model behind it. Asked to
stream (`"stream": true`), it sends its answer a token at a time as server-sent events: the first
after `latency`, each next one `per_token` later.

For teaching and benchmarking offline: it shows what concurrency buys against a real API, where
the time is spent waiting for the network and the server, not computing locally.

    with DemoServer(latency=0.5) as server:
        model = Models.create("openai:demo", base_url=server.base_url)

or standalone: `python -m llmnb.demo_server --port 8000 --latency 0.5`. `rate_limit=RateLimit(
requests=50)` (or `--rpm 3000`) makes it answer as a rate-limited API does: 429 with Retry-After
beyond the limit, and OpenAI's x-ratelimit-* headers on every answer.

Sent `tools`, it asks for every tool once in one turn (or only the one `tool_choice` names), with
arguments made from each tool's parameter schema (a parameter's default where it has one), and
answers the next turn with what the tools returned. `tool_rounds=N` makes it ask N turns in a row.
Streamed, the tool calls come as OpenAI sends them: in fragments, by index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field

REPLY = "I'm doing well, thank you. How about you?"
PROMPT_TOKENS = 10  # what every answer reports as the prompt's size


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


def tokens(text: str) -> list[str]:
    """The demo's tokens: each word with the space before it, so they join back into the text."""
    return re.findall(r"\s*\S+", text)


@dataclass
class Streamed:
    """A streamed answer: the text's tokens, to send as server-sent events one by one."""

    body: dict
    pieces: list[str]
    finish: str
    fault: object = None  # for servers that misbehave on purpose (the tests' fault server)
    tool_calls: list[dict] = field(default_factory=list)


class DemoServer:
    def __init__(self, latency: float = 0.5, per_token: float = 0.0, port: int = 0, reply: str = REPLY,
                 rate_limit: RateLimit | None = None, tool_rounds: int = 1):
        self.latency, self.per_token, self.reply = latency, per_token, reply
        self.tool_rounds = tool_rounds
        self.rate_limit = rate_limit
        self.port = port
        self.in_flight = self.max_in_flight = self.requests = self.closed_early = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.last_headers: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

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

    def answer(self, body: dict) -> str:
        """The reply text: a fixed sentence (after tool results: what they said), or a small JSON
        value of the requested schema."""
        fmt = body.get("response_format") or {}
        schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema")
        if schema is None:
            results = tool_results(body.get("messages") or [])
            return f"The tools said: {' | '.join(results)}" if results else self.reply
        return json.dumps(self._example(schema, schema.get("$defs", {})))

    def ask_tools(self, body: dict) -> list[dict]:
        """The tool calls to ask for: every tool once (or the one tool_choice names), until
        `tool_rounds` turns have asked."""
        tools, choice = body.get("tools") or [], body.get("tool_choice")
        asked = sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant" and m.get("tool_calls"))
        if not tools or choice == "none" or asked >= self.tool_rounds:
            return []
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        functions = [t["function"] for t in tools if named in (None, t["function"]["name"])]
        return [{"id": f"call_{self.requests}_{i}", "type": "function",
                 "function": {"name": f["name"], "arguments": json.dumps(self.arguments_for(f))}}
                for i, f in enumerate(functions)]

    def arguments_for(self, function: dict):
        """Arguments that fit a tool's parameter schema (its parameters' defaults where given)."""
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        return self._example(schema, schema.get("$defs", {}))

    def _example(self, schema: dict, defs: dict):
        if "default" in schema:
            return schema["default"]
        if "$ref" in schema:
            return self._example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        if "enum" in schema:
            return schema["enum"][0]
        if "anyOf" in schema:
            return self._example(schema["anyOf"][0], defs)
        kind = schema.get("type")
        if kind == "object":
            return {k: self._example(v, defs) for k, v in schema.get("properties", {}).items()}
        if kind == "array":
            return [self._example(schema.get("items", {}), defs)]
        return {"integer": 1, "number": 1.0, "boolean": True, "null": None}.get(str(kind), self.reply)

    async def respond(self, body: dict) -> tuple[int, dict, bytes | Streamed] | None:
        """One answer: (status, headers, payload), or None to close the connection unanswered.
        Subclasses override this to inject faults; the latency is applied by the caller."""
        calls = self.ask_tools(body)
        pieces = [] if calls else tokens(self.answer(body))
        finish = "tool_calls" if calls else "stop"
        if body.get("max_tokens") is not None and len(pieces) > body["max_tokens"]:
            pieces, finish = pieces[: body["max_tokens"]], "length"
        if body.get("stream"):
            return 200, {"Content-Type": "text/event-stream"}, Streamed(body, pieces, finish, tool_calls=calls)
        await asyncio.sleep(self.per_token * len(pieces))
        message = {"role": "assistant", "content": "".join(pieces) if not calls else None,
                   **({"tool_calls": calls} if calls else {})}
        payload = json.dumps({
            "id": f"demo-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "demo"),
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(pieces),
                      "total_tokens": PROMPT_TOKENS + len(pieces)},
        }).encode()
        return 200, {"Content-Type": "application/json"}, payload

    def _admit(self, body: dict) -> tuple[bool, dict[str, str]]:
        if self.rate_limit is None:
            return True, {}
        return self.rate_limit.admit(PROMPT_TOKENS + len(tokens(self.answer(body))))

    async def send(self, writer: asyncio.StreamWriter, head: bytes, payload: bytes) -> None:
        """Write one answer. Subclasses override this to send it slowly."""
        writer.write(head + payload)
        await writer.drain()

    async def send_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: Streamed) -> bool:
        """Send a streamed answer, a token every `per_token` seconds, in chunked encoding so the
        connection stays open for the next request. False if the client hung up first (counted)."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        hangup = asyncio.ensure_future(reader.read(1))  # the client sends nothing more until answered
        try:
            for i, event in enumerate(self.events(answer)):
                if 1 < i <= len(answer.pieces):  # the role chunk and the first token go out at once, after the latency
                    await asyncio.wait([hangup], timeout=self.per_token)
                if hangup.done() or not await self.send_event(writer, answer, i, event, hangup):
                    self.closed_early += 1
                    return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            hangup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hangup  # the next request may read the connection once this read has let go

    async def send_event(self, writer: asyncio.StreamWriter, answer: Streamed, index: int, event: bytes,
                         hangup: asyncio.Future) -> bool:
        """Write one event of `answer` (`index` counts from 0, the role chunk); False to end the
        stream. Subclasses override this to cut or stall a stream (until `hangup`, the client's close)."""
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        try:
            await writer.drain()
        except ConnectionError:
            return False
        return True

    def events(self, answer: Streamed) -> list[bytes]:
        """The server-sent events of a streamed answer, as OpenAI sends them: a role chunk, one
        chunk per token, the finish, the usage (when asked) and [DONE]."""
        body = answer.body
        base = {"id": f"demo-{self.requests}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model", "demo")}

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        chunks = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in answer.pieces),
                  *(chunk({"tool_calls": [piece]}) for piece in call_fragments(answer.tool_calls)),
                  chunk({}, answer.finish)]
        if (body.get("stream_options") or {}).get("include_usage"):
            n = len(answer.pieces)
            chunks.append({**base, "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n,
                                                            "total_tokens": PROMPT_TOKENS + n}})
        return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]

    async def _answer_unless_closed(self, reader: asyncio.StreamReader, body: dict):
        """Wait the latency and build the answer, unless the client hangs up first (counted)."""
        async def work():
            await asyncio.sleep(self.latency)
            return await self.respond(body)

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
            while True:  # keep-alive: one connection serves many requests
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                self.last_headers = headers  # for tests of what clients send
                body = json.loads(await reader.readexactly(int(headers.get("content-length") or 0)) or b"{}")
                self.requests += 1
                allowed, limit_headers = self._admit(body)
                if allowed:
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                    try:
                        answer, hangup = await self._answer_unless_closed(reader, body)
                    finally:
                        self.in_flight -= 1
                else:  # refused at once, as a rate limiter in front of a server does
                    answer, hangup = too_many_requests(), None
                if answer is None:
                    return
                status, headers, payload = answer
                headers = {**headers, **limit_headers}
                if isinstance(payload, Streamed):
                    if not await self.send_stream(reader, writer, payload):
                        return
                    continue
                lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", f"Content-Length: {len(payload)}",
                         *(f"{k}: {v}" for k, v in headers.items())]
                await self.send(writer, ("\r\n".join(lines) + "\r\n\r\n").encode(), payload)
                with contextlib.suppress(asyncio.CancelledError):
                    if hangup is not None:
                        await hangup
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def tool_results(messages: list[dict]) -> list[str]:
    """The contents of the tool results after the last assistant turn that asked for tools."""
    results: list[str] = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            results = []
        elif m.get("role") == "tool":
            results.append(str(m.get("content")))
    return results


def call_fragments(calls: list[dict], parts: int = 3) -> list[dict]:
    """Streamed tool-call deltas as OpenAI sends them: each call's id and name first, then its
    arguments in `parts` fragments, the calls' fragments interleaved (told apart by index)."""
    out = [{"index": i, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": ""}}
           for i, c in enumerate(calls)]
    for k in range(parts):
        for i, c in enumerate(calls):
            text = c["function"]["arguments"]
            size = -(-len(text) // parts)
            if text[k * size:(k + 1) * size]:
                out.append({"index": i, "function": {"arguments": text[k * size:(k + 1) * size]}})
    return out


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
