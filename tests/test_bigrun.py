"""A big run's picture (progress, pace, cost, the strip over time) and cost and cache in the
timeline: events through the real event hook (events.Call), a scripted run of 10,000 calls in
time order, and real calls to the demo server through the magics' task runner."""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET

import pytest

from llmnb import Models, Timeline, events
from llmnb.events import CallEvent
from llmnb.runs.here import run_tasks
from llmnb.timeline import bigrun, render
from llmnb.timeline.recorder import Recorder
from llmnb.timeline.strip import BINS

NS = "{http://www.w3.org/2000/svg}"
ROWS = f"{NS}g[@class='llmnb-row']"


def finish(method: str, label: str, **details) -> events.Call:
    call = events.Call(method, label, "m")
    if not details.get("cached"):
        call.emit("started")
    call.emit("finished", **details)
    return call


def test_cost_and_cached_answers_in_records_summary_and_picture():
    with Timeline(display=False) as tl:
        finish("generate", "sent 1", tokens_in=10, tokens_out=20, cost=0.002)
        finish("generate", "sent 2", tokens_in=10, tokens_out=20, cost=0.003)
        finish("generate", "kept 1", tokens_in=10, tokens_out=20, cached=True, cost=0.004)
        finish("generate", "kept 2", tokens_in=10, tokens_out=20, cached=True, cost=0.001)
        events.Call("extract", "broken", "m").emit("failed", error="ModelCallError: HTTP 500")
    records = tl.records()
    assert set(records[0]) == {"name", "method", "model", "created", "start", "end", "wait", "throttled", "status",
                               "tokens_in", "tokens_out", "error", "ttft", "tokens_per_s", "cached", "cost", "id",
                               "parent", "tool_wait", "worker"}
    assert [(r["cached"], r["cost"]) for r in records] == [(False, 0.002), (False, 0.003), (True, 0.004),
                                                            (True, 0.001), (False, None)]
    assert [r["start"] is None for r in records] == [False, False, True, True, True]  # a cached answer never ran
    s = tl.summary()
    assert s["cost"] == pytest.approx(0.005) and s["saved"] == pytest.approx(0.005) and s["cached"] == 2

    text = tl.to_text()
    assert "· cost $0.00500 · 2 from the cache (saved $0.00500)" in text.splitlines()[-2]
    kept = [line for line in text.splitlines() if line.startswith("generate: kept")]
    assert len(kept) == 2 and all(set(line.split("|")[1].strip()) == {"c"} for line in kept)
    assert "from the cache, would have cost $0.00400" in kept[0]
    assert "c from the cache" in text.splitlines()[-1]

    root = ET.fromstring(tl.to_svg())
    rows = root.findall(ROWS)
    assert [g.get("data-cached") for g in rows] == [None, None, "true", "true", None]
    assert all(g.find(f"{NS}rect[@class='llmnb-cached']") is not None for g in rows[2:4])
    assert rows[0].find(f"{NS}rect[@class='llmnb-cached']") is None
    legend = [t.text for t in root.iter(f"{NS}text") if t.text]
    assert "from the cache" in legend


def test_no_price_no_cost_and_a_whole_run_from_the_cache_spent_nothing():
    with Timeline(display=False) as unpriced:
        finish("generate", "a", tokens_out=3)
    s = unpriced.summary()
    assert (s["cost"], s["saved"], s["cached"]) == (None, None, 0)
    assert "cost" not in unpriced.to_text() and "cache" not in unpriced.to_text().splitlines()[-2]
    with Timeline(display=False) as replayed:
        for i in range(3):
            finish("generate", f"p{i}", cached=True, cost=0.01)
    s = replayed.summary()
    assert s["cost"] == 0.0 and s["saved"] == pytest.approx(0.03)
    assert "cost $0.00 · 3 from the cache (saved $0.0300)" in replayed.to_text()


def test_money_keeps_a_small_cost_readable():
    assert [render.money(x) for x in (0, 0.0123, 0.000045, 0.5, 3.14159, 1234.5)] == [
        "$0.00", "$0.0123", "$0.0000450", "$0.500", "$3.14", "$1,234.50"]


# -- a scripted big run -------------------------------------------------------------------------
N, EXPECTED, STEP, RUN = 10_000, 12_000, 0.01, 0.5  # calls made, announced; one made every STEP s, running RUN s
STORM = (40.0, 50.0, 5.0)  # calls made in [40, 50) s wait 5 s for the rate limit first
NOW = N * STEP + 0.2


def kind_of(i: int) -> str:
    return "cached" if i % 10 == 0 else "failed" if i % 100 == 1 else "open" if i > N - 50 else "done"


def start_of(i: int) -> float:
    made = i * STEP
    return made + (STORM[2] if STORM[0] <= made < STORM[1] else 0.0)


def end_of(i: int) -> float:
    return i * STEP + 0.001 if kind_of(i) == "cached" else start_of(i) + RUN


def scripted_run() -> Recorder:
    """N calls: every 10th answered from the cache, every 100th failed, the last 50 still running
    at NOW, those made during the storm throttled first; applied in time order, as they happen."""
    script = []
    for i in range(1, N + 1):
        made, kind = i * STEP, kind_of(i)
        script.append((made, i, "created", {}))
        if kind == "cached":
            script.append((made + 0.001, i, "finished", {"cached": True, "cost": 0.001}))
            continue
        if start_of(i) > made:
            script.append((made, i, "throttled", {}))
        script.append((start_of(i), i, "started", {}))
        if kind == "failed":
            script.append((end_of(i), i, "failed", {"error": f"RateLimitError: 429 on call {i}"}))
        elif kind == "done" and end_of(i) <= NOW:
            script.append((end_of(i), i, "finished", {"tokens_in": 10, "tokens_out": 20, "cost": 0.002}))
    rec = Recorder(origin=0.0)
    rec.expect(EXPECTED)
    for t, i, kind, details in sorted(script, key=lambda step: step[0]):
        rec.apply(CallEvent(i, kind, t, "generate", f"row {i}", "m", **details))
    return rec


@pytest.fixture(scope="module")
def big() -> Recorder:
    return scripted_run()


def ended_by(t: float) -> dict[str, int]:
    """What the script says had ended by `t`, by how."""
    out = {"done": 0, "cached": 0, "failed": 0}
    for i in range(1, N + 1):
        if kind_of(i) != "open" and end_of(i) <= t:
            out[kind_of(i)] += 1
    return out


def test_the_text_form_of_10000_rows_reads_progress_pace_and_cost(big):
    lines = render.to_text(big.view(NOW, render.MAX_ROWS, render.BIG_ROWS), "labels").splitlines()
    ended = ended_by(NOW)
    finished = sum(ended.values())
    assert lines[0] == f"labels (0 .. {NOW:.2f} s)"
    progress = lines[1].split("| ", 1)[1]
    assert progress == (f"{finished:,} / {EXPECTED:,} ({100 * finished / EXPECTED:.0f} %) · {ended['failed']} failed"
                        f" · {ended['cached']:,} from the cache · {N - finished} under way")
    bar = lines[1].split("|")[1]
    assert len(bar) == render.TEXT_BAR and bar.count("=") == round(ended["done"] / EXPECTED * render.TEXT_BAR)
    pace = lines[2].strip()
    rate = float(re.match(r"([\d.]+) calls/s", pace).group(1))
    recent = [i for i in range(1, N + 1) if kind_of(i) != "open" and NOW - 10 < end_of(i) <= NOW]
    assert rate == pytest.approx(len(recent) / 10, rel=0.05)
    left = float(re.search(r"about ([\d.]+) s left", pace).group(1))
    assert left == pytest.approx((EXPECTED - finished) / rate, rel=0.05)
    cost = ended["done"] * 0.002
    assert f"cost {render.money(cost)} so far (saved {render.money(ended['cached'] * 0.001)})" in pace
    assert len(lines) < 20  # not one line a row
    assert not any(line.startswith("generate: row") for line in lines)


def strip_line(lines: list[str], label: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"{label} ")]
    return line.split("|")[1]


def test_the_strip_shows_the_storm_and_the_failures_where_they_happened(big):
    view = big.view(NOW, render.MAX_ROWS, render.BIG_ROWS)
    lines = render.to_text(view).splitlines()
    column, width = NOW / render.TEXT_BAR, view.big.strip.width  # within a bin the strip spreads evenly
    throttled = strip_line(lines, "throttled")
    marked = {c for c, ch in enumerate(throttled) if ch != " "}
    storm = set(range(int((STORM[0] - width) / column), int((STORM[1] + STORM[2] + width) / column) + 1))
    assert marked <= storm and len(marked) >= len(storm) - 3
    in_flight = strip_line(lines, "in flight")
    assert all(ch != " " for ch in in_flight)  # always about RUN / STEP = 50 calls running
    failures = [i for i in range(1, N + 1) if kind_of(i) == "failed"]
    failed = strip_line(lines, "failed")
    assert {c for c, ch in enumerate(failed) if ch == "x"} == {int(end_of(i) / column) for i in failures}
    assert lines[-6:-3] == [f"failed: generate: row {i}: RateLimitError: 429 on call {i}" for i in failures[-3:]]


def test_strip_totals_match_the_recorder_after_the_bins_merge():
    """The strip's integrals equal the recorder's phase totals and its ends the calls ended, also
    after a long run has merged bins several times (60 minutes: 600 times the first strip)."""
    rec, t = Recorder(origin=0.0), 0.0
    for i in range(1, 2001):
        t = i * 1.8
        for kind, at in (("created", t), ("throttled", t), ("started", t + 0.7), ("finished", t + 2.5)):
            rec.apply(CallEvent(i, kind, at, "generate", "p", "m"))
    now = t + 3
    progress = rec.view(now, render.MAX_ROWS, render.BIG_ROWS).big
    strip = progress.strip
    assert strip.used <= BINS and strip.width >= now / BINS
    assert sum(strip.area["running"]) == pytest.approx(rec.total("running", now))
    assert sum(strip.area["throttled"]) == pytest.approx(rec.total("throttled", now))
    assert sum(strip.ends["done"]) == progress.ended["done"] == 2000
    assert progress.total == 2000 and progress.expected is None
    text = render.to_text(rec.view(now, render.MAX_ROWS, render.BIG_ROWS))
    assert "2,000 / 2,000 (100 %)" in text and f"took {bigrun.duration(now - 1.8)}" in text


def test_strip_integrals_are_exact_whatever_the_order_of_events():
    """Threads may deliver events a little out of order: each bin's integral still equals the
    recorder's phase totals, also across merged bins (times up to 30 s: the strip merges twice)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    kinds = st.sampled_from(["waiting", "throttled", "started", "finished", "failed"])

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(1, 5), kinds, st.floats(0, 30)), min_size=1, max_size=40), st.floats(0, 5))
    def check(steps, extra):
        rec = Recorder(origin=0.0)
        for key, kind, t in steps:
            rec.apply(CallEvent(key, "created", t, "generate", "p", "m"))
            rec.apply(CallEvent(key, kind, t, "generate", "p", "m"))
        now = max((t for _, _, t in steps), default=0.0) + extra
        strip = rec.view(now, render.MAX_ROWS, 0).big.strip
        for phase in ("running", "throttled"):
            assert sum(strip.area[phase]) == pytest.approx(rec.total(phase, now), abs=1e-6)
        assert sum(map(sum, strip.ends.values())) == rec.view(now, render.MAX_ROWS, 0).big.finished

    check()


def test_svg_of_a_big_run_is_well_formed_and_its_size_does_not_grow_with_the_rows(big):
    root = ET.fromstring(render.to_svg(big.view(NOW, render.MAX_ROWS, render.BIG_ROWS), "big <&> run"))
    assert root.findall(ROWS) == []
    assert [g.get("data-name") for g in root.iter(f"{NS}g") if g.get("class") == "llmnb-strip"] == [
        "running", "throttled", "finishing"]
    (progress,) = [g for g in root.iter(f"{NS}g") if g.get("class") == "llmnb-progress"]
    widths = {r.get("class"): float(r.get("width")) for r in progress.iter(f"{NS}rect") if r.get("class")}
    ended = ended_by(NOW)
    assert widths["llmnb-progress-done"] == pytest.approx(ended["done"] / EXPECTED * render.PLOT_W, abs=0.1)
    assert widths["llmnb-progress-cached"] == pytest.approx(ended["cached"] / EXPECTED * render.PLOT_W, abs=0.1)
    texts = "".join(t.text or "" for t in root.iter(f"{NS}text"))
    assert "big <&> run" in texts and "calls/s" in texts and "s left" in texts
    assert len(list(root.iter(f"{NS}rect"))) < 4 * BINS + 40


def test_a_big_redraw_costs_the_same_at_300_rows_and_at_50000():
    def made(n):  # over the same 50 s: the strip has as many bins to draw
        rec = Recorder(origin=0.0)
        for i in range(1, n + 1):
            made = i * 50 / n
            for kind, t in (("created", made), ("started", made), ("finished", made + 0.2)):
                rec.apply(CallEvent(i, kind, t, "generate", "p", "m", cost=0.001 if kind == "finished" else None))
        return rec

    def redraw_ms(rec, now):
        start = time.perf_counter()
        for _ in range(20):
            render.to_svg(rec.view(now, render.MAX_ROWS, render.BIG_ROWS))
            render.to_text(rec.view(now, render.MAX_ROWS, render.BIG_ROWS))
        return (time.perf_counter() - start) / 20 * 1000

    small, large = made(300), made(50_000)
    redraw_ms(small, 50.2), redraw_ms(large, 50.2)
    assert redraw_ms(large, 50.2) < 3 * redraw_ms(small, 50.2) + 1


def test_tool_runs_are_not_counted_as_the_runs_calls():
    with Timeline(display=False) as tl:
        tl.expect(300)
        for i in range(250):
            call = events.Call("generate", f"p{i}", "m")
            call.emit("started")
            tool = events.Call("tool", "lookup", "", parent=call.id)
            tool.emit("started")
            tool.emit("finished")
            call.emit("finished")
        text = tl.to_text()
    assert "250 / 300 (83 %)" in text and "under way" not in text.splitlines()[1]
    assert len(tl.records()) == 500 and tl.summary()["tasks"] == 250 and tl.summary()["tool_runs"] == 250


def test_a_stalled_run_says_so():
    with Timeline(display=False) as tl:
        tl.expect(400)
        t0 = tl._recorder.origin
        for i in range(1, 301):  # 300 made at once; 250 end in the first second, then nothing for 20 s
            tl._recorder.apply(CallEvent(i, "created", t0, "generate", "p", "m"))
            tl._recorder.apply(CallEvent(i, "started", t0, "generate", "p", "m"))
            if i <= 250:
                tl._recorder.apply(CallEvent(i, "finished", t0 + i / 250, "generate", "p", "m"))
        view = tl._recorder.view(21.0, render.MAX_ROWS, render.BIG_ROWS)
        text = render.to_text(view)
    assert "0 calls/s · stalled: nothing ended in the last 10 s" in text
    finishing = strip_line(text.splitlines(), "finishing")
    assert finishing[:2].strip() and not finishing[3:].strip()  # the calls ended in the first second only


def test_expect_needs_an_open_timeline_and_a_count():
    tl = Timeline(display=False)
    with pytest.raises(RuntimeError, match="inside `with Timeline"):
        tl.expect(3)
    with tl, pytest.raises(ValueError, match="number of calls"):
        tl.expect(-1)


def test_run_tasks_tells_the_timeline_its_total_and_a_429_storm_shows():
    """Real calls to the demo server, rate-limited to 100 a second, through the magics' task runner:
    the live picture counts out of the run's total, and throttled calls show on the strip."""
    from llmnb.demo_server import DemoServer, RateLimit

    n, seen = 320, []
    with DemoServer(latency=0.05, rate_limit=RateLimit(requests=100, window=1.0)) as server:
        model = Models.create("openai:demo", base_url=server.base_url, api_key="k", max_concurrency=n,
                              max_retries=20, timeout=60)

        async def main():
            with Timeline(display=False) as tl:
                def report(done):
                    if len(seen) < 1 and tl._recorder and len(tl.records()) > render.BIG_ROWS:
                        seen.append(tl.to_text())

                jobs = {f"q{i}": (lambda i=i: model.generate_async(f"question {i}")) for i in range(n)}
                results = await run_tasks(jobs, max_concurrency=n, on_result=report)
            model.close()
            return tl, results

        tl, results = asyncio.run(main())
    assert len(results) == n and not results.errors
    assert seen and f" / {n:,} (" in seen[0].splitlines()[1]  # live: counted out of the total
    text = tl.to_text()
    assert f"{n:,} / {n:,} (100 %)" in text.splitlines()[1]
    # all at once, 100 a second: the client waits, after a 429 or when the headers say the limit is spent
    assert tl.summary()["throttled"] > 0
    assert strip_line(text.splitlines(), "throttled").strip()
    ET.fromstring(tl.to_svg())


def test_compare_a_big_and_a_small_run_on_one_axis():
    big_run = Timeline(title="big", display=False)
    with big_run:
        for i in range(300):
            finish("generate", f"p{i}", cost=0.001)
    with Timeline(title="small", display=False) as small:
        finish("generate", "one")
    picture = Timeline.compare(big_run, small)
    root = ET.fromstring(picture.to_svg())
    assert len(root.findall(ROWS)) == 1  # the small run's row; the big one has its progress
    assert sum(g.get("class") == "llmnb-progress" for g in root.iter(f"{NS}g")) == 1
    text = picture.to_text()
    assert "300 / 300 (100 %)" in text and "generate: one" in text and bigrun.TEXT_LEGEND in text
    pace = text.splitlines()[3].strip()  # under the title and the progress line
    assert re.fullmatch(r"[\d.,]+ calls/s · took [\d.]+ s · cost \$0\.300", pace), pace  # not "so far": it ended
