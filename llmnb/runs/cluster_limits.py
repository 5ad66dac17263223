"""One rate limit for a whole Dask cluster: a model's rpm=/tpm=, the server's limits learned from
its headers, and the pause after a 429 hold for all workers together.

The limits live on the scheduler (`SharedLimits`, a scheduler plugin: no server of llmnb's own),
one `RateLimits` per limit name, which names the provider's URL, the model, a hash of the API key
(never the key) and the rpm/tpm given: two notebooks whose models share all four on one scheduler
share one limit. A worker's model gets a `ClusterLimits` in place of its own: before each request
it books a moment on the scheduler (one round trip, about a millisecond) and waits for it (the
moment is a wall-clock time: the machines' clocks must agree, as NTP keeps them); what
the answers tell (the server's limits, budgets, usage, a 429's pause) goes back one way, batched
with the worker's other messages to the scheduler.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping

from distributed.diagnostics.plugin import SchedulerPlugin

from ..backends.openai.limits import TOLERANCE, RateLimits, Wait, pause_seconds, read_headers

BOOK = "llmnb_limit_book"  # the scheduler's handler booking a request's moment
LEARN = "llmnb-limit-learn"  # the scheduler's stream handler for what answers tell


class SharedLimits(SchedulerPlugin):
    """The cluster's rate limits, held by the scheduler (registered once per scheduler)."""

    idempotent = True  # a second notebook's run finds the limits already there, and shares them
    name = "llmnb-limits"

    def __init__(self):
        self.limits: dict[str, RateLimits] = {}

    async def start(self, scheduler) -> None:
        scheduler.handlers[BOOK] = self.book
        scheduler.stream_handlers[LEARN] = self.learn

    def _limits(self, name: str, rpm: float | None, tpm: float | None) -> RateLimits:
        if name not in self.limits:
            self.limits[name] = RateLimits(rpm, tpm)
        return self.limits[name]

    def book(self, name: str, rpm: float | None, tpm: float | None, tokens: int) -> dict[str, float]:
        """{"hold": seconds} to ask again after a pause or a spent budget, or {"at": the booked
        moment}, a wall-clock time (time.time()): a reply that comes late does not move it."""
        limits, now = self._limits(name, rpm, tpm), time.time()
        hold = limits.hold(tokens, now)
        return {"hold": hold} if hold > 0 else {"at": now + limits.book(tokens, now)}

    def learn(self, name: str, rpm: float | None, tpm: float | None, worker: str | None = None,
              limits: dict | None = None, budgets: dict | None = None, used: tuple[int, int] | None = None,
              pause: float | None = None) -> None:
        """What one answer told a worker: the server's limits and budgets, the usage against the
        estimate, or a 429's pause for every worker."""
        shared, now = self._limits(name, rpm, tpm), time.time()
        if limits or budgets:
            shared.learn(limits or {}, {k: tuple(v) for k, v in (budgets or {}).items()}, now)
        if used is not None:
            shared.settle(*used)
        if pause is not None:
            shared.pause_for(pause, now)


class ClusterLimits:
    """A worker model's rate limits, kept on the scheduler for the whole cluster (the `Limiter`
    the OpenAI backend asks). Waits and events are the same as `RateLimits`'."""

    active = True  # another worker's 429 may pause this one: every request asks

    def __init__(self, worker, name: str, rpm: float | None, tpm: float | None):
        self.worker, self.name, self.rpm, self.tpm = worker, name, rpm, tpm
        self.here = RateLimits(rpm)  # spaces this worker's own sends when its loop woke late

    async def admit(self, tokens: int, emit: Callable[[str], None]) -> None:
        wait = Wait(emit)
        while True:
            reply = await self.worker.scheduler.llmnb_limit_book(name=self.name, rpm=self.rpm, tpm=self.tpm,
                                                                 tokens=tokens)
            if "at" in reply:
                await wait(reply["at"] - time.time())
                break
            await wait(reply["hold"])
            if reply["hold"] <= TOLERANCE:  # too short for `wait` to sleep: ask again after it
                await asyncio.sleep(reply["hold"])
        await wait(self.here.space(time.monotonic()))
        wait.end()

    def _tell(self, **what) -> None:
        self.worker.batched_send({"op": LEARN, "name": self.name, "rpm": self.rpm, "tpm": self.tpm, **what})

    def settle(self, estimated: int, used: int | None) -> None:
        if used is not None and self.tpm:
            self._tell(used=(estimated, used))

    def observe(self, headers: Mapping[str, str]) -> None:
        limits, budgets = read_headers(headers)
        if limits or budgets:
            self._tell(limits=limits, budgets=budgets)

    def pause(self, headers: Mapping[str, str], fallback: float) -> float:
        seconds = pause_seconds(headers, fallback)
        limits, budgets = read_headers(headers)
        self._tell(limits=limits, budgets=budgets, pause=seconds)
        return seconds


def limit_name(backend, key_digest: str) -> str:
    """The shared limit's name: the provider's URL, the model, the key's hash and the limits."""
    user = backend.limits.user
    text = f"{backend.base_url}|{backend.name}|{key_digest}|{user['requests']}|{user['tokens']}"
    return "llmnb-limit-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def key_digest(key: str) -> str:
    """A short hash naming an API key (in a shared limit's name), never the key."""
    return hashlib.sha256(b"llmnb key " + key.encode()).hexdigest()[:16]


def share_limits(model, worker, digest: str | None) -> None:
    """Give a remote model made on `worker` the cluster's limits in place of its own; `digest`
    names the key the user gave (None: the key of the worker's environment)."""
    backend = model.backend
    if not isinstance(getattr(backend, "limits", None), RateLimits):
        return  # a local model: no rate limits
    digest = digest or key_digest(backend._secret)
    user = backend.limits.user
    backend.limits = ClusterLimits(worker, limit_name(backend, digest), user["requests"], user["tokens"])
