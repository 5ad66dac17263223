"""`parallel=N` on a CUDA build of llama-cpp-python: the GPU and the CPU of one machine side by side.

    python benchmarks/bench_gpu_parallel.py --model PATH.gguf              # 2.5 min on an H200 machine
    python benchmarks/bench_gpu_parallel.py --model PATH.gguf --ns 1,2 --calls 4 --max-tokens 8 --no-publish

For each N, a model made with `Models.create("llamacpp:PATH", parallel=N)` gets 32 `generate`
calls of max_tokens=64 at once (asyncio.gather; sampled at llmnb's default temperature, seed i
for call i), after one untimed warm-up round of N short calls. The table gives the wall time of
the 32 calls, the generated tokens (counting the end token, as llmnb does), tokens/s and the
ratio to N=1 on the same device. A last row runs the same file through llama-cpp-python's own
`Llama.create_chat_completion`, one call at a time, as a reference for one sequence.

Where the model runs: llmnb's engine loads the model with llama.cpp's default model parameters,
which offload every layer (n_gpu_layers=-1) when the build has a GPU backend, so a CUDA build
puts the model on the GPU without an option. The CPU column runs the same build in a process of
its own with CUDA_VISIBLE_DEVICES="" (no GPU visible), so both columns share one build and one
machine. Each device runs in its own process; the GPU column also reports the GPU memory the
model took (NVML), which shows that it was offloaded.

The table goes into benchmarks/results/gpu-parallel.md (unless --no-publish) and is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SUBJECTS = ("a lighthouse keeper", "a fox in the snow", "an old violin", "a storm at sea",
            "a robot gardener", "a lost kitten", "a mountain village", "a night train")
REFERENCE_CALLS = 4  # llama-cpp-python's Llama, one call after another


def prompts(count: int, round_no: int) -> list[str]:
    """Long-story prompts (they run to max_tokens), new in every round so no slot finds a whole
    prompt cached."""
    return [f"Write a long story about {SUBJECTS[i % len(SUBJECTS)]}, part {round_no * count + i}."
            for i in range(count)]


def gpu_memory_used() -> int | None:
    """Bytes in use on GPU 0 (NVML), or None where NVML or a GPU is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
    except Exception:
        return None


def timed_round(model, texts: list[str], max_tokens: int) -> tuple[int, float]:
    """(generated tokens, seconds) for all `texts` sent at once."""
    from llmnb.events import listen

    tokens: list[int] = []

    async def main():
        with listen(lambda e: e.kind == "finished" and tokens.append(e.tokens_out or 0)):
            calls = (model.generate_async(t, max_tokens=max_tokens, seed=i) for i, t in enumerate(texts))
            return await asyncio.gather(*calls)

    start = time.perf_counter()
    answers = asyncio.run(main())
    seconds = time.perf_counter() - start
    assert len(answers) == len(texts) and all(isinstance(a, str) for a in answers), answers
    return sum(tokens), seconds


def llmnb_rows(path: str, ns: list[int], calls: int, max_tokens: int) -> list[dict]:
    from llmnb import Models

    rows = []
    for n in ns:
        before = gpu_memory_used()
        model = Models.create(f"llamacpp:{path}", parallel=n)
        after = gpu_memory_used()
        timed_round(model, prompts(n, 1000 + n), 8)  # warm-up: first kernels, threads, caches
        tokens, seconds = timed_round(model, prompts(calls, n), max_tokens)
        model.close()
        took = None if before is None or after is None else (after - before) / 2**20
        rows.append({"name": f"llmnb parallel={n}", "n": n, "tokens": tokens, "seconds": seconds, "gpu_mib": took})
        print(f"  parallel={n}: {tokens} tokens in {seconds:.2f}s, GPU memory taken: {took} MiB", flush=True)
    return rows


def reference_row(path: str, gpu: bool, max_tokens: int) -> dict:
    """llama-cpp-python's own chat completion, one call at a time, same sampling settings."""
    from llama_cpp import Llama

    from llmnb.registry import default_threads

    llm = Llama(model_path=path, n_gpu_layers=-1 if gpu else 0, n_ctx=2048, n_threads=default_threads(),
                verbose=False)
    tokens, seconds = 0, 0.0
    for i, text in enumerate(prompts(REFERENCE_CALLS + 1, 2000)):
        start = time.perf_counter()
        out = llm.create_chat_completion([{"role": "user", "content": text}], max_tokens=max_tokens, seed=i,
                                         temperature=0.7, repeat_penalty=1.1)
        if i:  # the first call is the warm-up
            tokens += out["usage"]["completion_tokens"]
            seconds += time.perf_counter() - start
    llm.close()
    return {"name": f"llama-cpp-python Llama, {REFERENCE_CALLS} calls one at a time", "n": None,
            "tokens": tokens, "seconds": seconds, "gpu_mib": None}


def child(args) -> None:
    """One device's rows, as JSON on the last line of stdout."""
    import llama_cpp

    gpu = args.child == "gpu"
    print(f"{args.child}: llama_supports_gpu_offload={llama_cpp.llama_supports_gpu_offload()}", flush=True)
    rows = llmnb_rows(args.model, args.ns, args.calls, args.max_tokens)
    rows.append(reference_row(args.model, gpu, args.max_tokens))
    print(json.dumps({"rows": rows, "offload": bool(llama_cpp.llama_supports_gpu_offload())}))


def run_device(device: str, args) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, __file__, "--child", device, "--model", args.model, "--ns", ",".join(map(str, args.ns)),
           "--calls", str(args.calls), "--max-tokens", str(args.max_tokens)]
    print(f"== {device}", flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    if proc.returncode != 0 or not lines:
        return {"error": f"the {device} run failed (exit {proc.returncode}); see its output above"}
    return json.loads(lines[-1])


def machine() -> str:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if _has("nvidia-smi") else ""
    import llama_cpp

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else ""
    return (f"{gpu or 'no GPU'}, {os.cpu_count()} CPU cores ({cpu}), Python "
            f"{platform.python_version()}, llama-cpp-python {llama_cpp.__version__}")


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def table(results: dict, args) -> str:
    from llmnb.registry import default_threads

    devices = [d for d in ("gpu", "cpu") if "rows" in results[d]]
    head = "| | " + " | ".join(f"{d.upper()} wall s | {d.upper()} tokens | {d.upper()} tokens/s | "
                                f"{d.upper()} vs N=1" for d in devices) + " |"
    lines = [head, "|---|" + "---|" * 4 * len(devices)]
    names = [r["name"] for r in results[devices[0]]["rows"]] if devices else []
    for i, name in enumerate(names):
        cells = []
        for d in devices:
            row, base = results[d]["rows"][i], results[d]["rows"][0]
            rate, base_rate = row["tokens"] / row["seconds"], base["tokens"] / base["seconds"]
            cells.append(f"{row['seconds']:.2f} | {row['tokens']} | {rate:.0f} | {rate / base_rate:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    command = "python benchmarks/bench_gpu_parallel.py --model SmolLM2-135M-Instruct.Q4_1.gguf"
    notes = [f"{args.calls} concurrent generate calls, max_tokens={args.max_tokens}, SmolLM2-135M-Instruct Q4_1, "
             f"`{command}` ({machine()}; {args.build}; {default_threads()} llama.cpp threads; "
             f"{datetime.date.today()})", "", *lines, ""]
    for d in ("gpu", "cpu"):
        if "error" in results[d]:
            notes.append(f"{d.upper()}: {results[d]['error']}")
    taken = [r["gpu_mib"] for r in results.get("gpu", {}).get("rows", []) if r.get("gpu_mib") is not None]
    if taken:
        notes.append(f"GPU memory taken by the model (NVML, per N): {', '.join(f'{m:.0f}' for m in taken)} MiB")
    return "\n".join(notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a GGUF file")
    parser.add_argument("--ns", default="1,2,4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--devices", default="gpu,cpu", help="gpu, cpu or both (gpu,cpu)")
    parser.add_argument("--build", default="llama-cpp-python as installed", help="how it was built, for the table")
    parser.add_argument("--json", help="also write the measured rows to this file")
    parser.add_argument("--no-publish", action="store_true", help="print the table only")
    parser.add_argument("--child", choices=("gpu", "cpu"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {d: {"error": "not run"} for d in ("gpu", "cpu")}
    for device in args.devices.split(","):
        results[device] = run_device(device, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    report = table(results, args)
    if args.no_publish:
        print(report)
    else:
        import results_file  # benchmarks/, next to this script

        results_file.publish("gpu-parallel", report)


if __name__ == "__main__":
    main()
