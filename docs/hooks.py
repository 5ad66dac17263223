"""MkDocs hook: every public name of llmnb is in the API reference, with a docstring.

Public names are those in `llmnb.__all__` and the objects the reference page renders (`::: NAME`
lines), with their public methods and properties. A name missing from the page, or without a
docstring, is a warning, which `mkdocs build --strict` turns into a failed build. The check
imports llmnb, as the blocking twins (`Model.generate`, ...) get their docstrings at import time.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.public_names")
REFERENCE = "reference.md"


def _resolve(dotted: str):
    """The object named by a dotted path such as llmnb.otel.OtelListener."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _members(cls: type) -> dict[str, object]:
    """A class's own public methods and properties (data fields are described in its docstring)."""
    found = {}
    for klass in cls.__mro__:
        if not klass.__module__.startswith("llmnb"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in found:
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                found[name] = value
    return found


def _has_doc(obj) -> bool:
    """A docstring of its own: a class does not inherit one, and a dataclass's generated
    signature ("CallEvent(call_id: int, ...)") is none."""
    if not inspect.isclass(obj):
        return bool(inspect.getdoc(obj))
    doc = vars(obj).get("__doc__") or ""
    return bool(doc.strip()) and not doc.startswith(f"{obj.__name__}(")


def undocumented(names: list[str]) -> list[str]:
    """The dotted names among `names` (and their public members) that have no docstring."""
    missing = []
    for dotted in names:
        obj = _resolve(dotted)
        if not _has_doc(obj):
            missing.append(dotted)
        if inspect.isclass(obj):
            missing += [f"{dotted}.{name}" for name, member in _members(obj).items() if not _has_doc(member)]
    return missing


def on_pre_build(config) -> None:
    import llmnb

    page = Path(config["docs_dir"]) / REFERENCE
    rendered = re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    shown = {name.rsplit(".", 1)[-1] for name in rendered}
    for name in sorted(set(llmnb.__all__) - shown):
        log.warning(f"llmnb.{name} is public (in llmnb.__all__) but not in docs/{REFERENCE}: add '::: llmnb.{name}'")
    for name in undocumented(rendered):
        log.warning(f"{name} has no docstring; the API reference shows it empty")
