"""Run each notebook's source and save it with its outputs.

Each notebook's source is NAME.py, in jupytext's percent format: the file to edit, review and
lint. jupytext.toml pairs it with NAME.ipynb, so with jupytext installed, JupyterLab opens either
as a notebook and saving updates both. This script runs the source in a fresh kernel and writes
NAME.ipynb with its outputs:

    python notebooks/build_notebooks.py            # all notebooks
    python notebooks/build_notebooks.py 01 03      # some

Saved notebooks keep their outputs (the final static timeline SVG included) so GitHub and
nbviewer show them; widget state and timing metadata are dropped so the JSON stays clean.
Cells starting with "# NBVAL_CHECK_OUTPUT" are the ones nbval compares (pytest --nbval-lax).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}
WIDGET = "application/vnd.jupyter.widget-view+json"


def sources() -> list[Path]:
    """The notebooks' sources: NN-name.py."""
    return sorted(HERE.glob("[0-9][0-9]-*.py"))


def clean(nb) -> None:
    """Drop what changes from run to run without meaning anything: widget state, timings, the
    pairing details (jupytext.toml holds those)."""
    nb.metadata = nbformat.NotebookNode(kernelspec=KERNEL, language_info={"name": "python"})
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if data.pop(WIDGET, None) is not None:  # its text form, the widget's constructor, means nothing saved
                data["text/plain"] = "(interactive controls: they show when the notebook runs)"
            output.get("metadata", {}).clear() if "metadata" in output else None


def build(source: Path) -> Path:
    nb = jupytext.read(source)
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only what really changed
        cell.id = f"cell-{i}"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}})
    client.execute()
    clean(nb)
    path = source.with_suffix(".ipynb")
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for source in sources():
        if not wanted or any(source.name.startswith(w) for w in wanted):
            print("built", build(source))
