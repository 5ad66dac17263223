"""Local speed: llmnb's embedded model against llama.cpp's own `llama-server` on the same GGUF.

    bash benchmarks/setup_llama_server.sh       # once: builds llama-server from source (~17 min on 2 cores)
    python benchmarks/bench_local.py            # everything, about 8 minutes on 2 cores
    python benchmarks/bench_local.py --part engine --rounds 3 --before ../llmnb-old

1. engine: the same 8 greedy 48-token prompts (new ones each round, see new_prompts), one at a
   time and 8 at once, through llmnb's embedded model (parallel=1 and parallel=8), through
   `llama-server -np 8 -t T` (reached with llmnb's OpenAI path, `Models.create("openai:...",
   base_url=...)`) and through a bare decode loop over the same llama.cpp context (raw_decode, the
   ceiling), for T = 1 and 2 threads. The cells alternate round by round in one run; each ratio
   is the median of the per-round ratios; each contender runs in a process of its own (see
   engine_part). `--before DIR` adds the same llmnb cells run from another checkout of llmnb, to
   compare two versions of the decode loop.
2. server: the OpenAI path against llama-server: structured output (`extract` sends the JSON
   schema as `response_format: json_schema`) and how far 8 concurrent calls overlap.
3. stream: the engine streaming 8 sequences at once against the same 8 calls not streamed.

Tokens are the generated tokens each side reports (llmnb counts the end token, llama-server does
not); the prompts are chosen to run to the 48-token limit, so both count 48 per answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import results_file  # benchmarks/, next to this script

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SERVER_ENV = HERE / "envs" / "llama-server"
MAX_TOKENS = 48
SUBJECTS = ("a lighthouse keeper", "a fox in the snow", "an old violin", "a storm at sea",
            "a robot gardener", "a lost kitten", "a mountain village", "a night train")
PROMPTS = [f"Write a long story about {w}." for w in SUBJECTS]


def new_prompts(part: int) -> list[str]:
    """The 8 prompts, made new for each timed run. llama-server keeps the last prompt of each of its
    8 slots and sends a repeated prompt to the slot holding it, so in a second round with the same
    prompts it would skip reading them, which a user's new prompts never allow. Both sides still
    reuse the chat template's shared start."""
    return [f"Write a long story about {w}, part {part}." for w in SUBJECTS]


def count_tokens(events: list) -> int:
    return sum(e.tokens_out or 0 for e in events if e.kind == "finished")


async def run_prompts(model, together: bool, prompts: list[str] = PROMPTS) -> tuple[int, float]:
    """(generated tokens, seconds, CPU seconds of this process) for the 8 prompts, one at a time or
    all at once. The CPU time (every thread: the loop, the engine, llama.cpp's) is the cost of the
    tokens whatever else the machine runs; the wall time is what a user waits."""
    from llmnb.events import listen

    events = []
    start, cpu = time.perf_counter(), time.process_time()
    with listen(events.append):
        if together:
            await asyncio.gather(*(model.generate_async(p, max_tokens=MAX_TOKENS, temperature=0) for p in prompts))
        else:
            for p in prompts:
                await model.generate_async(p, max_tokens=MAX_TOKENS, temperature=0)
    return count_tokens(events), time.perf_counter() - start, time.process_time() - cpu


# --- llama-server ---------------------------------------------------------------------------------
def server_binary() -> Path | None:
    found = sorted(SERVER_ENV.rglob("llama-server")) if SERVER_ENV.exists() else []
    found = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(gguf: Path, threads: int, parallel: int = 8, n_ctx_per_slot: int = 2048):
    """`llama-server -np 8 -t T` on 127.0.0.1; yields its base URL."""
    binary = server_binary()
    port = free_port()
    cmd = [str(binary), "-m", str(gguf), "-np", str(parallel), "-t", str(threads), "-tb", str(threads),
           "-c", str(parallel * n_ctx_per_slot), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"llama-server did not start: {' '.join(cmd)}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_model(base_url: str):
    from llmnb import Models

    return Models.create("openai:smollm2", base_url=base_url, max_concurrency=8, max_retries=0, timeout=300)


# --- the ceiling: llama.cpp's decode with nothing around it --------------------------------------------
def raw_decode(lc, prompts: list[str], together: bool) -> tuple[int, float, float]:
    """The prompts decoded greedily through a bare llama.cpp context made as llmnb's engine makes
    its own (raw_context): all 8 as one batch per step, or one after another; the highest logit
    taken, no sampler, no end-of-text stop, no event loop. Prompt i goes to sequence i, which
    still holds the last prompt it read, and reads only what is new, within llmnb's FRESH_TAIL:
    what llama-server's 8 slots and llmnb's kept prompts save. The rate llmnb's engine can reach at
    most on this machine; (tokens, seconds, CPU seconds) as run_prompts."""
    from llmnb.backends.local import reusable
    from llmnb.backends.prompt_cache import common_prefix

    start, cpu = time.perf_counter(), time.process_time()
    tokens = [lc.prompt_tokens([{"role": "user", "content": p}]) for p in prompts]
    for group in ([range(len(prompts))] if together else [[i] for i in range(len(prompts))]):
        items, last = [], []
        for seq in group:
            keep = min(common_prefix(lc.held[seq], tokens[seq]), reusable(len(tokens[seq])))
            lc.forget(seq, keep)
            lc.held[seq] = tokens[seq]
            items += [(token, pos, seq, pos == len(tokens[seq]) - 1)
                      for pos, token in enumerate(tokens[seq]) if pos >= keep]
            last.append(len(items) - 1)
        for step in range(MAX_TOKENS):
            if lc.decode(items) != 0:
                raise SystemExit("llama_decode failed in the raw decode loop")
            items = [(lc.best(row), len(tokens[seq]) + step, seq, True)
                     for seq, row in zip(group, last, strict=True)]
            last = list(range(len(items)))
    return len(prompts) * MAX_TOKENS, time.perf_counter() - start, time.process_time() - cpu


def raw_context(threads: int):
    """A llama.cpp context with llmnb's settings and 8 sequences, one per prompt; `held[i]`, the
    tokens whose cells sequence i holds."""
    from llmnb.backends.batched_llama import LlamaContext
    from llmnb.backends.local import import_llama_cpp
    from llmnb.registry import embedded_path

    lc = LlamaContext(import_llama_cpp(), embedded_path("smollm2"), n_seq=len(PROMPTS), n_ctx_seq=2048,
                      n_threads=threads)
    lc.held = [[] for _ in PROMPTS]
    return lc


# --- part 1: engine against llama-server ---------------------------------------------------------------
def engine_part(rounds: int, threads: list[int], before: Path | None) -> list[dict]:
    """Each contender runs in a process of its own, as a user runs one model or llama-server: the
    OpenMP runtime llama.cpp uses spins less while waiting (and so answers each step later) once a
    process's llama.cpp threads outnumber the CPUs, as they would in one process holding all three."""
    from llmnb.registry import embedded_path

    gguf = embedded_path("smollm2")
    rows, parts = [], itertools.count(1)
    for t in threads:
        with llama_server(gguf, t) if server_binary() else _none() as url:
            server = server_model(url) if url else None
            for together in (False, True):
                runs = {"llmnb": [], "server": [], "before": [], "raw": []}
                workers = {"raw": Worker("raw", t, together), "llmnb": Worker("llmnb", t, together)}
                if before:
                    workers["before"] = Worker("llmnb", t, together, checkout=before)
                if server:
                    asyncio.run(run_prompts(server, together))  # warm-up, as the workers did
                for r in range(rounds):
                    part = next(parts)
                    for name, worker in workers.items():
                        runs[name].append(worker.run(part))
                    if server:
                        runs["server"].append(asyncio.run(run_prompts(server, together, new_prompts(part))))
                    print(f"  T={t} {'8 at once' if together else 'one at a time'} round {r + 1}: "
                          + ", ".join(f"{k} {rate(v[-1]):.1f} tok/s" for k, v in runs.items() if v),
                          flush=True)
                for worker in workers.values():
                    worker.close()
                rows.append({"threads": t, "together": together, **runs})
    return rows


@contextmanager
def _none():
    yield None


class Worker:
    """llmnb's embedded model (`parallel=8` for 8 at once, else 1) or the bare decode loop, in a
    child process that keeps it across rounds; llmnb imported from `checkout` when given."""

    def __init__(self, kind: str, threads: int, together: bool, checkout: Path | None = None):
        env = {**os.environ, "PYTHONPATH": str(checkout or HERE.parent)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, str(threads), str(int(together))],
                                     env=env, cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {kind} worker did not start")

    def run(self, part: int) -> tuple[int, float, float]:
        """One timed run of new_prompts(part): (tokens, seconds, CPU seconds of the worker)."""
        self.proc.stdin.write(f"{part}\n")
        self.proc.stdin.flush()
        return tuple(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def worker(kind: str, threads: int, together: bool) -> None:
    """The child process of a Worker: warms up, says "ready", then answers each part number read."""
    sys.path.remove(str(HERE.parent))  # llmnb from PYTHONPATH, maybe another checkout
    if kind == "raw":
        lc = raw_context(threads)

        def timed(prompts):
            return raw_decode(lc, prompts, together)
    else:
        from llmnb import Models

        model = Models.create("llamacpp:smollm2", parallel=8 if together else 1, n_threads=threads)

        def timed(prompts):
            return asyncio.run(run_prompts(model, together, prompts))
    timed(PROMPTS)  # warm-up, not timed
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(timed(new_prompts(int(line)))), flush=True)


def rate(run: tuple) -> float:
    return run[0] / run[1]


def cpu_ms(runs: list[tuple]) -> str:
    """Median CPU milliseconds per generated token of llmnb's process."""
    return f"{statistics.median(1000 * r[2] / r[0] for r in runs):.1f}"


def ratio_cell(runs: list[tuple], references: list[tuple]) -> str:
    """The median of the per-round ratios of tokens/s, with the lowest and highest."""
    ratios = [rate(a) / rate(b) for a, b in zip(runs, references, strict=True)]
    return f"{100 * statistics.median(ratios):.0f} % ({100 * min(ratios):.0f}-{100 * max(ratios):.0f})"


def engine_report(rows: list[dict]) -> str:
    before = any(r["before"] for r in rows)
    head = ["tokens/s, median of rounds", "llama-server -np 8", "llmnb embedded", "llmnb / server",
            "raw decode", "llmnb / raw", "llmnb CPU ms/token"] + (
        ["before: tokens/s", "before: CPU ms/token"] if before else [])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in rows:
        mode = "8 at once (parallel=8)" if row["together"] else "one at a time (parallel=1)"
        cells = [f"{row['threads']} thread{'s' if row['threads'] > 1 else ''}, {mode}", "-",
                 f"{statistics.median(rate(x) for x in row['llmnb']):.1f}", "-",
                 f"{statistics.median(rate(x) for x in row['raw']):.1f}", ratio_cell(row["llmnb"], row["raw"]),
                 cpu_ms(row["llmnb"])]
        if row["server"]:
            cells[1] = f"{statistics.median(rate(x) for x in row['server']):.1f}"
            cells[3] = ratio_cell(row["llmnb"], row["server"])
        if before:
            cells += [f"{statistics.median(rate(x) for x in row['before']):.1f}", cpu_ms(row["before"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- part 2: the OpenAI path against llama-server ---------------------------------------------------------
def server_part() -> str:
    from pydantic import BaseModel

    from llmnb.events import listen
    from llmnb.registry import default_threads, embedded_path

    class Person(BaseModel):
        name: str
        age: int
        city: str

    texts = [f"{n} is {a} years old and lives in {c}." for n, a, c in
             zip(("Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana"), range(21, 69, 6),
                 ("Paris", "Rome", "Oslo", "Lima", "Lagos", "Cairo", "Zagreb", "Kyoto"), strict=True)]
    with llama_server(embedded_path("smollm2"), default_threads()) as url:
        model = server_model(url)
        asyncio.run(model.generate_async("Hi", max_tokens=4))
        events = []

        async def main():
            with listen(events.append):
                return await asyncio.gather(*(model.extract_async(Person, t, temperature=0) for t in texts),
                                            return_exceptions=True)

        start = time.perf_counter()
        results = asyncio.run(main())
        wall = time.perf_counter() - start
    valid = sum(isinstance(r, Person) for r in results)
    spans = {}
    for e in events:
        spans.setdefault(e.call_id, {}).setdefault(e.kind, e.time)
    busy = sum(s["finished"] - s["started"] for s in spans.values() if "finished" in s)
    return (f"8 concurrent `extract` calls through the OpenAI path to llama-server (JSON schema as "
            f"`response_format`): {valid} of 8 valid `Person` values; wall {wall:.2f} s, sum of call times "
            f"{busy:.2f} s: overlap {busy / wall:.1f}x of 8.")


# --- part 3: streaming against not streaming ------------------------------------------------------------
def stream_part(rounds: int) -> str:
    from llmnb import Models
    from llmnb.events import listen

    model = Models.create("llamacpp:smollm2", parallel=8)

    async def streamed() -> tuple[int, float, float]:
        """As run_prompts(model, together=True), each answer read piece by piece."""
        async def one(p):
            async for _ in model.stream_async(p, max_tokens=MAX_TOKENS, temperature=0):
                pass

        events = []
        start, cpu = time.perf_counter(), time.process_time()
        with listen(events.append):
            await asyncio.gather(*(one(p) for p in PROMPTS))
        return count_tokens(events), time.perf_counter() - start, time.process_time() - cpu

    asyncio.run(streamed())
    runs = {"streamed": [], "not streamed": []}
    for _ in range(rounds):
        runs["streamed"].append(asyncio.run(streamed()))
        runs["not streamed"].append(asyncio.run(run_prompts(model, True)))
    model.close()
    s, n = (statistics.median(rate(x) for x in runs[k]) for k in ("streamed", "not streamed"))
    ratios = [rate(a) / rate(b) for a, b in zip(runs["streamed"], runs["not streamed"], strict=True)]
    return (f"8 sequences at once (parallel=8): streamed {s:.1f} tokens/s, not streamed {n:.1f} tokens/s, "
            f"streamed / not streamed {100 * statistics.median(ratios):.0f} % (median of {rounds} rounds).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "engine", "server", "stream"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--before", type=Path, help="another llmnb checkout to compare the llmnb cells with")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), bool(int(args.worker[2])))
    if not server_binary():
        print("(no llama-server: run bash benchmarks/setup_llama_server.sh first; llmnb figures only)")
    title = (f"SmolLM2-135M Q4_1, {MAX_TOKENS} greedy tokens per prompt, 8 prompts, "
             f"{os.cpu_count()} CPUs. `python benchmarks/bench_local.py --rounds {args.rounds}`\n")
    report = [title]
    if args.part in ("all", "engine"):
        report.append(engine_report(engine_part(args.rounds, args.threads, args.before)))
    if args.part in ("all", "server") and server_binary():
        report.append(server_part())
    if args.part in ("all", "stream"):
        report.append(stream_part(args.rounds))
    text = "\n\n".join(report) + "\n"
    if args.part == "all":  # the page's prose stays; only its measured part is replaced
        results_file.publish("local", text)
    else:
        print(text)


if __name__ == "__main__":
    main()
