"""The OpenAI path against a real OpenAI-compatible server: llama.cpp's own, on the embedded model.

llama.cpp's server refuses `response_format` json_schema (HTTP 500) but accepts JSON mode with a
schema, so this also proves the structured-output fallback on a server we did not write.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import pytest
from servers import free_port, start, stop

from llmnb import Models
from llmnb.registry import embedded_path


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_path("smollm2")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]
    base = f"http://127.0.0.1:{port}/v1"
    proc = start(cmd, f"{base}/models", tmp_path_factory.mktemp("llama_server") / "server.log", seconds=60)
    yield base
    stop(proc)


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
