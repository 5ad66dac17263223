"""The live timeline: one row per task, drawn while the cell runs (a big run: its progress)."""

from .widget import Timeline, expect_calls

__all__ = ["Timeline", "expect_calls"]
