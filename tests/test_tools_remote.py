"""The tool loop against a real OpenAI-compatible HTTP server on 127.0.0.1 (llmnb's demo server,
which asks for every tool it is sent, then answers from their results): concurrency of one turn,
errors reaching the model, max_steps, tool_choice, streaming with tool-call fragments, Thread,
the timeline, traces and OpenTelemetry (the magics' --tools: tests/test_magics.py)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fault_server import FaultServer

import llmnb
from llmnb import MaxStepsError, Models, Thread, Timeline
from llmnb.demo_answers import PROMPT_TOKENS, Answers

SLOW = 0.6
LATENCY = 0.05


async def weather(city: str = "Lisbon") -> str:
    """Today's weather in a city."""
    await asyncio.sleep(SLOW)
    return f"sunny in {city}"


def hotels(city: str = "Lisbon", nights: int = 2) -> list[str]:
    """Hotels free in a city (a blocking client: it runs in a thread)."""
    time.sleep(SLOW)
    return [f"{city} Palace", f"{nights} nights"]


def broken(city: str = "Lisbon") -> str:
    """A tool whose service is down."""
    raise ConnectionError(f"the {city} service is down")


@pytest.fixture
def server():
    """The demo server's own answers, each request's body kept (`bodies`)."""
    with FaultServer(latency=LATENCY, answers=Answers()) as s:
        yield s


@pytest.fixture
def model(server):
    m = Models.create("openai:demo", base_url=server.base_url, api_key="k")
    yield m
    m.close()


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def test_two_slow_tools_of_one_turn_run_at_once(model, server):
    start = time.perf_counter()
    answer = model.generate("Plan a trip to Lisbon", tools=[weather, hotels])
    wall = time.perf_counter() - start
    assert wall < 1.5 * SLOW, wall  # one after another: 2 x SLOW and the two turns
    assert "sunny in Lisbon" in answer and "Lisbon Palace" in answer
    first, second = server.bodies
    assert [t["function"]["name"] for t in first["tools"]] == ["weather", "hotels"]
    assert first["tools"][1]["function"]["parameters"]["properties"]["nights"]["type"] == "integer"
    turn = second["messages"][1]
    assert turn["role"] == "assistant" and [c["function"]["name"] for c in turn["tool_calls"]] == ["weather", "hotels"]
    assert [m["tool_call_id"] for m in tool_messages(second)] == [c["id"] for c in turn["tool_calls"]]


def test_a_tools_error_reaches_the_model_and_the_loop_goes_on(model, server):
    answer = asyncio.run(model.generate_async("Weather?", tools=[broken, weather]))
    results = tool_messages(server.bodies[-1])
    assert results[0]["content"] == "ConnectionError: the Lisbon service is down"
    assert results[1]["content"] == "sunny in Lisbon" and "service is down" in answer


def test_max_steps_holds_and_names_what_the_model_kept_asking_for(server, model):
    server.answers.tool_rounds = 100  # the model asks for tools every turn
    with Timeline(display=False) as tl, pytest.raises(MaxStepsError, match=r"max_steps=3.*weather \(3x\)") as e:
        model.generate("Weather?", tools=[weather], max_steps=3)
    assert len(server.bodies) == 3 and isinstance(e.value, llmnb.LlmnbError)
    assert e.value.asked == {"weather": 3} and len(tool_messages({"messages": e.value.messages})) == 2
    model_row = next(r for r in tl.records() if r["method"] == "generate")
    assert model_row["status"] == "failed" and "max_steps=3" in model_row["error"]


def test_tool_choice_holds_for_the_first_turn_only(model, server):
    model.generate("Hotels?", tools=[weather, hotels], tool_choice="hotels")
    first, second = server.bodies
    assert first["tool_choice"] == {"type": "function", "function": {"name": "hotels"}}
    assert "tool_choice" not in second
    assert [m["content"] for m in tool_messages(second)] == ['["Lisbon Palace","2 nights"]']
    with pytest.raises(llmnb.ConfigError, match="weather, hotels"):
        model.generate("Hotels?", tools=[weather, hotels], tool_choice="flights")


def test_a_streamed_call_with_tools_streams_the_answer(model, server):
    async def main():
        with Timeline(display=False) as tl:
            pieces = [p async for p in model.stream_async("Plan a trip", tools=[weather, hotels])]
        return pieces, tl

    start = time.perf_counter()
    pieces, tl = asyncio.run(main())
    assert time.perf_counter() - start < 1.5 * SLOW
    assert len(pieces) > 3 and "".join(pieces).startswith("The tools said: sunny in Lisbon")
    assert all(b["stream"] for b in server.bodies) and len(tool_messages(server.bodies[1])) == 2
    calls = server.bodies[1]["messages"][1]["tool_calls"]  # assembled from fragments by index
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Lisbon"},
                                                                     {"city": "Lisbon", "nights": 2}]
    stream_row = next(r for r in tl.records() if r["method"] == "stream")
    assert stream_row["status"] == "done" and {r["parent"] for r in tl.records()} == {None, stream_row["id"]}
    assert stream_row["tokens_in"] == 2 * PROMPT_TOKENS  # both turns' counts, each reported once, added


def test_extract_validates_the_final_answer(model, server):
    value = model.extract(list[str], "Hotels?", tools=[hotels])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    assert "response_format" in server.bodies[0] and len(tool_messages(server.bodies[1])) == 1


def test_a_thread_keeps_the_whole_exchange_and_goes_on(model, server):
    chat = Thread("Plan trips.").user("Lisbon?")
    chat.assistant(model.generate(chat, tools=[weather, hotels])).user("And Porto?")
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "user"]
    model.generate(chat)  # no tools now: the history with tool turns is sent as it is
    def same(m: dict) -> dict:  # a turn asking for tools has no text: null or "" on the wire
        return {**m, "content": m["content"] or ""}

    assert [same(m) for m in server.bodies[-1]["messages"]] == [same(m) for m in chat.messages]
    assert "tools" not in server.bodies[-1]
    listed = [{"role": "user", "content": "Lisbon?"}]
    model.generate(listed, tools=[weather])
    assert listed == [{"role": "user", "content": "Lisbon?"}]  # a list prompt is never changed


def test_tool_rows_overlap_on_the_timeline_trace_and_spans(model, server, tmp_path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmnb.otel import OtelListener

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main():
        with llmnb.listen(OtelListener(provider)):
            async with Timeline(display=False) as tl:
                await asyncio.gather(model.generate_async("Lisbon", tools=[weather, hotels]),
                                     model.generate_async("Porto", tools=[weather, broken]))
        return tl

    tl = asyncio.run(main())
    rows = tl.records()
    calls = {r["id"]: r for r in rows if r["method"] == "generate"}
    tools = [r for r in rows if r["method"] == "tool"]
    assert len(calls) == 2 and len(tools) == 4 and {r["parent"] for r in tools} == set(calls)
    assert max(r["start"] for r in tools) < min(r["end"] for r in tools)  # all four side by side
    for r in tools:
        assert calls[r["parent"]]["start"] < r["start"] and r["end"] < calls[r["parent"]]["end"]
    assert [r["status"] for r in tools].count("failed") == 1
    assert (tl.summary()["tasks"], tl.summary()["tool_runs"]) == (2, 4)
    for r in tools:  # each call's row waits for its tools, as long as the slowest of them runs
        assert calls[r["parent"]]["tool_wait"] >= r["end"] - r["start"] - 0.05
    assert ":" in tl.to_text().split("|")[1]  # the first row (a call) marks the wait
    assert tl.to_text().splitlines()[-2].startswith("2 tasks and 4 tool runs")

    events = json.loads(tl.save_trace(tmp_path / "t.json").read_text())["traceEvents"]
    assert len([e for e in events if e.get("cat") == "tool" and e["ph"] == "X"]) == 4
    assert len([e for e in events if e["ph"] in ("s", "f")]) == 8  # a flow from each model call to each tool run

    spans = {s.name: s for s in exporter.get_finished_spans()}
    chat_spans = [s for s in exporter.get_finished_spans() if s.name == "chat demo"]
    tool_spans = [s for s in exporter.get_finished_spans() if s.name.startswith("execute_tool ")]
    assert len(chat_spans) == 2 and len(tool_spans) == 4 and "execute_tool hotels" in spans
    assert {s.parent.span_id for s in tool_spans} == {s.context.span_id for s in chat_spans}
    failed = spans["execute_tool broken"]
    assert failed.attributes["gen_ai.operation.name"] == "execute_tool"
    assert failed.attributes["gen_ai.tool.name"] == "broken" and failed.attributes["error.type"] == "ConnectionError"
    provider.shutdown()


def test_cancelling_a_call_cancels_its_tool_runs(model, server):
    async def main():
        async with Timeline(display=False) as tl:
            task = asyncio.create_task(model.generate_async("Weather?", tools=[weather]))
            await asyncio.sleep(LATENCY + SLOW / 2)  # the tool is running
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return tl

    rows = asyncio.run(main()).records()
    assert [(r["method"], r["status"]) for r in rows] == [("generate", "cancelled"), ("tool", "cancelled")]
    assert len(server.bodies) == 1


def test_two_calls_with_tools_on_one_thread_at_once_keep_it_whole(model, server):
    chat = Thread().user("Lisbon?")

    async def main():
        return await asyncio.gather(model.generate_async(chat, tools=[weather]),
                                    model.generate_async(chat, tools=[hotels]))

    with pytest.warns(RuntimeWarning, match="the Thread changed while a call with tools ran on it"):
        answers = asyncio.run(main())
    assert all(isinstance(a, str) for a in answers)
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "tool"]  # the first call's turns only
