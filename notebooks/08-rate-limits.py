# %% [markdown]
# # Rate limits: concurrency is not requests per minute
#
# Real APIs limit how many requests (and tokens) you may send per minute. Two different knobs
# meet here:
#
# - **concurrency** (`max_concurrency=`): how many calls are *in flight* at once;
# - **rate** (`rpm=`, `tpm=`): how many calls (or tokens) *start* per minute.
#
# With answers taking 0.3 s, 16 calls in flight start about 16 / 0.3 = 53 calls a second. A
# server that allows 20 a second answers the rest with **429 Too Many Requests**. If every call
# then waits out its own `Retry-After` and comes back with the others, the 429s repeat: a storm.
#
# To run offline we start llmnb's demo server with a rate limit: at most 20 requests a second,
# 429 with `Retry-After` beyond that, and OpenAI's `x-ratelimit-*` headers on every answer.

# %% tags=["nbval-ignore-output"]
import asyncio

import openai

from llmnb import Models, Timeline, listen
from llmnb.demo_server import DemoServer, RateLimit

CALLS, PER_SECOND = 60, 20


def rate_limited_server() -> DemoServer:
    return DemoServer(latency=0.3, rate_limit=RateLimit(requests=PER_SECOND)).start()


print(f"{CALLS} calls against {PER_SECOND} requests a second: at best {CALLS / PER_SECOND:.0f} s")

# %% [markdown]
# ## The 429 storm: each call on its own
#
# The raw SDK retries a 429 after the server's `Retry-After`, each call for itself (twice by
# default). All the refused calls come back at the same moment, and most are refused again.

# %% tags=["nbval-ignore-output"]
server = rate_limited_server()
client = openai.AsyncOpenAI(base_url=server.base_url, api_key="demo")
hi = [{"role": "user", "content": "Hi"}]
answers = await asyncio.gather(*[client.chat.completions.create(model="demo", messages=hi) for _ in range(CALLS)],
                               return_exceptions=True)
await client.close()
storm = server.rate_limit.rejected
lost = sum(isinstance(a, Exception) for a in answers)
server.stop()
print(f"raw SDK: {storm} answers of 429, {lost} of {CALLS} calls lost")

# %% [markdown]
# ## llmnb: one pause for the whole model, then the server's pace
#
# llmnb keeps rate limits in the one layer that sends requests. A 429 pauses the **whole model**,
# every call, until `Retry-After` has passed. The `x-ratelimit-limit-*` headers tell it the
# server's pace, so after the first answers the calls go out evenly at that pace, and the
# `x-ratelimit-remaining-*` headers hold calls back before a 429 happens. No settings needed.
#
# The time a call spends waiting for the rate limit is its own phase on the timeline,
# *throttled*, distinct from waiting for a concurrency slot.

# %% tags=["nbval-ignore-output"]
server = rate_limited_server()
model = Models.create("openai:demo", base_url=server.base_url)
events = []
with listen(events.append), Timeline(title=f"{CALLS} calls, the server allows {PER_SECOND} a second") as tl:
    answers = await asyncio.gather(*[model.generate_async("Hi") for _ in range(CALLS)], return_exceptions=True)
paced = server.rate_limit.rejected
waited = len({e.call_id for e in events if e.kind == "throttled"})
server.stop()
print(f"llmnb: {paced} answers of 429, {sum(isinstance(a, Exception) for a in answers)} calls lost, "
      f"{waited} calls waited for the rate limit, {tl.summary()['wall']:.1f} s")
print(f"the pace it learned from the headers: {model.backend.limits.pace('requests'):.0f} requests a minute")

# %% [markdown]
# ## Telling it the limit: `rpm=` and `tpm=`
#
# When you know your limits (they are on your provider's account page), give them: the pace
# holds from the very first call. `tpm=` counts tokens: each request's are estimated before it is
# sent (its text, plus `max_tokens`) and corrected by the usage the answer reports.
# Concurrency can then be as high as you like: the rate, not the number in flight, sets the pace.

# %% tags=["nbval-ignore-output"]
server = rate_limited_server()
model = Models.create("openai:demo", base_url=server.base_url, rpm=PER_SECOND * 60, max_concurrency=CALLS)
with Timeline(title=f"rpm={PER_SECOND * 60}: evenly from the start") as told:
    answers = await asyncio.gather(*[model.generate_async("Hi") for _ in range(CALLS)], return_exceptions=True)
told_rejected = server.rate_limit.rejected
server.stop()
print(f"rpm={PER_SECOND * 60}: {told_rejected} answers of 429, {told.summary()['wall']:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
print("llmnb lost no call:", all(isinstance(a, str) for a in answers))
print("far fewer 429s than the storm:", paced * 4 < max(storm, 1) and told_rejected <= paced)

# %% [markdown]
# In a notebook cell the same options work through a model variable:
#
#     api = Models.create("openai:gpt-4o-mini", rpm=500, tpm=200_000)
#
#     %%llm_parallel --model api --for doc in docs
#     label ? spam | not spam: {doc}
