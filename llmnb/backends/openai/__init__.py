"""Any OpenAI-compatible chat server: `OpenAIBackend` (in `backend`), the wire format it speaks
(`wire`), how it judges failures (`failures`) and its HTTP clients per event loop (`clients`)."""

from .backend import OpenAIBackend

__all__ = ["OpenAIBackend"]
