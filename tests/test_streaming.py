"""Streamed calls and conversations against a real (misbehaving) HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time

import pytest
from fault_server import KEY, Fault, StreamFault, remote, resources_left

from llmnb import ConfigError, ExtractError, ModelCallError, Thread, Timeline, listen, sync
from llmnb.demo_answers import tokens


async def collect(stream) -> list[str]:
    return [piece async for piece in stream]


def test_pieces_join_into_the_answer_and_the_timeline_sees_the_first_token(fault_server):
    fault_server.latency, fault_server.per_token = 0.3, 0.02
    model = remote(fault_server)
    events = []

    async def main():
        with listen(events.append), Timeline(display=False) as tl:
            pieces = await collect(model.stream_async("Hello"))
        return pieces, tl

    pieces, tl = asyncio.run(main())
    assert "".join(pieces) == fault_server.reply and len(pieces) == len(fault_server.reply.split())
    kinds = [e.kind for e in events]
    assert kinds[:4] == ["created", "waiting", "started", "first_token"] and kinds[-1] == "finished"
    assert kinds.count("first_token") == 1 and kinds.count("progress") == len(pieces)
    at = {e.kind: e.time for e in events if e.kind != "progress"}
    assert 0.25 <= at["first_token"] - at["started"] < at["finished"] - at["started"]
    assert [e.tokens_out for e in events if e.kind == "progress"] == list(range(1, len(pieces) + 1))
    (row,) = tl.records()
    assert (row["method"], row["status"], row["tokens_in"], row["tokens_out"]) == ("stream", "done", 10, len(pieces))
    first = fault_server.bodies[0]
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}


def test_a_stream_dropped_midway_keeps_its_text_and_is_not_sent_again(fault_server):
    fault_server.script_stream(StreamFault.drop(after=3))
    model = remote(fault_server, max_retries=3)
    pieces = []

    async def main():
        with Timeline(display=False) as tl, pytest.raises(ModelCallError) as info:
            async for piece in model.stream_async("Hello"):
                pieces.append(piece)
        return info.value, tl

    error, tl = asyncio.run(main())
    assert fault_server.requests == 1 and len(pieces) == 3
    assert error.partial == "".join(pieces) == "".join(tokens(fault_server.reply)[:3])
    assert "stopped after 3 piece(s)" in str(error) and ".partial" in str(error)
    assert [r["status"] for r in tl.records()] == ["failed"]


def test_failures_before_the_first_piece_are_retried(fault_server):
    fault_server.script(Fault.http(503, retry_after=0))
    fault_server.script_stream(StreamFault.drop(after=0))  # headers, then the connection drops
    pieces = remote(fault_server, max_retries=3).stream("Hello")
    assert "".join(pieces) == fault_server.reply
    assert fault_server.requests == 3


def test_a_stalled_stream_ends_within_its_timeout(fault_server):
    fault_server.script_stream(StreamFault.stall(after=2))
    model = remote(fault_server, timeout=0.5, max_retries=3)
    start = time.perf_counter()
    with pytest.raises(ModelCallError, match="no answer within timeout=0.5s") as info:
        list(model.stream("Hello"))
    assert time.perf_counter() - start < 3 and fault_server.requests == 1
    assert info.value.partial == "".join(tokens(fault_server.reply)[:2])
    fault_server.latency = 5  # no first token at all: each attempt is bounded, then the call gives up
    start = time.perf_counter()
    with pytest.raises(ModelCallError, match="no answer within timeout=0.5s") as info:
        list(remote(fault_server, timeout=0.5, max_retries=1).stream("Hello"))
    assert info.value.partial is None and info.value.attempts == 2 and time.perf_counter() - start < 4


@pytest.mark.parametrize("leave", ["break", "exception", "aclose"])
def test_leaving_early_closes_the_connection(fault_server, leave):
    fault_server.per_token = 0.2
    model = remote(fault_server)

    async def main():
        with Timeline(display=False) as tl:
            stream = model.stream_async("Hello")
            with contextlib.suppress(ValueError):
                async for _ in stream:
                    if leave == "break":
                        break
                    if leave == "exception":
                        raise ValueError("the caller's own error")
                    await stream.aclose()
            del stream  # a `break` leaves the generator to be closed when dropped, as `for` in a cell does
            for _ in range(50):
                if fault_server.closed_early:
                    break
                await asyncio.sleep(0.05)
        return tl

    tl = asyncio.run(main())
    assert fault_server.closed_early == 1 and fault_server.requests == 1
    assert [r["status"] for r in tl.records()] == ["cancelled"]


def test_stream_from_sync_code_and_from_a_running_loop(fault_server):
    model = remote(fault_server)
    assert "".join(model.stream("Hello")) == fault_server.reply

    async def cell():  # a notebook cell iterating the blocking twin
        return list(model.stream("Hello"))

    assert "".join(asyncio.run(cell())) == fault_server.reply
    fault_server.per_token = 0.2
    with Timeline(display=False) as tl:
        for _ in model.stream("Hello"):
            break
    for _ in range(50):
        if fault_server.closed_early:
            break
        time.sleep(0.05)
    assert fault_server.closed_early == 1 and tl.records()[-1]["status"] == "cancelled"


def test_servers_without_stream_options_get_the_request_without(fault_server):
    fault_server.refuse_stream_options = True
    model = remote(fault_server)
    assert "".join(model.stream("Hello")) == fault_server.reply
    assert "".join(model.stream("Again")) == fault_server.reply
    assert model.backend.stream_usage is False
    assert ["stream_options" in b for b in fault_server.bodies] == [True, False, False]


def test_100_concurrent_streams_leave_nothing_behind(fault_server):
    fault_server.latency, fault_server.per_token = 0.3, 0.005
    model = remote(fault_server, max_concurrency=100)

    async def batch():
        return await asyncio.gather(*[collect(model.stream_async(f"call {i}")) for i in range(100)])

    async def main():
        await batch()  # the first batch makes the client and its connections once
        before = await resources_left(model)
        results = await batch()
        return before, await resources_left(model), results

    before, after, results = asyncio.run(main())
    assert ["".join(r) for r in results] == [fault_server.reply] * 100
    assert fault_server.max_in_flight == 100
    assert after == before  # asyncio tasks, threads, open files, sockets


def test_the_key_never_appears_in_a_stream_failure(fault_server, capsys):
    events, texts = [], []
    model = remote(fault_server, max_retries=0)
    fault_server.script(Fault.echo_key(), Fault.http(500))
    fault_server.script_stream(StreamFault.drop(after=2))
    with listen(events.append), Timeline(display=False) as tl:
        for _ in range(2):
            with pytest.raises(ModelCallError) as info:
                list(model.stream("hi"))
            texts += [str(info.value), repr(info.value), repr(info.value.__cause__), repr(info.value.__context__)]
        with pytest.raises(ModelCallError) as info:
            list(model.stream("hi"))  # the third request streams, then drops
        texts += [str(info.value), repr(info.value.__cause__), repr(info.value.partial)]
    assert "Bearer ***" in texts[0]  # the server echoed the key; scrubbed
    texts += [repr(e) for e in events] + [repr(tl.records()), tl.to_text(), tl.to_svg()]
    captured = capsys.readouterr()
    assert not [t for t in [*texts, captured.out, captured.err] if KEY in t]


def test_threads_and_message_lists_are_sent_as_given(fault_server):
    model = remote(fault_server)
    thread = Thread(inst="Be brief.").user("Hi").assistant("Hello!").user("How are you?")
    assert len(thread) == 4 and model.generate(thread) == fault_server.reply
    assert fault_server.bodies[-1]["messages"] == thread.messages
    messages = [{"role": "user", "content": "Hi"}]
    assert "".join(model.stream(messages, inst="Be brief.")) == fault_server.reply
    assert fault_server.bodies[-1]["messages"] == [{"role": "system", "content": "Be brief."}, *messages]
    assert model.classify(["spam", "not spam"], Thread().user("Win money!")) == "spam"
    with Timeline(display=False) as tl:
        model.generate(thread)
    assert tl.records()[0]["name"] == "How are you?"  # a conversation's row is named by its last question


@pytest.mark.parametrize("prompt, inst, error, match", [
    ([{"content": "hi"}], None, ConfigError, "role and a content"),
    ([{"role": "robot", "content": "hi"}], None, ConfigError, "unknown role 'robot'"),
    (["hi"], None, TypeError, "must be a dict like"),
    ([], None, ConfigError, "no messages"),
    (Thread("Be brief.").user("hi"), "Be kind.", ConfigError, "already has a system message"),
    ([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}], "y", ConfigError, "drop inst="),
    (42, None, TypeError, "a string, a list of .* or an llmnb.Thread"),
])
def test_bad_prompts_say_what_to_give(fault_server, prompt, inst, error, match):
    model = remote(fault_server)
    with pytest.raises(error, match=match):
        model.generate(prompt, inst=inst)
    with pytest.raises(error, match=match):
        list(model.stream(prompt, inst=inst))
    assert fault_server.requests == 0


def test_an_answer_cut_off_at_max_tokens_says_so(fault_server):
    model = remote(fault_server)
    with pytest.raises(ExtractError, match=r"cut off at max_tokens=2.*raise max_tokens") as info:
        model.extract(list[str], "Name three colours.", max_tokens=2)
    assert info.value.raw and "EOF" not in str(info.value)
    assert model.extract(list[str], "Name three colours.", max_tokens=50) == [fault_server.reply]


def test_ctrl_c_while_a_sync_stream_waits_ends_the_call(fault_server, sigint_raises):
    fault_server.per_token = 0.5
    model = remote(fault_server)
    events, pieces = [], []
    threading.Timer(0.6, lambda: os.kill(os.getpid(), signal.SIGINT)).start()  # the stop button
    with listen(events.append), pytest.raises(KeyboardInterrupt):
        for piece in model.stream("Hello"):
            pieces.append(piece)  # noqa: PERF402 (kept one by one: the interrupt comes midway)
    assert 1 <= len(pieces) < len(tokens(fault_server.reply)) and events[-1].kind == "cancelled"
    for _ in range(50):
        if fault_server.closed_early:
            break
        time.sleep(0.05)
    assert fault_server.closed_early == 1 and sync.private_loop_tasks() == 0


def test_a_thread_with_its_own_system_message_still_gets_the_json_instruction(fault_server):
    model = remote(fault_server)
    assert model.extract(list[str], Thread("You know colours.").user("Name one colour.")) == [fault_server.reply]
    system = fault_server.bodies[-1]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You know colours.\nReply with JSON only")


def test_an_error_sent_within_the_stream_ends_it_with_the_text_so_far(fault_server):
    fault_server.script_stream(StreamFault.error(after=2))
    with pytest.raises(ModelCallError, match="stopped after 2 piece.*overloaded") as info:
        list(remote(fault_server).stream("Hello"))
    assert info.value.partial == "".join(tokens(fault_server.reply)[:2]) and fault_server.requests == 1
