"""Runs of many calls as data, and where they execute.

- `Run`, `Task` (form.py): the run written down: the model, and each task's method, target and
  prompt; `Run.for_each` fills one set of tasks from each item of a list.
- `Here` (here.py): this event loop, the default; `run_tasks` for any named coroutines.
- `llmnb.runs.cluster.Cluster`: a Dask cluster's workers (optional: `pip install llmnb[dask]`).
- `Batch` (batch.py): the provider's Batch API, at its batch price; `cancel_batch` stops a job.
- `missing.py`: what the kernel's cache answers before anything leaves this process.
- `compare` (grid.py): the same tasks on several models at once, `Results.grid()` laying them out.
Every executor returns the same `Results` in the tasks' order, failures kept as `TaskError`.
"""

from .batch import Batch, cancel_batch, cancel_batch_async
from .form import Executor, Run, Task
from .grid import compare, compare_async
from .here import Done, Here, run_tasks
from .results import Results, TaskError

__all__ = ["Run", "Task", "Executor", "Here", "Batch", "cancel_batch", "cancel_batch_async", "Done", "run_tasks",
           "Results", "TaskError", "compare", "compare_async"]
