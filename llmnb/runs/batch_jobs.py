"""The Batch API calls, through the openai SDK's own `files` and `batches` clients: upload an input
file, create its job, wait for it (polling that backs off), collect its output and error files,
cancel it. Each id is written to the cache file the moment it exists (batch_records.py), so a job
outlives the kernel that made it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..cache.jobs import JobRecord, new_record, save
from .batch_lines import URL, Outcome, file_text, read_lines

ENDED = ("completed", "failed", "expired", "cancelled")
UPLOAD_TIMEOUT = 600.0  # s: a file of up to 200 MB
TRIES = 4  # a poll that fails (the connection dropped, a 5xx) is tried again this many times


async def submit(client: Any, store: Any, model: str, backend: str, keys: list[str], lines: list[str]) -> JobRecord:
    """Upload the lines as one input file and create its job, writing each id as it comes."""
    uploaded = await client.files.create(file=("llmnb-batch.jsonl", file_text(lines)), purpose="batch",
                                         timeout=UPLOAD_TIMEOUT)
    record = new_record(uploaded.id, model, backend, keys)
    await save(store, record)
    return await create(client, store, record)


async def create(client: Any, store: Any, record: JobRecord) -> JobRecord:
    """The job of an uploaded input file, created and written down."""
    job = await client.batches.create(input_file_id=record.file, endpoint=URL, completion_window="24h",
                                      metadata={"made_by": "llmnb"})
    record = record.with_status(job.status, job.id)
    await save(store, record)
    return record


async def attach(client: Any, store: Any, record: JobRecord) -> JobRecord:
    """A record whose job's id was not written (the kernel died between upload and create): the
    job made from its input file, if the server has one, else a job created now from that file."""
    if record.job is not None:
        return record
    async for job in await client.batches.list(limit=100):
        if job.input_file_id == record.file:
            record = record.with_status(job.status, job.id)
            await save(store, record)
            return record
    return await create(client, store, record)


async def wait(client: Any, job_id: str, poll: float, max_poll: float, seen: Callable[[Any], None]) -> Any:
    """Poll the job until it has ended, `poll` seconds apart at first, then 1.5 times longer each
    time up to `max_poll`; `seen` gets every state read. Returns the ended job, or None when the
    server no longer knows it. Cancelling the wait leaves the job running."""
    delay = poll
    while True:
        job = await retrieve(client, job_id)
        if job is None:
            return None
        seen(job)
        if job.status in ENDED:
            return job
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, max_poll)


async def retrieve(client: Any, job_id: str) -> Any:
    """The job's state (None: the server does not know it); a dropped connection or a server error
    is tried again."""
    import openai

    for attempt in range(TRIES):
        try:
            return await client.batches.retrieve(job_id)
        except openai.NotFoundError:  # deleted, or a server that lost its jobs
            return None
        except (openai.APIConnectionError, openai.InternalServerError):
            if attempt == TRIES - 1:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def collect(client: Any, job: Any) -> dict[str, Outcome]:
    """custom_id -> answer or failure, from the job's output and error files (either may be missing)."""
    found: dict[str, Outcome] = {}
    for file_id in (job.error_file_id, job.output_file_id):  # an answer wins over an error of the same line
        if file_id:
            content = await client.files.content(file_id, timeout=UPLOAD_TIMEOUT)
            found.update(read_lines(content.text))
    return found


async def cancel(client: Any, job_id: str) -> str:
    """Ask the server to cancel the job; its status after the request."""
    job = await client.batches.cancel(job_id)
    return job.status
