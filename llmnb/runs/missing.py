"""Which tasks of a run the kernel's answer cache answers, and which must be sent away: the
first step of every executor that sends work out of this process (a cluster, a batch job).

Every task runs here with kept answers only (`llmnb.cache.kept_only`) and no listener: a task
whose turns are all kept completes; one that needs a turn the cache lacks stops at that turn
(`NotKept`, with the request and its cache key). A task with tools runs its tools here while it
is asked, as it would on any re-run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .. import events
from ..cache import kept_only
from ..errors import NotKept
from .form import Run, Task


@dataclass(frozen=True)
class Missing:
    """`kept`: the tasks the cache answers in full; `missing`: task name -> its first turn the
    cache does not hold."""

    kept: tuple[Task, ...]
    missing: dict[str, NotKept]


async def find_missing(run: Run) -> Missing:
    """Split `run` into what the cache answers and what must be asked (see the module)."""

    async def ask(task: Task) -> NotKept | None:
        try:
            await task.call(run.model)
        except NotKept as e:
            return e
        except Exception:  # it fails the same way when it runs for real, and is reported then
            return None
        return None

    with events.quiet(), kept_only():
        found = await asyncio.gather(*(ask(task) for task in run.tasks))
    missing = {task.name: e for task, e in zip(run.tasks, found, strict=True) if e is not None}
    return Missing(tuple(t for t in run.tasks if t.name not in missing), missing)
