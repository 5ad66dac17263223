"""Partial values of a structured answer: the reader alone (pure), then `extract_stream_async` on
the embedded model (grammar-constrained decode) and on remote servers (server-sent events)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Annotated, Literal

import pytest
from embedded import cut_off
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from llmnb import MaxStepsError, Models, tool
from llmnb.errors import ExtractError, ModelCallError
from llmnb.partial import UNCHANGED, PartialReader, partial_type
from llmnb.structured import target_for


class Pet(BaseModel):
    kind: Literal["cat", "dog"]
    name: str


class Person(BaseModel):
    name: str
    age: int
    city: str
    pets: list[Pet] = []


@dataclasses.dataclass(frozen=True)
class City:
    name: str
    population: int


class Row(TypedDict):
    label: str
    scores: list[int]


ADA = {"name": "Ada Lovelace", "age": 36, "city": "London", "pets": [{"kind": "cat", "name": "Puss"}]}


def read(tp, value) -> list:
    """Every value a reader gives while the JSON of `value` arrives one character at a time."""
    text, reader = json.dumps({"value": value}), PartialReader(target_for(tp))
    return [v for i in range(len(text)) if (v := reader.feed(text[i])) is not UNCHANGED]


def fields(value) -> dict:
    return dict(value) if isinstance(value, dict) else {k: v for k, v in vars(value).items() if v is not None}


def never_loses(values) -> None:
    """Each value keeps every field of the one before: the same, or (a string, a list) grown."""
    for before, after in zip(values, values[1:], strict=False):
        old, new = fields(before), fields(after)
        for name, was in old.items():
            assert name in new, (name, before, after)
            now = new[name]
            if isinstance(was, str):
                assert now.startswith(was), (name, was, now)
            elif isinstance(was, list):
                assert len(now) >= len(was), (name, was, now)
            elif not isinstance(was, (BaseModel, dict)):
                assert now == was, (name, was, now)


@pytest.mark.parametrize(("tp", "value"), [(Person, ADA), (City, {"name": "Paris", "population": 2102650}),
                                           (Row, {"label": "a b", "scores": [1, 22, 333]})],
                         ids=["pydantic", "dataclass", "typeddict"])
def test_reader_fills_in_field_by_field_and_never_loses_one(tp, value):
    values = read(tp, value)
    assert len(values) >= 5
    never_loses(values)
    assert all(isinstance(v, dict) if tp is Row else isinstance(v, tp) for v in values)  # a subclass of the type
    last = values[-1]
    assert (last if tp is Row else json.loads(json.dumps(dataclasses.asdict(last) if tp is City else
                                                         last.model_dump()))) == value


def test_reader_waits_for_a_literal_word_and_a_number_to_be_whole():
    values = read(Person, ADA)
    assert [v.age for v in values if v.age is not None][0] == 36  # never 3
    kinds = {p.kind for v in values for p in (v.pets or [])}
    assert kinds <= {"cat", None}  # "c" or "ca" never passes for a Literal


def test_reader_loosens_containers_and_constraints_but_not_plain_values():
    assert partial_type(int) is int and partial_type(Literal["a", "b"]) == Literal["a", "b"]
    assert read(Annotated[list[int], Field(min_length=4)], [1, 2, 3, 4])[0] == []  # min_length waits for the end
    assert read(list[str], ["ab", "c"]) == [[], [""], ["a"], ["ab"], ["ab", ""], ["ab", "c"]]
    assert read(str, "hi") == ["", "h", "hi"]
    unions = read(list[Person | City], [{"name": "Rome", "population": 2}])
    assert unions[-1][0].name == "Rome"


# -- the embedded model ------------------------------------------------------------------------

class Profile(BaseModel):
    name: str
    age: int
    city: str


PROMPT = "Invent a person: name, age and city."


def timed(stream) -> list[tuple[float, object]]:
    start, out = time.perf_counter(), []
    for value in stream:
        out.append((time.perf_counter() - start, value))
    return out


def test_embedded_model_fills_in_and_ends_with_what_extract_gives(embedded_model):
    options = {"temperature": 0, "max_tokens": 160, "refresh": True}
    try:
        whole = embedded_model.extract(Profile, PROMPT, **options)  # first: the prompt is read once, for both
        values = timed(embedded_model.extract_stream(Profile, PROMPT, **options))
    except ExtractError as e:  # the tiny model may write past max_tokens; both calls then fail alike
        assert cut_off(e), e
        return
    assert len(values) >= 3
    (first, _), (last, final) = values[0], values[-1]
    assert first < last / 2  # the first value shows well before the whole answer
    assert type(final) is Profile and final == whole  # the full type, validated, not its partial twin
    never_loses([v for _, v in values[:-1]])


def test_embedded_model_streams_a_value_with_tools(embedded_model):
    ran = []

    @tool
    def home_city(name: str) -> str:
        """The city a person lives in."""
        ran.append(name)
        return "Lisbon"

    options = {"temperature": 0, "max_tokens": 200, "tools": [home_city], "max_steps": 3}
    try:
        outcome = list(embedded_model.extract_stream(Profile, PROMPT, **options))[-1]
    except (MaxStepsError, ExtractError, ModelCallError) as e:  # a tiny model may keep calling
        outcome = e
    assert type(outcome) is Profile or isinstance(outcome, MaxStepsError) or cut_off(outcome), outcome
    if isinstance(outcome, MaxStepsError):
        assert len(ran) >= 2 and sum(outcome.asked.values()) >= 3  # the tools of two turns ran; the third was refused


# -- remote models ----------------------------------------------------------------------------

@pytest.fixture
def remote(fault_server):
    model = Models.create("openai:test", base_url=fault_server.base_url, api_key="k", max_retries=0)
    yield model
    model.close()


def answer(value) -> str:
    return json.dumps({"value": value})


def test_remote_stream_sent_in_pieces_never_loses_a_field(fault_server, remote):
    from fault_server import Fault

    fault_server.script(Fault.content(answer(ADA)))  # the demo streams it a word at a time
    values = list(remote.extract_stream(Person, "Ada?"))
    assert len(values) >= 5 and fault_server.requests == 1
    assert fault_server.bodies[-1]["stream"] is True and "response_format" in fault_server.bodies[-1]
    never_loses(values)
    assert type(values[-1]) is Person and values[-1].model_dump() == ADA


def test_a_dropped_stream_keeps_its_last_partial_value(fault_server, remote):
    from fault_server import Fault, StreamFault

    fault_server.script(Fault.content(answer(ADA)))
    fault_server.script_stream(StreamFault.drop(after=6))
    seen = []
    with pytest.raises(ModelCallError) as raised:
        for value in remote.extract_stream(Person, "Ada?"):
            seen.append(value)
    partial = raised.value.partial_value
    assert isinstance(partial, Person) and partial.name == "Ada Lovelace" and partial.pets is None
    assert raised.value.partial and raised.value.partial.startswith('{"value": {"name": "Ada Lovelace"')
    assert seen and fields(seen[-1]).items() <= fields(partial).items()


def test_a_kept_answer_yields_once_and_equals_extract(tmp_path):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.05, per_token=0.01) as server:
        model = Models.create("openai:demo", base_url=server.base_url, api_key="k", cache=str(tmp_path / "a.sqlite"))
        whole = model.extract(Person, "Anyone")
        kept = list(model.extract_stream(Person, "Anyone"))
        assert kept == [whole] and server.requests == 1  # the same request: the same cache key
        model.close()


def test_a_stream_that_does_not_validate_is_asked_again(fault_server, remote):
    from fault_server import Fault

    fault_server.script(Fault.content(answer({"name": "Ada", "age": "old"})))
    with pytest.raises(ExtractError):
        list(remote.extract_stream(Person, "Ada?"))
    fault_server.script(Fault.content(answer({"name": "Ada", "age": "old"})), Fault.content(answer(ADA)))
    values = list(remote.extract_stream(Person, "Ada?", retries=1))
    assert values[-1].model_dump() == ADA and "not valid" in fault_server.bodies[-1]["messages"][-1]["content"]


def test_a_remote_stream_with_tools_runs_them_then_fills_in(fault_server, remote):
    @tool
    def lookup(name: str) -> str:
        """What is known of a person."""
        return "born 1815"

    values = list(remote.extract_stream(Person, "Ada?", tools=[lookup]))
    assert type(values[-1]) is Person and len(fault_server.bodies) == 2
    assert fault_server.bodies[1]["messages"][-1]["role"] == "tool"


def test_the_blocking_twin_iterates(fault_server, remote):
    from fault_server import Fault

    fault_server.script(Fault.content(answer(ADA)))
    values = list(remote.extract_stream(Person, "Ada?"))
    assert len(values) >= 5 and values[-1].model_dump() == ADA


def test_the_magic_streams_outside_a_kernel_too(ip, fault_server, remote, capsys):
    from fault_server import Fault

    fault_server.script(Fault.content(answer(ADA)))
    ip.user_ns.update(Person=Person, remote=remote)
    value = ip.run_cell_magic("llm_extract", "Person --stream --model remote -o ada", "Ada?")
    assert type(value) is Person and value.model_dump() == ADA and ip.user_ns["ada"] is value
    out = capsys.readouterr().out
    assert "Person(name=" in out and re.search(r"filled in over \d+ values in [\d.]+ s", out), out
