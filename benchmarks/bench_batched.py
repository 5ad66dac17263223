"""Figures for `parallel=N` (batched local decoding), measured side by side in one run.

    python benchmarks/bench_batched.py            # everything (~6 min on 2 cores)
    python benchmarks/bench_batched.py --part throughput --rounds 3 --threads 2
    bash benchmarks/setup_sibila_env.sh           # once, for the sibila column

Each part writes its table into benchmarks/results/batched.md (and prints it).

1. throughput: 8 concurrent `extract` tasks on the embedded SmolLM2-135M, total generated tokens/s,
   with parallel=8 against parallel=1, and the same prompts through sibila 0.4.5's LlamaCppModel
   on the same GGUF (in its own venv, benchmarks/envs/sibila). Rounds alternate between the
   models; each round has new prompts, so no model finds a whole prompt cached.
2. overhead: one sequence at a time, ms per generated token of llmnb's engine against
   llama-cpp-python's own `create_chat_completion` (same messages, settings, grammar).
3. memory: peak resident memory (VmHWM, as ru_maxrss but not inherited from the parent) of a
   fresh process that loads the model with parallel=N and runs N extract tasks, N = 1, 4, 8, 16.

Generated tokens count the end-of-text token, as llmnb does; sibila's are its output
text re-tokenized, plus one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import results_file  # benchmarks/, next to this script

HERE = Path(__file__).resolve().parent
SIBILA_PYTHON = HERE / "envs" / "sibila" / "bin" / "python"
TASKS = 8
THREADS = 1  # set by --threads; every model below gets the same number
NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena"]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Lagos", "Cairo", "Zagreb", "Kyoto", "Kyiv", "Seoul", "Accra", "Bern"]
HOBBIES = ["chess", "golf", "painting", "surfing", "baking", "cycling", "poetry", "judo", "tennis", "knitting"]


def prompts(round_no: int) -> list[str]:
    """Eight extraction prompts, different in every round."""
    out = []
    for i in range(TASKS):
        k = round_no * TASKS + i
        name, city = NAMES[k % len(NAMES)], CITIES[(k * 5 + round_no) % len(CITIES)]
        h1, h2 = HOBBIES[k % len(HOBBIES)], HOBBIES[(k * 3 + 1) % len(HOBBIES)]
        out.append(f"{name} is {20 + (k * 7) % 50} years old, lives in {city} and enjoys {h1} and {h2}. "
                   f"Extract the person.")
    return out


def person_type():
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int
        city: str
        hobbies: list[str]

    return Person


# --- llmnb -------------------------------------------------------------------------------------
def llmnb_round(model, round_no: int) -> tuple[int, float]:
    """(generated tokens, seconds) for 8 concurrent extract tasks."""
    from llmnb.events import listen

    Person = person_type()
    tokens = []

    async def main():
        # A sampled answer of the 135M model now and then runs on to max_tokens and is cut off
        # (ExtractError): its tokens were generated all the same, so they count.
        with listen(lambda e: e.kind in ("finished", "failed") and tokens.append(e.tokens_out or 0)):
            calls = (model.extract_async(Person, p, seed=i) for i, p in enumerate(prompts(round_no)))
            return await asyncio.gather(*calls,
                                        return_exceptions=True)

    from llmnb import ExtractError

    start = time.perf_counter()
    results = asyncio.run(main())
    seconds = time.perf_counter() - start
    assert all(isinstance(r, (Person, ExtractError)) for r in results), results
    cut = sum(isinstance(r, ExtractError) for r in results)
    if cut:
        print(f"  ({cut} of {len(results)} answers ran to max_tokens and were cut off)", flush=True)
    return sum(tokens), seconds


def throughput(rounds: int, with_sibila: bool) -> dict:
    from llmnb import Models

    models = {"llmnb parallel=1": Models.create("llamacpp:smollm2", n_threads=THREADS),
              "llmnb parallel=8": Models.create("llamacpp:smollm2", parallel=8, n_threads=THREADS)}
    runs = {name: [] for name in models}
    if with_sibila:
        runs["sibila LlamaCppModel"] = []
    for model in models.values():
        llmnb_round(model, 0)  # warm-up, not timed
    for r in range(1, rounds + 1):
        for name, model in models.items():
            runs[name].append(llmnb_round(model, r))
            print(f"  round {r} {name}: {runs[name][-1][0]} tokens in {runs[name][-1][1]:.2f}s", flush=True)
        if with_sibila:
            runs["sibila LlamaCppModel"].append(sibila_round(r))
            print(f"  round {r} sibila: {runs['sibila LlamaCppModel'][-1][0]} tokens in "
                  f"{runs['sibila LlamaCppModel'][-1][1]:.2f}s", flush=True)
    return {name: (sum(t for t, _ in rs), sum(s for _, s in rs)) for name, rs in runs.items()}


def sibila_round(round_no: int) -> tuple[int, float]:
    from llmnb.registry import embedded_path

    # the sibila venv has no llmnb: the parent names the embedded GGUF file for it
    out = subprocess.run([str(SIBILA_PYTHON), __file__, "--child-sibila", str(round_no), "--threads", str(THREADS),
                          "--gguf", str(embedded_path("smollm2"))], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["tokens"], result["seconds"]


def child_sibila(round_no: int, path: str) -> None:
    """Runs in the sibila venv: a warm-up round, then round `round_no`, as 8 concurrent tasks."""
    import logging

    from sibila import GenConf, LlamaCppModel, Thread

    logging.disable(logging.WARNING)
    model = LlamaCppModel(path, ctx_len=2048, n_threads=THREADS, n_threads_batch=THREADS,
                          genconf=GenConf(temperature=0.7, max_tokens=512))
    Person = person_type()

    async def one_round(r):
        return await asyncio.gather(*(model.gen_extract_async(Person, Thread(p)) for p in prompts(r)))

    asyncio.run(one_round(0))
    start = time.perf_counter()
    outs = asyncio.run(one_round(round_no))
    seconds = time.perf_counter() - start
    llama = model._llama
    tokens = sum(len(llama.tokenize(o.text.encode(), add_bos=False)) + 1 for o in outs)
    valid = sum(isinstance(o.value, Person) for o in outs)
    chat_format = model.format_name if hasattr(model, "format_name") else None
    print(json.dumps({"tokens": tokens, "seconds": seconds, "valid": valid, "format": chat_format}))


# --- overhead ----------------------------------------------------------------------------------
def overhead(reps: int) -> dict:
    """ms per generated token, one sequence, free text and JSON-schema constrained."""
    import llama_cpp

    from llmnb import Models
    from llmnb.backends.grammar import schema_to_gbnf
    from llmnb.events import listen
    from llmnb.model import EXTRACT_INST
    from llmnb.registry import embedded_path
    from llmnb.structured import target_for

    llama = llama_cpp.Llama(str(embedded_path("smollm2")), n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS,
                            verbose=False)
    # temperature=0 on both sides: the same (greedy) sampling work per token
    model = Models.create("llamacpp:smollm2", parallel=8, n_threads=THREADS, temperature=0)
    Person = person_type()
    schema = target_for(Person).schema
    grammar = llama_cpp.LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False)
    story = "Write a long story about a lighthouse keeper."
    person = prompts(0)[0]
    cases = {
        "free text, 128 tokens": (
            {"messages": [{"role": "user", "content": story}], "max_tokens": 128},
            lambda: model.generate_async(story, max_tokens=128)),
        "JSON schema (grammar)": (
            {"messages": [{"role": "system", "content": EXTRACT_INST}, {"role": "user", "content": person}],
             "grammar": grammar},
            lambda: model.extract_async(Person, person)),
    }
    results = {}
    for case, (kwargs, call) in cases.items():
        ours, theirs = [], []
        for rep in range(reps + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            out = llama.create_chat_completion(**kwargs, temperature=0, repeat_penalty=1.1)
            t = time.perf_counter() - start
            if rep:
                theirs.append(1000 * t / (out["usage"]["completion_tokens"] + 1))
            tokens = []

            async def one(call, tokens):
                with listen(lambda e: e.kind == "finished" and tokens.append(e.tokens_out)):
                    return await call()

            start = time.perf_counter()
            asyncio.run(one(call, tokens))
            t = time.perf_counter() - start
            if rep:
                ours.append(1000 * t / tokens[0])
        results[case] = (theirs, ours)
    return results


# --- memory ------------------------------------------------------------------------------------
def memory(ns: list[int]) -> dict:
    out = {}
    for n in ["import", "sequential", *ns]:
        run = subprocess.run([sys.executable, __file__, "--child-memory", str(n), "--threads", str(THREADS)],
                             capture_output=True, text=True, check=True)
        out[n] = float(run.stdout.strip().splitlines()[-1])
    return out


def child_memory(n: str) -> None:
    from llmnb import Models

    if n == "sequential":  # parallel=1, one task at a time, for reference
        Models.create("llamacpp:smollm2", n_threads=THREADS).extract(person_type(), prompts(0)[0], seed=0)
    elif n != "import":
        from llmnb.backends.batched import BatchedBackend
        from llmnb.model import Model
        from llmnb.registry import embedded_path

        model = Model(BatchedBackend(embedded_path("smollm2"), name="llamacpp:smollm2", parallel=int(n),
                                     n_threads=THREADS))
        Person = person_type()

        async def main():
            tasks = (model.extract_async(Person, p, seed=i) for i, p in enumerate((prompts(0) * 2)[: int(n)]))
            return await asyncio.gather(*tasks, return_exceptions=True)  # memory, whatever the tiny model says

        asyncio.run(main())
    else:
        assert Models
    print(peak_rss_mib())


def peak_rss_mib() -> float:
    """Peak resident memory of this process. ru_maxrss of a child of a big process starts at its
    parent's size (Linux carries it over fork and exec), so read VmHWM, the peak of this image."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def throughput_report(rounds: int, no_sibila: bool) -> str:
    with_sibila = not no_sibila and SIBILA_PYTHON.exists()
    if not with_sibila and not no_sibila:
        print("(no sibila column: run bash benchmarks/setup_sibila_env.sh first)")
    totals = throughput(rounds, with_sibila)
    base = totals["llmnb parallel=1"][0] / totals["llmnb parallel=1"][1]
    title = (f"8 concurrent extract tasks x {rounds} rounds (SmolLM2-135M Q4_1, {THREADS} threads), "
             f"`python benchmarks/bench_batched.py --part throughput --rounds {rounds} --threads {THREADS}` "
             f"({machine()})")
    lines = [title, "", "| | generated tokens | seconds | tokens/s | vs llmnb parallel=1 |", "|---|---|---|---|---|"]
    for name, (tokens, seconds) in totals.items():
        lines.append(f"| {name} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | {tokens / seconds / base:.2f}x |")
    if with_sibila:
        p8 = totals["llmnb parallel=8"][0] / totals["llmnb parallel=8"][1]
        sib = totals["sibila LlamaCppModel"][0] / totals["sibila LlamaCppModel"][1]
        lines += ["", f"llmnb parallel=8 / sibila LlamaCppModel: {p8 / sib:.2f}x"]
    return "\n".join(lines)


def overhead_report(reps: int) -> str:
    title = (f"One sequence, ms per generated token, best / median of {reps} alternating runs, "
             f"`python benchmarks/bench_batched.py --part overhead --threads {THREADS}` ({machine()})")
    lines = [title, "",
             "| | llama-cpp-python create_chat_completion | llmnb parallel=8 engine | overhead (best) | (median) |",
             "|---|---|---|---|---|"]
    for case, (theirs, ours) in overhead(reps).items():
        best, mid = (min(theirs), min(ours)), (statistics.median(theirs), statistics.median(ours))
        lines.append(f"| {case} | {best[0]:.1f} / {mid[0]:.1f} | {best[1]:.1f} / {mid[1]:.1f} | "
                     f"{100 * (best[1] / best[0] - 1):+.0f}% | {100 * (mid[1] / mid[0] - 1):+.0f}% |")
    return "\n".join(lines)


def memory_report() -> str:
    mem = memory([1, 4, 8, 16])  # "import": python + llmnb, no model
    title = ("Peak resident memory (VmHWM, MiB) of a process running N extract tasks, n_ctx=2048 per task, "
             f"`python benchmarks/bench_batched.py --part memory --threads {THREADS}` ({machine()})")
    return "\n".join([
        title, "",
        "| N | " + " | ".join(str(n) for n in mem) + " |", "|---|" + "---|" * len(mem),
        "| MiB | " + " | ".join(f"{m:.0f}" for m in mem.values()) + " |"])


def machine() -> str:
    import llama_cpp

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"llama-cpp-python {llama_cpp.__version__}, {time.strftime('%Y-%m-%d')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "throughput", "overhead", "memory"], default="all")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-sibila", action="store_true")
    parser.add_argument("--child-sibila", type=int)
    parser.add_argument("--gguf", help="the GGUF file, for --child-sibila")
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads for every model (default 1: llmnb's default on 2 cores)")
    parser.add_argument("--child-memory")
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    if args.child_sibila is not None:
        return child_sibila(args.child_sibila, args.gguf)
    if args.child_memory is not None:
        return child_memory(args.child_memory)
    if args.part in ("all", "throughput"):
        results_file.publish("batched", throughput_report(args.rounds, args.no_sibila), f"throughput-{THREADS}-threads")
    if args.part in ("all", "overhead"):
        results_file.publish("batched", overhead_report(args.reps), "overhead")
    if args.part in ("all", "memory"):
        results_file.publish("batched", memory_report(), "memory")


if __name__ == "__main__":
    main()
