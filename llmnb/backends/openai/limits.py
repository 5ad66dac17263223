"""Rate limits of a remote model: requests and tokens per minute, kept before each request is sent.

Three sources, one gate (`RateLimits.admit`) that every request of a model passes:
- the user's `rpm=` / `tpm=`;
- the server's own limits, learned from the `x-ratelimit-limit-*` headers OpenAI sends on every
  answer (the lower of the user's and the server's applies), and its `x-ratelimit-remaining-*`
  headers: once a budget is spent, requests wait for `x-ratelimit-reset-*` instead of drawing 429s;
- a 429, which pauses the whole model (every call, not just the one refused) until the server's
  `Retry-After` has passed; then the calls resume at the pace above, not all at once.

The pace is a leaky bucket from aiolimiter (asyncio-native, small, and its `acquire(amount)`
takes a weight, which token limits need). A bucket holds a tenth of a second's worth, so calls
go out evenly: a server that counts per second or per minute sees no bursts above its rate.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiolimiter import AsyncLimiter

from ...errors import ConfigError
from ...per_loop import PerLoop

BURST_SECONDS = 0.1
RESET = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)?")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
KINDS = ("requests", "tokens")


def parse_duration(text: str | None) -> float | None:
    """Seconds in an OpenAI reset header ("1s", "6m0s", "20ms", "1.5") or Retry-After ("2"); None
    when absent or unreadable (an HTTP date, which APIs hardly send)."""
    if not text:
        return None
    parts = RESET.findall(text.strip())
    if not parts or "".join(n + (u or "") for n, u in parts) != text.strip().replace(" ", ""):
        return None
    return sum(float(n) * UNITS[u or None] for n, u in parts)


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Tokens a request (its JSON body, as `build_request` makes it) may use, before it is
    sent: its text at about 4 characters a token (as OpenAI's guide counts English) plus what it
    may generate (`max_tokens`, as OpenAI's own limiter counts it). Corrected after the answer by
    the usage it reports (`RateLimits.settle`)."""
    chars = sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) + 16  # + the role's tokens
                for m in body.get("messages", ()))
    for field in ("response_format", "tools"):  # the server reads both into the prompt
        if body.get(field):
            chars += len(str(body[field]))
    return chars // 4 + 1 + (body.get("max_tokens") or 0)


def bucket(per_minute: float) -> AsyncLimiter:
    """A leaky bucket letting `per_minute` units a minute through, a tenth of a second's worth at
    once (one unit at least, so slow limits still let single requests through)."""
    capacity = max(1.0, per_minute / 60 * BURST_SECONDS)
    return AsyncLimiter(capacity, time_period=capacity * 60 / per_minute)


class RateLimits:
    """The rate limits of one model; shared by all its calls, on any event loop."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{name} must be a positive number (per minute), not {value!r}")
        self.user = {"requests": rpm, "tokens": tpm}
        self.server: dict[str, float | None] = {"requests": None, "tokens": None}
        self.paused_until = 0.0  # time.monotonic() before which nothing is sent (a 429's pause)
        self.budget: dict[str, tuple[float, float]] = {}  # kind -> (remaining, until when) from the headers
        self.owed_tokens = 0.0  # usage reported beyond the estimates (or below, when negative)
        self.pauses = 0  # 429s that paused the model
        self._buckets = PerLoop(self._make_buckets)

    def pace(self, kind: str) -> float | None:
        """Units per minute that apply now: the lower of the user's and the server's limit."""
        known = [v for v in (self.user[kind], self.server[kind]) if v]
        return min(known) if known else None

    def _make_buckets(self) -> dict[str, AsyncLimiter]:
        return {kind: bucket(pace) for kind in KINDS if (pace := self.pace(kind))}

    @property
    def active(self) -> bool:
        """Whether a request may have to wait: a limit is known, or a pause or budget was seen."""
        return bool(self.pace("requests") or self.pace("tokens") or self.paused_until or self.budget)

    # -- before sending ---------------------------------------------------------------------
    async def admit(self, tokens: int, emit: Callable[[str], None]) -> None:
        """Wait until a request of about `tokens` tokens may be sent. If it has to wait, `emit`
        gets "throttled" when the wait begins and "started" when the request proceeds."""
        waited = False

        def waiting() -> None:
            nonlocal waited
            if not waited:
                emit("throttled")
                waited = True

        while (delay := self._hold(tokens)) > 0:
            waiting()
            await asyncio.sleep(delay)
        buckets = self._buckets.get()
        for kind, amount in (("requests", 1.0), ("tokens", self._charge(tokens))):
            if kind in buckets:
                await take(buckets[kind], amount, waiting)
        while (delay := self._hold(tokens)) > 0:  # a 429 elsewhere while this call waited its turn
            waiting()
            await asyncio.sleep(delay)
        self._spend(tokens)
        if waited:
            emit("started")

    def _hold(self, tokens: int) -> float:
        """Seconds to wait before sending: a 429's pause, or a spent budget until its reset."""
        now = time.monotonic()
        delay = self.paused_until - now
        for kind, need in (("requests", 1), ("tokens", tokens)):
            remaining, until = self.budget.get(kind, (float("inf"), 0.0))
            if until <= now:
                self.budget.pop(kind, None)
            elif remaining < need:
                delay = max(delay, until - now)
        return delay

    def _charge(self, tokens: int) -> float:
        """Tokens this request pays: its estimate plus what earlier answers used beyond theirs
        (less, when they used fewer: the credit carries over)."""
        want = tokens + self.owed_tokens
        self.owed_tokens = min(want, 0.0)
        return max(want, 0.0)

    def _spend(self, tokens: int) -> None:
        for kind, used in (("requests", 1), ("tokens", tokens)):
            if kind in self.budget:
                remaining, until = self.budget[kind]
                self.budget[kind] = (remaining - used, until)

    # -- after an answer ----------------------------------------------------------------------
    def settle(self, estimated: int, used: int | None) -> None:
        """Correct the token count by the usage the answer reported."""
        if used is not None:
            self.owed_tokens += used - estimated

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn from an answer's x-ratelimit-* headers: the server's limits and what is left."""
        for kind in KINDS:
            limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            if limit and limit != self.server[kind]:
                self.server[kind] = limit
                self._buckets.drain()  # new buckets at the new pace, made on next use
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and reset is not None:
                self.budget[kind] = (remaining, time.monotonic() + reset)

    def pause(self, headers: Mapping[str, str], fallback: float) -> float:
        """A 429: pause the whole model until the server's Retry-After (or, without it, the reset
        of the spent limit; or `fallback` seconds) has passed. Returns the pause in seconds."""
        self.observe(headers)
        ms = _number(headers.get("retry-after-ms"))
        seconds = ms / 1000 if ms is not None else parse_duration(headers.get("retry-after"))
        if seconds is None:
            resets = [parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) for kind in KINDS
                      if _number(headers.get(f"x-ratelimit-remaining-{kind}")) == 0]
            seconds = max([r for r in resets if r is not None], default=fallback)
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self.pauses += 1
        return seconds


async def take(bucket: AsyncLimiter, amount: float, waiting: Callable[[], None]) -> None:
    """Take `amount` from the bucket, a bucketful at a time (a large request waits for several);
    `waiting()` is called first if it cannot go at once."""
    while amount > 0:
        part = min(amount, bucket.max_rate)
        if not bucket.has_capacity(part):
            waiting()
        await bucket.acquire(part)
        amount -= part


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
