"""The same tasks on several models at once: `llmnb.runs.compare`, `Results.grid()` and
`%%llm_parallel --model a,b`, on the embedded model, the demo server and the fault server."""

from __future__ import annotations

import pytest

from llmnb import Models, Timeline
from llmnb.demo_server import REPLY, DemoServer
from llmnb.errors import ConfigError
from llmnb.runs import Results, Task, TaskError, compare

TASKS = [Task("capital", "generate", "What is the capital of France?", options={"max_tokens": 16}),
         Task("colours", "extract", "Name three colours.", target=list[str], options={"max_tokens": 40}),
         Task("label", "classify", "Win money now!!!", target=["spam", "ham"])]


@pytest.fixture
def demo():
    with DemoServer(latency=0.05) as server:
        model = Models.create("openai:demo", base_url=server.base_url, api_key="k")
        yield model
        model.close()


def test_compare_gives_every_task_on_every_model_as_one_grid(embedded_model, demo):
    with Timeline(title="grid") as timeline:
        res = compare({"local": embedded_model, "demo": demo}, TASKS)
    assert len(res) == 6 and not res.errors
    assert res.models == ["local", "demo"] and res.tasks == ["capital", "colours", "label"]
    assert isinstance(res["capital", "local"], str) and res["label", "demo"] in ("spam", "ham")
    assert isinstance(res["colours", "demo"], list)
    values = res.grid()
    assert values.shape == (3, 2) and list(values.columns) == ["local", "demo"]
    assert list(values.index) == ["capital", "colours", "label"] and values.loc["label", "demo"] in ("spam", "ham")
    latency = res.grid("latency")
    assert (latency.to_numpy() > 0).all()
    assert res.grid("cost")["local"].tolist() == [0.0, 0.0, 0.0]  # a local model is free
    assert res.grid("cost")["demo"].isna().all()  # the demo server's price is not known
    labels = [r["name"] for r in timeline.records()]
    assert [label.split("/")[0] for label in labels] == ["local"] * 3 + ["demo"] * 3  # grouped by model
    assert all(label.split("/")[1].split(":")[0] in res.tasks for label in labels)


def test_a_failing_model_fails_in_its_own_cells(demo, fault_server):
    from fault_server import Fault

    broken = Models.create("openai:broken", base_url=fault_server.base_url, api_key="k", max_retries=0)
    fault_server.script(*[Fault.http(400)] * 3)
    res = compare([demo, broken], TASKS[:1] + TASKS[2:])
    assert res.models == ["openai:demo", "openai:broken"]
    assert set(res.errors) == {("capital", "openai:broken"), ("label", "openai:broken")}
    assert isinstance(res.grid().loc["capital", "openai:broken"], TaskError)
    html = res._repr_html_()
    assert html.count("<tr>") == 3 and html.count("failed: ModelCallError") == 2
    assert "2 failed (first: " in res.summary_line() and " @ openai:broken: ModelCallError" in res.summary_line()
    assert "capital @ openai:demo: I'm doing well" in repr(res)
    broken.close()


def test_grid_without_pandas_is_a_list_of_rows(demo, monkeypatch):
    import llmnb.runs.results as results_module

    res = compare({"a": demo, "b": demo}, TASKS[2:])
    real = results_module.importlib.util.find_spec
    monkeypatch.setattr(results_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pandas" else real(name, *a))
    rows = res.grid()
    assert rows[0] == ["task", "a", "b"] and rows[1][0] == "label" and len(rows) == 2
    assert rows[1][1] in ("spam", "ham")


def test_one_models_results_give_one_column():
    res = Results()
    res.order = ["a", "b"]
    res.update(a=1, b=2)
    assert res.grid().to_dict() == {"value": {"a": 1, "b": 2}}
    assert res._repr_html_() is None  # shown as text
    with pytest.raises(ValueError, match="grid\\(what=...\\) is"):
        res.grid("speed")


def test_compare_refuses_what_it_cannot_lay_out(demo):
    with pytest.raises(ConfigError, match="two models are named 'openai:demo'; give a dict"):
        compare([demo, demo], TASKS)
    with pytest.raises(ConfigError, match="'x' is a str, not a Model"):
        compare({"x": "openai:gpt-4o"}, TASKS)
    with pytest.raises(ConfigError, match="at least one model"):
        compare({}, TASKS)


# -- the magic ---------------------------------------------------------------------------------

def test_magic_runs_every_line_on_each_model(ip, demo, capsys):
    with DemoServer(latency=0.05, reply="Paris.") as other:
        ip.user_ns.update(a=demo, b=Models.create("openai:other", base_url=other.base_url, api_key="k"))
        res = ip.run_cell_magic("llm_parallel", "--model a,b -o res",
                                "capital: Capital of France?\nsay: Say hi\nlabel ? spam | ham: Win money")
    out = capsys.readouterr().out
    assert res is ip.user_ns["res"] and len(res) == 6 and res.grid().shape == (3, 2)
    assert res["capital", "b"] == "Paris." and res["capital", "a"] == REPLY
    assert "capital @ a" in out and "6 done" in out
    assert "<table" in res._repr_html_()


def test_magic_grid_with_for_gives_one_row_per_item(ip, demo):
    ip.user_ns.update(a=demo, b=demo, words=["cat", "dog"])
    res = ip.run_cell_magic("llm_parallel", "--model a,b -q --for w in words", "say: Spell {w}")
    assert res.tasks == ["say_1", "say_2"] and res.models == ["a", "b"]
    assert res.grid().shape == (2, 2) and res.grid().loc["say_2", "b"] == REPLY


def test_magic_grid_errors_are_one_line(ip, demo):
    from IPython.core.error import UsageError

    ip.user_ns.update(a=demo, b=demo)
    for line, match in (("--model a,,b", "give distinct model names"), ("--model a,a", "distinct"),
                        ("--model a,b --batch", "runs here: drop --cluster / --batch")):
        with pytest.raises(UsageError, match=match):
            ip.run_cell_magic("llm_parallel", line, "say: hi")


def test_max_concurrency_caps_each_model_on_its_own():
    tasks = [Task(f"t{i}", "generate", f"Hello {i}") for i in range(6)]
    with DemoServer(latency=0.1) as one, DemoServer(latency=0.1) as two:
        a = Models.create("openai:a", base_url=one.base_url, api_key="k")
        b = Models.create("openai:b", base_url=two.base_url, api_key="k")
        res = compare([a, b], tasks, max_concurrency=2)
        assert len(res) == 12 and not res.errors
        assert one.max_in_flight == two.max_in_flight == 2  # each model's cap, not one for both
        a.close()
        b.close()
