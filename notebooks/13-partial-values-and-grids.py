# %% [markdown]
# # Watch a structured answer fill in, and compare models in one grid
#
# `extract` hands back a validated value, but only once the model has written its last token:
# for a few seconds the cell shows nothing. The JSON arrives piece by piece all the same, and an
# unfinished JSON object is already most of a value: `extract_stream` gives that value as it
# fills in, field by field, and ends with the complete, validated one.
#
# The second half puts the same prompts on two models at once, side by side in one table: which
# model answers right, how fast, and at what cost.
#
# Everything runs offline: the embedded model (SmolLM2-135M through llama.cpp, its output held
# to the type's JSON schema by a grammar) and llmnb's demo server, a stand-in for a remote model
# that streams a token every 20 ms after 0.3 s, with no model behind it. The demo server gets a
# price (USD per million input and output tokens) so the grid has a cost to show.

# %% tags=["nbval-ignore-output"]
import time

from pydantic import BaseModel

from llmnb import Models
from llmnb.demo_server import DemoServer
from llmnb.runs import Task, compare

server = DemoServer(latency=0.3, per_token=0.02).start()
local = Models.create()  # the embedded model
remote = Models.create("openai:demo", base_url=server.base_url, api_key="demo", price=(0.15, 0.60))
local, remote


# %% [markdown]
# ## A value that fills in
#
# The type is a pydantic model. Each value `extract_stream` gives is a `Person` whose fields
# not written yet are `None`; the last is the complete, validated `Person`, the same value
# `extract` returns for the same request (the embedded model's grammar writes the keys in
# alphabetical order).

# %%
class Person(BaseModel):
    name: str
    age: int
    city: str


PROMPT = "Invent a person: name, age and city."

# %% tags=["nbval-ignore-output"]
start = time.perf_counter()
values = []
for person in local.extract_stream(Person, PROMPT, temperature=0, max_tokens=120):
    values.append(person)
    print(f"{time.perf_counter() - start:5.2f} s  {person!r}")

# %% [markdown]
# Every value is a `Person` (a subclass whose fields may be `None`), so code that reads
# `person.city` works on each one; the last is the `Person` itself, validated.

# %%
# NBVAL_CHECK_OUTPUT
len(values) >= 3, all(isinstance(v, Person) for v in values), type(values[-1]).__name__

# %% [markdown]
# In a notebook, `%%llm_extract TYPE --stream` shows the value filling in, in one output
# updated in place, and then returns the final value. The timeline row of the call shows when
# its first token, and so its first field, arrived.

# %% tags=["nbval-ignore-output"]
# %load_ext llmnb

# %% tags=["nbval-ignore-output"]
# %%llm_extract Person --stream --model local -o someone
Invent a person who lives in Lisbon: name, age and city.

# %%
# NBVAL_CHECK_OUTPUT
type(someone).__name__

# %% [markdown]
# ## Three prompts on two models
#
# `%%llm_parallel --model local,remote` runs every line on each model at once (models by name
# or by variable). The cell shows one table: tasks down, models across, each cell the answer
# cut short with its latency and cost (`free` for a local model).

# %% tags=["nbval-ignore-output"]
# %%llm_parallel --model local,remote -o res -q
capital: What is the capital of France? Answer in one word.
colours -> list[str]: Name three colours.
label ? spam | not spam: Congratulations, you won a free phone! Click here.

# %% [markdown]
# The results are keyed by (task, model), and `res.grid()` lays them out as a DataFrame;
# `grid("latency")` and `grid("cost")` give the numbers behind each cell.

# %%
# NBVAL_CHECK_OUTPUT
len(res), res.grid().shape, res.models, res.tasks

# %% tags=["nbval-ignore-output"]
res.grid("latency").round(2)

# %% tags=["nbval-ignore-output"]
res.grid("cost")

# %% [markdown]
# The timeline groups the rows by model (each labelled `model/task`): the three remote calls
# overlap, each a network wait; the three local ones share the one CPU.

# %% tags=["nbval-ignore-output"]
res.timeline

# %% [markdown]
# ## The same from code
#
# `llmnb.runs.compare(models, tasks)` takes `Task`s and a dict of labelled models (or a list,
# labelled by their names) and returns the same results.

# %% tags=["nbval-ignore-output"]
tasks = [Task("capital", "generate", "What is the capital of France? Answer in one word."),
         Task("person", "extract", PROMPT, target=Person, options={"max_tokens": 120})]
both = compare({"local": local, "remote": remote}, tasks)
both

# %%
# NBVAL_CHECK_OUTPUT
sorted(both), both.errors

# %% [markdown]
# ## What the grid teaches about choosing
#
# Read it column by column, then row by row:
#
# - **Right first.** The demo server answers every free-text prompt with the same sentence:
#   fast, cheap, and wrong for the capital. A real remote model would get it right; the tiny
#   local model may or may not. Latency and cost only matter among the models that answer right,
#   and which those are differs from task to task, which is what the rows show.
# - **Typed tasks narrow the gap.** For `colours` and `label` the schema does much of the work:
#   the local model's grammar can only write a list of strings (how many is the model's choice
#   unless the type fixes it) or one of the labels. A small, free model is often enough for
#   classification and extraction, and rarely for open questions.
# - **Latency has two shapes.** The remote calls overlap (each is a wait on the network), so
#   three cost the time of one; the local calls share one CPU, so they add up. Many small tasks
#   favour the remote model, a few long private ones the local one.
# - **Cost is per task.** The cost row shows what each answer cost; multiply by the size of the
#   real run before deciding. A kept answer ([the cache](10-cache.ipynb)) costs nothing the
#   second time.
#
# A grid of a few representative prompts, before the run of thousands, is the cheapest way to
# choose the model for it.

# %% tags=["nbval-ignore-output"]
local.close()
remote.close()
server.stop()
