"""What %%llm_parallel returns: results by task name, failures kept as entries; for a grid of
models (`llmnb.runs.compare`, `--model a,b`), by (task, model)."""

from __future__ import annotations

import importlib.util
from typing import Any

from . import table


class TaskError:
    """A task's failure, standing in the results where its value would be."""

    def __init__(self, error: BaseException):
        self.error = error

    def __repr__(self) -> str:
        return f"<failed: {type(self.error).__name__}: {self.error}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, TaskError) and other.error is self.error

    __hash__ = object.__hash__


class Results(dict):
    """A dict of task name -> value (or `TaskError`), plus `.errors`, `.cancelled`, `.timeline`,
    `.as_list()` and `.grid()`.

    The results of several models (`llmnb.runs.compare`, `%%llm_parallel --model a,b`) are keyed
    by (task, model): `res["capital", "a"]`; `.tasks` and `.models` name the grid's rows and
    columns, `.latency` and `.cost` hold each answer's seconds and USD under the same keys."""

    def __init__(self):
        super().__init__()
        self.cancelled: list = []
        self.order: list = []
        self.timeline = None
        self.tasks: list[str] = []  # a grid's rows
        self.models: list[str] = []  # a grid's columns; empty for the results of one model
        self.latency: dict[Any, float] = {}  # seconds from a task's start to its answer
        self.cost: dict[Any, float | None] = {}  # USD of its model calls (None: price not known)
        self.how = ""  # how the run was executed, when not here: "in 2 batch jobs"

    @property
    def errors(self) -> dict[str, BaseException]:
        """The failed tasks' errors by task name."""
        return {name: v.error for name, v in self.items() if isinstance(v, TaskError)}

    @property
    def values_ok(self) -> dict:
        """The values of the tasks that succeeded, by task name."""
        return {name: v for name, v in self.items() if not isinstance(v, TaskError)}

    def as_list(self) -> list:
        """The values in the tasks' order (with --for: the list's order, line after line); a
        failed task gives its `TaskError`, a cancelled one None."""
        return [self.get(name) for name in self.order or list(self)]

    def summary_line(self) -> str:
        """One line: how many tasks were done, failed (with the first error) and cancelled."""
        line = f"{len(self.values_ok)} done" + (f" {self.how}" if self.how else "")
        if self.errors:
            first = next(iter(self.errors.items()))
            line += f", {len(self.errors)} failed (first: {key_name(first[0])}: {type(first[1]).__name__}: {first[1]})"
        if self.cancelled:
            line += f", {len(self.cancelled)} cancelled"
        return line

    def grid(self, what: str = "value") -> Any:
        """Tasks down, models across: a pandas DataFrame when pandas is installed, else a list of
        rows ([task, cell, cell, ...], the first row the header). `what` is "value" (a failed
        task gives its `TaskError`, a cancelled one None), "latency" (seconds) or "cost" (USD).
        The results of one model give one column, named "value"."""
        sources = {"value": self, "latency": self.latency, "cost": self.cost}
        if what not in sources:
            raise ValueError(f'grid(what=...) is "value", "latency" or "cost", not {what!r}')
        tasks, models = self._axes()
        cells = [[sources[what].get((task, model) if self.models else task) for model in models] for task in tasks]
        if importlib.util.find_spec("pandas") is None:
            return [["task", *models], *([task, *row] for task, row in zip(tasks, cells, strict=True))]
        import pandas  # type: ignore[import-untyped]  # optional, slow to import: only for a grid asked for

        return pandas.DataFrame(cells, index=pandas.Index(tasks, name="task"), columns=models)

    def _axes(self) -> tuple[list, list[str]]:
        if self.models:
            return self.tasks, self.models
        return self.order or list(self), ["value"]

    def _cells(self) -> dict[tuple[str, str], tuple[str, str, bool]]:
        """Each answered (task, model): its short answer, its measures, whether it failed."""
        return {key: (table.short(value), table.measures(self.latency.get(key), self.cost.get(key)),
                      isinstance(value, TaskError)) for key, value in self.items()}

    def _repr_html_(self) -> str | None:
        """A grid shows as one HTML table in a notebook; the results of one model as text."""
        if not self.models:
            return None
        tasks, models = self._axes()
        return f"<p>Results: {self.summary_line()}</p>" + table.to_html(tasks, models, self._cells())

    def __repr__(self) -> str:
        lines = [f"Results: {self.summary_line()}"]
        if self.models:
            return "\n".join([*lines, table.to_text(self.tasks, self.models, self._cells())])
        for name in self.order or list(self):
            value = self.get(name, "<cancelled>")
            text = " ".join(repr(value).split()) if name in self else value
            lines.append(f"  {name}: {text[:80]}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


def key_name(key: Any) -> str:
    """A result's key as written: "task", or "task @ model" in a grid."""
    return " @ ".join(key) if isinstance(key, tuple) else str(key)
