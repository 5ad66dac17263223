"""llmnb.backends.openai.limits on its own: pacing, budgets from headers, the pause after a 429, token accounting.
Short real waits, with generous slack."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmnb.backends.openai.limits import RateLimits, estimate_tokens, parse_duration
from llmnb.demo_server import RateLimit


@pytest.mark.parametrize("text, seconds", [("1s", 1), ("6m0s", 360), ("20ms", 0.02), ("1h2m3.5s", 3723.5),
                                           ("2", 2), ("0.25", 0.25), ("", None), (None, None),
                                           ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("5x", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("rpm", [0, -5, "60", True])
def test_limits_must_be_positive_numbers(rpm):
    with pytest.raises(ValueError, match="rpm must be a positive number"):
        RateLimits(rpm=rpm)


def admit_all(limits: RateLimits, n: int, tokens: int = 1) -> tuple[float, list[str]]:
    """Admit n requests at once; (seconds until the last was let through, events emitted)."""
    events: list[str] = []

    async def main():
        start = time.perf_counter()
        await asyncio.gather(*[limits.admit(tokens, events.append) for _ in range(n)])
        return time.perf_counter() - start

    return asyncio.run(main()), events


def test_rpm_paces_requests_evenly_and_reports_the_wait():
    wall, events = admit_all(RateLimits(rpm=600), 16)  # 10 a second, one at a time
    assert 1.2 < wall < 2.5
    assert events.count("throttled") == events.count("started") >= 14  # all but the first waited
    wall, events = admit_all(RateLimits(rpm=60_000), 10)  # far under the limit: nobody waits
    assert wall < 0.2 and events == []


def test_tpm_paces_by_tokens():
    wall, _ = admit_all(RateLimits(tpm=6000), 11, tokens=20)  # 100 tokens a second, 20 a request
    assert 1.4 < wall < 3


def test_usage_above_the_estimate_is_charged_to_later_requests():
    limits = RateLimits(tpm=6000)
    admit_all(limits, 1, tokens=10)
    limits.settle(estimated=10, used=110)  # the answer was 100 tokens bigger than estimated
    wall, _ = admit_all(limits, 1, tokens=10)
    assert 0.7 < wall < 2.5  # paid for: about a second at 100 tokens a second


def test_a_429_pauses_every_call_until_retry_after():
    limits = RateLimits()
    assert not limits.active
    assert limits.pause({"retry-after": "0.5"}, fallback=9) == 0.5
    wall, events = admit_all(limits, 5)
    assert 0.4 < wall < 1.0 and events.count("throttled") == 5 and limits.pauses == 1
    assert limits.pause({"retry-after-ms": "300", "retry-after": "9"}, fallback=9) == pytest.approx(0.3)
    assert limits.pause({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "40ms"}, fallback=9) \
        == pytest.approx(0.04)
    assert limits.pause({}, fallback=0.01) == 0.01


def test_the_servers_headers_set_the_pace_and_a_spent_budget_waits_for_its_reset():
    limits = RateLimits(rpm=1_000_000)
    limits.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "3",
                    "x-ratelimit-reset-requests": "700ms"})
    assert limits.pace("requests") == 600  # the lower of the user's and the server's
    wall, events = admit_all(limits, 4)  # a budget of 3: the 4th waits for the reset
    assert 0.6 < wall < 1.5 and "throttled" in events


def test_estimate_counts_the_prompt_and_what_may_be_generated():
    short = {"messages": [{"role": "user", "content": "hi"}]}
    long = {"messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 100}
    assert 1 <= estimate_tokens(short) < 15
    assert 550 < estimate_tokens(long) < 700


def test_the_demo_servers_rate_limit_counts_per_window():
    limit = RateLimit(requests=3, tokens=100, window=0.5)
    verdicts = [limit.admit(10) for _ in range(4)]
    assert [ok for ok, _ in verdicts] == [True, True, True, False] and limit.rejected == 1
    _, headers = verdicts[-1]
    assert headers["x-ratelimit-limit-requests"] == "360" and headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < parse_duration(headers["retry-after"]) <= 0.5
    assert 0 < parse_duration(headers["x-ratelimit-reset-tokens"]) <= 0.5
    time.sleep(0.5)
    assert limit.admit(95)[0] and not limit.admit(10)[0]  # a new window; then the tokens run out
