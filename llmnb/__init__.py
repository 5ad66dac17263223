"""llmnb: concurrent LLM calls made easy in Jupyter, with an offline embedded model.

    from llmnb import Models
    model = Models.create()                       # embedded SmolLM2, no key, no download
    label = await model.classify_async(["spam", "not spam"], "I am a Nigerian prince...")
"""

from .cache import Cache, use_cache
from .errors import ConfigError, ExtractError, LlmnbError, MaxStepsError, ModelCallError, SchemaError
from .events import CallEvent, listen
from .model import Model
from .registry import Models
from .thread import Thread
from .tools import Tool, tool

__all__ = ["Models", "Model", "Thread", "Timeline", "Run", "Task", "listen", "CallEvent", "tool", "Tool", "Cache",
           "use_cache", "LlmnbError", "ConfigError", "SchemaError", "ExtractError", "ModelCallError", "MaxStepsError"]
__version__ = "0.1.0"


def __getattr__(name):
    # The timeline pulls in rendering code (and ipywidgets when shown); load it on first use.
    if name == "Timeline":
        from .timeline import Timeline

        return Timeline
    if name in ("Run", "Task"):  # runs load the task runner, which reports to open timelines
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'llmnb' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """`%load_ext llmnb`: register the %llm_model, %%llm_extract and %%llm_parallel magics."""
    from .magics import load_ipython_extension as load

    load(ipython)
