"""Rate limits against a real rate-limited server (llmnb's demo server with `RateLimit`): 429s,
pauses, pacing, and the throttled phase of the calls that waited."""

from __future__ import annotations

import asyncio
import time

import pytest
from fault_server import Fault

from llmnb import Models, listen
from llmnb.demo_answers import PROMPT_TOKENS, REPLY
from llmnb.demo_server import DemoServer, RateLimit

CALLS, PER_SECOND = 300, 50
TOKENS_PER_CALL = PROMPT_TOKENS + len(REPLY.split())  # what the server charges for each answer


def many_calls(server: DemoServer, **options) -> tuple[list, float, list]:
    """CALLS calls at once: (answers or errors, wall seconds, the calls' events)."""
    model = Models.create("openai:demo", base_url=server.base_url, api_key="k", **options)
    events = []

    async def main():
        with listen(events.append):
            calls = [model.generate_async(f"call {i}") for i in range(CALLS)]
            return await asyncio.gather(*calls, return_exceptions=True)

    start = time.perf_counter()
    answers = asyncio.run(main())
    wall = time.perf_counter() - start
    model.close()
    return answers, wall, events


def assert_throttled_phases_are_well_formed(events) -> int:
    """Every throttled wait of a call ends with a `started` before the call ends; returns how
    many calls waited."""
    by_call: dict[int, list[str]] = {}
    for event in events:
        by_call.setdefault(event.call_id, []).append(event.kind)
    waited = 0
    for kinds in by_call.values():
        for i, kind in enumerate(kinds):
            if kind == "throttled":
                assert kinds[i + 1] == "started", kinds
        waited += "throttled" in kinds
    return waited


@pytest.mark.slow
def test_300_calls_against_50_a_second_with_defaults():
    """No rate limit given: the first answers' headers tell the pace, so few 429s and none lost."""
    with DemoServer(latency=0, rate_limit=RateLimit(requests=PER_SECOND)) as server:
        answers, wall, events = many_calls(server)
        rejected = server.rate_limit.rejected
    assert answers == [REPLY] * CALLS  # none lost
    assert rejected <= 40, f"{rejected} answers of 429"
    assert CALLS / PER_SECOND - 1.5 < wall < CALLS / PER_SECOND + 4, wall
    assert assert_throttled_phases_are_well_formed(events) > CALLS / 2


@pytest.mark.slow
def test_rpm_at_the_servers_limit_draws_almost_no_429s():
    with DemoServer(latency=0, rate_limit=RateLimit(requests=PER_SECOND)) as server:
        answers, wall, events = many_calls(server, rpm=PER_SECOND * 60, max_concurrency=CALLS)
        rejected = server.rate_limit.rejected
    assert answers == [REPLY] * CALLS
    assert rejected <= 3, f"{rejected} answers of 429"
    assert CALLS / PER_SECOND - 1.5 < wall < CALLS / PER_SECOND + 4, wall
    assert assert_throttled_phases_are_well_formed(events) > CALLS / 2


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"tpm": TOKENS_PER_CALL * PER_SECOND * 60}], ids=["defaults", "tpm"])
def test_a_server_limiting_tokens(options):
    """The server allows 50 calls' worth of tokens a second. The client's estimate of a call's
    tokens differs from what the server charges; the reported usage corrects it."""
    limit = RateLimit(tokens=TOKENS_PER_CALL * PER_SECOND)
    with DemoServer(latency=0, rate_limit=limit) as server:
        answers, wall, _ = many_calls(server, **options)
    assert answers == [REPLY] * CALLS
    assert limit.rejected <= (40 if not options else 5), f"{limit.rejected} answers of 429"
    assert CALLS / PER_SECOND - 1.5 < wall < CALLS / PER_SECOND + 5, wall


def test_a_429_pauses_the_whole_model(fault_server):
    """One call's 429 with Retry-After: 1 holds back the calls made after it, not only its own retry."""
    fault_server.script(Fault.http(429, retry_after=1))
    model = Models.create("openai:test", base_url=fault_server.base_url, api_key="k")

    async def main():
        first = asyncio.ensure_future(model.generate_async("first"))
        while fault_server.requests < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the 429 is in
        start = time.perf_counter()
        later = await asyncio.gather(*[model.generate_async(f"later {i}") for i in range(3)])
        return await first, later, time.perf_counter() - start

    events = []
    with listen(events.append):
        first, later, waited = asyncio.run(main())
    model.close()
    assert first == fault_server.reply and later == [fault_server.reply] * 3
    assert 0.6 < waited < 3 and fault_server.requests == 5
    assert model.backend.limits.pauses == 1
    throttled = throttled_seconds(events)
    assert len(throttled) == 4 and all(t > 0.5 for t in throttled.values()), throttled


def throttled_seconds(events) -> dict[int, float]:
    """Call id -> seconds from its `throttled` event to its next `started`."""
    since, waited = {}, {}
    for event in events:
        if event.kind == "throttled":
            since[event.call_id] = event.time
        elif event.kind == "started" and event.call_id in since:
            waited[event.call_id] = waited.get(event.call_id, 0) + event.time - since.pop(event.call_id)
    return waited
