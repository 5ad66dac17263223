"""Faults, load and bad input against a real (misbehaving) HTTP server: nothing lost, nothing leaked."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from fault_server import KEY, Fault, remote, resources_left
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmnb import ExtractError, ModelCallError, Models, Timeline, listen
from llmnb.magics.parse import ParseError, parse_tasks
from llmnb.runs.fill import FillError, fill


def test_retry_after_is_honoured(fault_server):
    fault_server.script(Fault.http(429, retry_after=1))
    start = time.perf_counter()
    assert remote(fault_server).generate("hi") == fault_server.reply
    assert fault_server.requests == 2
    assert time.perf_counter() - start >= 0.9


def test_retries_stop_after_max_retries_and_say_what_happened(fault_server):
    fault_server.script(*[Fault.http(503, retry_after=0)] * 5)
    with pytest.raises(ModelCallError) as info:
        remote(fault_server, max_retries=2).generate("hi")
    error = info.value
    assert (error.status, error.attempts) == (503, 3) and fault_server.requests == 3
    assert "HTTP 503" in str(error) and "3 attempt(s)" in str(error) and KEY not in str(error)


def test_client_errors_are_not_retried(fault_server):
    fault_server.script(Fault.http(400))
    with pytest.raises(ModelCallError) as info:
        remote(fault_server).generate("hi")
    assert info.value.attempts == 1 and fault_server.requests == 1


def test_dropped_connection_and_malformed_body_are_retried(fault_server):
    fault_server.script(Fault.drop(), Fault.malformed())
    assert remote(fault_server, max_retries=3).generate("hi") == fault_server.reply
    assert fault_server.requests == 3


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_server_not_running_is_reported_as_refused_not_as_a_timeout(transport, stream):
    import openai
    from servers import free_port

    port = free_port()  # bound and closed again: nothing listens there
    options = {"http_client": openai.DefaultAsyncHttpxClient} if transport == "httpx" else {}
    model = Models.create("openai:x", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, **options)
    with pytest.raises(ModelCallError) as info:
        list(model.stream("hi")) if stream else model.generate("hi")
    message = str(info.value)
    assert f"the connection to 127.0.0.1:{port} was refused" in message and "timeout" not in message
    assert info.value.attempts == 2 and "start the server or check base_url" in message


def test_timeout_bounds_a_hung_server(fault_server):
    fault_server.script(Fault.hang(), Fault.hang())
    start = time.perf_counter()
    with pytest.raises(ModelCallError, match="no answer within timeout=0.5s") as info:
        remote(fault_server, timeout=0.5, max_retries=1).generate("hi")
    assert info.value.attempts == 2
    assert time.perf_counter() - start < 4


def test_max_concurrency_holds_exactly_under_1000_calls(fault_server):
    fault_server.latency = 0.005
    model = remote(fault_server, max_concurrency=7)

    async def main():
        return await asyncio.gather(*[model.generate_async(f"call {i}") for i in range(1000)])

    answers = asyncio.run(main())
    assert len(answers) == 1000 and fault_server.max_in_flight == 7


def test_a_batch_with_failures_keeps_every_success(fault_server):
    fault_server.script(Fault.http(400), Fault.content("fine"), Fault.http(400))
    model = remote(fault_server, max_concurrency=1)  # one at a time, so the script order is the call order

    async def main():
        with Timeline() as tl:
            calls = [model.generate_async(f"call {i}") for i in range(6)]
            results = await asyncio.gather(*calls, return_exceptions=True)
        return results, tl

    results, tl = asyncio.run(main())
    failures = [r for r in results if isinstance(r, ModelCallError)]
    assert len(failures) == 2 and sum(isinstance(r, str) for r in results) == 4
    assert sorted(r["status"] for r in tl.records()) == ["done"] * 4 + ["failed"] * 2


def test_cancelling_in_flight_calls_closes_their_connections(fault_server):
    fault_server.latency = 5
    model = remote(fault_server)

    async def main():
        tasks = [asyncio.ensure_future(model.generate_async(f"slow {i}")) for i in range(4)]
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.3)
        fault_server.latency = 0
        return await model.generate_async("next")

    assert asyncio.run(main()) == fault_server.reply
    assert fault_server.closed_early == 4


def test_no_leaks_after_1000_calls_with_faults(fault_server):
    fault_server.latency = 0.002
    model = remote(fault_server, max_concurrency=50, max_retries=1, timeout=2)
    faults = [Fault.http(429, retry_after=0), Fault.http(500), Fault.drop(), Fault.malformed(), Fault.content("x")]

    async def batch():
        fault_server.script(*(faults * 40))  # 200 faults among 1000 calls
        return await asyncio.gather(*[model.generate_async(f"c{i}") for i in range(1000)], return_exceptions=True)

    async def main():
        await batch()  # the first batch makes the client, its threads and the like once
        before = await resources_left(model)
        results = await batch()
        return before, await resources_left(model), results

    before, after, results = asyncio.run(main())
    assert len(results) == 1000 and all(isinstance(r, (str, ModelCallError)) for r in results)
    failed = sum(isinstance(r, ModelCallError) for r in results)
    assert failed * 2 <= 160  # with max_retries=1 a call fails only after two of the 160 failing faults
    assert after == before  # asyncio tasks, threads, open files, sockets


def test_invalid_structured_output_keeps_the_raw_text(fault_server):
    fault_server.script(Fault.content('{"value": "not a number"}'))
    with pytest.raises(ExtractError) as info:
        remote(fault_server).extract(int, "How many legs has a cat?")
    assert info.value.raw == '{"value": "not a number"}' and info.value.target is int


def test_reask_feeds_the_validation_error_back(fault_server):
    fault_server.script(Fault.content('{"value": "four"}'), Fault.content('{"value": 4}'))
    assert remote(fault_server).extract(int, "How many legs has a cat?", retries=1) == 4
    second = fault_server.bodies[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"value": "four"}'}
    assert "not valid" in second[-1]["content"] and "integer" in second[-1]["content"]


def test_servers_without_json_schema_get_json_mode(fault_server):
    fault_server.refuse_json_schema = True
    model = remote(fault_server)
    assert model.classify(["spam", "not spam"], "Win money!") == "spam"
    assert model.backend.schema_mode == "json_object"
    assert [b["response_format"]["type"] for b in fault_server.bodies] == ["json_schema", "json_object"]


def test_timeout_bounds_a_body_that_trickles_in(fault_server):
    """Headers at once, then the body a few bytes at a time: each read is quick, the whole is not."""
    fault_server.script(Fault.trickle(seconds=5))
    start = time.perf_counter()
    with pytest.raises(ModelCallError, match="no answer within timeout=0.5s"):
        remote(fault_server, timeout=0.5, max_retries=0).generate("hi")
    assert time.perf_counter() - start < 2
    fault_server.script(Fault.trickle(seconds=0.3))  # slow but within the timeout: the answer arrives whole
    assert remote(fault_server, timeout=5).generate("hi") == fault_server.reply


def test_a_passing_server_error_does_not_switch_to_json_mode(fault_server):
    """A 500 that does not name the format is retried as a 500, not taken for a refusal of json_schema."""
    fault_server.script(Fault.http(500))
    model = remote(fault_server)
    assert model.classify(["spam", "not spam"], "Win money!") == "spam"
    assert model.backend.schema_mode == "json_schema"
    assert [b["response_format"]["type"] for b in fault_server.bodies] == ["json_schema", "json_schema"]


def test_json_mode_is_kept_only_if_it_works(fault_server):
    """A 400 on the first structured call gets one JSON-mode try; when that fails too, the 400 is
    the answer and no mode is remembered."""
    fault_server.script(Fault.http(400), Fault.http(400))
    model = remote(fault_server)
    with pytest.raises(ModelCallError) as info:
        model.classify(["spam", "not spam"], "Win money!")
    assert info.value.status == 400 and info.value.attempts == 1
    assert model.backend.schema_mode is None
    assert [b["response_format"]["type"] for b in fault_server.bodies] == ["json_schema", "json_object"]


def test_the_key_never_appears_anywhere(fault_server, capsys):
    events, messages = [], []
    model = remote(fault_server, max_retries=0)
    fault_server.script(Fault.http(401), Fault.echo_key(), Fault.http(500))
    texts = [repr(model), repr(model.backend), str(vars(model))]
    with listen(events.append), Timeline() as tl:
        for _ in range(3):
            with pytest.raises(ModelCallError) as info:
                model.generate("hi")
            texts += [str(info.value), repr(info.value), repr(info.value.__cause__), repr(info.value.__context__)]
            messages.append(str(info.value))
    assert "Incorrect API key provided: Bearer ***" in messages[1]  # the server echoed it; scrubbed
    texts += [repr(e) for e in events] + [repr(tl.records()), tl.to_text(), tl.to_svg()]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert not [t for t in texts if KEY in t]


# -- bad input to the magics' pure parts: a clear error or a correct parse, never a crash ---------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(), max_size=400))
def test_parse_never_crashes(body):
    try:
        specs = parse_tasks(body)
    except ParseError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert specs and len({s.name for s in specs}) == len(specs)
        assert all(s.kind in ("generate", "extract", "classify") for s in specs)


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
PLAIN = st.text(alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=20)
# A prompt as pieces, each with what fill must make of it (None: fill must refuse the prompt).
PIECES = st.one_of(
    PLAIN.map(lambda text: ("text", text)),
    NAMES.map(lambda name: ("var", name)),  # {name}
    NAMES.map(lambda name: ("literal", name)),  # {{name}}
    # {a.b}, {1}: braces around anything but a bare name
    PLAIN.filter(lambda inner: not re.fullmatch(r"[A-Za-z_]\w*", inner)).map(lambda inner: ("other", inner)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(PIECES, max_size=10), st.dictionaries(NAMES, st.text(max_size=20), max_size=5))
def test_fill_never_evaluates_and_keeps_unknown_braces_loud(pieces, namespace):
    """{name} of a defined variable is its value, of an undefined one a FillError (never kept as
    written); {{name}} and braces around anything but a bare name stay as written."""
    written = {"text": "{}", "var": "{{{}}}", "literal": "{{{{{}}}}}", "other": "{{{}}}"}
    prompt = " ".join(written[kind].format(value) for kind, value in pieces)
    unknown = [value for kind, value in pieces if kind == "var" and value not in namespace]
    if unknown:
        with pytest.raises(FillError, match="define it"):
            fill(prompt, namespace)
        return
    made = {"text": str, "var": lambda name: str(namespace[name]), "literal": "{{{}}}".format, "other": "{{{}}}".format}
    assert fill(prompt, namespace) == " ".join(made[kind](value) for kind, value in pieces)


ODD = st.text(alphabet="{}\"': ab_1*?|->#", max_size=12)
# Task lines: headers right and wrong (empty labels, a count of 0, no type), prompts of odd
# characters, bare odd lines; some indented (continuations).
HEADERS = st.tuples(st.sampled_from(["a", "b_1", "x"]), st.sampled_from(["", " * 2", " * 0"]),
                    st.sampled_from(["", " -> list[str]", " -> ", " ? a | b", " ? a |", " ? | b", " ? a", " ? a || b"]),
                    ODD).map(lambda t: f"{t[0]}{t[1]}{t[2]}: {t[3]}")
BODIES = st.lists(st.tuples(st.booleans(), st.one_of(ODD, HEADERS)), max_size=8).map(
    lambda lines: "\n".join(("  " if indent else "") + line for indent, line in lines))


@settings(max_examples=300, deadline=None)
@given(BODIES)
def test_braces_and_odd_syntax(body):
    """Odd syntax gives a one-line ParseError or tasks that each keep a line's text: a classify
    task has two or more non-empty labels, an extract task a type, and every prompt is text of
    the body (nothing dropped into a header, nothing made up)."""
    try:
        specs = parse_tasks(body)
    except ParseError as e:
        assert str(e).startswith(("line ", "the ")) and "\n" not in str(e)
        return
    lines = [line.strip() for line in body.splitlines()]
    assert specs and len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert spec.prompt and spec.prompt.split("\n")[0] in "\n".join(lines)
        assert re.fullmatch(r"[A-Za-z_]\w*", spec.name)
        if spec.kind == "classify":
            assert len(spec.labels) >= 2 and all(spec.labels) and not any("|" in label for label in spec.labels)
        elif spec.kind == "extract":
            assert spec.type_expr and ":" not in spec.type_expr
        else:
            assert spec.kind == "generate" and spec.type_expr is None and spec.labels is None
