"""A stand-in for a provider's Batch API, on 127.0.0.1: OpenAI's `/v1/files` and `/v1/batches`
(create, retrieve, list, cancel, file content), each line answered as llmnb's demo server answers
a chat request, `concurrency` lines at a time after `latency` seconds each, after `validating`
seconds of validation. Live `/v1/chat/completions` are answered too, so one server shows the
same rows live and as a batch.

For teaching offline (notebook 12), not for testing llmnb against: the tests use OGX, a real
Batch API server. Jobs live in memory, for as long as the server runs.

    with DemoBatchServer(latency=0.2) as server:
        model = Models.create("openai:demo", base_url=server.base_url, cache=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from .demo_server import DemoServer

STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found"}


class DemoBatchServer(DemoServer):
    def __init__(self, latency: float = 0.5, concurrency: int = 10, validating: float = 0.5, **kwargs: Any):
        super().__init__(latency=latency, **kwargs)
        self.concurrency, self.validating = concurrency, validating
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._runs: dict[str, asyncio.Task] = {}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:  # keep-alive
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path = head[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, payload = await self.route(method, path.split("?")[0].removeprefix("/v1"), headers, body)
                head_out = f"HTTP/1.1 {status} {STATUS.get(status, 'Error')}\r\nContent-Length: {len(payload)}\r\n"
                writer.write(f"{head_out}Content-Type: application/json\r\n\r\n".encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def route(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
        """One request: (status, JSON payload)."""
        if path == "/chat/completions":
            await asyncio.sleep(self.latency)
            return await self.answer_line(json.loads(body))
        if method == "POST" and path == "/files":
            return ok(self.upload(body, headers.get("content-type", "")))
        if method == "POST" and path == "/batches":
            return ok(self.create(json.loads(body)))
        if method == "GET" and path == "/batches":
            return ok({"object": "list", "data": list(self.batches.values())[::-1], "has_more": False})
        found = re.fullmatch(r"/batches/([^/]+)(/cancel)?", path)
        if found and found.group(1) in self.batches:
            if found.group(2):
                self._runs[found.group(1)].cancel()
            return ok(self.batches[found.group(1)])
        found = re.fullmatch(r"/files/([^/]+)/content", path)
        if found and found.group(1) in self.files:
            return 200, self.files[found.group(1)]
        return 404, json.dumps({"error": {"message": f"no {method} {path} here"}}).encode()

    def upload(self, body: bytes, content_type: str) -> dict:
        """The file part of a multipart upload, kept."""
        boundary = content_type.split("boundary=")[-1].strip('"').encode()
        part = next(p for p in body.split(b"--" + boundary) if b"filename=" in p)
        content = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
        return self.keep_file(content, "in.jsonl")

    def keep_file(self, content: bytes, name: str) -> dict:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": name, "purpose": "batch"}

    def create(self, asked: dict) -> dict:
        job_id = f"batch_{len(self.batches) + 1}"
        self.batches[job_id] = job = {
            "id": job_id, "object": "batch", "endpoint": asked["endpoint"], "input_file_id": asked["input_file_id"],
            "completion_window": asked.get("completion_window", "24h"), "status": "validating",
            "created_at": int(time.time()), "output_file_id": None, "error_file_id": None, "request_counts": None}
        self._runs[job_id] = asyncio.ensure_future(self.work(job))
        return job

    async def work(self, job: dict) -> None:
        """Validate, answer every line `concurrency` at a time, finalize; on cancel keep what was answered."""
        await asyncio.sleep(self.validating)
        lines = [json.loads(line) for line in self.files[job["input_file_id"]].splitlines() if line.strip()]
        counts = job["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
        job["status"] = "in_progress"
        gate, out = asyncio.Semaphore(self.concurrency), []  # type: asyncio.Semaphore, list[dict]

        async def one(line: dict) -> None:
            async with gate:
                await asyncio.sleep(self.latency)
                status, payload = await self.answer_line(line["body"])
                out.append({"id": f"req_{len(out)}", "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": status, "request_id": "", "body": json.loads(payload)}})
                counts["completed"] += 1

        try:
            await asyncio.gather(*(one(line) for line in lines))
            job["status"] = "finalizing"
            await asyncio.sleep(min(self.validating, 1.0))
        except asyncio.CancelledError:
            job["status"] = "cancelled"
        else:
            job["status"] = "completed"
        output = "".join(json.dumps(line) + "\n" for line in out).encode()
        job["output_file_id"] = self.keep_file(output, f"{job['id']}_output.jsonl")["id"]
        job["completed_at"] = int(time.time())

    async def answer_line(self, body: dict) -> tuple[int, bytes]:
        """A chat request answered as the demo server answers it (never streamed here)."""
        answer = await self.respond({**body, "stream": False}, {})
        assert answer is not None and isinstance(answer[2], bytes)
        return answer[0], answer[2]

    async def _shutdown(self) -> None:
        for run in self._runs.values():
            run.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._runs.values(), return_exceptions=True)
        await super()._shutdown()


def ok(record: dict) -> tuple[int, bytes]:
    return 200, json.dumps(record).encode()
