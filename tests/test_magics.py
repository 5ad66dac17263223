"""The magics in a real IPython shell: both execution paths, filling, errors, partial failure."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmnb.magics.parse import ParseError, parse_tasks
from llmnb.runs.fill import FillError, fill
from llmnb.runs.results import TaskError

SEED_CELL = """%%llm_parallel -o res
names -> list[str]: Generate 5 English names
label ? spam | not spam: I am a Nigerian prince and will make you very rich!
"""


def run(ip, cell):
    result = ip.run_cell(cell, store_history=False)
    return result


# -- pure parts ------------------------------------------------------------------------------
def test_parse_the_three_required_shapes():
    specs = parse_tasks("names -> list[str]: Generate 20 names\nlabel ? spam | not spam: Win money now\n"
                        "greet * 10: Hello, how are you?\nWhat is 2+2?\n  Answer briefly.\n# a comment\n\nSay hi")
    assert [(s.name, s.kind) for s in specs[:2]] == [("names", "extract"), ("label", "classify")]
    assert specs[0].type_expr == "list[str]" and specs[1].labels == ("spam", "not spam")
    assert [s.name for s in specs[2:12]] == [f"greet_{i}" for i in range(1, 11)]
    assert {s.prompt for s in specs[2:12]} == {"Hello, how are you?"}
    assert [(s.name, s.prompt) for s in specs[12:]] == [("p1", "What is 2+2?\nAnswer briefly."), ("p2", "Say hi")]


@pytest.mark.parametrize("body, match", [
    ("", "no tasks"),
    ("a ? spam: x", "two labels"),
    ("a: x\na: y", "used twice"),
    ("a * 0: x", "between 1 and"),
])
def test_parse_errors(body, match):
    with pytest.raises(ParseError, match=match):
        parse_tasks(body)


def test_fill_identifiers_only_and_keeps_other_braces():
    ns = {"animal": "cat", "n": 3}
    assert fill('About {animal}: {"a": {n}} {{animal}} {1} { animal } {a.b}', ns) == \
        'About cat: {"a": 3} {animal} {1} { animal } {a.b}'
    with pytest.raises(FillError, match=r"\{dog\}.*\{\{dog\}\}"):
        fill("About {dog}", ns)


def test_fill_never_evaluates():
    ns = {"__builtins__": __builtins__}
    assert fill("{__import__('os').system('echo hi')}", ns) == "{__import__('os').system('echo hi')}"


# -- a real shell, the transformer path (ip.run_cell) -----------------------------------------
def test_seed_cell_through_the_transformer(ip):
    result = run(ip, SEED_CELL)
    assert result.success, result.error_in_exec
    res = ip.user_ns["res"]
    assert isinstance(res["names"], list) and all(isinstance(n, str) for n in res["names"])
    assert res["label"] in ("spam", "not spam")
    records = res.timeline.records()
    assert [r["name"].split(":")[0] for r in records] == ["names", "label"]
    assert result.result is res  # also the cell's value


def test_transformer_rewrites_only_our_magics(ip):
    transformed = ip.transform_cell("%%llm_parallel -o x\na: hi\n")
    assert transformed.startswith("await get_ipython()")
    assert "llm_parallel" in transformed and "'-o x'" in transformed
    assert not ip.transform_cell("%%capture\nprint(1)\n").startswith("await")


def test_ten_identical_prompts_and_filling(ip):
    ip.user_ns["topic"] = "cats"
    result = run(ip, '%%llm_parallel -o many -q\ngreet * 10: One word about {topic}. Keep {"json": true}\n')
    assert result.success, result.error_in_exec
    many = ip.user_ns["many"]
    assert sorted(many) == sorted(f"greet_{i}" for i in range(1, 11))
    assert all(isinstance(v, str) for v in many.values())
    labels = [r["name"] for r in many.timeline.records()]
    assert len(labels) == 10 and all("One word about cats. Keep {" in label for label in labels)


# -- the fallback path (ip.run_cell_magic: no rewrite) -----------------------------------------
def test_extract_through_run_cell_magic(ip):
    from typing import Literal

    ip.user_ns["Colour"] = Literal["red", "green", "blue"]
    value = ip.run_cell_magic("llm_extract", "Colour -o colour", "What colour is the sky on a clear day?")
    assert value in ("red", "green", "blue")
    assert ip.user_ns["colour"] == value


def test_parallel_through_run_cell_magic(ip):
    res = ip.run_cell_magic("llm_parallel", "-q", "a: Say hi\nb ? yes | no: Is the sky blue?")
    assert isinstance(res["a"], str) and res["b"] in ("yes", "no")


def test_nested_run_cell_uses_the_fallback(ip):
    """%%capture runs its body with a synchronous run_cell: the rewrite would break it."""
    result = run(ip, "%%capture captured\n%%llm_parallel -o cap\na: Say hi\n")
    assert result.success, result.error_in_exec
    assert isinstance(ip.user_ns["cap"]["a"], str)


def test_interrupt_on_the_fallback_path_cancels_and_the_next_cell_runs(ip, sigint_raises):
    """Interrupt during ip.run_cell_magic: the magic's one-line Interrupted reaches the caller
    (it must not escape into llmnb's private loop and stop it), and blocking calls still work."""
    import _thread
    import threading
    from typing import Annotated

    from pydantic import Field

    from llmnb.magics import Interrupted

    ip.user_ns["Long"] = Annotated[list[str], Field(min_length=60)]  # long by construction
    threading.Timer(1.5, _thread.interrupt_main).start()
    with pytest.raises(Interrupted, match="Interrupted: .*cancelled"):
        ip.run_cell_magic("llm_parallel", "-q -o stopped", "long -> Long: List sea creatures.\nb: Say hi")
    assert set(ip.user_ns["stopped"].cancelled) == {"long", "b"}
    assert [r["status"] for r in ip.user_ns["stopped"].timeline.records()] == ["cancelled", "cancelled"]
    res = ip.run_cell_magic("llm_parallel", "-q", "a: Say hi")
    assert isinstance(res["a"], str)


def test_extract_type_may_contain_spaces(ip):
    from typing import Literal

    ip.user_ns["Literal"] = Literal
    value = ip.run_cell_magic("llm_extract", 'Literal["red", "green", "blue"] -o sky', "What colour is the sky?")
    assert value in ("red", "green", "blue") and ip.user_ns["sky"] == value


# -- errors and partial failure ---------------------------------------------------------------
@pytest.mark.parametrize("cell, match", [
    ("%%llm_parallel --bogus\na: hi", "unrecognized arguments"),
    ("%%llm_parallel\n", "no tasks"),
    ("%%llm_extract NoSuchType\nhello", "unknown type 'NoSuchType'"),
    ("%%llm_extract int\n", "needs a prompt"),
    ("%%llm_extract -o x\nhello", "needs a TYPE first"),
    ("%%llm_parallel --model nope:x\na: hi", "unknown model 'nope:x'"),
    ("%%llm_parallel\na: about {missing_var}", "no variable missing_var"),
    ("%%llm_parallel -c -1\na: hi", "at least 1"),
])
def test_magic_errors_are_one_line(ip, capsys, cell, match):
    from IPython.core.error import UsageError

    result = run(ip, cell)
    assert isinstance(result.error_in_exec, UsageError)
    assert re.search(match, str(result.error_in_exec))
    assert "\n" not in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().out


def test_one_failing_task_keeps_the_others(ip, capsys):
    ip.user_ns["huge"] = "word " * 5000  # does not fit the embedded model's context
    result = run(ip, "%%llm_parallel -o mixed\nok ? yes | no: Is water wet?\nbig: Summarise {huge}\nfine: Say hi\n")
    assert result.success, result.error_in_exec
    mixed = ip.user_ns["mixed"]
    assert mixed["ok"] in ("yes", "no") and isinstance(mixed["fine"], str)
    assert isinstance(mixed["big"], TaskError) and set(mixed.errors) == {"big"}
    out = capsys.readouterr().out
    assert "2 done, 1 failed (first: big: ConfigError" in out
    statuses = {r["name"].split(":")[0]: r["status"] for r in mixed.timeline.records()}
    assert statuses == {"ok": "done", "big": "failed", "fine": "done"}


def test_llm_model_shows_and_sets(ip, capsys):
    run(ip, "%llm_model")
    assert "llmnb magics use llamacpp:smollm2" in capsys.readouterr().out
    result = run(ip, "%llm_model nope:x")
    assert "unknown model" in str(result.error_in_exec)
    run(ip, "%config LlmMagics.max_concurrency = 2")
    magics = ip.magics_manager.registry["LlmMagics"]
    assert magics.max_concurrency == 2
    magics.max_concurrency = 0


def test_a_model_variable_serves_as_model(ip):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.05) as server:
        ip.user_ns["mine"] = __import__("llmnb").Models.create("openai:demo", base_url=server.base_url, api_key="k")
        result = run(ip, "%%llm_parallel -o viaserver -q --model mine\ngreet * 3: Hello")
        assert result.success, result.error_in_exec
        assert server.requests == 3 and set(ip.user_ns["viaserver"].values()) == {server.reply}


def test_llm_parallel_gives_every_task_the_tools(ip):
    from llmnb import Models
    from llmnb.demo_server import DemoServer

    async def weather(city: str = "Lisbon") -> str:
        """Today's weather in a city."""
        return f"sunny in {city}"

    def hotels(city: str = "Lisbon") -> list[str]:
        """Hotels free in a city."""
        return [f"{city} Palace"]

    with DemoServer(latency=0.05) as server:  # it asks for every tool it is sent, then repeats their results
        ip.user_ns.update(weather=weather, hotels=hotels,
                          tooled=Models.create("openai:demo", base_url=server.base_url, api_key="k"))
        result = run(ip, "%%llm_parallel -m tooled -q -o res --tools weather,hotels\nlisbon: Plan Lisbon\nporto: Go")
        assert result.success, result.error_in_exec
        res = ip.user_ns["res"]
        assert all("sunny in Lisbon" in res[name] and "Lisbon Palace" in res[name] for name in ("lisbon", "porto"))
        tools = sorted(r["name"] for r in res.timeline.records() if r["method"] == "tool")
        assert tools == ["lisbon: hotels", "lisbon: weather", "porto: hotels", "porto: weather"]
        for line, error in (("--tools weather,nope", "--tools: nope is not defined"),
                            ("--tools weather,res", "res is a Results, not a function")):
            bad = run(ip, f"%%llm_parallel -m tooled {line}\na: hi")
            assert error in str(bad.error_in_exec) and server.requests == 4  # refused before any call
        ip.user_ns["tooled"].close()


KEY = "sk-test-magic-SECRET-7777"


@pytest.fixture
def remote(ip, fault_server):
    """`remote` in the shell's namespace: a model on this test's fault server, no retries."""
    from llmnb import Models

    model = ip.user_ns["remote"] = Models.create("openai:test", base_url=fault_server.base_url, api_key=KEY,
                                                 max_retries=0)
    yield model
    model.close()


def test_magic_output_never_shows_the_key(ip, capsys, fault_server, remote):
    """A server that echoes the key in its error: the printed results, the stored results and the
    timeline still never hold it."""
    from fault_server import Fault

    fault_server.script(Fault.echo_key())
    res = ip.run_cell_magic("llm_parallel", "--model remote -o leaky", "a: hi\nb: hello")
    out = capsys.readouterr()
    texts = [out.out, out.err, repr(res), str(res), str(res.errors), res.timeline.to_text(), res.timeline.to_svg()]
    assert len(res.errors) == 1 and "Incorrect API key provided" in str(res.errors)
    assert not [t for t in texts if KEY in t]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="{}$"), max_size=60))
def test_odd_option_strings_give_one_line_or_run(ip, fault_server, remote, line):
    """Any option string: a one-line UsageError, or a run that keeps its results. ({ } and $ are
    left out: IPython itself expands them in magic lines, as the user's own code.)"""
    from IPython.core.error import UsageError

    result = ip.run_cell(f"%%llm_parallel {line} --model remote -q\na: hi\n", store_history=False)
    if result.error_in_exec is not None:
        assert isinstance(result.error_in_exec, UsageError), repr(result.error_in_exec)
        assert str(result.error_in_exec) and "\n" not in str(result.error_in_exec)
    else:
        assert result.result["a"] == fault_server.reply


def test_a_very_long_prompt_runs(ip, fault_server, remote):
    res = ip.run_cell_magic("llm_parallel", "--model remote -q", "long: " + "word {{x}} " * 3000)
    assert res["long"] == fault_server.reply
    assert "word {x} word" in fault_server.bodies[-1]["messages"][-1]["content"]


def series(values):
    pandas = pytest.importorskip("pandas")
    return pandas.Series(values, index=[10, 20, 30])  # an index that is not 0..n-1: values still go in order


@pytest.mark.parametrize("make", [list, tuple, lambda v: __import__("numpy").array(v), series],
                         ids=["list", "tuple", "numpy", "pandas"])
def test_for_takes_any_sequence_in_order(ip, fault_server, remote, make):
    ip.user_ns["words"] = make(["alpha", "beta", "gamma"])
    res = ip.run_cell_magic("llm_parallel", "--model remote -q --for word in words", "say: Spell {word}")
    assert list(res) == ["say_1", "say_2", "say_3"] and res.as_list() == [fault_server.reply] * 3
    prompts = [body["messages"][-1]["content"] for body in fault_server.bodies[-3:]]
    assert sorted(prompts) == ["Spell alpha", "Spell beta", "Spell gamma"]


@pytest.mark.parametrize("value, match", [
    ({"a", "b"}, "words is not a list but set"),
    ({"a": 1}, "words is not a list but dict"),
    ("abc", "words is not a list but str"),
    (5, "words is not a list but int"),
    ([], "words is empty"),
])
def test_for_refuses_what_is_not_a_sequence(ip, remote, value, match):
    from IPython.core.error import UsageError

    ip.user_ns["words"] = value
    with pytest.raises(UsageError, match=match) as info:
        ip.run_cell_magic("llm_parallel", "--model remote --for word in words", "say: {word}")
    assert "\n" not in str(info.value)


def test_typed_tasks_ask_again_once_when_the_answer_does_not_fit(ip, fault_server, remote):
    """An answer cut off mid-string, as a small model's runaway one ends: both magics ask once
    more by default; --retries 0 fails the task at once, --retries 2 asks twice more."""
    from fault_server import Fault

    from llmnb.errors import ExtractError

    cut = Fault.content('{"value": ["red", "gre')
    fault_server.script(cut)
    value = ip.run_cell_magic("llm_extract", "list[str] --model remote -o colours", "Name colours.")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    assert len(fault_server.bodies) == 2 and ip.user_ns["colours"] == value

    fault_server.script(cut, cut)
    res = ip.run_cell_magic("llm_parallel", "--model remote -q --retries 2", "c -> list[str]: Name colours.")
    assert isinstance(res["c"], list) and len(fault_server.bodies) == 5

    fault_server.script(cut)
    result = ip.run_cell("%%llm_extract list[str] --model remote --retries 0\nName colours.", store_history=False)
    assert isinstance(result.error_in_exec, ExtractError) and len(fault_server.bodies) == 6

    result = run(ip, "%%llm_parallel --model remote --retries -1\nc -> list[str]: x")
    assert "--retries must be 0 or more" in str(result.error_in_exec)
