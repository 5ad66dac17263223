"""Rows -> Chrome trace-event JSON data, which Perfetto (ui.perfetto.dev) and chrome://tracing open.
Pure, like render.py: no clock, no files.

Each task gets a track of its own (a "thread" named by a thread_name metadata event): tasks that
overlap in time would otherwise share one track, where a viewer moves overlapping slices aside.
On its track, a task is one complete ("X") event with its phases nested inside by time:

    task                  created .. end
      waiting             for a slot (remote max_concurrency, the local model)
      throttled           for the rate limit, before the first start
      running             first start .. end
        before first token    (when the first token is known)
          throttled           a pause for the rate limit between attempts
        after first token
The event loop's blocked stretches go on a track of their own; the summary in "otherData", the
format's place for the trace's metadata. Times are microseconds from the timeline's start.

A tool run (method "tool") is a task of category "tool" whose track follows its model call's,
with a flow arrow from the model call to it (Perfetto draws it when either is selected).
"""

from __future__ import annotations

from .recorder import Row
from .style import nested

PID = 1
LOOP_TID = 1  # tasks are 2, 3, ... in creation order


def _us(t: float) -> int:
    return round(t * 1_000_000)


def _complete(name: str, a: float, b: float, tid: int, cat: str, args: dict | None = None) -> dict:
    ts = _us(a)  # both ends rounded the same way, so a phase never pokes out of its parent
    event = {"name": name, "cat": cat, "ph": "X", "ts": ts, "dur": max(_us(b) - ts, 0), "pid": PID, "tid": tid}
    if args:
        event["args"] = args
    return event


def _meta(name: str, tid: int, args: dict) -> dict:
    return {"name": name, "ph": "M", "pid": PID, "tid": tid, "args": args}


def _track(tid: int, name: str) -> list[dict]:
    return [_meta("thread_name", tid, {"name": name}), _meta("thread_sort_index", tid, {"sort_index": tid})]


def task_events(row: Row, now: float, tid: int) -> list[dict]:
    """One task's complete events, outermost first at each start time."""
    end = row.end if row.end is not None else now
    args = {"call_id": row.key, "parent": row.parent, "method": row.method, "model": row.model, "status": row.status,
            "tokens_in": row.tokens_in,
            "tokens_out": row.tokens_out, "error": row.error, "wait_s": row.time_in("waiting", now),
            "throttled_s": row.time_in("throttled", now), "ttft_s": row.ttft(), "tokens_per_s": row.tokens_per_s(now)}
    cat = "tool" if row.method == "tool" else "task"
    out = [_complete(row.name, row.created, end, tid, cat, {k: v for k, v in args.items() if v not in (None, "")})]
    out += [_complete(phase, a, b, tid, "phase") for phase, a, b in row.stretches(now) if phase != "running" and b > a]
    if row.started is not None:
        out.append(_complete("running", row.started, end, tid, "phase"))
        if row.first_token is not None:
            out.append(_complete("before first token", row.started, row.first_token, tid, "phase"))
            out.append(_complete("after first token", row.first_token, end, tid, "phase"))
    return sorted(out, key=lambda e: (e["ts"], -e["dur"]))


def to_trace(rows: list[Row], lags: list[tuple[float, float]], now: float, title: str, summary: dict) -> dict:
    """The trace as a JSON-ready dict: {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}."""
    events = [_meta("process_name", 0, {"name": title}), *_track(LOOP_TID, "event loop blocked")]
    events += [_complete("event loop blocked", a, b, LOOP_TID, "loop") for a, b in lags]
    tids: dict[int, int] = {}
    for tid, row in enumerate(nested(rows), start=LOOP_TID + 1):
        tids[row.key] = tid
        events += _track(tid, row.name)
        events += task_events(row, now, tid)
        if row.parent in tids:  # a flow from the model call to its tool run, both at the run's creation
            flow = {"name": "tool call", "cat": "tool", "id": row.key, "ts": _us(row.created), "pid": PID}
            events += [{**flow, "ph": "s", "tid": tids[row.parent]}, {**flow, "ph": "f", "bp": "e", "tid": tid}]
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"title": title, **summary}}
