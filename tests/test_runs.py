"""A run of many calls as data (`llmnb.runs`): the form, checked before anything runs, and its
execution here against a real OpenAI-compatible server and the embedded model."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from llmnb import ConfigError, Models, Run, Task
from llmnb.demo_server import DemoServer
from llmnb.registry import Recipe
from llmnb.runs import Here, Results, TaskError


@pytest.fixture
def server():
    with DemoServer(latency=0.05) as demo:
        yield demo


def remote(server, **options):
    return Models.create("openai:demo", base_url=server.base_url, api_key="sk-secret-123", **options)


def test_a_task_is_checked_when_it_is_written():
    with pytest.raises(ConfigError, match="method must be one of generate, extract, classify"):
        Task("a", "summarise", "hi")
    with pytest.raises(ConfigError, match="extract needs target="):
        Task("a", "extract", "hi")
    with pytest.raises(ConfigError, match="takes no option temprature"):
        Task("a", "generate", "hi", options={"temprature": 0})


def test_a_run_refuses_twice_named_tasks_and_numbers_identical_ones(server):
    model = remote(server)
    with pytest.raises(ConfigError, match="'a' is used twice"):
        Run(model, [Task("a", "generate", "hi"), Task("a", "generate", "ho")])
    with pytest.raises(ConfigError, match="max_concurrency must be at least 1"):
        Run(model, [Task("a", "generate", "hi")], max_concurrency=-2)
    run = Run(model, [Task(f"t{i}", "generate", "same") for i in range(3)] + [Task("other", "generate", "else")])
    assert [t.sample for t in run.tasks] == [0, 1, 2, 0]  # each copy its own answer in a cache


def test_for_each_fills_each_template_per_item_in_order(server):
    templates = [Task("label", "classify", "Spam? {text}", target=["spam", "ham"]),
                 Task("says", "generate", "Repeat: {text}")]
    run = Run.for_each(remote(server), templates, ["a", "b", "c"], name="text", max_concurrency=2)
    assert [t.name for t in run.tasks] == ["label_1", "label_2", "label_3", "says_1", "says_2", "says_3"]
    assert run.tasks[1].prompt == "Spam? b" and run.tasks[5].prompt == "Repeat: c"
    with pytest.raises(ConfigError, match="non-empty list"):
        Run.for_each(remote(server), templates, [])


def test_a_run_executes_here_in_order_and_keeps_failures(server):
    tasks = [Task("greet", "generate", "Hello"), Task("label", "classify", "Is this spam?", target=["spam", "ham"]),
             Task("bad", "generate", [])]
    seen = []
    results = Run(remote(server), tasks, max_concurrency=2).execute(on_result=seen.append)
    assert isinstance(results, Results) and results.order == ["greet", "label", "bad"]
    assert isinstance(results["greet"], str) and results["label"] in ("spam", "ham")
    assert isinstance(results["bad"], TaskError) and isinstance(results["bad"].error, ConfigError)
    assert sorted(d.name for d in seen) == ["bad", "greet", "label"]
    assert server.max_in_flight <= 2


def test_the_embedded_model_runs_a_run_with_its_default_executor(embedded_model):
    template = Task("label", "classify", "{t}", target=["yes", "no"])
    run = Run.for_each(embedded_model, [template], ["Sky blue?", "Ice hot?"], name="t")
    results = asyncio.run(run.execute_async(Here()))
    assert results.as_list() and all(v in ("yes", "no") for v in results.as_list())


def test_a_recipe_makes_the_model_again_without_its_key(server, monkeypatch):
    model = remote(server, rpm=600, temperature=0.2, cache=False)
    recipe = model.recipe
    assert recipe == pickle.loads(pickle.dumps(recipe))  # it travels
    assert "sk-secret-123" not in repr(recipe) + str(pickle.dumps(recipe))
    assert dict(recipe.options) == {"base_url": server.base_url, "rpm": 600, "temperature": 0.2}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-worker-environment")
    again = recipe.make()
    assert again.name == model.name and again.recipe == recipe
    assert Models.create().recipe == Recipe("llamacpp:smollm2")


def test_a_model_with_a_live_option_cannot_travel_and_says_why(server):
    import httpx

    model = remote(server, http_client=httpx.AsyncClient())
    with pytest.raises(ConfigError, match="option http_client= is not a plain value"):
        model.recipe.make()


def test_find_missing_splits_a_run_by_what_the_cache_holds_and_sends_nothing(server, tmp_path):
    from llmnb import listen
    from llmnb.runs.missing import find_missing

    model = remote(server, cache=tmp_path / "answers.sqlite")
    first = Run.for_each(model, [Task("says", "generate", "Repeat: {x}")], ["a", "b", "c"], name="x")
    first.execute()
    sent = server.requests
    more = Run.for_each(model, [Task("says", "generate", "Repeat: {x}")], ["a", "b", "c", "d", "a"], name="x")
    heard = []
    with listen(heard.append):
        split = asyncio.run(find_missing(more))
    assert [t.name for t in split.kept] == ["says_1", "says_2", "says_3"]
    # "d" and the second "a" (its own sample) are not kept yet; each names the turn to send
    assert sorted(split.missing) == ["says_4", "says_5"]
    assert all(e.key and e.request.messages for e in split.missing.values())
    assert split.missing["says_4"].key != split.missing["says_5"].key
    assert server.requests == sent and heard == []  # nothing sent, nothing drawn

