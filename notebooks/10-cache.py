# %% [markdown]
# # Runs that survive: the answer cache
#
# Label a column of 400 reviews and the run takes a while. If the kernel dies at row 250, or
# you re-run the cell after fixing a typo in the next one, every answer is paid for again.
# Unless the answers are kept: `Models.create(..., cache="answers.sqlite")` keeps each complete
# answer in a SQLite file **before** the call returns. A re-run sends only what is missing.
#
# What makes two calls "the same" is the request as sent: the model, the messages, every
# generation setting, the schema, and the server (its URL; for a local model, the model file's
# content). Change any of them and the call is sent again. Errors and answers cut off at
# `max_tokens` are never kept.
#
# To run offline we start llmnb's demo server, answering each request after 0.2 s, and give the
# model a price (USD per million input and output tokens) so the notebook can show what the
# cache saves. A provider's own models are priced from the genai-prices table when it is
# installed (`pip install llmnb[prices]`); local models cost 0.

# %% tags=["nbval-ignore-output"]
import asyncio
import tempfile

import pandas as pd

from llmnb import Models, Timeline, listen
from llmnb.demo_server import DemoServer

server = DemoServer(latency=0.2).start()
folder = tempfile.mkdtemp()  # a fresh file for this run of the notebook; yours would stay put
model = Models.create("openai:demo", base_url=server.base_url, cache=f"{folder}/answers.sqlite",
                      price=(0.15, 0.60))

moods = ["loved it", "would not buy again", "arrived broken", "exactly as described", "too small"]
things = ["kettle", "lamp", "backpack", "keyboard", "tent", "blender", "chair", "umbrella"]
df = pd.DataFrame({"review": [f"The {things[i % 8]} #{i}: {moods[i % 5]}." for i in range(400)]})
df.head(3)

# %% [markdown]
# ## A run cut off half way
#
# Here the run is stopped by a timeout after about half its calls, as an Interrupt, a crash or
# a closed laptop would stop it. The answers that came back before are already in the file.

# %% tags=["nbval-ignore-output"]
LABELS = ["praise", "complaint"]


async def label_all(reviews):
    return await asyncio.gather(*[model.classify_async(LABELS, review) for review in reviews])


try:
    await asyncio.wait_for(label_all(df.review), timeout=2.5)
except TimeoutError:
    print(f"stopped after 2.5 s; {len(model.cache)} of {len(df)} answers were kept")
first_run = server.requests
model.cache

# %% [markdown]
# ## Run it again
#
# The same cell again: the kept answers come from the file (no request, no slot, no rate
# limit), only the missing ones are sent. On the timeline the answers from the cache are the
# calls that take no time. A listener counts where each answer came from and what it cost:
# each `finished` event carries `cached` and `cost` (for a kept answer: what it would have
# cost to ask again).

# %% tags=["nbval-ignore-output"]
events = []
with listen(events.append), Timeline(title="the same 400 calls, run again") as tl:
    df["label"] = await label_all(df.review)
done = [e for e in events if e.kind == "finished"]
cached = [e for e in done if e.cached]
spent = sum(e.cost for e in done if not e.cached)
saved = sum(e.cost for e in cached)
print(f"{len(cached)} from the cache, {len(done) - len(cached)} sent "
      f"({server.requests - first_run} requests reached the server)")
print(f"spent ${spent:.6f}, saved ${saved:.6f}")

# %% [markdown]
# ## The magics say it too
#
# `%%llm_parallel --for` over the column with the same model: every answer is kept now, so
# nothing is sent, and the summary line says so. `--refresh` would ask again and replace what
# the file holds; `refresh=True` does the same for one call.

# %%
# %load_ext llmnb
reviews = df.review.tolist()

# %% tags=["nbval-ignore-output"]
# %%llm_parallel --model model --for review in reviews -q -o res
label ? praise | complaint: {review}

# %% [markdown]
# ## What the file holds
#
# `model.cache` shows the file, the number of answers and its size; `.models()` counts the
# answers per model, `.drop(model)` removes one model's, `.clear()` all of them. The file holds
# no API key, and nothing read from it can run code: the answers are JSON.
#
# For every model of a notebook at once: `llmnb.use_cache("answers.sqlite")` (or
# `use_cache()` for `llmnb-cache.sqlite` in the working directory).

# %%
# NBVAL_CHECK_OUTPUT
print("every answer kept:", len(model.cache) == len(df), model.cache.models() == {"openai:demo": len(df)})
print("the second run sent only what the first had not kept:", len(cached) + server.requests - first_run == len(df))
print("every answer is one of the labels:", set(res.as_list()) <= set(LABELS))

# %% tags=["nbval-ignore-output"]
server.stop()
