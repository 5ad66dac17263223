# %% [markdown]
# # Tools: a model's turn asks for three, and they run at once
#
# A model given tools can answer "I need the weather, the flights and the hotels first": one
# turn holding three tool calls. Your code runs them, sends the results back, and the model
# answers from them. Whether the three run one after another or together decides the wall time,
# and it is a concurrency question like the ones before: each tool mostly waits (for an API, a
# database), and waiting is what concurrency overlaps.
#
# With llmnb a tool is a plain function or an `async def`, typed, its docstring the description.
# Pass `tools=[...]` to any model method; llmnb builds each tool's JSON schema from its signature,
# validates the model's arguments, runs one turn's calls at once and loops until the model answers
# without tools. Every tool run is a row on the timeline, under the model call that asked for it.
#
# To run offline, the model is the demo server again: it has no model behind it, so it asks for
# every tool it is sent, once, with arguments from each tool's defaults, and then answers with
# what the tools returned. With `OPENAI_API_KEY` set, the next cell uses OpenAI instead.

# %% tags=["nbval-ignore-output"]
import asyncio
import os
import time

from llmnb import MaxStepsError, Models, Thread, Timeline, tool
from llmnb.demo_server import DemoServer

server = DemoServer(latency=0.3).start()  # a stand-in for a remote model: 0.3 s a turn
model = Models.create("openai:demo", base_url=server.base_url)
if os.environ.get("OPENAI_API_KEY"):
    model = Models.create("openai:gpt-4o-mini")
model

# %% [markdown]
# ## Three slow tools
#
# Stand-ins for three APIs, each taking 0.8 s (`asyncio.sleep`, as an async HTTP client waits).

# %%
TOOL_TIME = 0.8


async def weather(city: str = "Lisbon") -> str:
    """The weather forecast for a city."""
    await asyncio.sleep(TOOL_TIME)
    return f"{city}: sunny, 24 C"


async def flights(city: str = "Lisbon") -> list[str]:
    """Flights to a city tomorrow."""
    await asyncio.sleep(TOOL_TIME)
    return [f"TP123 to {city} 09:05", f"FR456 to {city} 14:40"]


async def hotels(city: str = "Lisbon", nights: int = 2) -> list[str]:
    """Hotels with free rooms in a city."""
    await asyncio.sleep(TOOL_TIME)
    return [f"Casa {city}, {nights} nights"]


QUESTION = "I fly to Lisbon tomorrow for two nights: weather, flights and a hotel?"
print(tool(weather).spec)  # what the model is sent: the schema comes from the signature

# %% [markdown]
# ## One at a time, then together
#
# `tool(f, sequential=True)` marks a tool that must run alone (it writes to a file, say): it
# waits for the calls before it in its turn, and those after it wait for it. Marking all three
# makes them run one after another, as a loop over the calls would. Unmarked, the three calls of
# the turn run at once.

# %%
one_at_a_time = [tool(f, sequential=True) for f in (weather, flights, hotels)]
with Timeline(title="one tool at a time") as serial:
    answer = await model.generate_async(QUESTION, tools=one_at_a_time)
with Timeline(title="the turn's tools together") as together:
    answer = await model.generate_async(QUESTION, tools=[weather, flights, hotels])
print(answer)
print(f"one at a time {serial.summary()['wall']:.2f} s, together {together.summary()['wall']:.2f} s")

# %%
# NBVAL_CHECK_OUTPUT
print("together is at least 1.5x faster:", serial.summary()["wall"] / together.summary()["wall"] > 1.5)
tool_rows = [r for r in together.records() if r["method"] == "tool"]
print("tool rows:", sorted(r["name"] for r in tool_rows))
print("they overlap:", max(r["start"] for r in tool_rows) < min(r["end"] for r in tool_rows))

# %% [markdown]
# The model call's row spans both of its turns; its tool runs sit under it (↳), in their own
# colour. One at a time they form a staircase; together they stand side by side, and the call
# ends a full 1.6 s sooner.

# %%
Timeline.compare(serial, together, title="three 0.8 s tools of one turn: one at a time, then together")

# %% [markdown]
# ## A blocking tool goes to a thread
#
# Many clients are synchronous (`requests`, a database driver): their calls block the thread
# they run on. If such a call ran on the event loop, every other task would stop until it
# returned: other model calls, other tools, the live timeline. So llmnb runs a plain `def` tool in
# a worker thread and awaits it. Three questions at once, each needing a blocking 1 s lookup:

# %%
def exchange_rate(currency: str = "EUR") -> float:
    """Today's exchange rate to US dollars (a blocking HTTP client)."""
    time.sleep(1.0)
    return 1.08


with Timeline(title="a plain def tool: in a thread") as threaded:
    await asyncio.gather(*(model.generate_async(f"Price of trip {i} in dollars?", tools=[exchange_rate])
                           for i in range(3)))

# %% [markdown]
# The mistake to avoid: the same blocking call inside an `async def`. llmnb awaits an `async def`
# on the event loop, trusting it to wait with `await`; `time.sleep` does not, so it holds the loop
# and the three lookups run one after another. The timeline's "event loop blocked" row shows it.

# %%
async def exchange_rate_blocking(currency: str = "EUR") -> float:
    """Today's exchange rate to US dollars (a blocking call inside async def: don't)."""
    time.sleep(1.0)
    return 1.08


with Timeline(title="the same call inside async def: the loop is blocked") as blocked:
    await asyncio.gather(*(model.generate_async(f"Price of trip {i} in dollars?", tools=[exchange_rate_blocking])
                           for i in range(3)))

# %%
# NBVAL_CHECK_OUTPUT
longest = [max((b - a for a, b in tl.lags), default=0.0) for tl in (threaded, blocked)]
print("in a thread, the loop never stopped for 0.5 s:", longest[0] < 0.5)
print("inside async def, the loop stopped for about a second:", longest[1] > 0.8)
print("threads are at least 1.5x faster here:", blocked.summary()["wall"] / threaded.summary()["wall"] > 1.5)

# %%
Timeline.compare(threaded, blocked, title="three blocking 1 s lookups: in threads, then on the loop")

# %% [markdown]
# ## A tool that fails
#
# Services go down. When a tool raises (or the model's arguments do not fit the signature, or it
# names a tool it was not given), the call does not fail: the error, as `TypeName: message`, goes
# back to the model as that tool's result, and the model can answer anyway or try again. The
# timeline marks the failed run with a cross.

# %%
async def seats(flight: str = "TP123") -> int:
    """Free seats on a flight."""
    await asyncio.sleep(0.3)
    raise ConnectionError("the booking service is down")


with Timeline(title="one tool fails") as failing:
    answer = await model.generate_async("Is there a seat on TP123?", tools=[seats, weather])
print(answer)

# %%
# NBVAL_CHECK_OUTPUT
print("the model read the error:", "ConnectionError: the booking service is down" in answer)
print("tool statuses:", sorted(r["status"] for r in failing.records() if r["method"] == "tool"))

# %% [markdown]
# Two limits keep a loop in check. `max_steps=` (default 10) is the most model turns one call may
# take: a model still asking for tools at its last one raises `MaxStepsError`, which names the
# tools it kept asking for. `tool_choice="required"` (or a tool's name) forces a tool call in the
# first turn only, so a forced call cannot repeat forever. And `tool(f, max_concurrency=2)` lets at
# most two runs of `f` go at once, over every call in flight (a rate-limited API).
#
# ## Tool turns in a Thread
#
# On a `Thread`, the call appends its tool turns (the model's calls and the tools' results), and
# you add the answer as usual, so the conversation goes on from everything the model saw.

# %%
chat = Thread("You plan trips.").user(QUESTION)
chat.assistant(await model.generate_async(chat, tools=[weather, flights, hotels])).user("And for Porto?")

# %%
# NBVAL_CHECK_OUTPUT
print([m["role"] for m in chat.messages])

# %% [markdown]
# ## The embedded model calls a tool, offline
#
# The embedded SmolLM2-135M runs here, with no network. Its grammar lets it write either a
# tool call whose arguments fit the tool's schema, or an answer, so every call it makes can be
# run; `tool_choice="required"` makes its first turn a call. Whether it picks sensible arguments,
# and when to stop calling, is up to a 135M model: it often asks again and again, and then
# `max_steps=3` ends the loop with a `MaxStepsError` that names what it kept asking for.

# %% tags=["nbval-ignore-output"]
local = Models.create()
asked = []


def forecast(city: str, days: int) -> str:
    """The weather forecast for a city, for a number of days."""
    asked.append({"city": city, "days": days})
    return f"{city}: sunny for {days} days"


with Timeline(title="the embedded model with a tool") as offline:
    try:
        answer = await local.generate_async("What will the weather be in Paris for 3 days?", tools=[forecast],
                                            tool_choice="required", max_steps=3, max_tokens=256, temperature=0)
    except MaxStepsError as e:  # a tiny model may keep asking
        answer = str(e)
print("the model asked for:", asked)
print("answer:", answer)

# %%
# NBVAL_CHECK_OUTPUT
print("the tool ran, with arguments of the right types:",
      bool(asked) and all(isinstance(a["city"], str) and isinstance(a["days"], int) for a in asked))

# %%
server.stop()
local.close()
