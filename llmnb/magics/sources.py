"""Where a magic's answers came from: the answer cache or the model."""

from __future__ import annotations

from ..events import JOB, CallEvent


class Sources:
    """A call listener counting the calls answered from the cache and the ones sent."""

    def __init__(self):
        self.cached = self.sent = 0

    def __call__(self, event: CallEvent) -> None:
        if event.kind in ("finished", "failed") and event.parent is None and event.method != JOB:  # a job is no call
            if event.cached:
                self.cached += 1
            else:
                self.sent += 1

    def line(self) -> str:
        return f"{self.cached:,} from the cache, {self.sent:,} sent"
