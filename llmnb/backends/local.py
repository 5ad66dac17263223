"""What a local GGUF model needs besides its engine: llama-cpp-python itself, the sampling
defaults, and the rule for reusing a cached prompt."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Generation

INSTALL_HINT = "install it with: pip install llama-cpp-python"

# Sampling defaults for small local models: some variety, and a repeat penalty because
# SmolLM2-135M otherwise repeats one name twenty times.
LOCAL_DEFAULTS = Generation(max_tokens=512, temperature=0.7)
REPEAT_PENALTY = 1.1

# How many tokens at the end of a prompt are always read again rather than reused from the KV
# cache. Reusing the cached start of the previous prompt saves reading it again, but reusing all
# of it leaves the last prompt token to be read alone, and a batch of one rounds differently from
# the batch a fresh prompt is read in: a greedy call repeated then gave another answer (3 of 12
# prompts here; a classify label could flip the same way). Tokens the model generated (read one
# by one) are never reused for the same reason. With this rule every answer is the one an empty
# cache gives, whatever ran before (tests/test_local_model.py).
FRESH_TAIL = 2


def reusable(prompt_tokens: int) -> int:
    """How many cached tokens of a prompt of this length another prompt may reuse, at most."""
    return max(0, prompt_tokens - FRESH_TAIL)


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ConfigError(f"local models need llama-cpp-python; {INSTALL_HINT}") from e
    return llama_cpp
