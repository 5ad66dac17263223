"""The body of a %%llm_parallel cell -> task specs. Pure: nothing here is evaluated.

One task per line:

    names -> list[str]: Generate 20 English names       extract into a type
    label ? spam | not spam: I am a Nigerian prince...  classify into labels
    greet * 10: Hello, how are you?                      the same prompt 10 times (greet_1..greet_10)
    story: Tell me a story about {animal}                generate text
    What is the capital of France?                       a bare prompt (named p1, p2, ...)

An indented line continues the prompt above it; blank lines and lines starting with # are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

HEADER = re.compile(
    r"""^(?P<name>[A-Za-z_]\w*)\s*
        (?:\*\s*(?P<count>\d+)\s*)?
        (?:->\s*(?P<type>[^:]+?)\s*|\?\s*(?P<labels>[^:]+?)\s*)?
        :\s(?P<prompt>.*)$""",
    re.VERBOSE,
)
MAX_REPEAT = 10_000


class ParseError(ValueError):
    """A line of the cell body that cannot become a task."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # generate, extract, classify
    prompt: str
    type_expr: str | None = None
    labels: tuple[str, ...] | None = None


def parse_tasks(body: str) -> list[TaskSpec]:
    """Task specs in the order written; repeated tasks expanded; names made unique."""
    entries: list[dict] = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1]["prompt"] += "\n" + line.strip()
            continue
        match = HEADER.match(line.strip())
        if match is None or not match["prompt"].strip():
            entries.append({"name": None, "count": 1, "kind": "generate", "prompt": line.strip()})
            continue
        entry: dict[str, Any] = {"name": match["name"], "count": int(match["count"] or 1),
                                 "prompt": match["prompt"].strip(), "kind": "generate"}
        if match["type"]:
            entry.update(kind="extract", type_expr=match["type"])
        elif match["labels"]:
            labels = tuple(label.strip() for label in match["labels"].split("|"))
            if len(labels) < 2 or not all(labels):
                raise ParseError(f"line {number}: give at least two labels separated by |, "
                                 "e.g. `label ? spam | not spam: ...`")
            entry.update(kind="classify", labels=labels)
        if not 1 <= entry["count"] <= MAX_REPEAT:
            raise ParseError(f"line {number}: repeat between 1 and {MAX_REPEAT} times, not {entry['count']}")
        entries.append(entry)
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    bare = 0
    for entry in entries:
        count = entry.pop("count")
        base = entry.pop("name")
        if base is None:
            bare += 1
            base = f"p{bare}"
        for i in range(1, count + 1):
            name = f"{base}_{i}" if count > 1 else base
            if name in seen:
                raise ParseError(f"the task name {name!r} is used twice; give each task its own name")
            seen.add(name)
            specs.append(TaskSpec(name=name, **entry))
    if not specs:
        raise ParseError("the cell has no tasks: write one prompt per line, e.g. `greet * 10: Hello, how are you?`")
    return specs
