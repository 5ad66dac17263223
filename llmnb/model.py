"""`Model`: generate, extract and classify. The `_async` methods are the implementation; the
plain names are generic synchronous wrappers made by `sync_twin`."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, TypeVar, get_args

from . import sync
from .backends.base import Backend, Generation, Request
from .errors import ExtractError
from .events import Call, excerpt
from .structured import Target, labels_type, target_for

T = TypeVar("T")

# Worded for the 135M embedded model: among the instructions tried, this one most often gave as
# many list items as asked; larger models follow any of them.
EXTRACT_INST = (
    'Reply with JSON only, in the form {"value": answer}. Give exactly what the user asks for, '
    "as many items as asked."
)
CLASSIFY_INST = 'Classify the user\'s text. Answer only with JSON: {{"value": one of {labels}}}.'
REASK = "That answer was not valid: {error}. Answer again, only with JSON that matches the schema."


def sync_twin(async_method):
    """The blocking version of an `_async` method: same arguments, same result, run by `llmnb.sync`."""

    @functools.wraps(async_method)
    def method(self, *args, **kwargs):
        return sync.run(async_method(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = async_method.__name__.removesuffix("_async")
    method.__doc__ = f"Blocking twin of `{async_method.__name__}` (works in scripts and in notebook cells).\n\n{async_method.__doc__}"
    return method


class Model:
    """A chat model. Make one with `Models.create(...)`."""

    def __init__(self, backend: Backend, *, defaults: Generation = Generation()):
        self.backend = backend
        self.name = backend.name
        self.defaults = defaults  # Models.create(temperature=..., ...): under each call's own settings

    def __repr__(self) -> str:
        return f"<llmnb.Model {self.name}>"

    def close(self) -> None:
        """Free a local model's memory and threads now rather than when the model is dropped;
        later calls fail. Also `with Models.create(...) as model:`."""
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def generate_async(self, prompt: str, *, inst: str | None = None, max_tokens: int | None = None,
                             temperature: float | None = None, seed: int | None = None) -> str:
        """Free text answer to `prompt`. `inst` is a system instruction."""
        return await self._run("generate", prompt, None, inst, Generation(max_tokens, temperature, seed))

    async def extract_async(self, target: type[T] | Any, prompt: str, *, inst: str | None = None, retries: int = 0,
                            max_tokens: int | None = None, temperature: float | None = None, seed: int | None = None) -> T:
        """A value of type `target` (str, int, list[str], a dataclass, a pydantic model, ...) from `prompt`.

        The output is constrained to the type's JSON schema where the model allows and always
        validated; invalid output raises `ExtractError` with the raw text. `retries=N` asks the
        model again up to N times, telling it what was wrong.
        """
        gen = Generation(max_tokens, temperature, seed)
        return await self._run("extract", prompt, target_for(target), inst or EXTRACT_INST, gen, retries)

    async def classify_async(self, labels: Any, prompt: str, *, inst: str | None = None, retries: int = 0,
                             max_tokens: int | None = None, temperature: float | None = None, seed: int | None = None) -> Any:
        """One of `labels` (a list of strings, or an Enum class) for `prompt`.

        Unless a temperature is given (here or to Models.create), the most likely label is taken
        (temperature 0): a classification should not change from run to run.
        """
        label_type = labels_type(labels)
        names = [m.value for m in label_type] if isinstance(label_type, type) else get_args(label_type)
        inst = inst or CLASSIFY_INST.format(labels=", ".join(f'"{n}"' for n in names))
        gen = Generation(max_tokens, temperature, seed).over(self.defaults).over(Generation(temperature=0))
        return await self._run("classify", prompt, target_for(label_type), inst, gen, retries)

    generate = sync_twin(generate_async)
    extract = sync_twin(extract_async)
    classify = sync_twin(classify_async)

    def __call__(self, prompt: str, **kwargs) -> str:
        return self.generate(prompt, **kwargs)

    async def _run(self, method: str, prompt: str, target: Target | None, inst: str | None,
                   gen: Generation, retries: int = 0) -> Any:
        if not isinstance(prompt, str):
            raise TypeError(f"the prompt must be a string, not {type(prompt).__name__}")
        gen = gen.over(self.defaults).over(self.backend.defaults)
        messages = ([{"role": "system", "content": inst}] if inst else []) + [{"role": "user", "content": prompt}]
        call = Call(method, excerpt(prompt), self.name)
        tokens_in = tokens_out = 0
        try:
            for attempt in range(retries + 1):
                request = Request(tuple(messages), gen, schema=target and target.schema)
                completion = await self.backend.run(request, call)
                tokens_in += completion.tokens_in or 0
                tokens_out += completion.tokens_out or 0
                if target is None:
                    result = completion.text
                    break
                try:
                    result = target.parse(completion.text)
                    break
                except ExtractError as e:
                    if attempt == retries:
                        raise
                    messages += [{"role": "assistant", "content": completion.text},
                                 {"role": "user", "content": REASK.format(error=e)}]
        except asyncio.CancelledError:
            call.emit("cancelled", tokens_in=tokens_in, tokens_out=tokens_out)
            raise
        except Exception as e:
            call.emit("failed", tokens_in=tokens_in, tokens_out=tokens_out, error=f"{type(e).__name__}: {e}")
            raise
        call.emit("finished", tokens_in=tokens_in, tokens_out=tokens_out)
        return result
