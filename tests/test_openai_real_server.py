"""The OpenAI path against a real OpenAI-compatible server: llama.cpp's own, on the embedded model.

llama.cpp's server refuses `response_format` json_schema (HTTP 500) but accepts JSON mode with a
schema, so this also proves the structured-output fallback on a server we did not write.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest

from llmnb import Models
from llmnb.registry import embedded_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama_server") / "server.log", "w+")  # a pipe could fill up and stall it
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_path("smollm2")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama_cpp.server exited: {log.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"{base}/models", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start within 60 s")
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@dataclass
class Person:
    name: str
    age: int


def test_generate_through_llama_cpp_server(llama_server):
    model = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1)
    text = model.generate("Say hello.", max_tokens=20)
    assert isinstance(text, str) and text.strip()


def test_structured_output_round_trips_with_fallback(llama_server):
    model = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1)
    assert model.backend.schema_mode is None
    person = model.extract(Person, "Alice is 31 years old.", max_tokens=60)
    assert isinstance(person, Person) and isinstance(person.age, int)
    assert model.backend.schema_mode == "json_object"  # json_schema was refused, JSON mode worked
    assert model.classify(["spam", "not spam"], "I am a Nigerian prince and will make you very rich!") in ("spam", "not spam")
    names = asyncio.run(model.extract_async(list[str], "Name three colours.", max_tokens=60))
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
