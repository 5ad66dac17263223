"""Named providers: OpenAI-compatible endpoints by name, for `Models.create("groq:MODEL")`.

One plain table: a provider's base URL, the environment variable its API key is read from, and
what its endpoint is known to refuse, and whether it runs OpenAI's Batch API (taken from the
providers' own documentation). `base_url=`
overrides the URL, `api_key=` the variable. Local servers need no key; their variable is read if
set (for a server started with an API key).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quirks:
    """What an endpoint is known to refuse: request fields it rejects (left out of every body) and
    the structured-output mode it takes (None: found out by the first structured call)."""

    drop: tuple[str, ...] = ()
    schema_mode: str | None = None


@dataclass(frozen=True)
class BatchAPI:
    """A provider's Batch API in OpenAI's shape (/v1/files and /v1/batches): at most `max_lines`
    requests and `max_bytes` bytes per input file, answers at `price_factor` times the live price."""

    max_lines: int = 50_000
    max_bytes: int = 200_000_000
    price_factor: float = 0.5


@dataclass(frozen=True)
class Provider:
    base_url: str | None  # None: the openai SDK's own default (api.openai.com, or OPENAI_BASE_URL)
    key_env: str
    local: bool = False  # a server on this machine: no key needed
    quirks: Quirks = Quirks()
    # None: no Batch API of OpenAI's shape (Anthropic's and Mistral's batches take other requests)
    batch: BatchAPI | None = None


PROVIDERS: dict[str, Provider] = {
    # 50,000 requests and 200 MB per input file, half the live price (platform.openai.com/docs/guides/batch)
    "openai": Provider(None, "OPENAI_API_KEY", batch=BatchAPI()),
    # response_format is ignored without an error: the schema goes in the system message instead.
    "anthropic": Provider("https://api.anthropic.com/v1/", "ANTHROPIC_API_KEY",
                          quirks=Quirks(schema_mode="json_object")),
    "gemini": Provider("https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY"),
    # Unknown fields get HTTP 422 (extra_forbidden), stream_options among them.
    "mistral": Provider("https://api.mistral.ai/v1", "MISTRAL_API_KEY", quirks=Quirks(drop=("stream_options",))),
    "groq": Provider("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together": Provider("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "fireworks": Provider("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    # json_schema is refused ("This response_format type is unavailable now"); JSON mode works.
    "deepseek": Provider("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY",
                         quirks=Quirks(schema_mode="json_object")),
    "openrouter": Provider("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "xai": Provider("https://api.x.ai/v1", "XAI_API_KEY"),
    "cerebras": Provider("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "ollama": Provider("http://localhost:11434/v1", "OLLAMA_API_KEY", local=True),
    # json_object gets HTTP 400: json_schema is the only structured mode.
    "lmstudio": Provider("http://localhost:1234/v1", "LM_STUDIO_API_KEY", local=True,
                         quirks=Quirks(schema_mode="json_schema")),
    "vllm": Provider("http://localhost:8000/v1", "VLLM_API_KEY", local=True),
    "llama-server": Provider("http://127.0.0.1:8080/v1", "LLAMA_API_KEY", local=True),
}
