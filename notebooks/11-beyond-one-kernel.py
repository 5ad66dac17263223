# %% [markdown]
# # When one kernel is not enough: the same run on a Dask cluster
#
# A kernel is one process. A local GGUF model decodes on the cores that process has; remote
# calls at scale cost about a millisecond of client CPU each, so one kernel tops out near a
# thousand calls a second; and several notebooks sharing one API key each keep their own
# `rpm=`, together overrunning it.
#
# `--cluster client` runs the same `%%llm_parallel` cell on a [Dask](https://distributed.dask.org)
# cluster's workers (`pip install 'llmnb[dask]'`). The kernel's cache answers first, one rate
# limit holds for the whole cluster, and every worker's calls show on this kernel's live
# timeline. Here the cluster is a `LocalCluster` of 2 worker processes with 1 thread each, on
# this machine; a real one is `Client("tcp://scheduler:8786")`.

# %% tags=["nbval-ignore-output"]
# %load_ext llmnb
from distributed import Client, LocalCluster

from llmnb import Models
from llmnb.demo_server import DemoServer, RateLimit

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)
client.wait_for_workers(2)
small = Models.create("smollm2", n_threads=1)  # one llama.cpp thread: here, and on each worker
texts = ["The parcel came two weeks late and broken.", "Best purchase this year!", "It works, nothing more.",
         "Customer service never answered.", "Lovely colours, fast delivery.", "The handle snapped on day one.",
         "Would buy again.", "Smaller than the photos suggest."]
client

# %% [markdown]
# ## The embedded model, here
#
# Eight reviews labelled by the embedded model in this kernel: one process, one model.

# %% tags=["nbval-ignore-output"]
# %%llm_parallel --model small --for text in texts -o here -q
mood ? happy | unhappy | neutral: Is the customer happy, unhappy or neutral? {text}

# %% [markdown]
# ## The same cell on the cluster
#
# `--cluster client` sends the tasks to the workers. Each worker makes the model again from its
# recipe (the name and options given to `Models.create`, never an API key) and loads the GGUF file
# once for all later runs; the timeline shows which worker made each call.

# %% tags=["nbval-ignore-output"]
# %%llm_parallel --model small --for text in texts --cluster client -o there -q
mood ? happy | unhappy | neutral: Is the customer happy, unhappy or neutral? {text}

# %% tags=["nbval-ignore-output"]
import pandas as pd

pd.DataFrame(there.timeline.records())[["name", "worker", "start", "end", "status"]].head(8)

# %% [markdown]
# ## A remote model with one limit for the cluster
#
# Now a remote model: llmnb's demo server, allowing 50 requests a second and answering 429
# beyond. The model asks for `rpm=2700` (90 % of that). On a cluster that limit holds for all
# workers together: the scheduler keeps it, each worker books a moment there before each
# request, and the requests go out evenly spread. A second notebook whose model names the same
# server, model, key and limit on the same scheduler shares the same limit.
#
# 300 calls draw the big-run picture: progress, the strips over time, and a strip of calls in
# flight per worker.

# %% tags=["nbval-ignore-output"]
server = DemoServer(latency=0.1, rate_limit=RateLimit(requests=50)).start()
remote = Models.create("openai:demo", base_url=server.base_url, rpm=2700)
items = [f"item {i}" for i in range(300)]

# %% tags=["nbval-ignore-output"]
# %%llm_parallel --model remote --for item in items --cluster client -o shared -q
say: Say hello to {item}

# %%
# NBVAL_CHECK_OUTPUT
summary = shared.timeline.summary()
print(f"{len(shared.values_ok)} answers from {summary['workers']} workers; "
      f"429s: {'at most 1 %' if server.rate_limit.rejected <= 3 else 'more than 1 %'}")

# %% [markdown]
# Give the model a cache (`Models.create(..., cache="answers.sqlite")`) and the kernel keeps
# every answer the workers send back: a re-run, or a run after the kernel died, sends only what
# is missing. A worker that dies mid-run costs only the calls it had under way: Dask runs its
# tasks again on another worker. See [Runs on a Dask cluster](../cluster.md).

# %% tags=["nbval-ignore-output"]
server.stop()
client.close()
cluster.close()
