"""In a real browser (JupyterLab, headless Chromium, as tests/test_browser.py drives them): a value
that fills in while its `%%llm_extract --stream` cell runs, and the table of
`%%llm_parallel --model a,b`. Screenshots go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.request

import nbformat
from test_browser import ARTIFACTS, STDERR, WAIT_MS, lab, open_notebook, page, run_cell  # noqa: F401 (fixtures)

SETUP = """%load_ext llmnb
from pydantic import BaseModel
from llmnb import Models
from llmnb.demo_server import DemoServer

class Person(BaseModel):
    name: str
    age: int
    city: str

server = DemoServer(latency=0.2, per_token=0.12).start()  # slow tokens: the value fills in for ~3 s
local = Models.create()
remote = Models.create("openai:demo", base_url=server.base_url, api_key="demo", price=(0.15, 0.60))"""
STREAM = "%%llm_extract Person --stream --model remote -o someone\nInvent a person."
GRID = """%%llm_parallel --model local,remote -o res -q
capital: What is the capital of France? Answer in one word.
colours -> list[str]: Name three colours.
label ? spam | ham: Win a free phone now!!!"""


def put_notebook(url: str, name: str, sources: list[str]) -> None:
    """Write a notebook into the server's folder through its contents API, with the XSRF cookie
    a page of the server sets (no token: the server listens on 127.0.0.1 only)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/lab", timeout=30).close()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    body = json.dumps({"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}).encode()
    request = urllib.request.Request(f"{url}/api/contents/{name}", data=body, method="PUT",
                                     headers={"Content-Type": "application/json", "X-XSRFToken": xsrf})
    opener.open(request, timeout=30).close()


def test_the_grid_is_one_table_and_a_value_fills_in(lab, page):  # noqa: F811 (fixtures)
    put_notebook(lab, "grid.ipynb", [SETUP, GRID, STREAM])
    open_notebook(page, lab, "grid.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    run_cell(page, 0)
    page.wait_for_selector(".jp-CodeCell >> nth=0 >> .jp-InputPrompt:has-text('[1]')")

    run_cell(page, 1)
    page.wait_for_selector(".jp-CodeCell >> nth=1 >> .jp-InputPrompt:has-text('[2]')")
    table = page.locator("table.llmnb-grid")
    table.wait_for()
    table.scroll_into_view_if_needed()
    page.locator(".jp-CodeCell").nth(1).screenshot(path=str(ARTIFACTS / "grid.png"))
    assert table.locator("thead th").all_inner_texts()[1:] == ["local", "remote"]
    assert table.locator("tbody tr").count() == 3
    assert table.locator("tbody th").all_inner_texts() == ["capital", "colours", "label"]
    cells = table.locator("tbody td").all_inner_texts()
    assert len(cells) == 6 and all(re.search(r"\d+\.\d\d s", c) for c in cells), cells
    assert all("free" in c for c in cells[0::2]) and all("$" in c for c in cells[1::2])

    run_cell(page, 2)
    stream_cell = page.locator(".jp-CodeCell").nth(2)
    filling = stream_cell.locator(".jp-OutputArea-output", has_text=re.compile(r"Person\(.*None"))
    filling.wait_for(timeout=WAIT_MS)  # a partial value, some fields still None, while the cell runs
    assert "*" in stream_cell.locator(".jp-InputPrompt").inner_text()
    seen = [filling.inner_text()]
    stream_cell.screenshot(path=str(ARTIFACTS / "partial-filling.png"))
    page.wait_for_selector(".jp-CodeCell >> nth=2 >> .jp-InputPrompt:has-text('[3]')")
    outputs = stream_cell.locator(".jp-OutputArea-output").all_inner_texts()
    stream_cell.screenshot(path=str(ARTIFACTS / "partial-final.png"))
    assert any(re.match(r"filled in over \d+ values in [\d.]+ s", t) for t in outputs), outputs
    final = next(t for t in outputs if t.startswith("Person("))
    assert "None" not in final and "None" in seen[0]

    assert page.locator(STDERR).count() == 0, page.locator(STDERR).all_inner_texts()
