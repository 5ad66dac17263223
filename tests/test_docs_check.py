"""The documentation's own check (docs/hooks.py): every public name is in the API reference, with
a docstring. `mkdocs build --strict` runs it in CI; here it is run on the real package."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import llmnb

ROOT = Path(__file__).resolve().parent.parent


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered() -> list[str]:
    return re.findall(r"^::: ([\w.]+)", (ROOT / "docs" / "reference.md").read_text(), flags=re.MULTILINE)


def test_every_public_name_is_in_the_reference_with_a_docstring():
    names = rendered()
    assert set(llmnb.__all__) <= {name.rsplit(".", 1)[-1] for name in names}
    assert _hooks().undocumented(names) == []


PROBE = """
import dataclasses

class Bare:
    def run(self):
        pass

@dataclasses.dataclass
class Record:
    x: int
"""


def test_the_check_finds_what_has_no_docstring(monkeypatch):
    """A class and a method without docstrings, and a dataclass whose only docstring is the
    signature the dataclass machinery writes, are all reported."""
    module = types.ModuleType("llmnb._docs_probe")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(PROBE, "<probe>", "exec"), module.__dict__)
    assert _hooks().undocumented(["llmnb._docs_probe.Bare", "llmnb._docs_probe.Record"]) == [
        "llmnb._docs_probe.Bare", "llmnb._docs_probe.Bare.run", "llmnb._docs_probe.Record"]
