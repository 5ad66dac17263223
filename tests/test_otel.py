"""OpenTelemetry spans from real calls: the embedded model and a real HTTP server, exported to the
SDK's in-memory exporter."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import llmnb
from llmnb import Models, Timeline
from llmnb.otel import OtelListener


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_remote_calls_become_genai_spans_under_the_current_span(spans, fault_server):
    from fault_server import Fault

    provider, exporter = spans
    fault_server.latency = 0.1
    fault_server.script(Fault.http(400))  # the first request fails (a 400 is not retried)
    model = Models.create("openai:demo", base_url=fault_server.base_url, api_key="k", max_concurrency=1)
    tracer = provider.get_tracer("test")

    async def main():
        with tracer.start_as_current_span("cell"), llmnb.listen(OtelListener(provider)):
            return await asyncio.gather(model.generate_async("bad"), model.generate_async("a"),
                                        model.generate_async("b"), return_exceptions=True)

    results = asyncio.run(main())
    model.close()
    assert isinstance(results[0], llmnb.ModelCallError) and all(isinstance(r, str) for r in results[1:])
    finished = {s.name: s for s in exporter.get_finished_spans() if s.name == "cell"}
    calls = [s for s in exporter.get_finished_spans() if s.name != "cell"]
    assert len(calls) == 3 and {s.name for s in calls} == {"chat demo"}
    for s in calls:
        assert s.kind == SpanKind.CLIENT and s.parent.span_id == finished["cell"].context.span_id
        assert s.attributes["gen_ai.operation.name"] == "chat" and s.attributes["gen_ai.request.model"] == "demo"
        assert s.attributes["gen_ai.provider.name"] == "openai" and s.attributes["llmnb.method"] == "generate"
        assert s.start_time < s.end_time
    failed = [s for s in calls if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes["error.type"] == "ModelCallError"
    ok = [s for s in calls if s not in failed]
    assert all(s.attributes["gen_ai.usage.input_tokens"] == 10 and s.attributes["gen_ai.usage.output_tokens"] > 0
               for s in ok)
    waits = [e for s in calls for e in s.events if e.name == "llmnb.waiting"]
    assert max(e.attributes["llmnb.duration_s"] for e in waits) > 0.15  # max_concurrency=1: the last waited two calls


def test_local_calls_have_their_first_token_and_tracked_awaitables_their_own_span(spans, embedded_model):
    provider, exporter = spans

    async def main():
        with llmnb.listen(OtelListener(provider)), Timeline(display=False) as tl:
            await asyncio.gather(embedded_model.generate_async("Say hi", max_tokens=8),
                                 embedded_model.generate_async("Say bye", max_tokens=8),
                                 tl.track(asyncio.sleep(0.05), name="nap"))

    asyncio.run(main())
    spans_ = exporter.get_finished_spans()
    local = [s for s in spans_ if s.kind == SpanKind.CLIENT]
    assert len(local) == 2
    provider_name, model = embedded_model.name.split(":", 1)
    for s in local:
        assert s.name == f"chat {model}" and s.attributes["gen_ai.provider.name"] == "llama.cpp"
        assert s.attributes["gen_ai.usage.output_tokens"] > 0
        first = [e for e in s.events if e.name == "llmnb.first_token"]
        assert len(first) == 1 and s.start_time < first[0].timestamp <= s.end_time
    assert any(e.name == "llmnb.waiting" for s in local for e in s.events)  # one waited for the local model
    (nap,) = [s for s in spans_ if s.name == "nap"]
    assert nap.kind == SpanKind.INTERNAL and nap.end_time - nap.start_time >= 40_000_000


def test_importing_llmnb_never_needs_opentelemetry():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.modules['opentelemetry'] = None\n"
            "import llmnb, llmnb.timeline\n"
            "try:\n    import llmnb.otel\nexcept ImportError as e:\n    print(e)")
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "llmnb.otel needs OpenTelemetry: pip install 'llmnb[otel]'"


def test_phases_become_span_events_with_their_times(spans):
    """Events as a rate-limited remote call sends them (fed directly): each phase is an event at its
    start with its length, the span runs from the call's creation to its end."""
    from llmnb.events import CallEvent

    provider, exporter = spans
    listener = OtelListener(provider)
    for kind, t in (("created", 10.0), ("waiting", 10.0), ("throttled", 10.5), ("started", 11.25),
                    ("first_token", 11.5), ("progress", 11.6), ("finished", 12.0)):
        tokens_in = 5 if kind == "finished" else None
        tokens_out = 9 if kind in ("finished", "progress") else None
        listener(CallEvent(7, kind, t, "extract", "p", "openai:gpt-4o-mini", tokens_in, tokens_out))
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gpt-4o-mini" and span.attributes["gen_ai.usage.output_tokens"] == 9
    assert (span.end_time - span.start_time) == pytest.approx(2e9, abs=1e3)
    events = {e.name: e for e in span.events}
    assert set(events) == {"llmnb.waiting", "llmnb.throttled", "llmnb.first_token"}
    assert events["llmnb.waiting"].attributes["llmnb.duration_s"] == pytest.approx(0.5)
    assert events["llmnb.throttled"].attributes["llmnb.duration_s"] == pytest.approx(0.75)
    assert events["llmnb.throttled"].timestamp - span.start_time == pytest.approx(0.5e9, abs=1e3)
    assert events["llmnb.first_token"].timestamp - span.start_time == pytest.approx(1.5e9, abs=1e3)
