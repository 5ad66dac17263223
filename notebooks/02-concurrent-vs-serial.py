# %% [markdown]
# # Ten calls: one after another, or all at once
#
# LangChain's async guide made ten identical calls, "Hello, how are you?", first one after
# another, then concurrently: **5.77 s serially, 1.39 s concurrently**, about 4x. Here we redo it
# and look at *why* on the timeline.
#
# A remote model spends most of a call waiting: for the network and for the server. Waiting is
# what concurrency overlaps. To run offline, we start a stand-in for a remote API on this machine:
# an OpenAI-compatible server that answers every request after 0.5 s and handles many at once.
# With `OPENAI_API_KEY` set, the cell below uses OpenAI instead (one changed line).

# %% tags=["nbval-ignore-output"]
import asyncio
import os

from llmnb import Models, Timeline
from llmnb.demo_server import DemoServer

server = DemoServer(latency=0.5).start()            # a local stand-in for a remote API
model = Models.create("openai:demo", base_url=server.base_url)
if os.environ.get("OPENAI_API_KEY"):
    model = Models.create("openai:gpt-4o-mini")      # the real thing
model

# %% [markdown]
# ## Serially: each call starts when the previous one has answered

# %%
with Timeline(title="serial: 10 calls, one after another") as serial:
    for _ in range(10):
        await model.generate_async("Hello, how are you?")
print(f"Serial executed in {serial.summary()['wall']:.2f} seconds.")

# %% [markdown]
# ## Concurrently: all ten requests are in flight together

# %%
with Timeline(title="concurrent: 10 calls at once") as concurrent:
    answers = await asyncio.gather(*[model.generate_async("Hello, how are you?") for _ in range(10)])
print(f"Concurrent executed in {concurrent.summary()['wall']:.2f} seconds.")
answers[:2]

# %%
# NBVAL_CHECK_OUTPUT
speedup = serial.summary()["wall"] / concurrent.summary()["wall"]
print("concurrent is at least 3x faster:", speedup > 3)

# %%
print(f"speedup {speedup:.1f}x here; LangChain's guide measured 5.77 s / 1.39 s = {5.77 / 1.39:.1f}x")

# %% [markdown]
# On one time axis: the serial bars form a staircase; the concurrent ones stand together at the
# start. `Timeline.compare` draws both runs at the same scale, so the lengths compare directly.
# The summary's *ratio* (sum of the tasks' times over the wall time) is the number of calls that
# were in flight on average: about 1 serially, about 10 concurrently.

# %%
Timeline.compare(serial, concurrent, title="the same 10 calls: one after another, then all at once")

# %% [markdown]
# ## `max_concurrency`: a cap on requests in flight
#
# Real APIs limit how many requests you may send at once (and answer HTTP 429 beyond that).
# `max_concurrency=N` keeps at most N requests in flight; the others wait for a free slot, and the
# timeline shows that wait as a hatched stretch. With 10 calls of 0.5 s, the wall time is about
# 0.5 s times the number of "rounds":

# %%
walls, seen, capped_runs = {}, {}, []
for cap in (1, 2, 5, 10):
    capped = Models.create("openai:demo", base_url=server.base_url, max_concurrency=cap)
    server.max_in_flight = 0
    with Timeline(title=f"max_concurrency={cap}") as tl:
        await asyncio.gather(*[capped.generate_async("Hello, how are you?") for _ in range(10)])
    walls[cap], seen[cap] = tl.summary()["wall"], server.max_in_flight
    capped_runs.append(tl)
    print(f"max_concurrency={cap:2}: {walls[cap]:.2f} s, the server saw at most {seen[cap]} at once")

# %% [markdown]
# The cap is exact: the server counts the requests it holds, and never sees more than the cap. The
# time falls with the number of rounds: 10, 5, 2, 1.

# %%
# NBVAL_CHECK_OUTPUT
print("the server saw exactly the cap in flight:", all(seen[cap] == cap for cap in walls))
print("each higher cap is faster:", walls[1] > walls[2] > walls[5] > walls[10])

# %% [markdown]
# The four runs on one axis: the hatched stretches are calls waiting for a free slot, and each
# higher cap packs the same ten calls into fewer rounds.

# %%
Timeline.compare(*capped_runs, title="10 calls under max_concurrency = 1, 2, 5, 10")

# %%
server.stop()
