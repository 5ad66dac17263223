"""Runs of many calls as data, and where they execute.

- `Run`, `Task` (form.py): the run written down: the model, and each task's method, target and
  prompt; `Run.for_each` fills one set of tasks from each item of a list.
- `Here` (here.py): this event loop, the default; `run_tasks` for any named coroutines.
- `llmnb.runs.cluster.Cluster`: a Dask cluster's workers (optional: `pip install llmnb[dask]`).
- `llmnb.runs.batch.Batch`: the provider's Batch API, at its batch price.
- `missing.py`: what the kernel's cache answers before anything leaves this process.
- `compare` (grid.py): the same tasks on several models at once, `Results.grid()` laying them out.
Every executor returns the same `Results` in the tasks' order, failures kept as `TaskError`.
"""

from .form import Executor, Run, Task
from .grid import compare, compare_async
from .here import Done, Here, run_tasks
from .results import Results, TaskError

__all__ = ["Run", "Task", "Executor", "Here", "Done", "run_tasks", "Results", "TaskError", "compare",
           "compare_async"]
