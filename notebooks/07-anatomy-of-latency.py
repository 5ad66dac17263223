# %% [markdown]
# # The anatomy of a call's latency
#
# A model call is not one block of waiting. The server queues the request, reads the prompt, and
# then writes the answer one token at a time. The **time to first token** is the queue plus the
# prompt; after it, the answer arrives at the model's **token rate**. Streaming hands you each
# piece as it is written: you see the first words at the time to first token instead of at the
# end. It does not make the answer, or a batch of answers, finish any sooner.
#
# To see each part clearly offline, we start a stand-in for a remote API that writes its first
# token after 0.8 s and then one token every 80 ms.

# %% tags=["nbval-ignore-output"]
import asyncio
import time

from llmnb import Models, Thread, Timeline
from llmnb.demo_server import DemoServer

FIRST, PER_TOKEN = 0.8, 0.08
server = DemoServer(latency=FIRST, per_token=PER_TOKEN).start()
model = Models.create("openai:demo", base_url=server.base_url)
model

# %% [markdown]
# ## One streamed call, printed as it comes
#
# `stream_async` is an async iterator of text pieces. Each piece is printed the moment it
# arrives; the time on the left is when.

# %% tags=["nbval-ignore-output"]
start = time.perf_counter()
async for piece in model.stream_async("Hello, how are you?"):
    print(f"{time.perf_counter() - start:5.2f} s {piece!r}")

# %% [markdown]
# Nothing for 0.8 s (the server "reads the prompt"), then a word every 80 ms. The first line is
# the time to first token; the rest is the token rate at work.
#
# ## Ten calls at once, on the timeline
#
# Every call reports its life as events; `first_token` is the one streaming adds. The timeline
# draws each bar in its two parts, before and after the first token, and its records give each
# call's time to first token (`ttft`) and token rate.

# %%
async def read(prompt: str) -> str:
    return "".join([piece async for piece in model.stream_async(prompt)])


with Timeline(title="10 streamed calls at once") as streamed:
    answers = await asyncio.gather(*[read(f"Question {i}: how are you?") for i in range(10)])
ttft = [r["ttft"] for r in streamed.records()]
print(f"first words after {streamed.summary()['ttft_median']:.2f} s (median), "
      f"all ten answers complete after {streamed.summary()['wall']:.2f} s")

# %%
# NBVAL_CHECK_OUTPUT
print("ten answers, each complete:", len(answers) == 10 and all(a == server.reply for a in answers))
print("each call's first token came after the server's delay:", all(t >= FIRST - 0.01 for t in ttft))

# %% [markdown]
# ## Streaming changes when you see words, not when the batch ends
#
# The same ten calls without streaming: each answer arrives whole, when its last token is written.

# %%
with Timeline(title="10 calls at once, not streamed") as whole:
    await asyncio.gather(*[model.generate_async(f"Question {i}: how are you?") for i in range(10)])
print(f"not streamed: the first words (and all the others) after {whole.summary()['wall']:.2f} s")
print(f"streamed:     the first words after {streamed.summary()['ttft_median']:.2f} s, "
      f"the batch done after {streamed.summary()['wall']:.2f} s")

# %%
# NBVAL_CHECK_OUTPUT
walls = streamed.summary()["wall"], whole.summary()["wall"]
print("the batch ends at about the same time either way:", abs(walls[0] - walls[1]) < 0.3 * walls[1])
print("streamed, the first words come well before the end:", max(ttft) < 0.8 * walls[0])

# %% [markdown]
# Ten answers of nine tokens take about 0.8 s + 9 x 80 ms whether or not they stream: the server
# writes at the same pace. What streaming buys is the first 0.8 s: a reader starts reading while
# the rest is written, and a program can act on the first words (or stop the call: leaving the
# `async for` early closes the connection).
#
# ## The same on the embedded model
#
# A local model shows the same two parts, for real: before the first token it reads the whole
# prompt (one batched pass over all its tokens), then it writes one token per step. A long prompt
# makes the first token later; it barely changes the rate after it.

# %% tags=["nbval-ignore-output"]
local = Models.create()  # the embedded SmolLM2-135M, on this machine's CPU
short = "Name a colour."
fruits = ", ".join(["apple", "banana", "cherry", "plum", "grape"] * 15)
long = f"Here is a list of fruits: {fruits}. Name a colour."

with Timeline(title="embedded model: a short and a long prompt") as on_cpu:
    for prompt in (short, long):
        start = time.perf_counter()
        async for piece in local.stream_async(prompt, max_tokens=20, temperature=0):
            print(piece, end="", flush=True)
        print(f"   ({time.perf_counter() - start:.2f} s)")

# %%
# NBVAL_CHECK_OUTPUT
short_ttft, long_ttft = (r["ttft"] for r in on_cpu.records())
print("two streamed local calls, each with a first token:", None not in (short_ttft, long_ttft))
print("the long prompt's first token comes later (the prompt is read first):", long_ttft > short_ttft)

# %% [markdown]
# ## A conversation: `Thread`
#
# A prompt can be a whole conversation. `Thread` keeps the turns; each method takes it as the
# prompt and answers the last turn. Here the model is told a name in one turn and asked for it in
# the next.

# %% tags=["nbval-ignore-output"]
chat = Thread(inst="You are a helpful assistant. Answer in one short sentence.")
chat.user("My name is Ada and I like tea.")
chat.assistant(await local.generate_async(chat, max_tokens=30, temperature=0))
chat.user("What is my name?")
for message in chat.messages:
    print(f"{message['role']:>9}: {message['content']}")
print("assistant: ", end="")
async for piece in local.stream_async(chat, max_tokens=30, temperature=0):
    print(piece, end="", flush=True)

# %%
# NBVAL_CHECK_OUTPUT
print("turns:", [m["role"] for m in chat.messages])

# %%
server.stop()
local.close()
