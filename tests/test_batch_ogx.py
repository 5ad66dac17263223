"""The Batch executor against a real Batch API server: OGX (tests/ogx_server.py), each line answered
by an upstream fault server that echoes the prompt, so every answer tells which row it belongs to."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter

import pytest
from fault_server import EchoServer
from ogx_server import MODEL, OgxServer

from llmnb import ConfigError, Models, Timeline, listen
from llmnb.runs import Run, Task, TaskError
from llmnb.runs.batch import Batch, batch_jobs

pytestmark = pytest.mark.slow
PRICE = (1.0, 4.0)  # USD per million tokens, live


@pytest.fixture(scope="module")
def ogx(tmp_path_factory):
    """One OGX for the module, its upstream an EchoServer (`ogx.upstream`)."""
    with EchoServer() as upstream, OgxServer(upstream.base_url, tmp_path_factory.mktemp("ogx")) as server:
        server.upstream = upstream
        yield server


def batch_model(ogx, cache):
    return Models.create(f"openai:{MODEL}", base_url=ogx.base_url, api_key="none", cache=cache, price=PRICE)


def say_run(model, items):
    return Run.for_each(model, [Task("say", "generate", "Say {item}")], items)


def test_200_rows_make_one_job_and_come_back_in_order_and_a_rerun_sends_nothing(ogx, tmp_path):
    model = batch_model(ogx, tmp_path / "answers.sqlite")
    items = [f"row {i}" for i in range(200)]
    asked = len(ogx.upstream.asked)
    with Timeline(title="batch") as timeline:
        results = say_run(model, items).execute(Batch(poll=0.2))
    assert results.as_list() == [f"echo: Say row {i}" for i in range(200)]
    summary = timeline.summary()
    assert (summary["tasks"], summary["jobs"], summary["cached"]) == (200, 1, 0)
    job = next(r for r in timeline.records() if r["method"] == "batch")
    assert job["status"] == "done" and job["tokens_out"] == 200 and job["name"].endswith(": 200 rows")
    assert results.summary_line() == "200 done in 1 batch job"
    assert [(len(j.keys), j.status) for j in batch_jobs(model.cache)] == [(200, "collected")]
    assert len(ogx.upstream.asked) - asked == 200
    again = say_run(model, items).execute(Batch(poll=0.2))
    assert again.as_list() == results.as_list()
    assert again.summary_line() == "200 done with no batch job"
    assert len(ogx.upstream.asked) - asked == 200  # nothing sent
    assert len(batch_jobs(model.cache)) == 1


def test_a_batch_costs_half_the_same_calls_made_live(ogx, tmp_path):
    items = [f"cost {i}" for i in range(20)]
    costs = {}
    for how, executor in (("batch", Batch(poll=0.2)), ("live", None)):
        finished: list = []
        with listen(functools.partial(keep_finished, finished)):
            results = say_run(batch_model(ogx, tmp_path / f"{how}.sqlite"), items).execute(executor)
        assert len(results.values_ok) == 20 and len(finished) == 20
        assert all(not e.cached and e.tokens_in and e.tokens_out for e in finished)
        costs[how] = sum(e.cost for e in finished)
    assert costs["live"] > 0
    assert costs["batch"] == pytest.approx(costs["live"] / 2)


def keep_finished(into: list, event) -> None:
    if event.kind == "finished" and event.method != "batch":
        into.append(event)


def test_a_failing_line_fails_its_row_only_with_the_servers_message(ogx, tmp_path):
    model = batch_model(ogx, tmp_path / "answers.sqlite")
    results = say_run(model, ["one", "FAIL two", "three"]).execute(Batch(poll=0.2))
    values = results.as_list()
    assert values[0] == "echo: Say one" and values[2] == "echo: Say three"
    assert isinstance(values[1], TaskError)
    assert "this server refuses" in str(values[1].error) and "batch" in str(values[1].error)
    assert results.summary_line().startswith("2 done in 1 batch job, 1 failed (first: say_2: ModelCallError")


def test_typed_tasks_and_a_tool_turn_make_a_second_round(ogx, tmp_path):
    def weather(city: str = "Paris") -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = batch_model(ogx, tmp_path / "answers.sqlite")
    tasks = [Task("n", "extract", "How many?", target=int), Task("pick", "classify", "Spam?", target=["spam", "ham"]),
             Task("tool", "generate", "Weather?", options={"tools": [weather]})]
    results = Run(model, tasks).execute(Batch(poll=0.2))
    assert results["n"] == 1 and results["pick"] in ("spam", "ham")
    assert "sunny in Paris" in results["tool"]
    assert results.summary_line() == "3 done in 2 batch jobs"  # the tool's answer goes in a second job


def test_batch_is_refused_in_one_line_for_a_model_without_the_batch_api(embedded_model, tmp_path):
    run = Run(embedded_model, [Task("a", "generate", "hi")])
    with pytest.raises(ConfigError, match="runs on this machine: it has no Batch API") as e:
        run.execute(Batch())
    assert "\n" not in str(e.value)
    local = Models.create("ollama:qwen3", cache=tmp_path / "c.sqlite")
    with pytest.raises(ConfigError, match=r"no OpenAI Batch API \(a local server\)"):
        Run(local, [Task("a", "generate", "hi")]).execute(Batch())
    other = Models.create("anthropic:claude", api_key="k", cache=tmp_path / "c.sqlite")
    with pytest.raises(ConfigError, match="anthropic's batches take another form"):
        Run(other, [Task("a", "generate", "hi")]).execute(Batch())


def test_a_model_without_a_cache_is_refused_with_what_to_do(ogx):
    model = Models.create(f"openai:{MODEL}", base_url=ogx.base_url, api_key="none", cache=False)
    with pytest.raises(ConfigError, match=r"cache=True"):
        say_run(model, ["x"]).execute(Batch())


def test_a_job_that_fails_validation_says_which_line_and_why(ogx, tmp_path):
    """A model the server does not know fails the whole job before any request."""
    model = Models.create("openai:no-such-model", base_url=ogx.base_url, api_key="none", cache=tmp_path / "c.sqlite")
    results = say_run(model, ["a", "b"]).execute(Batch(poll=0.2))
    assert len(results.errors) == 2
    message = str(results.errors["say_1"])
    assert "failed validation" in message and "line" in message, message
    assert json.dumps(message)  # one plain line of text


def test_an_interrupt_stops_the_waiting_not_the_job_and_the_rerun_collects_it(ogx, tmp_path):
    model = batch_model(ogx, tmp_path / "answers.sqlite")
    items = [f"interrupted {i}" for i in range(60)]
    ogx.upstream.latency = 0.1  # 60 rows, 10 at a time: the job runs 0.6 s or more

    async def interrupted():
        run = asyncio.ensure_future(say_run(model, items).execute_async(Batch(poll=0.1)))
        while not [j for j in model.cache.batch_jobs() if j.job]:
            await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    try:
        asyncio.run(interrupted())
        assert [j.status for j in model.cache.batch_jobs()] != ["collected"]  # left open
        results = say_run(model, items).execute(Batch(poll=0.1))
    finally:
        ogx.upstream.latency = 0.0
    assert results.as_list() == [f"echo: Say interrupted {i}" for i in range(60)]
    assert results.summary_line() == "60 done in 1 batch job"
    assert [j.status for j in model.cache.batch_jobs()] == ["collected"]  # the same job, collected
    assert sorted(Counter(a for a in ogx.upstream.asked if "interrupted" in a).values()) == [1] * 60


def test_refresh_sends_every_row_again_in_a_new_job(ogx, tmp_path):
    model = batch_model(ogx, tmp_path / "answers.sqlite")
    say_run(model, ["fresh"]).execute(Batch(poll=0.1))
    run = Run.for_each(model, [Task("say", "generate", "Say {item}")], ["fresh"], refresh=True)
    assert run.execute(Batch(poll=0.1)).summary_line() == "1 done in 1 batch job"
    assert len(model.cache.batch_jobs()) == 2


def test_what_the_cache_holds_is_not_sent_and_shows_as_kept(ogx, tmp_path):
    model = batch_model(ogx, tmp_path / "answers.sqlite")
    items = [f"mixed {i}" for i in range(30)]
    say_run(model, items[:10]).execute()  # live: kept in the cache
    with Timeline(title="mixed") as timeline:
        results = say_run(model, items).execute(Batch(poll=0.1))
    assert results.as_list() == [f"echo: Say mixed {i}" for i in range(30)]
    assert results.summary_line() == "30 done in 1 batch job"
    summary = timeline.summary()
    assert (summary["tasks"], summary["cached"], summary["jobs"]) == (30, 10, 1)
    assert [len(j.keys) for j in model.cache.batch_jobs()] == [20]
    assert summary["saved"] == pytest.approx(summary["cost"])  # 10 kept at the live price = 20 sent at half of it
