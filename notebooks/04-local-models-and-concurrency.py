# %% [markdown]
# # Why a local model runs one task at a time, and how to make it run several
#
# sibila's async example says local llama.cpp models gain nothing from async: "inference will end
# up being made sequentially". This notebook shows why on the timeline, what goes wrong when a
# library blocks the event loop while it waits for the model, and how **batched decoding** lets
# one local model work on several tasks at once.

# %%
import asyncio

from llmnb import Models, Timeline

model = Models.create()   # the embedded SmolLM2-135M, one generation at a time
prompts = [f"Name ten {things}." for things in ("fruits", "animals", "countries", "colours")]

# %% [markdown]
# ## Four tasks, one model
#
# We start four extractions together. The model has one context (its memory of the text so far)
# and llmnb gives it to one task at a time; the others wait their turn (hatched).

# %%
with Timeline(title="parallel=1: one at a time") as one:
    sequential = await asyncio.gather(*[model.extract_async(list[str], p, temperature=0) for p in prompts])
sequential

# %%
# NBVAL_CHECK_OUTPUT
print("overlap ratio close to 1:", 0.8 < one.summary()["speedup"] < 1.1)


# %% [markdown]
# ## Waiting is fine; blocking is not
#
# While a task waits its turn, the event loop stays free: llmnb runs llama.cpp in a worker thread
# and the waiting tasks are just paused coroutines. Some libraries instead call the blocking model
# function from inside their `async def`. Then nothing else on the loop can run, not even a timer,
# until the model is done. We imitate that with the blocking twin `model.generate` inside a coroutine
# and watch a ticker that wants to run every 50 ms:

# %%
async def ticker():
    for _ in range(12):
        await asyncio.sleep(0.05)

async def blocking_generate(prompt):   # what a library that blocks the loop does
    return model.generate(prompt, max_tokens=40)

with Timeline(title="a blocking call inside async code") as blocked:
    await asyncio.gather(blocked.track(ticker(), name="ticker"),
                         blocked.track(blocking_generate("Describe the sea."), name="blocking generate"))

# %%
# NBVAL_CHECK_OUTPUT
print("event loop blocked:", len(blocked.lags) > 0)

# %% [markdown]
# The shaded band is the time the loop could not run anything. In a notebook that also freezes
# widgets, progress bars and every other task. The awaited version never blocks:

# %%
with Timeline(title="the same call, awaited") as free:
    await asyncio.gather(free.track(ticker(), name="ticker"),
                         model.generate_async("Describe the sea.", max_tokens=40))

# %%
# NBVAL_CHECK_OUTPUT
print("event loop blocked:", len(free.lags) > 0)

# %% [markdown]
# ## Batched decoding: a local model that gains from concurrency
#
# llama.cpp can advance many sequences in one step: it reads the model's weights once per step
# and applies them to every sequence in the batch. On a CPU one step for four sequences costs
# little more than a step for one. `parallel=N` gives the model N sequences, one per task, and a
# task joins the running batch as soon as a sequence is free:

# %%
batched = Models.create("llamacpp:smollm2", parallel=4)
# Warm-up: each of the four sequences reads llmnb's extract instruction once and keeps it cached,
# as the one-at-a-time model above already had it; the timing below then compares like with like.
await asyncio.gather(*[batched.extract_async(list[str], "Name two birds.") for _ in range(4)])

with Timeline(title="parallel=4: one batch") as four:
    together = await asyncio.gather(*[batched.extract_async(list[str], p, temperature=0) for p in prompts])
together

# %%
# NBVAL_CHECK_OUTPUT
print("the bars overlap:", four.summary()["speedup"] > 1.5)
print("same answers as one at a time:", together == sequential)

# %% [markdown]
# At temperature 0 the answers are the same as before: each sequence has its own sampler with the
# same settings and the same grammar for structured output. Only the waiting is gone.
#
# ## How much faster?
#
# One run of each says little on a busy machine: whatever else runs there slows whichever run it
# falls on. So we time a few rounds, the two models taking turns, and take the median of the
# rounds' ratios. Four answers in free text, each cut at 24 tokens, keep all four
# sequences busy at every step; the extractions above end at different lengths, and the batch
# narrows as each one ends, so they gain less.

# %%
import statistics
import time

topics = [f"Describe {thing}." for thing in ("the sea", "a forest", "a city", "the sky")]

async def wall(m) -> float:
    start = time.perf_counter()
    await asyncio.gather(*[m.generate_async(t, max_tokens=24, temperature=0) for t in topics])
    return time.perf_counter() - start

ratios = []
for _ in range(5):   # one round: one at a time, then batched, close together in time
    ratios.append(await wall(model) / await wall(batched))
gain = statistics.median(ratios)
print("one at a time / batched, wall time of each round:", ", ".join(f"{r:.2f}" for r in ratios))

# %%
# NBVAL_CHECK_OUTPUT
print("batched is faster:", gain > 1.1)

# %% [markdown]
# The gain grows with the number of sequences until the CPU is saturated (see the benchmark
# figures in the README); on a GPU it is far larger.
