"""OpenTelemetry spans for llmnb calls, following the GenAI semantic conventions.

    from llmnb import listen
    from llmnb.otel import OtelListener
    with listen(OtelListener()):          # the global tracer provider, or OtelListener(provider)
        await model.extract_async(...)

Each model call becomes a CLIENT span named "{operation} {model}" (e.g. "chat gpt-4o-mini") with
gen_ai.operation.name, gen_ai.request.model, gen_ai.provider.name and gen_ai.usage.input_tokens /
output_tokens, error.type and an error status when it fails. Its phases are span events at their
start, with their length: llmnb.waiting (for a slot), llmnb.throttled (for the rate limit), and
llmnb.first_token. The span's parent is the span current where the call was made. Awaitables
tracked by a timeline become INTERNAL spans named by their label. A tool run becomes an INTERNAL
span "execute_tool {name}" (gen_ai.operation.name "execute_tool", gen_ai.tool.name) under the
span of the model call that asked for it.

Listeners are called at event time, possibly from another thread (a local model's callbacks):
spans are started and ended with the events' own times, under a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

try:
    from opentelemetry import trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError:  # an optional extra: importing llmnb never needs it
    raise ImportError("llmnb.otel needs OpenTelemetry: pip install 'llmnb[otel]'") from None

from . import __version__
from .events import ENDS, CallEvent

OPERATION = "chat"  # generate, extract and classify all send chat completions
PROVIDERS = {"llamacpp": "llama.cpp"}  # "provider:name" prefixes that are not already the conventions' names


@dataclass
class _Open:
    span: Span
    phase: str | None = None  # the phase under way: waiting or throttled
    since: float = 0.0


class OtelListener:
    """A listener for `llmnb.listen(...)` that turns each call into an OpenTelemetry span."""

    def __init__(self, tracer_provider=None):
        self._tracer = trace.get_tracer("llmnb", __version__, tracer_provider=tracer_provider)
        self._open: dict[int, _Open] = {}
        self._lock = threading.Lock()
        # event times are perf_counter seconds; spans want nanoseconds since the epoch
        self._epoch_ns = time.time_ns() - time.perf_counter_ns()

    def _ns(self, t: float) -> int:
        return self._epoch_ns + round(t * 1e9)

    def __call__(self, event: CallEvent) -> None:
        with self._lock:
            if event.kind == "created":
                self._open[event.call_id] = _Open(self._start(event))
                return
            call = self._open.get(event.call_id)
            if call is None:  # made before this listener listened
                return
            if event.kind in ("waiting", "throttled", "started") or event.kind in ENDS:
                self._close_phase(call, event.time)
            if event.kind in ("waiting", "throttled"):
                call.phase, call.since = event.kind, event.time
            elif event.kind == "first_token":
                call.span.add_event("llmnb.first_token", timestamp=self._ns(event.time))
            elif event.kind in ENDS:
                self._end(self._open.pop(event.call_id).span, event)

    def _start(self, event: CallEvent) -> Span:
        """Started in the caller's context (`created` is sent from it): the current span is the parent."""
        if event.method == "tool":
            return self._start_tool(event)
        if not event.model:  # a tracked awaitable, not a model call
            return self._tracer.start_span(event.label, kind=SpanKind.INTERNAL, start_time=self._ns(event.time))
        provider, _, model = event.model.partition(":")
        model = model or provider
        attributes = {"gen_ai.operation.name": OPERATION, "gen_ai.request.model": model,
                      "gen_ai.provider.name": PROVIDERS.get(provider, provider), "llmnb.method": event.method}
        return self._tracer.start_span(f"{OPERATION} {model}", kind=SpanKind.CLIENT, attributes=attributes,
                                       start_time=self._ns(event.time))

    def _start_tool(self, event: CallEvent) -> Span:
        """A tool run's span, under its model call's span (when this listener saw that call begin)."""
        parent = self._open.get(event.parent) if event.parent is not None else None
        context = trace.set_span_in_context(parent.span) if parent is not None else None
        name = event.label.rsplit(": ", 1)[-1]  # the label may carry a task's name before the tool's
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "llmnb.method": "tool"}
        return self._tracer.start_span(f"execute_tool {name}", context=context, kind=SpanKind.INTERNAL,
                                       attributes=attributes, start_time=self._ns(event.time))

    def _close_phase(self, call: _Open, t: float) -> None:
        if call.phase is not None:
            call.span.add_event(f"llmnb.{call.phase}", {"llmnb.duration_s": t - call.since},
                                timestamp=self._ns(call.since))
            call.phase = None

    def _end(self, span: Span, event: CallEvent) -> None:
        if event.tokens_in is not None:
            span.set_attribute("gen_ai.usage.input_tokens", event.tokens_in)
        if event.tokens_out is not None:
            span.set_attribute("gen_ai.usage.output_tokens", event.tokens_out)
        span.set_attribute("llmnb.status", {"finished": "done"}.get(event.kind, event.kind))
        if event.kind == "failed":
            span.set_attribute("error.type", (event.error or "error").split(":")[0])
            span.set_status(Status(StatusCode.ERROR, event.error))
        span.end(end_time=self._ns(event.time))
