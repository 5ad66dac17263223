# %% [markdown]
# # Playground: concurrency you can turn up and down
#
# Set the number of tasks, how slow the server is, how many requests may be in flight or be sent
# per minute and whether the answers stream, press **Run**, and watch the timeline draw itself
# under the controls, below the previous run's on the same time axis, so you can see what a
# change did.
#
# No key and no network: the *remote stand-in* is an OpenAI-compatible server on this machine
# (`llmnb.demo_server`) that answers each request after the latency you set, plus the time per
# token for each token of its one-sentence answer, many requests at once, as a real API does. The *embedded* model is
# SmolLM2-135M, running here on the CPU: one task at a time, or several in one batch with
# `parallel=N`.

# %%
import asyncio

import ipywidgets as widgets

from llmnb import Models, Timeline
from llmnb.demo_server import DemoServer

server = DemoServer().start()  # the remote stand-in, on 127.0.0.1 (a daemon thread: it ends with the kernel)
PROMPT = "Hello, how are you?"
LOCAL_TOKENS = 24  # the embedded model's answers stop here, so that a run takes seconds

# %% [markdown]
# ## The controls
#
# One entry per setting; `APPLIES_TO` greys out the settings the chosen model does not use.

# %%
WIDE = {"style": {"description_width": "170px"}, "layout": {"width": "560px"}}
controls = {
    "model": widgets.ToggleButtons(options=[("remote stand-in", "remote"), ("embedded SmolLM2", "embedded")],
                                   description="model", style={**WIDE["style"], "button_width": "170px"}),
    "tasks": widgets.IntSlider(8, min=1, max=40, description="tasks", **WIDE),
    "latency": widgets.FloatSlider(0.5, min=0.0, max=2.0, step=0.1, description="server latency (s)", **WIDE),
    "per_token": widgets.FloatSlider(0.0, min=0.0, max=0.1, step=0.01, description="time per token (s)", **WIDE),
    "max_concurrency": widgets.IntSlider(4, min=1, max=40, description="max_concurrency", **WIDE),
    "rpm": widgets.IntSlider(0, min=0, max=1200, step=60, description="rpm (0: no limit)", **WIDE),
    "parallel": widgets.IntSlider(1, min=1, max=8, description="local parallel=N", **WIDE),
    "stream": widgets.Checkbox(False, description="stream the answers", **WIDE),
}
APPLIES_TO = {"latency": "remote", "per_token": "remote", "max_concurrency": "remote", "rpm": "remote",
              "parallel": "embedded"}


def grey_out(change=None):
    for name, model in APPLIES_TO.items():
        controls[name].disabled = controls["model"].value != model


controls["model"].observe(grey_out, names="value")
grey_out()

run_button = widgets.Button(description="Run", button_style="primary", icon="play")
status = widgets.Label()
picture = widgets.HTML()  # the previous run and this one, on one time axis
playground = widgets.VBox([*controls.values(), widgets.HBox([run_button, status]), picture])

# %% [markdown]
# ## One run
#
# `play()` reads the controls, makes the model they describe, starts every task at once and draws
# the timeline into the page ten times a second until the last task ends. Each task is one call;
# the model's own limits decide how many run at a time (`max_concurrency`, `parallel=N`) and how
# often one may start (`rpm`).

# %%
runs = []  # every run's Timeline, oldest first
embedded = {}  # parallel=N -> the embedded model, so that a run does not reload it


async def make_model(settings):
    if settings["model"] == "remote":
        server.latency, server.per_token = settings["latency"], settings["per_token"]
        return Models.create("openai:demo", base_url=server.base_url, api_key="none",  # never send a real key
                             max_concurrency=settings["max_concurrency"], rpm=settings["rpm"] or None)
    parallel = settings["parallel"]
    if parallel not in embedded:
        for old in embedded.values():  # one embedded model in memory at a time
            old.close()
        embedded.clear()
        model = await asyncio.to_thread(Models.create, parallel=parallel, max_tokens=LOCAL_TOKENS)
        # Each sequence reads the prompt once, as in a model already in use, so that runs with
        # different parallel=N compare the work itself, not a first read.
        await asyncio.gather(*[model.generate_async(PROMPT, max_tokens=1) for _ in range(parallel)])
        embedded[parallel] = model
    return embedded[parallel]


async def ask(model, settings):
    """One task: one call, its answer streamed (the timeline marks its first token) or whole."""
    if settings["stream"]:
        return "".join([piece async for piece in model.stream_async(PROMPT)])
    return await model.generate_async(PROMPT)


def title(settings):
    if settings["model"] == "embedded":
        how = f"embedded, parallel={settings['parallel']}"
    else:
        how = f"{settings['latency']:g} s, max_concurrency={settings['max_concurrency']}"
        how += f", rpm={settings['rpm']}" if settings["rpm"] else ""
    return f"run {len(runs) + 1}: {settings['tasks']} tasks, {how}"


def draw(timeline):
    """This run under the previous one, both from 0 s on one time axis, so their lengths compare."""
    shown = Timeline.compare(runs[-1], timeline, title="the previous run and this one") if runs else timeline
    picture.value = shown.to_svg()


async def draw_live(timeline):
    while True:  # until cancelled at the run's end
        draw(timeline)
        await asyncio.sleep(0.1)


async def run_tasks(model, settings):
    """All the tasks at once, drawn live."""
    with Timeline(title=title(settings), display=False) as timeline:
        drawing = asyncio.ensure_future(draw_live(timeline))
        try:  # a failed call is a red row on the timeline, not the end of the run
            await asyncio.gather(*[ask(model, settings) for _ in range(settings["tasks"])], return_exceptions=True)
        finally:
            drawing.cancel()
    draw(timeline)
    return timeline


async def play(**changes):
    """One run with the controls' settings, after applying `changes` (e.g. max_concurrency=8) to them."""
    for name, value in changes.items():
        controls[name].value = value
    settings = {name: control.value for name, control in controls.items()}
    run_button.disabled, status.value = True, "loading the model..."
    try:
        model = await make_model(settings)
        status.value = "running..."
        timeline = await run_tasks(model, settings)
        if settings["model"] == "remote":
            model.close()  # its HTTP connections; a new run makes a new model with the new settings
    finally:
        run_button.disabled = False
    runs.append(timeline)
    status.value = f"run {len(runs)}: wall {timeline.summary()['wall']:.2f} s"
    return timeline


def report(run):
    if not run.cancelled() and run.exception() is not None:
        status.value = f"failed: {type(run.exception()).__name__}: {run.exception()}"


pressed = set()  # runs started by the button, kept until they end (the loop holds tasks only weakly)


def on_run(button):
    run = asyncio.ensure_future(play())  # on the kernel's loop, so the page stays live while it runs
    pressed.add(run)
    run.add_done_callback(pressed.discard)
    run.add_done_callback(report)


run_button.on_click(on_run)

# %% [markdown]
# ## Play
#
# Move the controls and press **Run**. Things to try: raise `max_concurrency` until the wall time
# stops falling; add latency and see that it costs once per round, not once per task; set a rate
# of 120 requests per minute and watch the calls wait their turn (throttled) even with a high cap;
# add time per token and stream the answers: the wall time stays, the first token comes after the
# latency; switch to the embedded model and compare `parallel=1` with `parallel=4`.

# %%
playground

# %% [markdown]
# For a start, two runs made from code, as the Run button makes them: eight tasks against a server
# that takes 0.5 s per answer, first at most two in flight, then all eight.

# %%
capped = await play(model="remote", tasks=8, latency=0.5, max_concurrency=2)
free = await play(max_concurrency=8)

# %%
# NBVAL_CHECK_OUTPUT
print("tasks done:", [sum(r["status"] == "done" for r in run.records()) for run in (capped, free)])
print("max_concurrency=8 took less than half the time of max_concurrency=2:",
      free.summary()["wall"] < capped.summary()["wall"] / 2)

# %% [markdown]
# The same picture as it stays in the saved notebook (the controls need a running kernel):

# %%
Timeline.compare(capped, free)

# %% [markdown]
# A rate limit paces the requests instead: with `rpm=240` (four a second) the eight calls go out a
# quarter of a second apart, however high the cap, and the timeline shows each one's wait for its
# turn as *throttled*.

# %%
paced = await play(rpm=240)
Timeline.compare(free, paced)

# %%
# NBVAL_CHECK_OUTPUT
print("tasks done:", sum(r["status"] == "done" for r in paced.records()))
print("calls throttled:", paced.summary()["throttled"] > 0)
print("the rate limit took more than twice as long:", paced.summary()["wall"] > 2 * free.summary()["wall"])

# %% [markdown]
# And the embedded model, four tasks one at a time, then in one batch of four:

# %%
one = await play(model="embedded", tasks=4, parallel=1)
batch = await play(parallel=4)
Timeline.compare(one, batch)

# %%
# NBVAL_CHECK_OUTPUT
print("tasks done:", [sum(r["status"] == "done" for r in run.records()) for run in (one, batch)])
