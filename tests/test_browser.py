"""End to end in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

Checks what a person sees: the timeline grows while the cell runs, its final picture has a bar
per task and the summary, no cell shows an error, and the stop button cancels a %%llm_parallel
cell cleanly. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from servers import free_port, start, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic", "--no-first-run"]
LIVE_SVG = ".widget-html svg"
STATIC_SVG = ".jp-RenderedHTMLCommon > svg, .jp-RenderedHTML svg"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("lab")
    work = home / "work"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "01-seed-async-example.ipynb", work)
    cells = [nbformat.v4.new_code_cell("%load_ext llmnb"),
             nbformat.v4.new_code_cell("%%llm_parallel -o cut\nstory * 4: Write a very long story about the sea."),
             nbformat.v4.new_code_cell('print("next cell ran", len(cut.cancelled))')]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / "interrupt.ipynb")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "IPYTHONDIR": str(home / "ipython"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    # render every cell (no windowing), so a timeline scrolled out of view is still in the page
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                  "--allow-root", "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={work}",
                  "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                 f"{url}/api/status", home / "lab.log", env=env)
    yield url
    stop(proc)


@pytest.fixture
def page(tmp_path):
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=FLAGS, viewport={"width": 1400, "height": 1000})
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(120_000)
        yield page
        context.close()


def open_notebook(page, url: str, name: str) -> None:
    page.goto(f"{url}/lab/tree/{name}?reset")  # a fresh workspace: only this notebook open
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_selector("text=| Idle", timeout=120_000)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def run_cell(page, index: int) -> None:
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")


def test_seed_notebook_timeline_is_live_and_final(lab, page):
    open_notebook(page, lab, "01-seed-async-example.ipynb")
    page.locator(".lm-MenuBar-itemLabel", has_text="Edit").click()
    page.get_by_text("Clear Outputs of All Cells", exact=True).click()
    assert page.locator(".jp-OutputArea-output >> text=OPENAI_API_KEY is not set").count() == 0
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
    page.get_by_text("Run All Cells", exact=True).click()
    live_states = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not page.locator(".jp-OutputArea-output >> text=OPENAI_API_KEY is not set").count():
        for svg in page.locator(LIVE_SVG).all():
            try:
                live_states.add(svg.evaluate("e => e.outerHTML"))
            except playwright.Error:
                pass  # replaced by the static picture between the two calls
        time.sleep(0.1)
    shot(page, "seed-notebook.png")
    assert page.locator(".jp-OutputArea-output >> text=OPENAI_API_KEY is not set").count(), "the notebook did not run to its last cell"
    assert len(live_states) >= 2, "the timeline was not seen changing while the cell ran"
    final = page.locator(STATIC_SVG, has_text="two tasks on the embedded model")
    assert final.count() == 1
    final.screenshot(path=str(ARTIFACTS / "seed-timeline.png"))
    assert final.locator("rect.llmnb-bar").count() == 2
    assert "ratio" in final.text_content()
    outputs = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "Traceback" not in outputs and "Error" not in outputs


def test_stop_button_cancels_llm_parallel_and_next_cell_runs(lab, page):
    open_notebook(page, lab, "interrupt.ipynb")
    run_cell(page, 0)
    page.wait_for_selector(".jp-Cell:nth-child(1) .jp-InputPrompt:has-text('[1]')")
    run_cell(page, 1)
    page.wait_for_selector(LIVE_SVG)
    time.sleep(2)
    page.locator("jp-button[data-command='notebook:interrupt-kernel'], button[data-command='notebook:interrupt-kernel']").first.click()
    final = page.locator(STATIC_SVG, has_text="%%llm_parallel")
    final.wait_for()
    assert final.locator("g[data-status='cancelled']").count() >= 1
    assert page.locator(".jp-OutputArea-output >> text=Interrupted:").count() == 1  # one line, no traceback
    assert "Traceback" not in " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    run_cell(page, 2)
    page.wait_for_selector(".jp-OutputArea-output >> text=next cell ran")
    shot(page, "interrupted-llm-parallel.png")
    assert page.locator(".jp-OutputArea-output >> text=next cell ran").count() == 1
