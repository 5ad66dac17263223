"""What %%llm_parallel returns: results by task name, failures kept as entries."""

from __future__ import annotations


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
    """A dict of task name -> value (or `TaskError`), plus `.errors`, `.cancelled`, `.timeline` and
    `.as_list()`."""

    def __init__(self):
        super().__init__()
        self.cancelled: list[str] = []
        self.order: list[str] = []
        self.timeline = None

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
        line = f"{len(self.values_ok)} done"
        if self.errors:
            first = next(iter(self.errors.items()))
            line += f", {len(self.errors)} failed (first: {first[0]}: {type(first[1]).__name__}: {first[1]})"
        if self.cancelled:
            line += f", {len(self.cancelled)} cancelled"
        return line

    def __repr__(self) -> str:
        names = self.order or list(self)
        lines = [f"Results: {self.summary_line()}"]
        for name in names:
            value = self.get(name, "<cancelled>")
            text = " ".join(repr(value).split()) if name in self else value
            lines.append(f"  {name}: {text[:80]}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))
