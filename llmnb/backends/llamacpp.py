"""A GGUF model in this process, through llama-cpp-python, one generation at a time.

llama.cpp's `Llama` object is not safe to use from two threads at once, and one context decodes
one sequence here, so calls queue on an asyncio lock (the "waiting" phase on the timeline) and each
generation runs in the model's single worker thread, never on the event loop. A cancelled or
timed-out generation is told to stop at its next token, and the call waits for the worker to let
go of the model, so the next call always finds it free.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import ConfigError, ModelCallError
from .base import Backend, Completion, Generation, PerLoop, Request
from .grammar import schema_to_gbnf

INSTALL_HINT = "install it with: pip install llama-cpp-python"


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ConfigError(f"local models need llama-cpp-python; {INSTALL_HINT}") from e
    return llama_cpp


# How many tokens at the end of a prompt are always read again rather than reused from the KV
# cache. Reusing the cached start of the previous prompt saves reading it again, but reusing all
# of it leaves the last prompt token to be read alone, and a batch of one rounds differently from
# the batch a fresh prompt is read in: a greedy call repeated then gave another answer (3 of 12
# prompts here, both backends; a classify label could flip the same way). Tokens the model
# generated (read one by one) are never reused for the same reason. With this rule every answer
# is the one an empty cache gives, whatever ran before (tests/test_local_model.py).
FRESH_TAIL = 2


def reusable(prompt_tokens: int) -> int:
    """How many cached tokens of a prompt of this length another prompt may reuse, at most."""
    return max(0, prompt_tokens - FRESH_TAIL)


# Sampling defaults for small local models: some variety, and a repeat penalty because
# SmolLM2-135M otherwise repeats one name twenty times.
LOCAL_DEFAULTS = Generation(max_tokens=512, temperature=0.7)
REPEAT_PENALTY = 1.1


class LlamaCppBackend(Backend):
    defaults = LOCAL_DEFAULTS

    def __init__(self, path: Path, *, name: str, n_ctx: int = 2048, n_threads: int = 1, timeout: float = 300.0):
        llama_cpp = import_llama_cpp()
        self._llama_cpp = llama_cpp
        self.name = name
        self.path = Path(path)
        self.timeout = timeout
        self.llama = llama_cpp.Llama(
            model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
        )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmnb-llamacpp")
        self._locks = PerLoop(asyncio.Lock)
        self._grammars: dict[str, object] = {}
        self._prompt_tokens = 0  # length of the last prompt read, the most the next call may reuse
        self._closed = False

    def __repr__(self) -> str:
        return f"LlamaCppBackend({self.name!r})"

    def slot(self):
        return self._locks.get()

    def close(self) -> None:
        """Wait for the running generation, then free the model's memory."""
        self._closed = True
        self._worker.shutdown(wait=True)
        self.llama.close()

    def grammar(self, schema: dict):
        """The llama.cpp grammar that forces output to match a JSON schema (built once per schema)."""
        gbnf = schema_to_gbnf(schema)
        if gbnf not in self._grammars:
            self._grammars[gbnf] = self._llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[gbnf]

    async def complete(self, request: Request, call=None) -> Completion:
        if self._closed:
            raise ModelCallError(f"{self.name}: the model was closed; make a new one with Models.create")
        stop = threading.Event()
        work = asyncio.get_running_loop().run_in_executor(self._worker, self._generate, request, stop)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(work)
        except BaseException as e:
            stop.set()
            await asyncio.wait([work])  # the worker lets go of the model within one token
            if isinstance(e, TimeoutError):
                raise ModelCallError(f"{self.name}: generation took longer than timeout={self.timeout}s") from e
            raise

    def _generate(self, request: Request, stop: threading.Event) -> Completion:
        """Runs in the worker thread."""
        if stop.is_set():  # cancelled while queued in the executor
            return Completion("")
        tokens = {"in": 0, "out": 0}

        def count(input_ids, scores):  # called once per sampled token; input_ids = prompt + output so far
            tokens["in"] = tokens["in"] or len(input_ids)
            tokens["out"] += 1
            return scores

        kwargs = {
            "messages": list(request.messages),
            "max_tokens": request.gen.max_tokens,
            "temperature": request.gen.temperature,
            "repeat_penalty": REPEAT_PENALTY,
            "logits_processor": self._llama_cpp.LogitsProcessorList([count]),
            "stream": True,  # streamed so a cancelled call stops at the next token
        }
        if request.gen.seed is not None:
            kwargs["seed"] = request.gen.seed
        if request.schema is not None:
            kwargs["grammar"] = self.grammar(request.schema)
        self.llama.n_tokens = min(self.llama.n_tokens, reusable(self._prompt_tokens))
        self._prompt_tokens = 0
        parts = []
        try:
            for chunk in self.llama.create_chat_completion(**kwargs):
                if stop.is_set():
                    break
                parts.append(chunk["choices"][0]["delta"].get("content") or "")
        except ValueError as e:  # llama-cpp-python's signal that the prompt does not fit the context
            raise ConfigError(
                f"{self.name}: the prompt does not fit the model's context of {self.llama.n_ctx()} tokens "
                f"({e}); shorten it or pass a larger n_ctx= to Models.create"
            ) from e
        self._prompt_tokens = tokens["in"]
        return Completion("".join(parts), tokens_in=tokens["in"], tokens_out=tokens["out"])
