"""The timeline: pure recorder and renderers, then real model calls and the blocking probe."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from embedded import LABELS, cut_off

import llmnb
from llmnb import Models, Timeline
from llmnb.events import CallEvent
from llmnb.timeline import render, trace
from llmnb.timeline.recorder import Recorder

SPAM = "I am a Nigerian prince and will make you very rich!"
NS = "{http://www.w3.org/2000/svg}"
ROWS = f"{NS}g[@class='llmnb-row']"  # one per task drawn


def fixed_recorder() -> Recorder:
    rec = Recorder(origin=100.0)
    script = [
        (1, "created", 100.0), (1, "waiting", 100.0), (1, "started", 100.0),
        (2, "created", 100.0), (2, "waiting", 100.0), (1, "first_token", 100.5),
        (3, "created", 101.0), (3, "waiting", 101.0), (2, "throttled", 101.0), (2, "started", 102.0),
        (1, "finished", 102.0), (2, "failed", 104.0), (3, "cancelled", 103.0),
    ]
    labels = {1: ("extract", "Generate 20 names"), 2: ("classify", "I am a prince"), 3: ("generate", "Hello")}
    for key, kind, t in script:
        method, label = labels[key]
        error = "ModelCallError: HTTP 500" if kind == "failed" else None
        rec.apply(CallEvent(key, kind, t, method, label, "test", tokens_in=3 if kind == "finished" else None,
                            tokens_out=5 if kind == "finished" else None, error=error))
    rec.add_lag(100.5, 101.0)
    return rec


def test_recorder_rows_and_summary():
    rows = fixed_recorder().rows()
    assert [(r.key, r.status, r.created, r.waiting, r.started, r.end) for r in rows] == [
        (1, "done", 0.0, 0.0, 0.0, 2.0),
        (2, "failed", 0.0, 0.0, 2.0, 4.0),
        (3, "cancelled", 1.0, 1.0, None, 3.0),
    ]
    assert rows[0].tokens_out == 5 and rows[1].error == "ModelCallError: HTTP 500"
    s = fixed_recorder().summary(now=4.0)
    assert s == {"tasks": 3, "tool_runs": 0, "wall": 4.0, "busy": 4.0, "speedup": 1.0, "ttft_median": 0.5,
                 "throttled": 1.0,
                 "cached": 0, "cost": None, "saved": None}  # no call reported a cost


def test_text_form_exact():
    rec = fixed_recorder()
    assert render.to_text(rec.view(4.0, render.MAX_ROWS), title="t") == "\n".join([
        "t (0 .. 4.00 s)",
        "extract: Generate 20 names             |-----================                   |   0.00 ->   2.00 s done,"
        " 5 tokens out (3.33/s after the first), first token after 0.50 s",
        "classify: I am a prince                |..........~~~~~~~~~~====================|   0.00 ->   4.00 s failed,"
        " throttled 1.00 s, ModelCallError: HTTP 500",
        "generate: Hello                        |          .....................         |   1.00 ->   3.00 s"
        " cancelled",
        "event loop blocked                     |     ######                             | 0.50 s in all",
        "3 tasks, 1 failed, 1 cancelled · wall 4.00 s · sum of task times 4.00 s · median first token 0.50 s"
        " · throttled 1.00 s · ratio 1.00x",
        render.TEXT_LEGEND,
    ])


def test_svg_is_valid_and_has_one_bar_per_started_task():
    rec = fixed_recorder()
    svg = render.to_svg(rec.view(4.0, render.MAX_ROWS), title="t <&>")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    rows = root.findall(ROWS)
    assert [g.get("data-status") for g in rows] == ["done", "failed", "cancelled"]
    bars = [r for r in root.iter(f"{ns}rect") if r.get("class") == "llmnb-bar"]
    assert len(bars) == 2
    texts = "".join(t.text or "" for t in root.iter(f"{ns}text"))
    assert "ratio 1.00x" in texts and "event loop blocked" in texts and "t <&>" in texts
    assert any((t.text or "") == "2 s" for t in root.iter(f"{ns}text"))  # axis ticks in seconds


def test_many_rows_are_grouped_and_render_fast():
    rec = Recorder(origin=0.0)
    for i in range(1000):
        for kind, t in (("created", 0.0), ("waiting", 0.0), ("started", i * 0.01), ("finished", i * 0.01 + 0.2)):
            rec.apply(CallEvent(i + 1, kind, t, "generate", f"prompt {i}", "m"))
    start = time.perf_counter()
    svg = render.to_svg(rec.view(10.2, render.MAX_ROWS))
    took = time.perf_counter() - start
    root = ET.fromstring(svg)
    assert len(root.findall(ROWS)) == render.MAX_ROWS - 1
    assert "+961 more tasks" in svg
    assert took < 0.2  # 1-2 ms in benchmarks/bench_timeline.py; generous here for a busy machine
    lines = render.to_text(rec.view(10.2, render.MAX_ROWS)).splitlines()
    names = [line.split("|")[0].strip() for line in lines[1:-2]]  # between the title and the summary, legend
    head = (render.MAX_ROWS - 1) // 2
    assert names[head - 1:head + 2] == [f"generate: prompt {head - 1}", "+961 more tasks",
                                        f"generate: prompt {1000 - (render.MAX_ROWS - 1 - head)}"]
    assert len(names) == render.MAX_ROWS


def test_nice_ticks():
    assert render.nice_step(5.8) == 1
    assert render.nice_step(0.3) == 0.05
    assert render.nice_step(120) == 20


def test_real_calls_become_rows(embedded_model):
    async def main():
        with Timeline(title="seed") as tl:
            names, label = await asyncio.gather(
                embedded_model.extract_async(list[str], "Generate 5 English names", max_tokens=80),
                embedded_model.classify_async(list(LABELS), SPAM, temperature=0), return_exceptions=True,
            )
        return tl, names, label

    tl, names, label = asyncio.run(main())
    # a plain list[str] has no length: it may run on to max_tokens, the one error allowed
    assert label in LABELS and (isinstance(names, list) or cut_off(names)), names
    records = tl.records()
    assert [r["method"] for r in records] == ["extract", "classify"]
    assert [r["status"] for r in records] == ["failed" if cut_off(names) else "done", "done"]
    assert all(r["tokens_out"] for r in records)
    first, second = sorted(records, key=lambda r: r["start"])
    assert second["start"] >= first["end"] - 1e-6  # the local model runs one call at a time...
    assert second["wait"] > 0  # ...so the second one waited for it
    s = tl.summary()
    assert 0.8 < s["speedup"] <= 1.05
    assert "2 tasks" in tl.to_text() and "classify:" in tl.to_text()


def test_track_any_awaitable_and_failures_keep_others():
    async def main():
        async with Timeline() as tl:
            async def fail():
                await asyncio.sleep(0.05)
                raise ValueError("boom")

            results = await asyncio.gather(tl.track(asyncio.sleep(0.1, "ok"), name="sleep"),
                                           tl.track(fail(), name="fails"), return_exceptions=True)
        return tl, results

    tl, results = asyncio.run(main())
    assert results[0] == "ok" and isinstance(results[1], ValueError)
    by_name = {r["name"]: r for r in tl.records()}
    assert by_name["sleep"]["status"] == "done"
    assert by_name["fails"]["status"] == "failed" and "boom" in by_name["fails"]["error"]
    assert "ValueError: boom" in tl.to_text()


def test_blocking_the_loop_is_marked():
    async def main():
        with Timeline() as tl:
            async def polite():
                await asyncio.sleep(0.3)

            async def rude():
                time.sleep(0.3)  # a synchronous call inside async code: the loop stops

            await tl.track(polite(), name="polite")
            await tl.track(rude(), name="rude")  # the block's last step: seen when the block ends
        return tl

    tl = asyncio.run(main())
    assert len(tl.lags) == 1
    start, end = tl.lags[0]
    rude = next(r for r in tl.records() if r["name"] == "rude")
    assert end - start == pytest.approx(0.3, abs=0.1)
    assert start >= rude["start"] - 0.05
    assert "event loop blocked" in tl.to_text()


def test_open_rows_end_cancelled_and_svg_saved(tmp_path):
    async def main():
        with Timeline() as tl:
            task = asyncio.ensure_future(tl.track(asyncio.sleep(10), name="never"))
            await asyncio.sleep(0.05)
        task.cancel()
        return tl

    tl = asyncio.run(main())
    assert tl.records()[0]["status"] == "cancelled"
    path = tl.save_svg(tmp_path / "t.svg")
    assert ET.parse(path).getroot().tag.endswith("svg")


def test_outside_a_kernel_the_text_form_is_used():
    with Timeline() as tl:
        pass
    bundle = tl._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert repr(tl).startswith("llmnb timeline") and repr(tl).endswith("pip install ipywidgets)")


def test_running_rows_have_their_own_shape_and_waiting_rows_their_wait_so_far():
    rec = Recorder(origin=0.0)
    for key, kind, t in [(1, "created", 0.0), (1, "waiting", 0.0), (1, "started", 0.5), (2, "created", 0.0),
                         (2, "waiting", 0.0), (3, "created", 0.0), (3, "waiting", 0.0), (3, "started", 0.0),
                         (3, "finished", 1.0)]:
        rec.apply(CallEvent(key, kind, t, "generate", f"p{key}", "m"))
    root = ET.fromstring(render.to_svg(rec.view(2.0, render.MAX_ROWS)))
    ns = "{http://www.w3.org/2000/svg}"
    heads = {g.get("data-status"): len(g.findall(f"{ns}path")) for g in root.findall(ROWS)}
    assert heads == {"running": 1, "waiting": 0, "done": 0}  # only the running bar ends in an arrow head
    with Timeline(display=False) as tl:
        t0 = time.perf_counter()
        for kind in ("created", "waiting"):
            tl._recorder.apply(CallEvent(1, kind, t0, "generate", "p", "m"))
        time.sleep(0.05)
        assert tl.records()[0]["wait"] >= 0.04  # still waiting: the wait so far, not 0


def feed(rec: Recorder, script, model: str = "m") -> None:
    for key, kind, t, *details in script:
        rec.apply(CallEvent(key, kind, rec.origin + t, "generate", f"p{key}", model, **(details[0] if details else {})))


def test_phases_first_token_progress_and_throttling_in_records_and_picture():
    with Timeline(display=False) as tl:
        feed(tl._recorder, [(1, "created", 0.0), (1, "waiting", 0.0), (1, "throttled", 0.1), (1, "started", 0.3),
                            (1, "first_token", 0.5), (1, "progress", 0.6, {"tokens_out": 4})])
        running = tl.records()[0]
        svg_running = tl.to_svg()
        feed(tl._recorder, [(1, "progress", 0.7, {"tokens_out": 9}), (1, "throttled", 0.8), (1, "started", 1.0),
                            (1, "finished", 1.5, {"tokens_in": 3, "tokens_out": 20})])
        done = tl.records()[0]
    assert running["status"] == "running" and running["tokens_out"] == 4 and running["end"] is None
    assert ">4 tok</text>" in svg_running  # the running row shows its count so far
    assert done["status"] == "done" and done["tokens_out"] == 20
    assert done["start"] == pytest.approx(0.3) and done["end"] == pytest.approx(1.5)
    assert done["wait"] == pytest.approx(0.1) and done["throttled"] == pytest.approx(0.2 + 0.2)
    assert done["ttft"] == pytest.approx(0.2) and done["tokens_per_s"] == pytest.approx(20 / 1.0)
    s = tl.summary()
    assert s["ttft_median"] == pytest.approx(0.2) and s["throttled"] == pytest.approx(0.4)
    assert s["busy"] == pytest.approx(1.2 - 0.2)  # running time leaves out the pause for the rate limit

    root = ET.fromstring(tl.to_svg())
    row = root.find(ROWS)
    classes = [e.get("class") for e in row if e.get("class")]
    assert classes.count("llmnb-throttled") == 2 and classes.count("llmnb-before") == 1
    assert classes.count("llmnb-first-token") == 1 and classes.count("llmnb-wait") == 1
    tip = row.find(f"{NS}title").text
    for part in ("generate: p1", "m · done", "0.00 s → 1.50 s", "waited 0.10 s", "ran 1.00 s", "3 tokens in",
                 "20 tokens out (20/s after the first)", "first token after 0.20 s", "throttled 0.40 s"):
        assert part in tip, (part, tip)
    line = tl.to_text().splitlines()[1]
    assert re.fullmatch(r"\.+~+-+=+~+=+", line.split("|")[1])  # waiting, throttled, before and after the token, ...


def test_totals_kept_event_by_event_match_the_rows():
    """The summary's constant-time totals agree with summing over the rows, whatever the events."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    kinds = st.sampled_from(["waiting", "throttled", "started", "first_token", "tools", "finished", "failed",
                             "cancelled"])

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(1, 4), kinds, st.floats(0, 1)), max_size=30), st.floats(0, 2))
    def check(steps, now_extra):
        rec, t = Recorder(origin=0.0), 0.0
        for key, kind, dt in steps:
            t += dt
            for k in ("created", kind) if key not in {r.key for r in rec.rows()} else (kind,):
                rec.apply(CallEvent(key, k, t, "generate", "p", "m"))
        now = t + now_extra
        rows, s = rec.rows(), rec.summary(now)
        render.to_svg(rec.view(now, render.MAX_ROWS)), render.to_text(rec.view(now, render.MAX_ROWS))  # any state draws
        assert s["busy"] == pytest.approx(sum(r.running_time(now) for r in rows), abs=1e-9)
        assert s["throttled"] == pytest.approx(sum(r.time_in("throttled", now) for r in rows), abs=1e-9)
        if rows:
            last = max(r.end if r.end is not None else now for r in rows)
            assert s["wall"] == pytest.approx(last - min(r.created for r in rows), abs=1e-9)

    check()


def test_a_redraw_touches_only_the_rows_drawn():
    small, large = Recorder(origin=0.0), Recorder(origin=0.0)
    for rec, n in ((small, 50), (large, 20_000)):
        feed(rec, [(i, kind, i * 0.001) for i in range(1, n + 1) for kind in ("created", "waiting", "started")])

    def redraw_ms(rec):
        start = time.perf_counter()
        for _ in range(20):
            render.to_svg(rec.view(30.0, render.MAX_ROWS))
        return (time.perf_counter() - start) / 20 * 1000

    redraw_ms(small), redraw_ms(large)
    assert redraw_ms(large) < 3 * redraw_ms(small) + 1  # 400 times the rows, about the same cost


def test_track_reports_to_every_listener():
    seen = []

    async def main():
        with Timeline(display=False) as tl, llmnb.listen(seen.append):
            await tl.track(asyncio.sleep(0.01, "ok"), name="nap")
        return tl

    tl = asyncio.run(main())
    assert [e.kind for e in seen] == ["created", "started", "finished"] and {e.label for e in seen} == {"nap"}
    with llmnb.listen(seen.append), llmnb.listen(seen.append):  # listening twice in one context is once
        llmnb.events.Call("generate", "p", "m")
    assert [e.kind for e in seen[3:]] == ["created"]
    assert [(r["name"], r["status"]) for r in tl.records()] == [("nap", "done")]


def test_retries_keep_one_row_from_first_start_to_last_attempt():
    from fault_server import Fault, FaultServer

    with FaultServer(latency=0.2) as server:
        server.script(Fault.content("not json at all"))  # the first answer is invalid; the second the schema's
        model = Models.create("openai:demo", base_url=server.base_url, api_key="k")

        async def main():
            with Timeline(display=False) as tl:
                names = await model.extract_async(list[str], "Three names", retries=1)
            return tl, names

        tl, names = asyncio.run(main())
        model.close()
    assert isinstance(names, list) and server.requests == 2
    (row,) = tl.records()
    assert row["status"] == "done" and row["method"] == "extract"
    assert row["start"] < 0.15  # the first attempt's start...
    assert row["end"] >= row["start"] + 2 * 0.2 - 0.02  # ...to the end of the second, each 0.2 s on the server
    assert row["tokens_out"] > 0 and row["throttled"] == 0.0


def test_first_use_of_the_live_view_does_not_block_the_loop():
    """A fresh interpreter: importing ipywidgets and making the first widget happen before the
    timeline's clock and loop probe start, so they never show as the loop blocked."""
    code = """if True:
        import asyncio, contextlib, io
        from llmnb import Timeline
        async def main():
            with contextlib.redirect_stdout(io.StringIO()):
                async with Timeline(display=True) as tl:
                    await asyncio.sleep(0.3)
            return tl
        tl = asyncio.run(main())
        assert "ipywidgets" in __import__("sys").modules and tl._widget is not None
        print(repr(tl.lags))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    lags = eval(out.stdout.strip().splitlines()[-1])
    assert all(b - a < 0.15 for a, b in lags), lags  # importing ipywidgets alone takes longer


def test_first_structured_calls_of_a_local_model_do_not_block_the_loop():
    """A fresh interpreter, as `python -m llmnb` runs: pydantic's schema machinery and llama.cpp's
    grammar converter are set up when the model is made, not at the first extract and classify,
    where they blocked the loop for 0.15 s and 0.3 s."""
    code = """if True:
        import asyncio
        from llmnb import Models, Timeline
        model = Models.create()
        async def main():
            with Timeline(display=False) as tl:
                names, label = await asyncio.gather(
                    model.extract_async(list[str], "Name two fruits.", max_tokens=40),
                    model.classify_async(["spam", "not spam"], "Win a free phone now!"), return_exceptions=True)
            return tl, names, label
        tl, names, label = asyncio.run(main())
        # a plain list may run on to max_tokens: the one error allowed
        assert isinstance(names, list) or "cut off at max_tokens" in str(names), names
        assert label in ("spam", "not spam")
        print(repr(tl.lags))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    lags = eval(out.stdout.strip().splitlines()[-1])
    assert all(b - a < 0.1 for a, b in lags), lags


def nesting(trace: dict) -> dict[int, list[tuple[int, str]]]:
    """Per track, each complete event's (depth, name) in time order; fails unless the events of a
    track nest properly (each inside the one it starts in, or after it)."""
    tracks: dict[int, list[dict]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            tracks.setdefault(e["tid"], []).append(e)
    out = {}
    for tid, events in tracks.items():
        stack, seen = [], []
        for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
                stack.pop()
            if stack:
                assert e["ts"] + e["dur"] <= stack[-1]["ts"] + stack[-1]["dur"], (e, stack[-1])
            seen.append((len(stack), e["name"]))
            stack.append(e)
        out[tid] = seen
    return out


def test_trace_structure_and_nesting():
    rec = fixed_recorder()
    data = trace.to_trace(rec.rows(), rec.lags, 4.0, "t", rec.summary(4.0))
    events = data["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {1: "event loop blocked", 2: "extract: Generate 20 names", 3: "classify: I am a prince",
                     4: "generate: Hello"}
    assert all(isinstance(e["ts"], int) and isinstance(e["dur"], int) for e in events if e["ph"] == "X")
    tracks = nesting(data)
    assert tracks[1] == [(0, "event loop blocked")]
    assert tracks[2] == [(0, "extract: Generate 20 names"), (1, "running"), (2, "before first token"),
                         (2, "after first token")]  # no waiting: it got its slot at once
    assert tracks[3] == [(0, "classify: I am a prince"), (1, "waiting"), (1, "throttled"), (1, "running")]
    task = next(e for e in events if e["ph"] == "X" and e["tid"] == 3 and e["name"].startswith("classify"))
    assert (task["ts"], task["dur"]) == (0, 4_000_000)
    args, meta = task["args"], data["otherData"]
    assert args["status"] == "failed" and args["throttled_s"] == 1.0 and "HTTP 500" in args["error"]
    assert meta["tasks"] == 3 and meta["ttft_median"] == 0.5 and meta["title"] == "t"


def test_trace_of_real_overlapping_calls(embedded_model, tmp_path):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.3) as server:
        remote = Models.create("openai:demo", base_url=server.base_url, api_key="k")

        async def main():
            async with Timeline(title="traced") as tl:
                await asyncio.gather(*(remote.generate_async(f"Hello {i}") for i in range(3)),
                                     embedded_model.generate_async("Say hi", max_tokens=8))
            return tl

        tl = asyncio.run(main())
        remote.close()
    data = json.loads(tl.save_trace(tmp_path / "t.json").read_text())
    tracks = nesting(data)
    tasks = [e for e in data["traceEvents"] if e["ph"] == "X" and e.get("cat") == "task"]
    assert len(tasks) == 4 and len({e["tid"] for e in tasks}) == 4  # one track each, though they overlap
    remote_tasks = [e for e in tasks if e["args"]["model"] == "openai:demo"]
    assert max(e["ts"] for e in remote_tasks) < min(e["ts"] + e["dur"] for e in remote_tasks)  # they overlap
    for e in tasks:
        assert [name for depth, name in tracks[e["tid"]] if depth == 1][-1] == "running"
    assert data["otherData"]["tasks"] == 4 and data["otherData"]["title"] == "traced"


def right_edge(row) -> float:
    return max(float(r.get("x")) + float(r.get("width")) for r in row.iter(f"{NS}rect"))


def test_compare_draws_runs_on_one_axis(embedded_model, tmp_path):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.3) as server:
        remote = Models.create("openai:demo", base_url=server.base_url, api_key="k")

        async def main():
            with Timeline(title="serial") as serial:
                for i in range(4):
                    await remote.generate_async(f"Hello {i}")
            with Timeline(title="concurrent") as concurrent:
                await asyncio.gather(*(remote.generate_async(f"Hello {i}") for i in range(4)))
            return serial, concurrent

        one, two = asyncio.run(main())
        remote.close()
    with Timeline(title="embedded") as local:
        embedded_model.classify(["spam", "not spam"], SPAM)
    picture = Timeline.compare(one, two, local, title="serial vs concurrent")

    root = ET.fromstring(picture.save_svg(tmp_path / "c.svg").read_text())
    texts = [t.text or "" for t in root.iter(f"{NS}text")]
    assert texts[0] == "serial vs concurrent" and {"serial", "concurrent", "embedded"} <= set(texts)
    assert sum(t.startswith("4 tasks") for t in texts) == 2 and sum(t.startswith("1 task ") for t in texts) == 1
    rows = root.findall(ROWS)
    assert len(rows) == 9
    serial_end, concurrent_end = right_edge(rows[3]), max(right_edge(r) for r in rows[4:8])
    plot = render.LABEL_W + render.PAD
    assert (concurrent_end - plot) < 0.6 * (serial_end - plot)  # the same scale: the concurrent run is shorter
    ticks = [t for t in texts if t.endswith(" s") and t[:-2].replace(".", "").isdigit()]
    assert len(ticks) == len(set(ticks)) >= 3  # one axis for all blocks, not one each

    text = picture.to_text()
    heads = [line for line in text.splitlines() if line.startswith(("serial (", "concurrent (", "embedded ("))]
    assert len(heads) == 3 and len({h.split("(")[1] for h in heads}) == 1  # the same span in every block
    assert set(picture._repr_mimebundle_()) == {"text/plain", "text/html"} and repr(picture) == text
    with pytest.raises(TypeError, match="Timeline objects"):
        Timeline.compare(one, "two")


def test_rows_that_waited_for_the_rate_limit_show_their_throttled_phase(tmp_path):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.05) as server:
        model = Models.create("openai:demo", base_url=server.base_url, api_key="k", rpm=600)  # 10 a second

        async def main():
            with Timeline(display=False) as tl:
                await asyncio.gather(*(model.generate_async(f"call {i}") for i in range(6)))
            model.close()
            return tl

        tl = asyncio.run(main())
    records = tl.records()
    waited = [r for r in records if r["throttled"] > 0.02]
    assert len(records) == 6 and all(r["status"] == "done" for r in records)
    assert len(waited) >= 4  # at 10 a second, most of six calls sent at once wait their turn
    assert tl.summary()["throttled"] == pytest.approx(sum(r["throttled"] for r in records))
    root = ET.fromstring(tl.to_svg())
    striped = [g for g in root.findall(ROWS) if g.find(f"{NS}rect[@class='llmnb-throttled']") is not None]
    assert len(striped) == len(waited)
    long_waits = sum(r["throttled"] > 0.06 for r in records)  # several columns of the text form
    assert sum("~" in line.split("|")[1] for line in tl.to_text().splitlines()[1:7]) >= long_waits >= 2
    data = json.loads(tl.save_trace(tmp_path / "t.json").read_text())
    assert sum(e["name"] == "throttled" for e in data["traceEvents"]) >= len(waited)
