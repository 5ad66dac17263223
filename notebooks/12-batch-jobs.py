# %% [markdown]
# # Batch jobs: the same rows at half the price
#
# A provider's Batch API takes a file of requests and answers them within 24 hours, at half
# the live price. llmnb sends a run's calls that way with `Batch()` (or `%%llm_parallel
# --batch`), and gives back the same results, in the same order, on the same timeline.
#
# To run offline we start llmnb's stand-in for a Batch API (`llmnb.demo_batch`): it answers
# each line after 0.2 s, 10 lines at a time, after a second of "validating". A real provider
# takes minutes to hours; here the picture is the same, only shorter. Both models below speak to
# it; each keeps its answers in its own file, and the price is set so the notebook can show what
# each run costs.

# %% tags=["nbval-ignore-output"]
import subprocess
import sys
import tempfile
import time

from llmnb import Models, Timeline
from llmnb.demo_batch import DemoBatchServer
from llmnb.runs import Run, Task
from llmnb.runs.batch import Batch

server = DemoBatchServer(latency=0.2, concurrency=10, validating=1.0).start()
folder = tempfile.mkdtemp()


def model_with(cache_name):
    return Models.create("openai:demo", base_url=server.base_url, api_key="none", price=(0.15, 0.60),
                         cache=f"{folder}/{cache_name}.sqlite")


reviews = [f"Review #{i}: {['loved it', 'arrived broken', 'too small', 'exactly right'][i % 4]}." for i in range(60)]
task = Task("label", "classify", "Praise or complaint? {review}", target=["praise", "complaint"])

# %% [markdown]
# ## Live and as a batch, on one timeline
#
# The same 60 rows, first sent live (16 at once), then as one batch job. The job is a row of
# its own: validating (dots), in progress (the bar), then the rows it carried, each from the
# moment it was sent to its answer.

# %% tags=["nbval-ignore-output"]
live_model, batch_model = model_with("live"), model_with("batch")
with Timeline(title="60 rows live, then as a batch job") as timeline:
    live = await Run.for_each(live_model, [task], reviews, name="review").execute_async()
    batch = await Run.for_each(batch_model, [task], reviews, name="review").execute_async(Batch(poll=0.5))

# %% [markdown]
# Both runs give the same labels in the same order; the batch's calls cost half.

# %%
# NBVAL_CHECK_OUTPUT
rows = [r for r in timeline.records() if r["method"] == "classify"]  # the live run's 60, then the batch's
live_cost, batch_cost = sum(r["cost"] for r in rows[:60]), sum(r["cost"] for r in rows[60:])
print(live.as_list() == batch.as_list(), batch.summary_line())
print(f"batch / live cost: {batch_cost / live_cost:.2f}")

# %% [markdown]
# ## A kernel that dies while its job runs
#
# A batch job outlives the kernel that sent it: llmnb writes the job's id into the cache file
# the moment the job exists. Here another Python process starts the same run on a fresh file
# and is killed (SIGKILL, as a crashed kernel) while its job runs. The job goes on on the server.

# %% tags=["nbval-ignore-output"]
KILLED = f"""
from llmnb import Models
from llmnb.runs import Run, Task
from llmnb.runs.batch import Batch
model = Models.create("openai:demo", base_url={server.base_url!r}, api_key="none", cache={folder!r} + "/again.sqlite")
Run.for_each(model, [Task("label", "classify", "Praise or complaint? {{review}}", target=["praise", "complaint"])],
             {reviews!r}, name="review").execute(Batch(poll=0.5))
"""
jobs_before = len(server.batches)
process = subprocess.Popen([sys.executable, "-c", KILLED])
while len(server.batches) == jobs_before:
    time.sleep(0.1)
time.sleep(0.5)
process.kill()
process.wait()
print("killed; the job on the server is", list(server.batches.values())[-1]["status"])

# %% [markdown]
# A new session runs the same cell again: it finds the job in the file, waits for it and
# collects it. No second job, no row sent twice.

# %% tags=["nbval-ignore-output"]
again_model = model_with("again")
print("jobs this file knows:", len(again_model.cache.batch_jobs()))
with Timeline(title="the same run, after the kill") as after:
    again = await Run.for_each(again_model, [task], reviews, name="review").execute_async(Batch(poll=0.5))

# %%
# NBVAL_CHECK_OUTPUT
print(again.summary_line(), "| jobs on the server:", len(server.batches) - jobs_before)
print(again.as_list() == batch.as_list())

# %% tags=["nbval-ignore-output"]
server.stop()
