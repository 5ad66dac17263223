"""The timeline: pure recorder and renderers, then real model calls and the blocking probe."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

from llmnb import Timeline
from llmnb.events import CallEvent
from llmnb.timeline import render
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
    assert s == {"tasks": 3, "wall": 4.0, "busy": 4.0, "speedup": 1.0, "ttft_median": 0.5, "throttled": 1.0}


def test_text_form_exact():
    rec = fixed_recorder()
    assert render.to_text(rec.view(4.0, render.MAX_ROWS), title="t") == "\n".join([
        "t (0 .. 4.00 s)",
        "extract: Generate 20 names             |-----================                   |   0.00 ->   2.00 s done,"
        " 5 tokens out (3.33/s after the first), first token after 0.50 s",
        "classify: I am a prince                |..........~~~~~~~~~~====================|   0.00 ->   4.00 s failed,"
        " throttled 1.00 s, ModelCallError: HTTP 500",
        "generate: Hello                        |          .....................         |   1.00 ->   3.00 s cancelled",
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
    assert took < 0.05  # about 1 ms (benchmarks/bench_timeline.py); generous here
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
                embedded_model.classify_async(["spam", "not spam"], SPAM, temperature=0),
            )
        return tl, names, label

    tl, names, label = asyncio.run(main())
    assert label == "spam" and isinstance(names, list)
    records = tl.records()
    assert [r["method"] for r in records] == ["extract", "classify"]
    assert all(r["status"] == "done" and r["tokens_out"] for r in records)
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
