"""A batch job on the timeline, without a server: its phases from the statuses it is seen in, the
rows it has answered, a job that does not move shown as stalled, and a job counted apart from
the tasks it carries."""

from __future__ import annotations

import time
from types import SimpleNamespace

from llmnb import listen
from llmnb.cache.jobs import new_record
from llmnb.runs.batch_board import JobRow
from llmnb.timeline.recorder import Recorder
from llmnb.timeline.render import details, summary_line


def seen(status: str, done: int | None = None):
    counts = None if done is None else SimpleNamespace(completed=done, failed=0, total=10)
    return SimpleNamespace(status=status, request_counts=counts)


def test_a_jobs_row_goes_through_its_phases_and_is_shown_stalled_when_it_does_not_move():
    recorder = Recorder(time.perf_counter())
    with listen(recorder):
        row = JobRow(new_record("file-1", "openai:m", "url:x", [f"k{i}" for i in range(10)]), "openai:m", stall=0.05)
        row.seen(seen("validating"))  # OGX: no counts while validating
        (job,) = recorder.rows()
        assert job.phase == "waiting" and details(job, 0.0)[0] == "validating"
        row.seen(seen("in_progress", 4))
        row.seen(seen("in_progress", 4))
        assert not recorder.rows()[0].stalled
        time.sleep(0.06)
        row.seen(seen("in_progress", 4))
        job = recorder.rows()[0]
        assert job.stalled and job.tokens_out == 4
        assert details(job, 1.0) == ["in progress", "4 rows answered", "stalled: no progress for long"]
        row.seen(seen("in_progress", 10))  # moving again
        assert not recorder.rows()[0].stalled
        row.seen(seen("finalizing", 10))
        assert recorder.rows()[0].phase == "tools"
        row.end("completed")
    job = recorder.rows()[0]
    assert job.status == "done" and job.method == "batch"
    summary = recorder.summary(1.0)
    assert (summary["tasks"], summary["jobs"]) == (0, 1)
    assert recorder.view(1.0, 10).summary["jobs"] == 1
    assert summary_line(recorder.view(1.0, 10)).startswith("0 tasks in 1 batch job")


def test_a_failed_job_says_why():
    recorder = Recorder(time.perf_counter())
    with listen(recorder):
        row = JobRow(new_record("file-2", "openai:m", "url:x", ["k"]), "openai:m", stall=60)
        row.seen(seen("failed"))
        row.end("failed", "line 1: model not found")
    job = recorder.rows()[0]
    assert job.status == "failed" and details(job, 1.0) == ["line 1: model not found"]
