"""The calls' events of a cluster's workers, on the driver's listeners as they happen.

A worker's `Forwarder` gathers its calls' events and sends them every FLUSH_SECONDS as one Dask
event (`Worker.log_event` on the run's topic: plain tuples, which Dask's own messages carry); the
driver subscribes to the topic (`Client.subscribe_topic`) and `receive` passes each on to the
listeners of the run's context (`llmnb.events.relay`), with the worker's address and the time on
the driver's clock. The live timeline and the big-run picture then show every worker's calls.
Nothing here carries an API key: an event holds its call's label, model, counts and error text,
which the backends keep free of keys.
"""

from __future__ import annotations

import time
from dataclasses import astuple, fields, replace
from typing import Any

from ..events import CallEvent, Listener

TOPIC = "llmnb-calls-"  # + the run's id
FLUSH_SECONDS = 0.05  # the live picture redraws at most about this often anyway
FIELDS = [f.name for f in fields(CallEvent)]


def wall_offset() -> float:
    """time.time() - time.perf_counter() in this process: turns event times into wall-clock times
    and back, so workers' times land on the driver's clock (one machine, or clocks kept by NTP)."""
    return time.time() - time.perf_counter()


class Forwarder:
    """A call listener on a worker sending the events to the driver in batches."""

    def __init__(self, worker, run: str):
        self.worker, self.topic = worker, TOPIC + run
        self.pending: list[tuple] = []
        self.offset = wall_offset()
        self.timer = None

    def __call__(self, event: CallEvent) -> None:
        row = astuple(event)
        self.pending.append((*row[:2], row[2] + self.offset, *row[3:]))
        if self.timer is None:
            self.timer = self.worker.loop.asyncio_loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending:
            batch, self.pending = self.pending, []
            self.worker.log_event(self.topic, {"worker": self.worker.address, "events": batch})


def receive(relay: Listener, counter: dict[str, int] | None = None):
    """The handler for `Client.subscribe_topic`: each batch's events to `relay`, on this clock.
    `counter` (worker -> events) tells which workers sent events."""
    offset = wall_offset()

    def handler(message: tuple[float, Any]) -> None:
        _, msg = message
        worker = msg["worker"]
        if counter is not None:
            counter[worker] = counter.get(worker, 0) + len(msg["events"])
        for row in msg["events"]:
            event = CallEvent(**dict(zip(FIELDS, row, strict=True)))
            relay(replace(event, time=event.time - offset, worker=worker))

    return handler
