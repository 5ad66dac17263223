"""Each kind of bad input gets a short error that says what to do, chained with `from`."""

from __future__ import annotations

import asyncio
import typing

import pytest

from llmnb import ConfigError, ExtractError, Models, SchemaError, registry
from llmnb.structured import target_for, type_name


def test_unknown_provider_lists_known_ones():
    with pytest.raises(ConfigError, match=r'"llamacpp:\.\.\.", "openai:\.\.\."'):
        Models.create("nope:claude")
    with pytest.raises(ConfigError, match="unknown model"):
        Models.create("gpt-4o")


def test_missing_gguf_file_shows_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=str(missing)):
        Models.create(f"llamacpp:{missing}")


def test_missing_packages_give_the_pip_command(monkeypatch):
    monkeypatch.setitem(registry.EMBEDDED, "ghost", ("llmnb_no_such_package", "x.gguf", "llm-ghost"))
    with pytest.raises(ConfigError, match="pip install llm-ghost"):
        Models.create("llamacpp:ghost")

    import builtins

    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(ConfigError, match="pip install llama-cpp-python"):
        Models.create()


def test_missing_api_key_names_the_variable_and_the_offline_default(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY.*Models.create\\(\\)"):
        Models.create("openai:gpt-4o-mini")


def test_api_key_never_in_repr(monkeypatch):
    key = "sk-test-SECRET-123456"
    model = Models.create("openai:gpt-4o-mini", api_key=key)
    assert key not in repr(model) and key not in repr(model.backend) and key not in str(vars(model))


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="max_concurrency"):
        Models.create("openai:gpt-4o-mini", api_key="k", max_concurency=3)
    with pytest.raises(ConfigError, match="max_concurrency must be"):
        Models.create("openai:gpt-4o-mini", api_key="k", max_concurrency=0)


@pytest.mark.parametrize("labels, match", [
    ([], "at least two labels"),
    (["spam"], "at least two labels"),
    (["spam", "spam", "ham"], "repeated: \\['spam'\\]"),
    (["spam", ""], "non-empty strings"),
    ("spam", "list of strings"),
])
def test_bad_labels(embedded_model, labels, match):
    with pytest.raises(ConfigError, match=match):
        embedded_model.classify(labels, "hello")


def test_type_without_schema():
    class Opaque:
        pass

    with pytest.raises(SchemaError, match="cannot turn Opaque") as info:
        target_for(Opaque)
    assert info.value.__cause__ is not None
    with pytest.raises(SchemaError, match="not 'list\\[str\\]'"):
        target_for("list[str]")

    class OldTypedDict(typing.TypedDict):  # typing's TypedDict is refused by pydantic on 3.11
        a: int

    with pytest.raises(SchemaError, match="typing_extensions"):
        target_for(OldTypedDict)


def test_invalid_output_raises_extract_error_with_raw_text():
    with pytest.raises(ExtractError) as info:
        target_for(list[int]).parse('{"value": ["one", "two"]}')
    assert info.value.raw == '{"value": ["one", "two"]}'
    assert info.value.target == list[int]
    with pytest.raises(ExtractError):
        target_for(int).parse("not json at all")


def test_prompt_must_be_text_messages_or_a_thread(embedded_model):
    with pytest.raises(TypeError, match="prompt must be a string, a list of .* messages or an llmnb.Thread"):
        asyncio.run(embedded_model.generate_async(42))
    with pytest.raises(TypeError, match="each message must be a dict like"):
        asyncio.run(embedded_model.generate_async(["a list of strings"]))


def test_prompt_too_long_for_context():
    model = Models.create(n_ctx=256)
    with pytest.raises(ConfigError, match="n_ctx="):
        model.generate("word " * 2000, max_tokens=5)


def test_extract_error_names_the_type_as_written():
    from typing import Annotated, Literal

    from pydantic import Field

    twenty = Annotated[list[str], Field(min_length=20, max_length=20)]
    with pytest.raises(ExtractError) as info:
        target_for(twenty).parse('{"value": ["Ann", "Bo"]}')
    assert "not a valid list[str] (20 items)" in str(info.value) and "FieldInfo" not in str(info.value)
    assert type_name(Annotated[list[int], Field(min_length=3)]) == "list[int] (at least 3 items)"
    assert type_name(Annotated[str, Field(max_length=5)]) == "str (at most 5 characters)"
    assert type_name(dict[str, Annotated[int, Field(ge=0)]] | None) == "dict[str, int (>= 0)] | None"
    assert type_name(Literal["a", "b"]) == "Literal['a', 'b']"


@pytest.mark.parametrize("retries", [-1, 1.5, True])
def test_retries_below_0_or_not_a_count_is_refused_before_anything_is_sent(retries):
    from llmnb.demo_server import DemoServer

    with DemoServer(latency=0.01) as server:
        model = Models.create("openai:demo", base_url=server.base_url, api_key="k", cache=False)
        for call in (lambda: model.extract(int, "A number?", retries=retries),
                     lambda: model.classify(["a", "b"], "Which?", retries=retries),
                     lambda: list(model.extract_stream(int, "A number?", retries=retries))):
            with pytest.raises(ConfigError, match="retries must be a whole number of 0 or more"):
                call()
        assert server.requests == 0
