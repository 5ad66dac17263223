"""Tools on their own: schemas from signatures, validation, one turn's calls run at once (async as
tasks, sync in threads), the sequential marker and the cap, errors as results, call events."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

import llmnb
from llmnb import ConfigError, SchemaError, Thread, Timeline
from llmnb.backends.base import ToolCall
from llmnb.events import Call
from llmnb.thread import messages_for
from llmnb.tools import Toolbox, as_tool, run_calls

SLOW = 0.6


async def slow_async(city: str = "Lisbon") -> str:
    """Today's weather in a city."""
    await asyncio.sleep(SLOW)
    return f"sunny in {city}"


def slow_sync(n: int = 3) -> dict:
    """Counts, slowly (blocks its thread)."""
    time.sleep(SLOW)
    return {"n": n}


def calls(*names_args: tuple[str, str]) -> list[ToolCall]:
    return [ToolCall(f"c{i}", name, args) for i, (name, args) in enumerate(names_args)]


def run(batch, tools, parent=None):
    parent = parent or Call("generate", "q", "test:model")
    return asyncio.run(run_calls(batch, Toolbox(tools), parent))


# -- schemas and validation --------------------------------------------------------------------
class Place(BaseModel):
    city: str
    country: str = "PT"


@dataclasses.dataclass
class Day:
    date: str
    rain: bool


def test_schema_comes_from_the_signature_and_the_docstring():
    def plan(place: Place, days: Annotated[int, Field(ge=1, description="how many days")] = 2,
             mode: Literal["walk", "drive"] = "walk", json: bool = False) -> list[Day]:
        """Plan a trip."""

    spec = as_tool(plan).spec
    assert spec["type"] == "function" and spec["function"]["name"] == "plan"
    assert spec["function"]["description"] == "Plan a trip."
    params = spec["function"]["parameters"]
    assert params["type"] == "object" and params["required"] == ["place"] and params["additionalProperties"] is False
    days = params["properties"]["days"]
    assert days["minimum"] == 1 and days["description"] == "how many days"
    assert params["properties"]["mode"]["enum"] == ["walk", "drive"] and "Place" in params["$defs"]
    assert as_tool(plan).validate('{"place": {"city": "Porto"}, "days": "3"}') == {
        "place": Place(city="Porto"), "days": 3, "mode": "walk", "json": False}


def test_decorated_tool_stays_callable_and_keeps_its_settings():
    @llmnb.tool(sequential=True, name="lookup")
    def find(word: str) -> str:
        """Find a word."""
        return word.upper()

    assert find("hi") == "HI" and find.name == "lookup" and find.sequential and find.__doc__ == "Find a word."
    capped = llmnb.tool(find, max_concurrency=2)  # a tool's function with other settings
    assert (capped.name, capped.sequential, capped.max_concurrency, capped("a")) == ("lookup", False, 2, "A")
    assert as_tool(find) is find and as_tool(slow_async) is as_tool(slow_async)  # built once per function


@pytest.mark.parametrize("fn, error, match", [
    (lambda x: x, ConfigError, "not valid"),
    (lambda: None, ConfigError, "not valid"),
])
def test_a_lambda_needs_a_name(fn, error, match):
    with pytest.raises(error, match=match):
        as_tool(fn)


def untyped(city):
    """No type."""


def star(*cities: str):
    """Varargs."""


def opaque(lock: asyncio.Lock):
    """Not JSON."""


@pytest.mark.parametrize("fn, match", [(untyped, "city: str"), (star, "named parameters"), (opaque, "JSON schema")])
def test_bad_signatures_say_what_to_change(fn, match):
    with pytest.raises(SchemaError, match=match):
        as_tool(fn)


def test_toolbox_checks_names_and_tool_choice():
    with pytest.raises(ConfigError, match="two tools are named slow_async"):
        Toolbox([slow_async, slow_async])
    with pytest.raises(ConfigError, match="list of functions"):
        Toolbox(slow_async)
    box = Toolbox([slow_async, slow_sync])
    assert box.choice("auto") is None and box.choice("required") == "required"
    assert box.choice("slow_sync") == "slow_sync"
    with pytest.raises(ConfigError, match="slow_async, slow_sync"):
        box.choice("weather")
    with pytest.raises(ConfigError, match="needs tools"):
        Toolbox([]).choice("required")


# -- running one turn --------------------------------------------------------------------------
def test_one_turns_slow_tools_run_at_once_async_and_sync():
    start = time.perf_counter()
    results = run(calls(("slow_async", '{"city": "Porto"}'), ("slow_sync", "{}")), [slow_async, slow_sync])
    wall = time.perf_counter() - start
    assert results == ["sunny in Porto", '{"n":3}']
    assert wall < 1.5 * SLOW, wall  # one after another: 2 x SLOW


def test_a_sequential_tool_runs_alone():
    alone = llmnb.tool(slow_sync, sequential=True)
    start = time.perf_counter()
    run(calls(("slow_async", "{}"), ("slow_sync", "{}"), ("slow_async", "{}")), [slow_async, alone])
    assert time.perf_counter() - start >= 3 * SLOW - 0.05  # before it, it, after it


def test_max_concurrency_caps_a_tools_runs_and_shows_the_wait():
    capped = llmnb.tool(slow_async, max_concurrency=2)
    with Timeline(display=False) as tl:
        start = time.perf_counter()
        run(calls(*[("slow_async", "{}")] * 4), [capped])
        wall = time.perf_counter() - start
    assert 2 * SLOW - 0.05 <= wall < 3 * SLOW, wall
    waits = sorted(r["wait"] for r in tl.records() if r["method"] == "tool")
    assert waits[:2] < [0.1, 0.1] and min(waits[2:]) >= SLOW - 0.1


def test_the_event_loop_keeps_ticking_while_a_sync_tool_sleeps():
    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        async with Timeline(display=False) as tl:
            await run_calls(calls(("slow_sync", "{}")), Toolbox([slow_sync]), Call("generate", "q", "m"))
        ticker.cancel()
        return ticks, tl

    ticks, tl = asyncio.run(main())
    assert ticks >= 0.5 * SLOW / 0.01, ticks  # ~60 at 10 ms; a blocked loop gives 0
    assert not [b - a for a, b in tl.lags if b - a > 0.1]


def test_errors_go_back_as_results_and_the_turn_goes_on():
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError("the sensor is offline")

    with Timeline(display=False) as tl:
        results = run(calls(("broken", '{"x": 1}'), ("broken", '{"x": "one"}'), ("broken", "{not json"),
                            ("weather", "{}"), ("slow_async", "{}")), [broken, slow_async])
    assert results[0] == "ValueError: the sensor is offline"
    assert results[1].startswith("ValidationError: x: Input should be a valid integer")
    assert results[2].startswith("ValidationError: arguments: Invalid JSON")
    assert results[3] == "UnknownTool: no tool is named 'weather'; the tools are broken, slow_async"
    assert results[4] == "sunny in Lisbon"
    rows = [r for r in tl.records() if r["method"] == "tool"]
    assert [r["status"] for r in rows] == ["failed"] * 4 + ["done"]
    assert rows[0]["error"] == results[0] and rows[3]["name"] == "weather"


def test_tool_rows_overlap_under_their_model_call():
    with Timeline(display=False) as tl:
        parent = Call("generate", "Plan a trip", "test:model")
        run(calls(("slow_async", "{}"), ("slow_sync", "{}")), [slow_async, slow_sync], parent)
        parent.emit("finished")
    model_row, *tools = tl.records()
    assert model_row["id"] == parent.id and model_row["parent"] is None
    assert [(r["method"], r["name"], r["parent"], r["model"]) for r in tools] == [
        ("tool", "slow_async", parent.id, "test:model"), ("tool", "slow_sync", parent.id, "test:model")]
    assert max(r["start"] for r in tools) < min(r["end"] for r in tools)  # side by side
    assert "↳ tool: slow_async" in tl.to_text() and "#56B4E9" in tl.to_svg()


def test_return_values_become_text():
    def day() -> Day:
        """A day."""
        return Day("2026-01-01", rain=False)

    def nothing() -> None:
        """Nothing."""

    assert run(calls(("day", ""), ("nothing", "")), [day, nothing]) == ['{"date":"2026-01-01","rain":false}', "null"]


# -- messages with tool turns ----------------------------------------------------------------
TURN = {"role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def test_messages_accept_tool_turns_and_refuse_broken_ones():
    messages = messages_for([{"role": "user", "content": "hi"}, TURN,
                             {"role": "tool", "tool_call_id": "c1", "content": "ok"}], None)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    with pytest.raises(ConfigError, match="tool_call_id"):
        messages_for([{"role": "tool", "content": "ok"}], None)
    with pytest.raises(ConfigError, match="assistant turn"):
        messages_for([{"role": "user", "content": "hi", "tool_calls": TURN["tool_calls"]}], None)
    with pytest.raises(ConfigError, match="assistant turn"):
        messages_for([{**TURN, "tool_calls": [{"id": "c1"}]}], None)
    with pytest.raises(TypeError, match="content must be text"):
        messages_for([{"role": "assistant", "content": None}], None)
    thread = Thread().user("hi")
    thread._extend([TURN])
    copy = thread.messages
    copy[1]["tool_calls"][0]["id"] = "changed"
    assert thread.messages[1]["tool_calls"][0]["id"] == "c1"  # a deep copy
