"""The embedded model calls tools offline: its grammar makes every call fit the tool's signature
(whether the arguments make sense is the 135M model's business, so only types are checked)."""

from __future__ import annotations

import asyncio

from llmnb import MaxStepsError, Timeline


def test_the_embedded_model_calls_a_tool_whose_arguments_fit(embedded_model):
    seen: list[tuple[str, int]] = []

    def forecast(city: str, days: int) -> str:
        """The weather forecast for a city, for a number of days."""
        seen.append((city, days))
        return "sunny, 24 C"

    async def main():
        async with Timeline(display=False) as tl:
            try:
                answer = await embedded_model.generate_async("What will the weather be in Paris for 3 days?",
                                                             tools=[forecast], tool_choice="required", max_tokens=256,
                                                             temperature=0, max_steps=3)
            except MaxStepsError:  # a tiny model may keep calling; each call must still fit
                answer = None
        return answer, tl

    answer, tl = asyncio.run(main())
    assert answer is None or isinstance(answer, str)
    assert seen and all(isinstance(city, str) and isinstance(days, int) for city, days in seen)
    tools = [r for r in tl.records() if r["method"] == "tool"]
    assert tools and all(r["status"] == "done" and r["name"] == "forecast" for r in tools)


def test_the_embedded_model_streams_an_answer_after_a_tool(embedded_model):
    def now() -> str:
        """The current time."""
        return "12:30"

    async def main():
        pieces = []
        async with Timeline(display=False) as tl:
            try:
                async for piece in embedded_model.stream_async("What time is it?", tools=[now], tool_choice="now",
                                                               max_tokens=256, temperature=0, max_steps=3):
                    pieces.append(piece)
            except MaxStepsError:  # a tiny model may keep calling
                pass
        return pieces, tl

    pieces, tl = asyncio.run(main())
    assert all(isinstance(p, str) for p in pieces)
    assert [r["status"] for r in tl.records() if r["method"] == "tool"][:1] == ["done"]
    assert "tool_calls" not in "".join(pieces)  # the tool turn is not shown as text
