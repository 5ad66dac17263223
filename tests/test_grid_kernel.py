"""A grid of models in a real kernel: `%%llm_parallel --model a,b` as a notebook sees it."""

from __future__ import annotations

import re

import pytest
from test_kernel import errors, run

jupyter_client = pytest.importorskip("jupyter_client")

SETUP = """%load_ext llmnb
from llmnb import Models
from llmnb.demo_server import DemoServer
server = DemoServer(latency=0.2, per_token=0.01).start()
a = Models.create()
b = Models.create("openai:demo", base_url=server.base_url, api_key="k")"""

CELL = """%%llm_parallel --model a,b -o res
capital: What is the capital of France? Answer in one word.
colours -> list[str]: Name three colours.
label ? spam | ham: Win a free phone now!!!"""


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        assert not errors(run(kc, SETUP))
        yield kc
    finally:
        run(kc, "server.stop()")
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.slow
def test_three_lines_on_two_models_give_six_results_and_one_table(kernel):
    messages = run(kernel, CELL)
    assert not errors(messages)
    result = [m["content"]["data"] for m in messages if m["msg_type"] == "execute_result"]
    assert len(result) == 1
    table = result[0]["text/html"]
    assert table.count("<table") == 1 and table.count("<tr>") == 4  # a header and three tasks
    assert all(f'text-align:left">{model}</th>' in table for model in ("a", "b"))
    assert "6 done" in result[0]["text/plain"] and "capital @ b" in result[0]["text/plain"]
    check = run(kernel, "print(len(res), res.grid().shape, sorted({m for _, m in res}), "
                        "[r['name'].split('/')[0] for r in res.timeline.records()])")
    printed = "".join(m["content"].get("text", "") for m in check if m["msg_type"] == "stream")
    assert printed.strip() == "6 (3, 2) ['a', 'b'] ['a', 'a', 'a', 'b', 'b', 'b']"


@pytest.mark.slow
def test_extract_stream_shows_the_value_filling_in_then_returns_it(kernel):
    run(kernel, "from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str\n    age: int\n    city: str")
    messages = run(kernel, "%%llm_extract Person --stream --model b -o someone\nInvent a person.")
    assert not errors(messages)
    shown = [m["content"] for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    first = next(c for c in shown if c["data"].get("text/plain", "").startswith("Person("))
    mine = first["transient"]["display_id"]  # one output, updated in place
    texts = [c["data"]["text/plain"] for c in shown if c.get("transient", {}).get("display_id") == mine]
    assert "None" in texts[0], texts  # a value with fields still to come, shown while the answer was written
    assert re.fullmatch(r"filled in over \d+ values in [\d.]+ s", texts[-1]), texts
    result = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]
    assert len(result) == 1 and result[0].startswith("Person(") and "None" not in result[0]
