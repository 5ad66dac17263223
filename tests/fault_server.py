"""An OpenAI-compatible server on 127.0.0.1 that misbehaves on request, for the reliability tests.

It is llmnb's demo server (latency, many requests at once, in-flight counters, connections the
client closed early) plus a script of faults: each request takes the next fault, if any. Every
request's body is kept in `bodies`.

It also calls tools. A request with `tools` is answered with tool calls: by default one call of
each tool offered (or of the one `tool_choice` names), its arguments an example of the tool's
parameter schema (`tool_arguments[name]` sets them); `script_tools(turn, ...)` gives the calls of
the next turns instead, each turn a list of (name, arguments). A request whose messages end with
tool results is answered with text that repeats them ("Tool results: id=content; ..."), unless
`keep_calling` is set (a model that never stops asking) or a scripted turn is left. Streamed,
the calls come as OpenAI sends them: the id and name in a call's first fragment, the arguments in
pieces, the calls' fragments interleaved by `index`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
from collections import deque
from dataclasses import dataclass

from llmnb.demo_server import REPLY, DemoServer


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


class FaultServer(DemoServer):
    def __init__(self, latency: float = 0.0, **kwargs):
        super().__init__(latency=latency, **kwargs)
        self.faults: deque[Fault] = deque()
        self.bodies: list[dict] = []
        self.refuse_json_schema = False
        self.stream_faults: deque[StreamFault] = deque()
        self.refuse_stream_options = False
        self.refuse_tools = False  # answer a request with tools as a server without tool calls does
        self.keep_calling = False
        self.tool_arguments: dict[str, dict] = {}
        self.tool_turns: deque[list[tuple[str, dict]]] = deque()

    def script(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    async def respond(self, body: dict):
        self.bodies.append(body)
        if self.refuse_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            return self._error(500, "Input should be 'text' or 'json_object'")
        if self.refuse_stream_options and "stream_options" in body:
            return self._error(400, "Unrecognized request argument supplied: stream_options")
        if self.refuse_tools and "tools" in body:
            return self._error(400, "'tools' is not supported by this server")
        fault = self.faults.popleft() if self.faults else None
        if fault is None:
            return await super().respond(body)
        if fault.kind == "status":
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            status, headers_, payload = self._error(fault.status, f"injected {fault.status}")
            return status, {**headers_, **headers}, payload
        if fault.kind == "echo":
            return self._error(fault.status, f"Incorrect API key provided: {self.last_headers.get('authorization')}")
        if fault.kind == "drop":
            return None
        if fault.kind == "hang":
            await asyncio.Event().wait()
        if fault.kind == "malformed":
            return 200, {"Content-Type": "application/json"}, b'{"choices": [ this is not json'
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            return await super().respond(body)
        if fault.kind == "trickle":
            status, headers, payload = await super().respond(body)
            slow = Slow(payload)
            slow.seconds = fault.seconds
            return status, headers, slow
        saved, self.reply = self.reply, fault.text
        try:
            status, headers, payload = await super().respond({k: v for k, v in body.items() if k != "response_format"})
        finally:
            self.reply = saved
        return status, headers, payload

    # -- tool calls -------------------------------------------------------------------------------
    def script_tools(self, *turns: list[tuple[str, dict]]) -> None:
        self.tool_turns.extend(turns)

    def ask_tools(self, body: dict) -> list[dict]:
        """The calls this request is answered with (none: answer with text): the next scripted
        turn, else one call of each tool offered (or of the one tool_choice names) until tool
        results come back (and after them too, with `keep_calling`)."""
        tools = [t["function"] for t in body.get("tools") or ()]
        messages = body.get("messages") or [{}]
        if not tools or body.get("tool_choice") == "none":
            return []
        if self.tool_turns:
            named = self.tool_turns.popleft()
        elif messages[-1].get("role") == "tool" and not self.keep_calling:
            return []
        else:
            choice = body.get("tool_choice")
            if isinstance(choice, dict):
                tools = [t for t in tools if t["name"] == choice["function"]["name"]]
            named = [(t["name"], self.tool_arguments.get(t["name"]) or self.arguments_for(t)) for t in tools]
        return [{"id": f"call_{self.requests}_{i}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(arguments)}}
                for i, (name, arguments) in enumerate(named)]

    def answer(self, body: dict) -> str:
        """After tool results (and with no schema to fit), the results repeated, so tests see they arrived."""
        messages = body.get("messages") or [{}]
        if messages[-1].get("role") != "tool" or body.get("response_format"):
            return super().answer(body)
        results = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            results.insert(0, f"{m.get('tool_call_id')}={m.get('content')}")
        return "Tool results: " + "; ".join(results)

    async def send(self, writer: asyncio.StreamWriter, head: bytes, payload: bytes) -> None:
        if not isinstance(payload, Slow):
            return await super().send(writer, head, payload)
        writer.write(head)
        step = max(1, len(payload) // 20)
        for i in range(0, len(payload), step):
            await asyncio.sleep(payload.seconds / 20)
            writer.write(payload[i:i + step])
            await writer.drain()

    # -- streamed answers: each takes the next stream fault, if any --------------------------------
    def script_stream(self, *faults: StreamFault) -> None:
        self.stream_faults.extend(faults)

    async def send_stream(self, reader, writer, answer) -> bool:
        answer.fault = self.stream_faults.popleft() if self.stream_faults else None
        return await super().send_stream(reader, writer, answer)

    async def send_event(self, writer, answer, index, event, hangup) -> bool:
        fault = answer.fault
        if fault is not None and index > fault.after:  # index 0 is the role chunk, then one per token
            if fault.kind == "drop":
                writer.transport.abort()
                return False
            if fault.kind == "error":  # the error event ends the body; the stream counts as ended early
                event = b'data: {"error": {"message": "overloaded"}}\n\n'
                await super().send_event(writer, answer, index, event, hangup)
                writer.write(b"0\r\n\r\n")
                return False
            await hangup  # stall: the connection stays open and nothing more comes, until the client leaves
            return False
        return await super().send_event(writer, answer, index, event, hangup)

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


class NumberedServer(FaultServer):
    """Each plain answer names its place in the order answered ("answer 7"), so a kept answer is
    told from a new one; schema answers and scripted replies are as usual."""

    answered = 0

    def answer(self, body: dict) -> str:
        if body.get("response_format") or self.reply != REPLY:
            return super().answer(body)
        self.answered += 1
        return f"answer {self.answered}"
