"""The answer cache: one kept answer per distinct request, in a SQLite file.

    model = Models.create("openai:gpt-4o-mini", cache="answers.sqlite")   # or cache=True
    llmnb.use_cache("answers.sqlite")     # every model made without cache= in this process

Each model turn is looked up before it is sent (`Model._send`). The key is the request as sent,
normalised: the model, the messages, every generation setting ("not set" is not any value), the
schema, the tools and tool_choice, plus the backend's identity (its base URL, or the GGUF file's
content hash), a format version and a sample index. API keys, timeouts and retries are not in it.

Only complete answers are kept (no errors, nothing cut off at max_tokens), raw (text, tool calls,
token counts, finish): a typed answer is parsed again on a hit. An answer is written before the
call returns, so one the caller saw survives the process being killed. One thread per file does
every read and write (WAL, so two kernels can share a file); the event loop only waits on futures.

Identical requests at once are distinct samples: each takes the lowest sample index that no
identical request in flight holds, so `asyncio.gather` of ten identical calls keeps ten answers
and a re-run gets the same ten back. `sample_index(n)` sets the index explicitly (the magics'
`* N` copies do).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from .backends.base import Backend, Completion, Request, ToolCall
from .errors import ConfigError, NotKept
from .events import CallEvent

FORMAT = "llmnb answer cache"
VERSION = 1  # of the key and the stored answer; a change makes older entries miss
DEFAULT_FILE = "llmnb-cache.sqlite"
BUSY_MS = 30_000  # how long a write waits for another process's write to end
INCOMPLETE = frozenset({"length", "content_filter"})
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT NOT NULL, kept REAL NOT NULL,
                                    answer TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_model ON answers (model);
CREATE TABLE IF NOT EXISTS file_hashes (path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                        sha256 TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns));
"""

_sample: ContextVar[int | None] = ContextVar("llmnb_sample_index", default=None)
_refresh: ContextVar[bool] = ContextVar("llmnb_cache_refresh", default=False)
_kept_only: ContextVar[bool] = ContextVar("llmnb_cache_kept_only", default=False)
_open: dict[str, Cache] = {}
_open_lock = threading.Lock()
_default: Store | None = None
_file_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


@contextlib.contextmanager
def sample_index(n: int) -> Iterator[None]:
    """The calls made in this block (and its tasks) are sample `n` of their request."""
    token = _sample.set(n)
    try:
        yield
    finally:
        _sample.reset(token)


@contextlib.contextmanager
def refreshing() -> Iterator[None]:
    """The calls made in this block ask the model again and replace what the cache holds."""
    token = _refresh.set(True)
    try:
        yield
    finally:
        _refresh.reset(token)


@contextlib.contextmanager
def kept_only() -> Iterator[None]:
    """In this block (and its tasks) a model turn whose answer the cache does not hold raises
    `llmnb.errors.NotKept` (with the turn's request and cache key) instead of being sent. Without
    a cache nothing is kept, so every turn raises it."""
    token = _kept_only.set(True)
    try:
        yield
    finally:
        _kept_only.reset(token)


def use_cache(path: str | os.PathLike | bool | Store | None = True) -> Store | None:
    """Keep the answers of every model made without `cache=` in this file, from now on (True: a file
    llmnb-cache.sqlite in the working directory). `use_cache(None)` stops. Returns the cache."""
    global _default
    _default = None if path is None or path is False else open_cache(path)
    return _default


def default() -> Store | None:
    """The cache set by `use_cache`, if any."""
    return _default


def open_cache(option: str | os.PathLike | bool | Store) -> Store:
    """The cache for a `cache=` option: a path, True (the default file), a Cache or a MemoryStore. One Cache per
    file in a process, so models sharing a file share its thread."""
    if isinstance(option, (Cache, MemoryStore)):
        return option
    if option is True:
        option = DEFAULT_FILE
    if isinstance(option, bool) or not isinstance(option, (str, os.PathLike)):
        raise ConfigError(f'cache= takes a file path such as "answers.sqlite", True or False, not {option!r}')
    path = Path(option).expanduser().resolve()
    with _open_lock:
        cache = _open.get(str(path))
        if cache is None or cache.closed:
            cache = _open[str(path)] = Cache(path)
        return cache


def completion_to_json(completion: Completion) -> str:
    """A completion as the JSON text the cache keeps (and a worker can send back)."""
    record = dataclasses.asdict(completion)
    record["tool_calls"] = [dataclasses.asdict(c) for c in completion.tool_calls]
    return json.dumps(record, ensure_ascii=False)


def completion_from_json(text: str) -> Completion:
    """The Completion that `completion_to_json` wrote."""
    record = json.loads(text)
    calls = tuple(ToolCall(**c) for c in record.pop("tool_calls", ()))
    return Completion(**record, tool_calls=calls)


def request_text(identity: str, model: str, request: Request) -> str:
    """The request as a canonical JSON text: sorted keys, tuples as lists, whole floats as ints
    (temperature 0 and 0.0 are one setting); a setting left unset is null, unlike any value."""
    gen = {k: int(v) if isinstance(v, float) and v.is_integer() else v
           for k, v in dataclasses.asdict(request.gen).items()}
    body = {"format": VERSION, "backend": identity, "model": model, "messages": request.messages, "gen": gen,
            "schema": request.schema, "tools": request.tools, "tool_choice": request.tool_choice}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def base_key(identity: str, model: str, request: Request) -> str:
    """The hash of the request's canonical text: the key of every sample of that request."""
    # a local model is its file: the same weights under another path or alias give the same answers
    text = request_text(identity, "" if identity.startswith("gguf:") else model, request)
    return hashlib.sha256(text.encode()).hexdigest()


def sample_key(base: str, sample: int) -> str:
    return hashlib.sha256(f"{base}/{sample}".encode()).hexdigest()


def key_for(identity: str, model: str, request: Request, sample: int = 0) -> str:
    """The cache key of sample `sample` of `request` to the model named `model` (e.g.
    "openai:gpt-4o-mini") on a backend of identity `identity` (`await cache.identity(backend)`)."""
    return sample_key(base_key(identity, model, request), sample)


class Claims:
    """The sample indexes held by the identical requests in flight: each takes the lowest free
    one, unless `sample_index` set one."""

    def __init__(self):
        self._in_flight: dict[str, Counter] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claim(self, base: str) -> Iterator[str]:
        """The key of one sample of the request whose canonical text hashes to `base`, held until
        the block ends."""
        explicit = _sample.get()
        with self._lock:
            held = self._in_flight.setdefault(base, Counter())
            n = explicit if explicit is not None else next(i for i in range(len(held) + 1) if not held[i])
            held[n] += 1
        try:
            yield sample_key(base, n)
        finally:
            with self._lock:
                held[n] -= 1
                if not +held:
                    self._in_flight.pop(base, None)


class Cache:
    """A file of kept answers. `len(cache)`, `cache.models()` (entries per model), `cache.clear()`,
    `cache.drop(model)`; its repr shows the file, the number of answers and the size on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.closed = False
        check_file(self.path)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._claims = Claims()
        self._identities: weakref.WeakKeyDictionary[Backend, str] = weakref.WeakKeyDictionary()
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
        row = await self._ask(
            lambda db: db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone())
        return None if row is None else completion_from_json(row[0])

    async def keep(self, key: str, model: str, completion: Completion) -> None:
        """Write a complete answer and wait until it is committed."""
        text = completion_to_json(completion)
        await self._ask(lambda db: db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                                              (key, model, time.time(), text)), write=True)

    def claim(self, base: str) -> contextlib.AbstractContextManager[str]:
        """The key of one sample of the request whose canonical text hashes to `base`, held until
        the block ends."""
        return self._claims.claim(base)

    async def identity(self, backend: Backend) -> str:
        """What the answers of this backend depend on besides the request: the GGUF file's content
        hash for a local model, else the base URL."""
        known = self._identities.get(backend)
        if known is None:
            known = self._identities[backend] = await backend_identity(backend, self)
        return known

    # -- the one thread that touches the file ----------------------------------------------------
    def _do(self, work: Callable[[sqlite3.Connection], Any], write: bool = False) -> concurrent.futures.Future:
        """Run `work` on the cache's thread; a future for code that blocks on it."""
        return self._put(work, write, concurrent.futures.Future())

    def _ask(self, work: Callable[[sqlite3.Connection], Any], write: bool = False) -> asyncio.Future:
        """`_do` for the event loop: a future of the running loop, so the loop only waits."""
        return self._put(work, write, asyncio.get_running_loop().create_future())

    def _put(self, work: Callable, write: bool, future):
        if self.closed:
            raise ConfigError(f"the cache {self.path} is closed; open it again with Models.create(cache=...)")
        self._jobs.put((work, write, future))
        return future

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
                jobs = [self._jobs.get()]
                while len(jobs) < 500 and not self._jobs.empty():  # whatever else is waiting: one commit
                    jobs.append(self._jobs.get())
                if None in jobs:
                    jobs.remove(None)
                    run_jobs(db, jobs)
                    return
                run_jobs(db, jobs)


def run_jobs(db: sqlite3.Connection, jobs: list) -> None:
    """Reads first, then every write in one transaction (a failed job fails only its own future),
    then the outcomes go back with one wake-up per event loop: a hand-off per answer costs more
    than the read itself."""
    outcomes = [(future, *attempt(work, db)) for work, write, future in jobs if not write]
    writes = [job for job in jobs if job[1]]
    if writes:
        try:
            db.execute("BEGIN IMMEDIATE")
            done = [(future, *attempt(work, db)) for work, _, future in writes]
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


async def backend_identity(backend: Backend, cache: Cache | None) -> str:
    if backend.path is not None:
        return "gguf:" + await asyncio.to_thread(file_hash, backend.path, cache)
    if hasattr(backend, "base_url"):
        # the openai SDK's own default, which it also reads from OPENAI_BASE_URL
        url = backend.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return "url:" + str(url).rstrip("/")
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


class MemoryStore:
    """Answers kept in memory, used like a Cache: `Model(backend, cache=MemoryStore())`. `answers`
    maps each key to (model name, Completion), e.g. to record the turns a worker made and keep
    them in a Cache elsewhere (`cache.keep(key, model, completion)`)."""

    def __init__(self, answers: dict[str, tuple[str, Completion]] | None = None):
        self.answers = dict(answers or {})
        self._claims = Claims()
        self._identities: weakref.WeakKeyDictionary[Backend, str] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<llmnb.cache.MemoryStore: {len(self.answers):,} answers>"

    def __bool__(self) -> bool:  # an empty store is still a store
        return True

    async def lookup(self, key: str) -> Completion | None:
        """The answer kept under `key`, or None."""
        found = self.answers.get(key)
        return None if found is None else found[1]

    async def keep(self, key: str, model: str, completion: Completion) -> None:
        """Keep `completion` under `key`."""
        self.answers[key] = (model, completion)

    def claim(self, base: str) -> contextlib.AbstractContextManager[str]:
        """As `Cache.claim`: the key of one sample of a request, held until the block ends."""
        return self._claims.claim(base)

    async def identity(self, backend: Backend) -> str:
        """As `Cache.identity` (a model file's hash is remembered in this process only)."""
        known = self._identities.get(backend)
        if known is None:
            known = self._identities[backend] = await backend_identity(backend, None)
        return known


class Store(Protocol):
    """What a model turn looks answers up in and keeps them in: a Cache, a MemoryStore, or any
    object with these methods."""

    async def lookup(self, key: str) -> Completion | None: ...

    async def keep(self, key: str, model: str, completion: Completion) -> None: ...

    def claim(self, base: str) -> contextlib.AbstractContextManager[str]: ...

    async def identity(self, backend: Backend) -> str: ...


class Turn:
    """One model turn through the cache (or through none): `hit` is the kept answer, if any;
    `keep(completion)` writes a complete answer that was just received."""

    def __init__(self, store: Store | None, key: str = "", model: str = ""):
        self.store, self.key, self.model = store, key, model
        self.hit: Completion | None = None

    async def keep(self, completion: Completion) -> None:
        if self.store is None or self.hit is not None or completion.finish in INCOMPLETE:
            return
        try:
            await self.store.keep(self.key, self.model, completion)
        except sqlite3.Error as e:  # a full disk, say: the answer was paid for, so the caller still gets it
            warnings.warn(f"llmnb could not keep an answer in {self.store} ({e}); it is returned, not kept",
                          RuntimeWarning, stacklevel=2)


@contextlib.asynccontextmanager
async def turn(store: Store | None, backend: Backend, request: Request, refresh: bool = False) -> AsyncIterator[Turn]:
    """Look the request up (unless refreshing) and hold its sample index for the block. Under
    `kept_only`, a turn without a kept answer raises NotKept instead (without a store: every turn)."""
    kept_only_now = _kept_only.get()
    if store is None and not kept_only_now:
        yield Turn(None)
        return
    store = store if store is not None else MemoryStore()  # nothing kept: every key misses
    base = base_key(await store.identity(backend), backend.name, request)
    with store.claim(base) as key:
        here = Turn(store, key, backend.name)
        if not (refresh or _refresh.get()):
            here.hit = await store.lookup(key)
        if here.hit is None and kept_only_now:
            raise NotKept(request, key)
        yield here


class Sources:
    """A call listener counting the calls answered from the cache and the ones sent."""

    def __init__(self):
        self.cached = self.sent = 0

    def __call__(self, event: CallEvent) -> None:
        if event.kind in ("finished", "failed") and event.parent is None:
            if event.cached:
                self.cached += 1
            else:
                self.sent += 1

    def line(self) -> str:
        return f"{self.cached:,} from the cache, {self.sent:,} sent"
