"""The batch jobs a cache knows (`Cache.batch_jobs()`), in a table of the cache file beside its
answers: each input file's id written the moment it is uploaded, its job's id the moment the job
exists, its status as it is seen. A kernel killed while its job runs, or a cell run again after
an Interrupt, finds the job here and collects it instead of sending the same rows again.

A store that is not a file (a MemoryStore) keeps its jobs in memory, for as long as it lives.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any

TABLE = """CREATE TABLE IF NOT EXISTS batch_jobs (file TEXT PRIMARY KEY, job TEXT, model TEXT NOT NULL,
           backend TEXT NOT NULL, keys TEXT NOT NULL, status TEXT NOT NULL, made REAL NOT NULL)"""

DONE = ("collected", "forgotten")  # a job no run waits for any more: its answers kept, or given up

_in_memory: weakref.WeakKeyDictionary[Any, dict[str, JobRecord]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class JobRecord:
    """One batch job of a cache: its input `file` id, its `job` id (None until it exists), the
    model, the backend it went to (its base URL), the cache keys of its lines and its last status
    ("uploaded", a Batch API status, "collected" once its answers are kept, or "forgotten")."""

    file: str
    job: str | None
    model: str
    backend: str
    keys: tuple[str, ...]
    status: str
    made: float

    def __repr__(self) -> str:
        return f"<batch job {self.job or '(not created)'} of {len(self.keys):,} rows on {self.model}: {self.status}>"

    def with_status(self, status: str, job: str | None = None) -> JobRecord:
        """The record with a new status (and the job's id, once known)."""
        return replace(self, status=status, job=job or self.job)


def new_record(file: str, model: str, backend: str, keys: list[str]) -> JobRecord:
    return JobRecord(file, None, model, backend, tuple(keys), "uploaded", time.time())


async def save(store: Any, record: JobRecord) -> None:
    """Write the record (replacing the one of the same input file) and wait until it is committed."""
    if not hasattr(store, "_do"):
        _in_memory.setdefault(store, {})[record.file] = record
        return
    row = (record.file, record.job, record.model, record.backend, json.dumps(record.keys), record.status,
           record.made)

    def work(db: sqlite3.Connection) -> None:
        db.execute(TABLE)
        db.execute("INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    await asyncio.wrap_future(store._do(work, write=True))  # a rare write: not worth a batch of its own


async def open_records(store: Any, model: str, backend: str) -> list[JobRecord]:
    """The jobs of this model and backend not collected yet, oldest first."""
    if not hasattr(store, "_do"):
        return [r for r in _in_memory.get(store, {}).values()
                if r.model == model and r.backend == backend and r.status not in DONE]
    where = "WHERE model = ? AND backend = ? AND status NOT IN ('collected', 'forgotten')"
    return await asyncio.wrap_future(store._do(lambda db: _select(db, where, (model, backend)), write=True))


def records(store: Any) -> list[JobRecord]:
    """Every job the store knows, oldest first (blocking: for users, not for the event loop)."""
    if not hasattr(store, "_do"):
        return sorted(_in_memory.get(store, {}).values(), key=lambda r: r.made)
    return store._do(lambda db: _select(db, "", ()), write=True).result()


def _select(db: sqlite3.Connection, where: str, args: tuple) -> list[JobRecord]:
    db.execute(TABLE)
    rows = db.execute(f"SELECT file, job, model, backend, keys, status, made FROM batch_jobs {where} "
                      "ORDER BY made", args).fetchall()
    return [JobRecord(f, j, m, b, tuple(json.loads(k)), s, t) for f, j, m, b, k, s, t in rows]
