"""The seed example as a user first runs it: `python -m llmnb` on the embedded model."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from llmnb.__main__ import Names

NAME = re.compile(r"[A-Z][a-z]{1,15} [A-Z][a-z]{1,15}")


def test_python_m_llmnb_gives_20_names_and_a_label():
    """The command of the README: 20 strings shaped "First Last", a label, and the timeline."""
    run = subprocess.run([sys.executable, "-m", "llmnb"], capture_output=True, text=True, timeout=300, check=True)
    results = [line.removeprefix("Result: ") for line in run.stdout.splitlines() if line.startswith("Result: ")]
    lists = [ast.literal_eval(r) for r in results if r.startswith("[")]
    assert len(lists) == 1, run.stdout
    names = lists[0]
    assert len(names) == 20 and all(NAME.fullmatch(n) for n in names), names
    assert set(results) - {str(names)} <= {"spam", "not spam"}
    assert "2 tasks" in run.stdout  # the text timeline's summary line


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_constrained_list_holds_at_every_sample(embedded_model, seed):
    """Sampled, as the seed example runs: the grammar keeps the count and the shape."""
    names = embedded_model.extract(Names, "Generate 20 English names with first name and surname", seed=seed)
    assert len(names) == 20 and all(NAME.fullmatch(n) for n in names), names


def test_plain_list_of_str_says_nothing_of_how_many():
    """Why a plain list[str] came back with two items: its schema has no length, so the grammar
    lets the model close the list after any item; the seed example's type has one."""
    from llmnb.structured import target_for

    assert {"minItems", "maxItems"}.isdisjoint(target_for(list[str]).schema["properties"]["value"])
    value = target_for(Names).schema["properties"]["value"]
    assert (value["minItems"], value["maxItems"]) == (20, 20) and "pattern" in value["items"]
