"""A real kernel: the live timeline and the magics, as a notebook sees them, including Interrupt."""

from __future__ import annotations

import queue
import time

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

SETUP = "%load_ext llmnb\nimport asyncio\nfrom llmnb import Models, Timeline\nmodel = Models.create()"


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        run(kc, SETUP)
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 300, interrupt_after: float | None = None, km=None) -> list[dict]:
    """Execute `code`; return every iopub message of that request up to its idle status."""
    msg_id = kc.execute(code)
    messages = []
    deadline = time.monotonic() + timeout
    sent_at = time.monotonic()
    interrupted = False
    while time.monotonic() < deadline:
        if interrupt_after is not None and not interrupted and time.monotonic() - sent_at > interrupt_after:
            km.interrupt_kernel()
            interrupted = True
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
    raise AssertionError(f"no idle status within {timeout} s")


def errors(messages):
    return [m["content"] for m in messages if m["msg_type"] == "error"]


def widget_values(messages):
    return [m["content"]["data"]["state"]["value"] for m in messages
            if m["msg_type"] == "comm_msg" and "value" in m["content"]["data"].get("state", {})]


def test_the_first_live_timeline_does_not_block_the_loop(kernel):
    """The kernel's first live timeline: importing ipywidgets and opening the widget happen before
    the timeline's clock and loop probe start, so they never show as the loop blocked."""
    _, kc = kernel
    messages = run(kc, "with Timeline(title='first') as tl:\n    await asyncio.sleep(0.3)\nprint(repr(tl.lags))")
    assert not errors(messages)
    assert any(m["msg_type"] == "comm_open" for m in messages)  # this cell made the kernel's first widget
    lags = eval("".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream"))
    assert all(b - a < 0.15 for a, b in lags), lags  # importing ipywidgets alone takes longer


def test_timeline_updates_live_and_saves_a_static_picture(kernel):
    _, kc = kernel
    messages = run(kc, "with Timeline(title='live') as tl:\n"
                       "    await asyncio.gather(model.generate_async('Tell a story.', max_tokens=80),\n"
                       "                         model.classify_async(['spam', 'not spam'], 'Win money now!'))")
    assert not errors(messages)
    values = widget_values(messages)
    assert len(set(values)) >= 2  # the picture changed while the cell ran (all before its idle)
    assert all(v.startswith("<svg") for v in values)
    first_display = next(m for m in messages if m["msg_type"] == "display_data")
    assert "application/vnd.jupyter.widget-view+json" in first_display["content"]["data"]
    final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]
    assert "application/vnd.jupyter.widget-view+json" not in final  # what the saved notebook keeps
    assert final["text/html"].startswith("<svg") and "2 tasks" in final["text/plain"]
    assert final["text/html"].count('class="llmnb-bar"') == 2


def test_magics_run_top_to_bottom(kernel):
    _, kc = kernel
    messages = run(kc, "%%llm_extract list[str] -o colours\nName three colours.")
    assert not errors(messages)
    result = [m for m in messages if m["msg_type"] == "execute_result"]
    assert result and result[0]["content"]["data"]["text/plain"].startswith("[")
    messages = run(kc, "%%llm_parallel -o res\nnames -> list[str]: Generate 5 English names\n"
                       "label ? spam | not spam: I am a Nigerian prince and will make you very rich!")
    assert not errors(messages)
    text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert "names" in text and "label" in text and "2 done" in text
    messages = run(kc, "print(type(colours).__name__, sorted(res), res['label'] in ('spam', 'not spam'))")
    out = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert out.strip() == "list ['label', 'names'] True"


def test_interrupt_cancels_tasks_and_the_next_cell_runs(kernel):
    km, kc = kernel
    run(kc, "import time; _t0 = time.perf_counter()")
    cell = ("%%llm_parallel -o cut\nquick ? yes | no: Is the sky blue?\n"
            "story * 3: Write a very long story about the sea.")
    messages = run(kc, cell, interrupt_after=4, km=km)
    errs = errors(messages)
    assert errs and errs[0]["ename"] == "Interrupted"  # one line, not a traceback
    assert errs[0]["traceback"] == [errs[0]["evalue"]] and "cancelled; results kept in cut" in errs[0]["evalue"]
    final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/plain"]
    assert "cancelled" in final
    start = time.monotonic()
    messages = run(kc, "print(sorted(cut.cancelled), len(cut) + len(cut.cancelled))\n"
                       "print([t.get_coro().__qualname__ for t in asyncio.all_tasks()\n"
                       "       if '_parallel' in t.get_coro().__qualname__])",
                   timeout=30)
    assert time.monotonic() - start < 10  # the next cell is not blocked
    out = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream").splitlines()
    cancelled_names, total = out[0].rsplit(" ", 1)
    assert total == "4" and "story_3" in cancelled_names  # every task is either kept or marked cancelled
    assert out[1] == "[]"  # no task of the cell still runs


def test_interrupt_closes_in_flight_requests_to_a_remote_server(kernel, fault_server):
    """%%llm_parallel against an OpenAI-compatible server (the fault server, in this process) that
    holds every answer 30 s: Interrupt makes the server see each connection close, and the next
    cell's call to the same server works."""
    km, kc = kernel
    fault_server.latency = 30
    run(kc, f"remote = Models.create('openai:test', base_url='{fault_server.base_url}', api_key='k', max_retries=0)")
    deadline = time.monotonic() + 60

    def wait_for(condition):
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        return condition()

    msg_id = kc.execute("%%llm_parallel --model remote -o held\nask * 4: Hello, how are you?")
    assert wait_for(lambda: fault_server.in_flight == 4)  # all four requests are held by the server
    km.interrupt_kernel()
    while True:  # to the interrupted cell's idle status
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                and msg["content"]["execution_state"] == "idle":
            break
    assert wait_for(lambda: fault_server.closed_early == 4), fault_server.closed_early
    assert fault_server.in_flight == 0
    fault_server.latency = 0
    messages = run(kc, "print(len(held.cancelled), remote.generate('hi'))", timeout=30)
    out = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
    assert out.strip() == f"4 {fault_server.reply}"


def stream_text(messages) -> str:
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


def test_for_runs_each_line_once_per_item(kernel):
    _, kc = kernel
    run(kc, "fruits = ['apple', 'banana', 'cherry', 'plum']")
    messages = run(kc, "%%llm_parallel -q -o kinds --for fruit in fruits\nkind ? fruit | vegetable: What is {fruit}?")
    assert not errors(messages) and "4 done" in stream_text(messages)
    messages = run(kc, "print(list(kinds), all(v in ('fruit', 'vegetable') for v in kinds.as_list()))\n"
                       "print([r['name'].split(': ', 1)[1] for r in kinds.timeline.records()])")
    names, labels = stream_text(messages).strip().splitlines()
    assert names == "['kind_1', 'kind_2', 'kind_3', 'kind_4'] True"
    assert labels == "['What is apple?', 'What is banana?', 'What is cherry?', 'What is plum?']"


def test_for_over_an_empty_list_is_one_line(kernel):
    _, kc = kernel
    run(kc, "nothing = []")
    messages = run(kc, "%%llm_parallel --for item in nothing\na: {item}")
    shown = [m["content"]["text"] for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]
    # IPython shows a UsageError as one line on stderr, no traceback
    assert "".join(shown).strip() == "UsageError: --for item in nothing: nothing is empty, so there is nothing to run"


def test_interrupting_a_for_cell_keeps_the_finished_results(kernel, fault_server):
    """Two of four items are answered at once, two are held by the server: Interrupt keeps the two."""
    from fault_server import Fault

    km, kc = kernel
    fault_server.script(Fault.content("first"), Fault.content("second"), Fault.hang(), Fault.hang())
    run(kc, f"held_remote = Models.create('openai:test', base_url='{fault_server.base_url}', api_key='k',"
            " max_retries=0)\n"
            "cities = ['Paris', 'Rome', 'Oslo', 'Lima']")
    msg_id = kc.execute("%%llm_parallel --model held_remote -o part --for city in cities\nsay: Tell me about {city}")
    deadline = time.monotonic() + 60
    while fault_server.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    km.interrupt_kernel()
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                and msg["content"]["execution_state"] == "idle":
            break
    messages = run(kc, "print(sorted(v for v in part.as_list() if v), len(part.cancelled))", timeout=30)
    assert stream_text(messages).strip() == "['first', 'second'] 2"
