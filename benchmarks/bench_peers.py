"""llmnb against the raw SDK, LangChain and sibila, on the same work, side by side in one run.

    bash benchmarks/setup_peer_envs.sh      # once: LangChain, pydantic-ai and sibila in their own venvs
    python benchmarks/bench_peers.py        # writes benchmarks/results/peers.md

A local OpenAI-compatible server (llmnb.demo_server, in its own process) answers every request
after 200 ms plus 2 ms per output token, so the figures are each library's own cost. N concurrent
calls per library (each in a fresh process, in its venv), rounds alternating between libraries;
medians. Wall time is also given as a ratio to the floor (raw AsyncOpenAI with its default
httpx client + asyncio.gather), taken within each round; "raw+aiohttp" is the same SDK on its
aiohttp transport, which llmnb uses by default. SIZES=10,100 (an environment variable) for a
quick run; TIMEOUT (600 s) bounds each run, and a library that does not finish gets that in its
row. A cProfile run at N=100 gives llmnb's own share of the client's time.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import results_file  # benchmarks/, next to this script

HERE = Path(__file__).resolve().parent
ENVS = HERE / "envs"
PYTHONS = {"raw": sys.executable, "raw+aiohttp": sys.executable, "llmnb": sys.executable,
           "llmnb+timeline": sys.executable, "langchain": str(ENVS / "langchain" / "bin" / "python"),
           "pydantic-ai": str(ENVS / "pydantic-ai" / "bin" / "python"),
           "sibila": str(ENVS / "sibila" / "bin" / "python")}
SIZES = tuple(int(n) for n in os.environ.get("SIZES", "10,100,1000,5000").split(","))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TIMEOUT = float(os.environ.get("TIMEOUT", "600"))  # seconds one library gets for one run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(lib: str, n: int, url: str, *options: str) -> dict:
    try:
        out = subprocess.run([PYTHONS[lib], str(HERE / "peer_runner.py"), lib, str(n), url, *options],
                             capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"lib": lib, "n": n, "error": f"not done within {TIMEOUT:.0f} s"}
    if out.returncode:
        return {"lib": lib, "n": n, "error": out.stderr.strip().splitlines()[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_time(python: str, module: str, repeat: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([python, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout)
                             for _ in range(repeat))


def load_ext_time(repeat: int = 5) -> float:
    code = ("from IPython.testing.globalipapp import start_ipython; import time; ip = start_ipython(); "
            "t = time.perf_counter(); ip.run_line_magic('load_ext', 'llmnb'); print(time.perf_counter() - t)")
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout.strip().splitlines()[-1]) for _ in range(repeat))


def langchain_guide_calls(url: str) -> tuple[float, float]:
    """The LangChain guide's ten calls, serial and concurrent, through llmnb."""
    code = f"""
import asyncio, time
from llmnb import Models
m = Models.create("openai:demo", base_url="{url}", api_key="sk-bench")
async def main():
    await m.generate_async("warm up")
    t = time.perf_counter()
    for _ in range(10):
        await m.generate_async("Hello, how are you?")
    serial = time.perf_counter() - t
    t = time.perf_counter()
    await asyncio.gather(*[m.generate_async("Hello, how are you?") for _ in range(10)])
    print(serial, time.perf_counter() - t)
asyncio.run(main())
"""
    serial, concurrent = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                   check=True).stdout.split())
    return serial, concurrent


def magic_in_kernel(url: str, n: int, rounds: int) -> float:
    """Wall time of a `%%llm_parallel` cell of N calls in a real kernel, from execute to idle."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def execute(code: str) -> float:
            start = time.perf_counter()
            reply = kc.execute_interactive(code, timeout=600, output_hook=lambda msg: None)
            assert reply["content"]["status"] == "ok", reply["content"]
            return time.perf_counter() - start

        execute(f"%load_ext llmnb\nfrom llmnb import Models\n"
                f"bench = Models.create('openai:demo', base_url='{url}', api_key='sk-bench', max_concurrency={n})")
        cell = f"%%llm_parallel -q --model bench\ngreet * {n}: Hello, how are you?"
        execute(cell)  # warm up
        return statistics.median(execute(cell) for _ in range(rounds))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def version(python: str, dist: str) -> str:
    if not Path(python).exists():
        return "missing"
    code = f"import importlib.metadata as m; print(m.version('{dist}'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "missing"


def main() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "llmnb.demo_server", "--port", str(port), "--latency", "0.2",
                               "--per-token", "0.002"], stdout=subprocess.PIPE, text=True)
    server.stdout.readline()  # "serving ..."
    url = f"http://127.0.0.1:{port}/v1"
    chosen = os.environ.get("LIBS", ",".join(PYTHONS)).split(",")  # e.g. LIBS=raw,llmnb for a quick run
    libs = [lib for lib in PYTHONS if lib in chosen and Path(PYTHONS[lib]).exists()]
    try:
        results: dict[tuple[str, int], list[dict]] = {}
        for _ in range(ROUNDS):
            for n in SIZES:
                for lib in libs:
                    results.setdefault((lib, n), []).append(run(lib, n, url))
        serial, concurrent = langchain_guide_calls(url)
        profiled = {lib: run(lib, 100, url, "--profile") for lib in ("llmnb", "llmnb+timeline")}
        kernel = {n: magic_in_kernel(url, n, ROUNDS) for n in (10, 100) if n in SIZES}
    finally:
        server.terminate()
        server.wait()

    def med(lib, n, key):
        values = [r[key] for r in results[(lib, n)] if key in r]
        return statistics.median(values) if values else None

    def ratios(lib, n):
        """wall / floor within each round (the raw run moments before): the machine's drift
        between rounds cancels out, which a ratio of the two medians does not do."""
        pairs = zip(results[(lib, n)], results[("raw", n)], strict=False)
        return sorted(r["wall"] / f["wall"] for r, f in pairs if "wall" in r and "wall" in f)

    header = ("| library | N | wall (s) | wall / floor, median of rounds (lowest-highest) | client CPU (s) "
              "| CPU per call (ms) | peak RSS (MB) |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for n in SIZES:
        floor = med("raw", n, "wall")
        for lib in libs:
            wall = med(lib, n, "wall")
            if wall is None:
                lines.append(f"| {lib} | {n} | failed: {results[(lib, n)][0].get('error')} | | | | |")
                continue
            rs = ratios(lib, n)
            spread = f"{statistics.median(rs):.3f} ({rs[0]:.2f}-{rs[-1]:.2f})" if rs else "no floor run"
            cpu = med(lib, n, "cpu")
            rss = med(lib, n, "rss_mb")
            failed = [r["error"] for r in results[(lib, n)] if "error" in r]
            name = f"{lib} ({len(failed)} of {len(results[(lib, n)])} runs failed: {failed[0]})" if failed else lib
            lines.append(f"| {name} | {n} | {wall:.3f} | {spread} | {cpu:.3f} | {cpu / n * 1000:.2f} | {rss:.0f} |")
        if n in kernel and floor:
            lines.append(f"| %%llm_parallel in a kernel (cell, execute to idle) | {n} | {kernel[n]:.3f} "
                         f"| {kernel[n] / floor:.3f} (to the floor's median) | | | |")
    imports = [("llmnb", sys.executable, "llmnb"), ("langchain_openai", PYTHONS["langchain"], "langchain_openai"),
               ("pydantic_ai", PYTHONS["pydantic-ai"], "pydantic_ai"), ("sibila", PYTHONS["sibila"], "sibila")]
    import_lines = ["| import | seconds (median of 5) |", "|---|---:|"]
    for label, python, module in imports:
        if Path(python).exists():
            import_lines.append(f"| `import {label}` | {import_time(python, module):.3f} |")
    import_lines.append(f"| `%load_ext llmnb` | {load_ext_time():.3f} |")
    versions = (f"llmnb {version(sys.executable, 'llmnb')}, openai {version(sys.executable, 'openai')}, "
                f"langchain-openai {version(PYTHONS['langchain'], 'langchain-openai')}, "
                f"pydantic-ai {version(PYTHONS['pydantic-ai'], 'pydantic-ai-slim')}, "
                f"sibila {version(PYTHONS['sibila'], 'sibila')}")
    python = sys.version.split()[0]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {python}, {time.strftime('%Y-%m-%d')}"
    report = "\n".join([
        f"Peers, `python benchmarks/bench_peers.py` ({machine}; {versions}; median of {ROUNDS} rounds; server latency"
        " 200 ms + 2 ms per output token, in its own process)", "", *lines, "",
        f"The LangChain guide's ten calls through llmnb on the same server: serial {serial:.2f} s, concurrent "
        f"{concurrent:.2f} s, {serial / concurrent:.1f}x (the guide: 5.77 s against 1.39 s, 4.2x, on OpenAI).", "",
        "Under cProfile (which slows everything, so only the shares count), N=100: llmnb's own code takes "
        + ", ".join(f"{p['in_llmnb_s'] / p['n'] * 1e6:.0f} us per call "
                    f"({p['in_llmnb_s'] / p['profiled_s']:.1%} of the client's time)"
                    f" {'with' if 'timeline' in lib else 'without'} the timeline" for lib, p in profiled.items())
        + "; the rest is the openai SDK, its HTTP transport and asyncio, as for the raw client.", "",
        *import_lines, ""])
    results_file.publish("peers", report)


if __name__ == "__main__":
    main()
