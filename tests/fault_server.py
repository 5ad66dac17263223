"""The tests' OpenAI-compatible servers on 127.0.0.1: llmnb's demo server (latency, many requests
at once, in-flight counters, connections the client closed early), made to misbehave on request.

`FaultServer` keeps every request's body (`bodies`) and the last one's headers, and takes a
script of faults: each request takes the next fault, if any (`script`), and each streamed answer
the next stream fault (`script_stream`). It answers through `ScriptedAnswers`: a request with
`tools` gets one call of each tool offered (or of the one `tool_choice` names), its arguments an
example of the tool's parameter schema (`answers.tool_arguments[name]` sets them), or the calls of
the next scripted turn (`script_tools(turn, ...)`, each turn a list of (name, arguments)); a
request whose messages end with tool results gets text that repeats them ("Tool results:
id=content; ..."). `answers=Answers()` gives it the demo server's own answers instead.
`NumberedServer` numbers its plain answers; `EchoServer` repeats each request's last user message
(the Batch API tests' upstream). `remote(server)` is a model on any of them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
from collections import deque
from dataclasses import dataclass

from llmnb import Models
from llmnb.demo_answers import Answers, calls
from llmnb.demo_server import DemoServer, Streamed

KEY = "sk-test-SECRET-do-not-leak-4242"  # the key of `remote`: it must never show anywhere


def remote(server: DemoServer, **options):
    """A model on `server`, with KEY as its API key."""
    return Models.create("openai:test", base_url=server.base_url, api_key=KEY, **options)


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int = 0
    retry_after: float | None = None
    text: str = ""
    seconds: float = 0.0

    @staticmethod
    def http(status: int, retry_after: float | None = None) -> Fault:
        return Fault("status", status=status, retry_after=retry_after)

    @staticmethod
    def echo_key(status: int = 401) -> Fault:  # an error repeating the Authorization header, as some servers do
        return Fault("echo", status=status)

    @staticmethod
    def drop() -> Fault:  # close the connection without an answer
        return Fault("drop")

    @staticmethod
    def hang() -> Fault:  # never answer
        return Fault("hang")

    @staticmethod
    def malformed() -> Fault:  # a 200 whose body is not JSON
        return Fault("malformed")

    @staticmethod
    def content(text: str) -> Fault:  # this exact message content (e.g. invalid for the schema)
        return Fault("content", text=text)

    @staticmethod
    def delay(seconds: float) -> Fault:
        return Fault("delay", seconds=seconds)

    @staticmethod
    def trickle(seconds: float) -> Fault:  # a 200 whose body arrives a few bytes at a time over `seconds`
        return Fault("trickle", seconds=seconds)


@dataclass(frozen=True)
class StreamFault:
    """What happens to a streamed answer after `after` tokens: the connection drops, or it stalls."""

    kind: str
    after: int

    @staticmethod
    def drop(after: int) -> StreamFault:
        return StreamFault("drop", after)

    @staticmethod
    def stall(after: int) -> StreamFault:
        return StreamFault("stall", after)

    @staticmethod
    def error(after: int) -> StreamFault:  # an error event within the stream, as OpenAI sends one
        return StreamFault("error", after)


class Slow(bytes):
    """A payload to send a few bytes at a time, spread over `seconds`."""

    seconds = 0.0


@dataclass
class FaultyStream(Streamed):
    """A streamed answer that meets `fault` on its way."""

    fault: StreamFault | None = None


class ScriptedAnswers(Answers):
    """The demo's answers, with the tool calls a test chooses (see the module's docstring)."""

    def __init__(self):
        super().__init__()
        self.tool_arguments: dict[str, dict] = {}
        self.tool_turns: deque[list[tuple[str, dict]]] = deque()

    def tool_calls(self, body: dict, number: int) -> list[dict]:
        """The next scripted turn, else one call of each tool offered (or of the one tool_choice
        names) until tool results come back; none (an answer in text) after them."""
        tools = [t["function"] for t in body.get("tools") or ()]
        if not tools or body.get("tool_choice") == "none":
            return []
        if self.tool_turns:
            return calls(number, self.tool_turns.popleft())
        if (body.get("messages") or [{}])[-1].get("role") == "tool":
            return []
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            tools = [t for t in tools if t["name"] == choice["function"]["name"]]
        return calls(number, [(t["name"], self.tool_arguments.get(t["name"]) or self.arguments_for(t)) for t in tools])

    def text(self, body: dict) -> str:
        """After tool results (and with no schema to fit), the results repeated, so tests see they arrived."""
        messages = body.get("messages") or [{}]
        if messages[-1].get("role") != "tool" or body.get("response_format"):
            return super().text(body)
        results = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            results.insert(0, f"{m.get('tool_call_id')}={m.get('content')}")
        return "Tool results: " + "; ".join(results)


class FaultServer(DemoServer):
    def __init__(self, latency: float = 0.0, answers: Answers | None = None, **kwargs):
        super().__init__(latency=latency, answers=answers if answers is not None else ScriptedAnswers(), **kwargs)
        self.faults: deque[Fault] = deque()
        self.stream_faults: deque[StreamFault] = deque()
        self.bodies: list[dict] = []
        self.last_headers: dict[str, str] = {}
        self.refuse_json_schema = False
        self.refuse_stream_options = False
        self.refuse_tools = False  # answer a request with tools as a server without tool calls does

    def script(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def script_stream(self, *faults: StreamFault) -> None:
        self.stream_faults.extend(faults)

    def script_tools(self, *turns: list[tuple[str, dict]]) -> None:
        self.answers.tool_turns.extend(turns)

    async def respond(self, body: dict, headers: dict[str, str]):
        self.bodies.append(body)
        self.last_headers = headers
        if self.refuse_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            return self._error(500, "Input should be 'text' or 'json_object'")
        if self.refuse_stream_options and "stream_options" in body:
            return self._error(400, "Unrecognized request argument supplied: stream_options")
        if self.refuse_tools and "tools" in body:
            return self._error(400, "'tools' is not supported by this server")
        answer = await self._faulty(body, headers)
        if answer is not None and isinstance(answer[2], Streamed):  # each streamed answer takes the next stream fault
            status, headers_, stream = answer
            fault = self.stream_faults.popleft() if self.stream_faults else None
            return status, headers_, FaultyStream(stream.answer, stream.include_usage, fault)
        return answer

    async def _faulty(self, body: dict, headers: dict[str, str]):
        """The answer as the next fault, if any, makes it."""
        fault = self.faults.popleft() if self.faults else None
        if fault is None:
            return await super().respond(body, headers)
        if fault.kind == "status":
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            status, headers_, payload = self._error(fault.status, f"injected {fault.status}")
            return status, {**headers_, **extra}, payload
        if fault.kind == "echo":
            return self._error(fault.status, f"Incorrect API key provided: {headers.get('authorization')}")
        if fault.kind == "drop":
            return None
        if fault.kind == "hang":
            await asyncio.Event().wait()
        if fault.kind == "malformed":
            return 200, {"Content-Type": "application/json"}, b'{"choices": [ this is not json'
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return await super().respond(body, headers)
        if fault.kind == "trickle":
            status, headers_, payload = await super().respond(body, headers)
            slow = Slow(payload)
            slow.seconds = fault.seconds
            return status, headers_, slow
        return await self.deliver(body, self.answers.answer(body, self.requests, text=fault.text))  # "content"

    async def send(self, writer: asyncio.StreamWriter, head: bytes, payload: bytes) -> None:
        if not isinstance(payload, Slow):
            return await super().send(writer, head, payload)
        writer.write(head)
        step = max(1, len(payload) // 20)
        for i in range(0, len(payload), step):
            await asyncio.sleep(payload.seconds / 20)
            writer.write(payload[i:i + step])
            await writer.drain()

    async def send_event(self, writer, stream, index, event, hangup) -> bool:
        fault = stream.fault if isinstance(stream, FaultyStream) else None
        if fault is not None and index > fault.after:  # index 0 is the role chunk, then one per token
            if fault.kind == "drop":
                writer.transport.abort()
                return False
            if fault.kind == "error":  # the error event ends the body; the stream counts as ended early
                event = b'data: {"error": {"message": "overloaded"}}\n\n'
                await super().send_event(writer, stream, index, event, hangup)
                writer.write(b"0\r\n\r\n")
                return False
            await hangup  # stall: the connection stays open and nothing more comes, until the client leaves
            return False
        return await super().send_event(writer, stream, index, event, hangup)

    @staticmethod
    def _error(status: int, message: str):
        payload = json.dumps({"error": {"message": message, "type": "injected", "code": status}}).encode()
        return status, {"Content-Type": "application/json"}, payload


async def resources_left(model) -> tuple[int, int, int, int]:
    """(asyncio tasks, threads, open files, sockets) of this process once `model`'s HTTP client is
    closed, for leak checks: closing the client closes its keep-alive pool, whose size varies with
    timing, so what is still open afterwards was left behind."""
    model.close()
    # The collection can start work of its own: openai's client `__del__` schedules `aclose()` on
    # whatever loop is running, for clients other tests left behind. Such tasks, and the close
    # above, end by themselves; wait for them (a bounded wait, so a task that never ends still
    # counts) instead of counting them as leaks, which failed CI once (2 tasks before, 1 after).
    await asyncio.sleep(0.3)
    gc.collect()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=5)
    fds = os.listdir("/proc/self/fd")
    sockets = sum(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
                  for fd in fds if os.path.exists(f"/proc/self/fd/{fd}"))
    # asyncio's default executor (name resolution) keeps up to a few idle workers: bounded, not ours
    threads = sum(not t.name.startswith("asyncio_") for t in threading.enumerate())
    return len(asyncio.all_tasks()), threads, len(fds), sockets


class EchoAnswers(ScriptedAnswers):
    """Each plain answer repeats the last user message ("echo: ..."), so it tells which request it
    belongs to; schema and tool answers are as usual."""

    def text(self, body: dict) -> str:
        if body.get("response_format") or body.get("tools") or not body.get("messages"):  # or GET /v1/models
            return super().text(body)
        return "echo: " + last_user_message(body)


class EchoServer(FaultServer):
    """Answers with EchoAnswers; a message containing FAIL gets a 400 with a message of its own.
    Keeps each request's last user message (`asked`)."""

    def __init__(self, **kwargs):
        super().__init__(answers=EchoAnswers(), **kwargs)
        self.asked: list[str] = []

    async def respond(self, body: dict, headers: dict[str, str]):
        text = last_user_message(body)
        if body.get("messages"):
            self.asked.append(text)
        if "FAIL" in text:
            return self._error(400, f"this server refuses {text!r}")
        return await super().respond(body, headers)


def last_user_message(body: dict) -> str:
    return next((m["content"] for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")


class NumberedAnswers(ScriptedAnswers):
    """Each plain answer names its place in the order answered ("answer 7"), so a kept answer is
    told from a new one; schema answers are as usual."""

    answered = 0

    def text(self, body: dict) -> str:
        if body.get("response_format"):
            return super().text(body)
        self.answered += 1
        return f"answer {self.answered}"


class NumberedServer(FaultServer):
    """A fault server whose plain answers are numbered (NumberedAnswers)."""

    def __init__(self, **kwargs):
        super().__init__(answers=NumberedAnswers(), **kwargs)
