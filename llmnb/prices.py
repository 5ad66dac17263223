"""What a call costs, in USD, from its token counts.

Prices come from `Models.create(..., price=(input, output))` (USD per million tokens), else from
the genai-prices table (`pip install llmnb[prices]`) for the provider's own endpoint or a
server it knows by URL; a local model (the embedded one, a GGUF file, a local server such as
"ollama:") costs 0; anything else is not known (None).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .backends.base import Backend
from .errors import ConfigError
from .providers import PROVIDERS


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output tokens."""

    input: float
    output: float

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        """USD for these token counts (None when neither is known)."""
        if tokens_in is None and tokens_out is None:
            return None
        return ((tokens_in or 0) * self.input + (tokens_out or 0) * self.output) / 1e6


def price_for(backend: Backend, override: Price | None = None) -> Price | None:
    """The price of `backend`'s tokens: the override, 0 for a local model, the table's, or None."""
    if override is not None:
        return override
    provider, _, model = backend.name.partition(":")
    named = PROVIDERS.get(provider)
    if backend.path is not None or (named is not None and named.local):  # runs on this machine
        return Price(0.0, 0.0)
    return table_price(model, provider, backend.url)


def checked(price: object) -> Price:
    """A `price=` option, checked."""
    if (not isinstance(price, (tuple, list)) or len(price) != 2
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in price)):
        raise ConfigError(f"price= takes (input, output) in USD per million tokens, e.g. price=(0.15, 0.6), "
                          f"not {price!r}")
    return Price(float(price[0]), float(price[1]))


@functools.cache
def table_price(model: str, provider: str, base_url: str | None) -> Price | None:
    """genai-prices' current price (its embedded data, nothing downloaded); context-length tiers
    are not applied: the per-million price of the first tier is used."""
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    try:
        if base_url:  # a server the table may know by its URL
            found = calc_price(million, model, provider_api_url=base_url)
        else:
            found = calc_price(million, model, provider_id=provider)
    except LookupError:
        return None
    return Price(float(found.input_price), float(found.output_price))
