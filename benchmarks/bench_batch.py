"""The Batch executor: what llmnb itself spends on a batch, and a batch's wall against live calls.

    python benchmarks/bench_batch.py            # writes benchmarks/results/batch.md
    python benchmarks/bench_batch.py --llmnb    # only part one (no OGX needed)

Part one, llmnb's own cost: a run of N tasks (10,000 and 50,000) through `Batch` into a fresh
cache file, against an in-process fake of the files and batches endpoints (an httpx2
MockTransport given to the openai SDK; it answers every line at once, and its own time is
measured and taken out). What is left is llmnb's: finding what the cache lacks, building the
JSONL lines, uploading, polling, reading the output file, keeping every answer in the cache file
and running each task again from it. Beside it, the time to write the same JSONL with json.dumps
alone, per line.

Part two, the wall of ROWS rows against a real Batch API server: OGX (tests/ogx_server.py, needs
.ogx-venv) with llmnb's demo server answering each line after LATENCY s, as a batch (OGX runs 10
lines at a time) and the same rows live through the same OGX's chat completions (16 at once).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import results_file  # benchmarks/, next to this script

from llmnb import Models
from llmnb.runs import Run, Task
from llmnb.runs.batch import Batch

SIZES = (10_000, 50_000)
ROWS, LATENCY = 1_000, 0.1
ANSWER = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"}}],
          "usage": {"prompt_tokens": 10, "completion_tokens": 1}}


class FakeBatchAPI:
    """/files and /batches in memory: a batch is completed the moment it is made, its output file
    answering every line. `spent` is the fake's own time."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.spent = 0.0

    def __call__(self, request):
        import httpx2

        start = time.perf_counter()
        path, method = request.url.path.removeprefix("/v1"), request.method
        if method == "POST" and path == "/files":
            file_id = f"file-{len(self.files)}"
            body = request.read()
            # the JSONL lines of the multipart body (its other part is the purpose)
            self.files[file_id] = b"\n".join(line.rstrip(b"\r") for line in body.split(b"\n")
                                             if line.startswith(b'{"custom_id"'))
            out = {"id": file_id, "object": "file", "bytes": len(self.files[file_id]), "created_at": 0,
                   "filename": "in.jsonl", "purpose": "batch"}
        elif method == "POST" and path == "/batches":
            out = self._batch(json.loads(request.read()))
        elif path.startswith("/batches/"):
            out = self.batches[path.rsplit("/", 1)[1]]
        elif path.endswith("/content"):
            self.spent += time.perf_counter() - start
            return httpx2.Response(200, content=self.files[path.split("/")[2]])
        else:
            return httpx2.Response(404, json={"error": {"message": f"no {method} {path}"}})
        self.spent += time.perf_counter() - start
        return httpx2.Response(200, json=out)

    def _batch(self, asked: dict) -> dict:
        lines = self.files[asked["input_file_id"]].decode().splitlines()
        answer = {"status_code": 200, "request_id": "r", "body": ANSWER}
        output = "\n".join(json.dumps({"id": "x", "custom_id": json.loads(line)["custom_id"], "response": answer,
                                       "error": None}) for line in lines)
        self.files[f"out-{asked['input_file_id']}"] = output.encode()
        job = {"id": f"batch_{len(self.batches)}", "object": "batch", "endpoint": asked["endpoint"],
               "input_file_id": asked["input_file_id"], "completion_window": "24h", "status": "completed",
               "created_at": 0, "output_file_id": f"out-{asked['input_file_id']}", "error_file_id": None,
               "request_counts": {"total": len(lines), "completed": len(lines), "failed": 0}}
        self.batches[job["id"]] = job
        return job


def llmnb_cost(n: int) -> dict:
    import httpx2
    import openai

    fake = FakeBatchAPI()
    with tempfile.TemporaryDirectory() as folder:
        model = Models.create("openai:gpt-4o-mini", api_key="none", cache=Path(folder) / "c.sqlite",
                              http_client=lambda: openai.DefaultAsyncHttpxClient(transport=httpx2.MockTransport(fake)))
        run = Run.for_each(model, [Task("say", "generate", "Say {item}")], [f"item {i}" for i in range(n)])
        start = time.perf_counter()
        results = run.execute(Batch(poll=0.01))
        wall = time.perf_counter() - start
        assert len(results.values_ok) == n, results.summary_line()
    lines = [json.dumps({"custom_id": f"{i:064x}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say item {i}"}]}})
             for i in range(n)]
    start = time.perf_counter()
    "\n".join(json.dumps(json.loads(line)) for line in lines)
    dumps = time.perf_counter() - start
    return {"n": n, "llmnb": wall - fake.spent, "fake": fake.spent, "dumps": dumps}


def wall_against_ogx() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ogx_server import MODEL, OgxServer

    from llmnb.demo_server import DemoServer

    items = [f"item {i}" for i in range(ROWS)]
    out = {}
    with tempfile.TemporaryDirectory() as folder, DemoServer(latency=LATENCY) as upstream, \
            OgxServer(upstream.base_url, Path(folder) / "ogx") as ogx:
        for how, executor in (("batch", Batch(poll=1.0, max_poll=2.0)), ("live", None)):
            model = Models.create(f"openai:{MODEL}", base_url=ogx.base_url, api_key="none",
                                  cache=Path(folder) / f"{how}.sqlite", max_concurrency=16)
            start = time.perf_counter()
            results = Run.for_each(model, [Task("say", "generate", "Say {item}")], items).execute(executor)
            out[how] = time.perf_counter() - start
            assert len(results.values_ok) == ROWS, results.summary_line()
    return out


def main() -> None:
    rows = [llmnb_cost(n) for n in SIZES]
    report = ["| lines | llmnb's time | per line | json.dumps alone, per line | the fake server's time |",
              "|---:|---:|---:|---:|---:|"]
    for r in rows:
        report.append(f"| {r['n']:,} | {r['llmnb']:.1f} s | {r['llmnb'] / r['n'] * 1e6:.0f} µs | "
                      f"{r['dumps'] / r['n'] * 1e6:.1f} µs | {r['fake']:.1f} s |")
    results_file.publish("batch", "\n".join(report) + f"\n\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs.",
                         part="llmnb")
    if "--llmnb" in sys.argv:
        return
    wall = wall_against_ogx()
    results_file.publish("batch", f"| {ROWS:,} rows, {LATENCY} s each upstream | wall |\n|---|---:|\n"
                                  f"| as one batch job (OGX: 10 lines at a time) | {wall['batch']:.1f} s |\n"
                                  f"| live through the same OGX (16 at once) | {wall['live']:.1f} s |",
                         part="wall")


if __name__ == "__main__":
    main()
