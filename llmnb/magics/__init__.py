"""%llm_model, %%llm_extract and %%llm_parallel. Loaded by `%load_ext llmnb`.

cells.py holds the magics class; parse.py reads a %%llm_parallel body (pure); namespace.py reads
what the options name in the user's namespace; report.py prints; runner.py awaits a cell's
coroutine on the kernel's loop."""

from .cells import LlmMagics, load_ipython_extension
from .report import Interrupted

__all__ = ["LlmMagics", "Interrupted", "load_ipython_extension"]
