"""The blocking twins: context carried into the private loop, interrupts cancel, nothing left behind."""

from __future__ import annotations

import _thread
import asyncio
import os
import signal
import threading
import time

import pytest
from test_local_model import LONG

from llmnb import listen, sync
from llmnb.model import sync_twin


def test_sync_twin_is_generic_and_documented(embedded_model):
    assert embedded_model.generate.__name__ == "generate"
    assert "Blocking twin of `extract_async`" in type(embedded_model).extract.__doc__


def test_run_carries_context_and_result():
    seen = []

    async def work():
        from llmnb.events import Call

        Call("generate", "label", "test-model").emit("finished")
        return threading.current_thread().name

    with listen(seen.append):
        thread_name = sync.run(work())
    assert thread_name == "llmnb-sync-loop"
    assert [e.kind for e in seen] == ["created", "finished"]


def test_errors_propagate_unchanged():
    async def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        sync.run(boom())
    assert sync.private_loop_tasks() == 0


def test_interrupt_cancels_the_call_and_waits_for_it(embedded_model, sigint_raises):
    events = []
    sent = []

    def stop_button():  # the notebook's stop button sends the kernel a real SIGINT
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Timer(0.5, stop_button).start()
    with listen(events.append), pytest.raises(KeyboardInterrupt):
        embedded_model.extract(LONG, "List sea creatures.", max_tokens=600, temperature=0)
    took = time.perf_counter() - sent[0]
    kinds = [e.kind for e in events]
    assert took < 2, (took, kinds)  # stopped within a few tokens, not after 500 (generous on a busy machine)
    assert [e.kind for e in events][-1] == "cancelled"  # the call ended before generate() returned
    assert sync.private_loop_tasks() == 0
    label = embedded_model.classify(["spam", "not spam"], "I am a Nigerian prince!", temperature=0)
    assert label in ("spam", "not spam")


def test_simulated_interrupt_is_seen_too(embedded_model, sigint_raises):
    sent = []
    threading.Timer(0.5, lambda: (sent.append(time.perf_counter()), _thread.interrupt_main())).start()
    with pytest.raises(KeyboardInterrupt):
        embedded_model.extract(LONG, "List sea creatures.", max_tokens=600, temperature=0)
    assert time.perf_counter() - sent[0] < 2
    assert sync.private_loop_tasks() == 0


def test_sync_call_from_inside_the_private_loop_is_refused():
    class Toy:
        async def ping_async(self):
            return "pong"

        ping = sync_twin(ping_async)

    async def nested():
        return Toy().ping()

    with pytest.raises(RuntimeError, match="use the _async method"):
        sync.run(nested())
    assert Toy().ping() == "pong"
    assert asyncio.run(Toy().ping_async()) == "pong"
