"""The answer file: one SQLite file per cache, one thread per file that does every read and write
(WAL, so two kernels can share a file); the event loop only waits on futures. An answer is written
before its call returns, so one the caller saw survives the process being killed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Completion
from ..errors import ConfigError
from .claims import Claims
from .key import VERSION, completion_from_json, completion_to_json

FORMAT = "llmnb answer cache"
BUSY_MS = 30_000  # how long a write waits for another process's write to end
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, kept REAL NOT NULL,
                                    answer TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_model ON answers (model);
CREATE TABLE IF NOT EXISTS file_hashes (path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                        sha256 TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns));
"""

_file_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


class Cache:
    """A file of kept answers. `len(cache)`, `cache.models()` (entries per model), `cache.clear()`,
    `cache.drop(model)`; its repr shows the file, the number of answers and the size on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.closed = False
        check_file(self.path)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # lists of jobs (kind, work or key or row, future)
        self._batches: dict[asyncio.AbstractEventLoop, list] = {}  # each loop's jobs of its current turn
        self._claims = Claims()
        self._identities = Identities(self)
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="llmnb-cache", daemon=True)
        self._thread.start()
        ready.result()  # a file that cannot be opened or set up fails here, in Models.create

    def __repr__(self) -> str:
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return f"<llmnb.Cache {self.path.name}: {len(self):,} answers, {size / 1e6:.1f} MB>"

    def __bool__(self) -> bool:  # an empty cache is still a cache
        return True

    def __str__(self) -> str:
        return str(self.path)

    def __len__(self) -> int:
        return self._do(lambda db: db.execute("SELECT count(*) FROM answers").fetchone()[0]).result()

    def models(self) -> dict[str, int]:
        """How many answers each model has here."""
        rows = self._do(lambda db: db.execute("SELECT model, count(*) FROM answers GROUP BY model").fetchall())
        return dict(rows.result())

    def batch_jobs(self) -> list:
        """The batch jobs this file knows (`llmnb.cache.jobs.JobRecord`), oldest first, with their status."""
        from .jobs import records

        return records(self)

    def clear(self) -> int:
        """Remove every answer; returns how many there were."""
        return self._do(lambda db: db.execute("DELETE FROM answers").rowcount, write=True).result()

    def drop(self, model: Any) -> int:
        """Remove one model's answers (a Model or its name, e.g. "openai:gpt-4o-mini"); returns how many."""
        name = getattr(model, "name", model)
        return self._do(lambda db: db.execute("DELETE FROM answers WHERE model = ?", (name,)).rowcount,
                        write=True).result()

    def close(self) -> None:
        """Stop the cache's thread and close the file (models using it then fail: open it again)."""
        if not self.closed:
            self.closed = True
            self._jobs.put(None)
            self._thread.join(timeout=10)

    # -- used by Model._send --------------------------------------------------------------------
    async def lookup(self, key: str) -> Completion | None:
        """The answer kept under `key`, or None."""
        text = await self._ask("get", key)
        return None if text is None else completion_from_json(text)

    async def keep(self, key: str, model: str, completion: Completion) -> None:
        """Write a complete answer and wait until it is committed."""
        await self._ask("put", (key, model, time.time(), completion_to_json(completion)))

    def claim(self, base: str) -> contextlib.AbstractContextManager[str]:
        """The key of one sample of the request whose canonical text hashes to `base`, held until
        the block ends."""
        return self._claims.claim(base)

    async def identity(self, backend: Backend) -> str:
        """What the answers of this backend depend on besides the request: the GGUF file's content
        hash for a local model, else the base URL."""
        return await self._identities.of(backend)

    # -- the one thread that touches the file ----------------------------------------------------
    def _do(self, work: Callable[[sqlite3.Connection], Any], write: bool = False) -> concurrent.futures.Future:
        """Run `work` on the cache's thread; a future for code that blocks on it."""
        self._check_open()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put([("write" if write else "read", work, future)])
        return future

    def _ask(self, kind: str, arg: Any) -> asyncio.Future:
        """A lookup ("get", key) or an answer to keep ("put", row) for the event loop: a future of
        the running loop, so the loop only waits. What one turn of the loop asks goes to the
        thread as one batch, when that turn ends: a hand-off per answer costs more than its SQL."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = []
            loop.call_soon(self._send, loop)
        batch.append((kind, arg, future))
        return future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        self._jobs.put(self._batches.pop(loop))

    def _check_open(self) -> None:
        if self.closed:
            raise ConfigError(f"the cache {self.path} is closed; open it again with Models.create(cache=...)")

    def _serve(self, ready: concurrent.futures.Future) -> None:
        try:
            db = connect(self.path)
            set_up(db)
        except Exception as e:
            ready.set_exception(ConfigError(f"cannot use {self.path} as an answer cache: {e}"))
            return
        ready.set_result(None)
        with contextlib.closing(db):
            while True:
                batches = [self._jobs.get()]
                while len(batches) < 100 and not self._jobs.empty():  # whatever else is waiting: one commit
                    batches.append(self._jobs.get())
                run_jobs(db, [job for batch in batches if batch is not None for job in batch])
                if None in batches:
                    return


def run_jobs(db: sqlite3.Connection, jobs: list) -> None:
    """Lookups (one query) and reads first, then every write in one transaction, then the outcomes
    go back with one wake-up per event loop. A failed read fails only its own future; a failed
    write fails every write of the transaction (a full disk, a read-only file)."""
    outcomes = fetch(db, [(key, future) for kind, key, future in jobs if kind == "get"])
    outcomes += [(future, *attempt(work, db)) for kind, work, future in jobs if kind == "read"]
    writes = [job for job in jobs if job[0] in ("put", "write")]
    if writes:
        try:
            db.execute("BEGIN IMMEDIATE")
            if rows := [row for kind, row, _ in writes if kind == "put"]:
                db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", rows)
            done = [(future, *attempt(work, db)) if kind == "write" else (future, True, None)
                    for kind, work, future in writes]
            db.execute("COMMIT")
            outcomes += done
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            outcomes += [(future, False, e) for _, _, future in writes]
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for outcome in outcomes:
        if isinstance(outcome[0], concurrent.futures.Future):
            settle(*outcome)
        else:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, some in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle_all, some)


def fetch(db: sqlite3.Connection, lookups: list[tuple[str, asyncio.Future]]) -> list[tuple]:
    """The kept answers' texts (None when not kept) for (key, future) pairs, a query per 500 keys."""
    keys = list({key for key, _ in lookups})
    found: dict[str, str] = {}
    try:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            found.update(db.execute(f"SELECT key, answer FROM answers WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall())
    except sqlite3.Error as e:
        return [(future, False, e) for _, future in lookups]
    return [(future, True, found.get(key)) for key, future in lookups]


def attempt(work: Callable, db: sqlite3.Connection) -> tuple[bool, Any]:
    try:
        return True, work(db)
    except Exception as e:
        return False, e


def settle(future, ok: bool, value: Any) -> None:
    if not future.done():  # else its caller was cancelled and waits no more
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def settle_all(outcomes: list) -> None:
    for outcome in outcomes:
        settle(*outcome)


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    uri = path.as_uri()
    if read_only:
        # Without a -wal file beside it the file holds everything: read it as immutable, which
        # creates no -wal or -shm file next to a file that may not be ours.
        uri += "?mode=ro" if Path(f"{path}-wal").exists() else "?mode=ro&immutable=1"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=BUSY_MS / 1000)
    db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
    return db


def set_up(db: sqlite3.Connection) -> None:
    """WAL (readers and the one writer do not block each other; two processes can share the file)
    and synchronous=NORMAL: a commit survives the process being killed, not always a power cut."""
    wal_mode(db)
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    for statement in filter(str.strip, SCHEMA.split(";")):
        db.execute(statement)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?), ('version', ?)", (FORMAT, str(VERSION)))
    db.execute("COMMIT")


def wal_mode(db: sqlite3.Connection) -> None:
    """Switch the file to WAL. The switch needs the file to itself, and SQLite answers "database is
    locked" at once, without its busy timeout, while another process is setting up the same new
    file: so it is tried again until the busy timeout has passed."""
    deadline = time.monotonic() + BUSY_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def check_file(path: Path) -> None:
    """Refuse a file that is not an llmnb cache, or is damaged, reading it without writing."""
    if not path.exists() or path.stat().st_size == 0:
        if not path.parent.is_dir():
            raise ConfigError(f"cannot make the cache {path}: the folder {path.parent} does not exist")
        return
    what = "is not an llmnb answer cache"
    try:
        with contextlib.closing(connect(path, read_only=True)) as db:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                what = "is damaged (SQLite's quick_check failed)"
                raise sqlite3.DatabaseError(what)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return  # a new cache being set up by another process
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall()) if "meta" in tables else {}
    except sqlite3.Error as e:
        raise ConfigError(f"{path} {what} ({e}); give another file to cache=, or move this one away") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path} {what}; give another file to cache=, or move this one away")
    if int(meta.get("version", 0)) > VERSION:
        raise ConfigError(f"{path} was written by a newer llmnb; upgrade llmnb or give another file to cache=")


class Identities:
    """Each backend's identity, found once (a model file is read once per store)."""

    def __init__(self, cache: Cache | None):
        self._cache = cache
        self._known: weakref.WeakKeyDictionary[Backend, str] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref, str] | None = None  # most turns are the last backend's again

    async def of(self, backend: Backend) -> str:
        last = self._last
        if last is not None and last[0]() is backend:
            return last[1]
        known = self._known.get(backend)
        if known is None:
            known = self._known[backend] = await backend_identity(backend, self._cache)
        self._last = (weakref.ref(backend), known)
        return known


async def backend_identity(backend: Backend, cache: Cache | None) -> str:
    """What the answers of `backend` depend on besides the request, as it states it: its model
    file's content hash (remembered in `cache`'s file, if given), else its server's URL."""
    if backend.path is not None:
        return "gguf:" + await asyncio.to_thread(file_hash, backend.path, cache)
    if backend.url is not None:
        return "url:" + backend.url.rstrip("/")
    return type(backend).__name__


def file_hash(path: Path, cache: Cache | None) -> str:
    """The SHA-256 of a model file, computed once per (path, size, mtime): remembered in this
    process and in the cache file, so a restarted kernel does not read gigabytes again."""
    stat = path.stat()
    ident = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if ident in _file_hashes:
            return _file_hashes[ident]
        row = None if cache is None else cache._do(
            lambda db: db.execute("SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                                  ident).fetchone()).result()
        if row is None:
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if cache is not None:
                cache._do(lambda db: db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                                                (*ident, digest)), write=True).result()
            row = (digest,)
        _file_hashes[ident] = row[0]
        return row[0]
