# %% [markdown]
# # Event loops in notebooks
#
# Async code runs on an **event loop**. A Jupyter kernel already runs one, and that is why the
# same code behaves differently in a script and in a notebook. This notebook explains the
# differences that trip people up, and how llmnb deals with them.

# %% [markdown]
# ## Top-level `await`
#
# In a script you start the loop yourself with `asyncio.run(main())`. In a notebook the kernel's
# loop is already running, and IPython lets you `await` directly in a cell ("autoawait"):

# %% tags=["nbval-check-output"]
import asyncio


async def answer():
    await asyncio.sleep(0.1)
    return 42

await answer()

# %% [markdown]
# ## Why `asyncio.run()` fails here
#
# `asyncio.run()` creates a new loop and runs it. A thread may run only one loop at a time, and
# the kernel's is running, so Python refuses:

# %%
# NBVAL_CHECK_OUTPUT
coroutine = answer()
try:
    asyncio.run(coroutine)
except RuntimeError as error:
    coroutine.close()  # it never ran
    print("RuntimeError:", error)

# %% [markdown]
# This is one of the most asked-about errors around async LLM code ("asyncio.run() cannot be
# called from a running event loop"; see llama_index#8586, FastChat#684). The fix in a notebook is
# simply to `await`.

# %% [markdown]
# ## What nest-asyncio does, and its pitfalls
#
# `nest_asyncio` (and its maintained fork `nest-asyncio2`) patches asyncio so that a running loop
# can be re-entered: `asyncio.run()` and `loop.run_until_complete()` then work inside a cell. It is
# a global monkey-patch, and it has costs:
#
# - an interrupted cell can leave tasks running after the cell ended (measured in a real kernel
#   while designing llmnb), so work you thought stopped keeps going;
# - it has broken other libraries in known ways ("Cannot enter into task", no `current_task()` on
#   Python 3.14, which breaks anyio/httpx; hangs with some async SDK clients; no uvloop);
# - the original package is archived; ipykernel 7 uses the fork only for its Tk event loop.
#
# llmnb does not need it.

# %% [markdown]
# ## How llmnb's blocking methods work in a cell
#
# Every llmnb method has a blocking twin: `model.classify(...)` next to `await model.classify_async(...)`.
# The twin runs the coroutine on llmnb's own private event loop, in a background thread, and waits
# for it. It works in scripts and in cells alike, and Interrupt cancels the call there.

# %%
from llmnb import Models

model = Models.create()

# %%
# NBVAL_CHECK_OUTPUT
model.classify(["spam", "not spam"], "I am a Nigerian prince and will make you very rich!")

# %% [markdown]
# But a blocking call blocks the cell, and with it the kernel's loop. The timeline's probe shows
# it: while `model.generate(...)` (no `await`) runs, no other task on the kernel's loop can run,
# and the stretch is marked *event loop blocked*.

# %%
from llmnb import Timeline


async def ticker():
    for _ in range(10):
        await asyncio.sleep(0.05)

with Timeline(title="a blocking call inside async code") as tl:
    tick = asyncio.ensure_future(tl.track(ticker(), name="ticker (needs the loop)"))
    await asyncio.sleep(0.1)
    model.generate("Write two sentences about the sea.", max_tokens=40)  # blocks the loop
    await tick

# %%
# NBVAL_CHECK_OUTPUT
print("the loop was blocked:", len(tl.lags) > 0)

# %% [markdown]
# The async version leaves the loop free: llama.cpp runs in a worker thread, and the ticker keeps
# ticking while the model works.

# %%
with Timeline(title="the same call, awaited") as tl2:
    await asyncio.gather(tl2.track(ticker(), name="ticker (needs the loop)"),
                         model.generate_async("Write two sentences about the sea.", max_tokens=40))

# %%
# NBVAL_CHECK_OUTPUT
print("the loop was blocked:", len(tl2.lags) > 0)

# %% [markdown]
# ## The magics
#
# `%%llm_parallel` and `%%llm_extract` are rewritten, before the cell runs, into a top-level
# `await` of the magic's coroutine, so they run on the kernel's own loop: the timeline updates
# live, and Interrupt cancels their tasks. Where that rewrite cannot work (inside `%%capture`, or
# with autoawait off) they fall back to the private loop, which also cancels on Interrupt.
#
# **Rules of thumb:** in a notebook, `await` the `_async` methods and gather them; use the blocking
# twins for one quick call; never call `asyncio.run()` in a cell; and you do not need nest-asyncio.
