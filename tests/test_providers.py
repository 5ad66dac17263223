"""Named providers: "groq:MODEL" and the like, their keys, URLs and quirks, against the fault
server on 127.0.0.1 (no network: every remote provider is pointed there with base_url=)."""

from __future__ import annotations

import pytest
from fault_server import Fault

from llmnb import ConfigError, Models, providers
from llmnb.registry import PROVIDERS

REMOTE = [name for name, entry in providers.PROVIDERS.items() if not entry.local]
LOCAL = [name for name, entry in providers.PROVIDERS.items() if entry.local]
ASKED = {"anthropic", "gemini", "mistral", "groq", "together", "fireworks", "deepseek", "openrouter", "xai",
         "cerebras", "openai", "ollama", "lmstudio", "vllm", "llama-server"}


def test_the_table_has_every_provider_with_a_url_and_a_key_variable():
    assert set(providers.PROVIDERS) == ASKED and set(PROVIDERS) == ASKED | {"llamacpp"}
    for name, entry in providers.PROVIDERS.items():
        assert entry.key_env.endswith("_KEY")
        assert name == "openai" or entry.base_url.startswith("https://" if name in REMOTE else "http://")


@pytest.mark.parametrize("name", REMOTE)
def test_a_missing_key_names_the_providers_variable(name, monkeypatch):
    variable = providers.PROVIDERS[name].key_env
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=f"{name} models need an API key: set {variable} or pass api_key="):
        Models.create(f"{name}:some-model")


@pytest.mark.parametrize("name", ["groq", "mistral", "deepseek", "anthropic", "vllm"])
def test_a_named_provider_answers_through_its_key_and_base_url(name, fault_server, monkeypatch):
    monkeypatch.setenv(providers.PROVIDERS[name].key_env, "sk-provider-key")
    model = Models.create(f"{name}:the-model", base_url=fault_server.base_url, max_retries=0)
    assert model.backend.name == f"{name}:the-model" and model.backend.base_url == fault_server.base_url
    assert model.generate("hi") == fault_server.reply
    assert fault_server.last_headers["authorization"] == "Bearer sk-provider-key"
    assert fault_server.bodies[-1]["model"] == "the-model"


def test_the_tables_url_is_used_without_base_url(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "k")
    assert Models.create("groq:llama").backend.base_url == "https://api.groq.com/openai/v1"
    assert Models.create("ollama:qwen").backend.base_url == "http://localhost:11434/v1"


@pytest.mark.parametrize("name", LOCAL)
def test_local_servers_need_no_key(name, fault_server, monkeypatch):
    monkeypatch.delenv(providers.PROVIDERS[name].key_env, raising=False)
    model = Models.create(f"{name}:x", base_url=fault_server.base_url, max_retries=0)
    assert model.generate("hi") == fault_server.reply
    assert list(model.stream("hi"))


def test_a_field_the_endpoint_refuses_is_never_sent(fault_server, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "k")
    fault_server.refuse_stream_options = True
    model = Models.create("mistral:small", base_url=fault_server.base_url, max_retries=0)
    assert "".join(model.stream("hi")) == fault_server.reply
    assert fault_server.requests == 1 and "stream_options" not in fault_server.bodies[-1]  # no refused first try


def test_the_known_structured_mode_is_used_from_the_first_call(fault_server, monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "k")
    fault_server.refuse_json_schema = True
    model = Models.create("deepseek:chat", base_url=fault_server.base_url, max_retries=0)
    assert model.extract(list[str], "Name colours.") == [fault_server.reply]
    assert fault_server.requests == 1 and fault_server.bodies[0]["response_format"]["type"] == "json_object"


def test_provider_is_not_an_option(fault_server):
    with pytest.raises(ConfigError, match="take no option provider"):
        Models.create("vllm:x", base_url=fault_server.base_url, provider="groq")


def test_a_server_error_names_the_provider(fault_server):
    fault_server.script(Fault.http(400))
    with pytest.raises(Exception, match=r"^vllm:x at http://127\.0\.0\.1:\d+/v1: HTTP 400"):
        Models.create("vllm:x", base_url=fault_server.base_url).generate("hi")


@pytest.mark.parametrize("name", ["groq", "ollama", "openai"])
def test_a_provider_alone_asks_for_its_model(name):
    with pytest.raises(ConfigError, match=f'after the colon, e.g. Models.create\\("{name}:'):
        Models.create(name, api_key="sk-test")
