"""Rate limits of a remote model: requests and tokens per minute, kept before each request is sent.

Three sources, one gate (`RateLimits.admit`) that every request of a model passes:
- the user's `rpm=` / `tpm=`;
- the server's own limits, learned from the `x-ratelimit-limit-*` headers OpenAI sends on every
  answer (the lower of the user's and the server's applies), and its `x-ratelimit-remaining-*`
  headers: once a budget is spent, requests wait for `x-ratelimit-reset-*` instead of drawing 429s;
- a 429, which pauses the whole model (every call, not just the one refused) until the server's
  `Retry-After` has passed; then the calls resume at the pace above, not all at once.

The pace spreads the requests evenly: each books the next free moment of every limit, which then
moves on by what the request costs (1/rpm of a minute; its tokens/tpm), so a server counting per
second or per minute sees no burst above its rate (a bucket letting a tenth of a second's worth
through at once drew 429s from a server allowing 50 a second, with rpm= at 90 % of it). The
reported usage moves the token pace on or back.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ...errors import ConfigError

# A request may go this early before its moment: a shorter sleep is within the event loop's own
# timing error, and a call far under its limit never shows as throttled.
TOLERANCE = 0.02
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


class RateLimits:
    """The rate limits of one model; shared by all its calls, on any event loop or thread.

    `hold` and `book` are the pure core (the time is passed in), which a limiter held elsewhere
    (a cluster's scheduler) reuses; `admit` is the wait around them that a call awaits."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{name} must be a positive number (per minute), not {value!r}")
        self.user = {"requests": rpm, "tokens": tpm}
        self.server: dict[str, float | None] = {"requests": None, "tokens": None}
        self.paused_until = 0.0  # time.monotonic() before which nothing is sent (a 429's pause)
        self.budget: dict[str, tuple[float, float]] = {}  # kind -> (remaining, until when) from the headers
        self.free = dict.fromkeys(KINDS, 0.0)  # kind -> the next free moment of its pace
        self.sent = float("-inf")  # the moment the last request went
        self.pauses = 0  # 429s that paused the model
        self._lock = threading.Lock()  # calls on several threads' loops book one schedule

    def pace(self, kind: str) -> float | None:
        """Units per minute that apply now: the lower of the user's and the server's limit."""
        known = [v for v in (self.user[kind], self.server[kind]) if v]
        return min(known) if known else None

    @property
    def active(self) -> bool:
        """Whether a request may have to wait: a limit is known, or a pause or budget was seen."""
        return bool(self.pace("requests") or self.pace("tokens") or self.paused_until or self.budget)

    # -- before sending ---------------------------------------------------------------------
    async def admit(self, tokens: int, emit: Callable[[str], None]) -> None:
        """Wait until a request of about `tokens` tokens may be sent. If it has to wait, `emit`
        gets "throttled" when the wait begins and "started" when the request proceeds."""
        wait = Wait(emit)
        while (delay := self.hold(tokens, time.monotonic())) > 0:
            await wait(delay)
        await wait(self.book(tokens, time.monotonic()))
        await wait(self.space(time.monotonic()))
        while (delay := self.paused_until - time.monotonic()) > 0:  # a 429 elsewhere while this call waited
            await wait(delay)
        wait.end()

    def hold(self, tokens: int, now: float) -> float:
        """Seconds to wait before booking a moment: a 429's pause, or a spent budget until its reset."""
        with self._lock:
            delay = self.paused_until - now
            for kind, need in (("requests", 1), ("tokens", tokens)):
                remaining, until = self.budget.get(kind, (float("inf"), 0.0))
                if until <= now:
                    self.budget.pop(kind, None)
                elif remaining < need:
                    delay = max(delay, until - now)
            return delay

    def book(self, tokens: int, now: float) -> float:
        """Book the request's moment, the next free one of every pace, and move each pace on by
        what the request costs; count it against the budgets. Returns seconds until that moment."""
        with self._lock:
            paces = {kind: pace for kind in KINDS if (pace := self.pace(kind))}
            moment = max([now, *(self.free[kind] for kind in paces)])
            for kind, pace in paces.items():
                self.free[kind] = moment + (1 if kind == "requests" else tokens) * 60 / pace
            for kind, used in (("requests", 1), ("tokens", tokens)):
                if kind in self.budget:
                    remaining, until = self.budget[kind]
                    self.budget[kind] = (remaining - used, until)
            return moment - now

    def space(self, now: float) -> float:
        """Seconds until this request may really go: one request interval after the last one
        that went. The booked moments are kept in advance; a loop that wakes late would let the
        requests whose moments passed meanwhile go at once, and this spaces them out again."""
        pace = self.pace("requests")
        if not pace:
            return 0.0
        with self._lock:
            moment = max(now, self.sent + 60 / pace)
            self.sent = moment
            return moment - now

    # -- after an answer ----------------------------------------------------------------------
    def settle(self, estimated: int, used: int | None) -> None:
        """Correct the token count by the usage the answer reported: the difference moves the
        token pace on (or back, when the answer used fewer)."""
        pace = self.pace("tokens")
        if used is not None and pace:
            with self._lock:
                self.free["tokens"] += (used - estimated) * 60 / pace

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn from an answer's x-ratelimit-* headers: the server's limits and what is left."""
        self.learn(*read_headers(headers), time.monotonic())

    def learn(self, limits: dict[str, float], budgets: dict[str, tuple[float, float]], now: float) -> None:
        """Take the server's limits (kind -> per minute) and budgets (kind -> (remaining, seconds
        to its reset)) as `read_headers` gives them. A new pace applies from the next booking on."""
        with self._lock:
            self.server.update(limits)
            self.budget.update({kind: (remaining, now + reset) for kind, (remaining, reset) in budgets.items()})

    def pause(self, headers: Mapping[str, str], fallback: float) -> float:
        """A 429: pause the whole model until the server's Retry-After (or, without it, the reset
        of the spent limit; or `fallback` seconds) has passed. Returns the pause in seconds."""
        self.observe(headers)
        seconds = pause_seconds(headers, fallback)
        self.pause_for(seconds, time.monotonic())
        return seconds

    def pause_for(self, seconds: float, now: float) -> None:
        """Send nothing for `seconds` from `now`."""
        with self._lock:
            self.paused_until = max(self.paused_until, now + seconds)
            self.pauses += 1


class Limiter(Protocol):
    """What the OpenAI backend asks of its rate limits: `RateLimits` here, or a limiter shared by
    many processes (`llmnb.runs.cluster_limits.ClusterLimits`) standing in for it."""

    @property
    def active(self) -> bool: ...

    async def admit(self, tokens: int, emit: Callable[[str], None]) -> None: ...

    def settle(self, estimated: int, used: int | None) -> None: ...

    def observe(self, headers: Mapping[str, str]) -> None: ...

    def pause(self, headers: Mapping[str, str], fallback: float) -> float: ...


class Wait:
    """A call's wait for the rate limits: "throttled" when it first has to wait, "started" at its end."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit, self.waited = emit, False

    async def __call__(self, delay: float) -> None:
        if delay > TOLERANCE:
            if not self.waited:
                self.emit("throttled")
                self.waited = True
            await asyncio.sleep(delay)

    def end(self) -> None:
        if self.waited:
            self.emit("started")


def read_headers(headers: Mapping[str, str]) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The server's limits (kind -> per minute) and budgets (kind -> (remaining, seconds to its
    reset)) in an answer's x-ratelimit-* headers."""
    limits, budgets = {}, {}
    for kind in KINDS:
        limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
        if limit:
            limits[kind] = limit
        remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if remaining is not None and reset is not None:
            budgets[kind] = (remaining, reset)
    return limits, budgets


def pause_seconds(headers: Mapping[str, str], fallback: float) -> float:
    """How long a 429 pauses: Retry-After(-ms), else the reset of the spent limit, else `fallback`."""
    ms = _number(headers.get("retry-after-ms"))
    seconds = ms / 1000 if ms is not None else parse_duration(headers.get("retry-after"))
    if seconds is None:
        resets = [parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) for kind in KINDS
                  if _number(headers.get(f"x-ratelimit-remaining-{kind}")) == 0]
        seconds = max([r for r in resets if r is not None], default=fallback)
    return seconds


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
