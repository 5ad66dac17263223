"""Each notebook is kept as a jupytext percent script (notebooks/NN-name.py, the source) paired
with its .ipynb (built with outputs by notebooks/build_notebooks.py).

The saved .ipynb must hold exactly its source's cells (ruff lints the notebooks' code through the
.ipynb), and saving a notebook from JupyterLab, through jupytext's contents manager as the server
runs it, must write the source back unchanged apart from the edit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext import TextFileContentsManager  # what the Jupyter server saves through, with jupytext
from jupytext.config import load_jupytext_config

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.py"))
REBUILD = "rebuild it: python notebooks/build_notebooks.py {}"


def test_every_notebook_has_its_source():
    assert SOURCES, "no notebook sources found"
    assert {p.stem for p in SOURCES} == {p.stem for p in NOTEBOOKS.glob("*.ipynb")}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_saved_notebook_is_built_from_its_source(source):
    """The .ipynb, written as a percent script with the pair's settings, is the source verbatim."""
    saved = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    config = load_jupytext_config(str(NOTEBOOKS))
    assert config is not None and "ipynb,py:percent" in config.formats
    as_text = jupytext.writes(saved, fmt="py:percent", config=config)
    assert as_text == source.read_text(encoding="utf-8"), REBUILD.format(source.stem[:2])


def test_saving_in_jupyterlab_updates_the_source(tmp_path):
    name = "03-magics-tour"  # tags, cell magics and markdown: the cells most likely to change on a round trip
    for suffix in (".py", ".ipynb"):
        shutil.copy(NOTEBOOKS / f"{name}{suffix}", tmp_path)
    shutil.copy(NOTEBOOKS / "jupytext.toml", tmp_path)
    before = (tmp_path / f"{name}.py").read_text(encoding="utf-8")
    manager = TextFileContentsManager(root_dir=str(tmp_path))

    opened = manager.get(f"{name}.ipynb")
    manager.save(opened, f"{name}.ipynb")
    assert (tmp_path / f"{name}.py").read_text(encoding="utf-8") == before, "a save without edits changed the source"

    cells = opened["content"]["cells"]
    magic = next(c for c in cells if c["source"].startswith("%%llm_parallel -o seed"))
    magic["source"] = magic["source"].replace("Generate 20", "Generate 12")
    manager.save(opened, f"{name}.ipynb")
    after = (tmp_path / f"{name}.py").read_text(encoding="utf-8")
    assert after == before.replace("Generate 20 English", "Generate 12 English")
    saved, source = (jupytext.read(folder / f"{name}.py").cells for folder in (tmp_path, NOTEBOOKS))
    assert [c.metadata.get("tags") for c in saved] == [c.metadata.get("tags") for c in source]
