"""The live timeline: one row per task, drawn while the cell runs."""

from .widget import Timeline

__all__ = ["Timeline"]
