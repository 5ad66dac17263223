"""`python -m llmnb [MODEL]`: two LLM tasks at once in a terminal (sibila's async example).

Two tasks run concurrently (extract 20 names, classify a spam message), each printing when it
begins and ends, as in sibila's async example; then the text timeline of both.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Annotated

from pydantic import Field

from . import Model, Models, Timeline
from .registry import DEFAULT

NAMES_PROMPT = "Generate 20 English names with first name and surname"
SPAM_PROMPT = "I am a Nigerian prince and will make you very rich!"

# The type is the contract, and a local model's grammar keeps all of it. A plain list[str] says
# nothing of how many items or what they look like: the 135M embedded model closes the list after
# two ("First Name", "Surname"), or lets a string run on to max_tokens. Put the count and the
# shape in the type and even this model gives 20 names.
Name = Annotated[str, Field(pattern=r"^[A-Z][a-z]{1,15} [A-Z][a-z]{1,15}$")]  # "Ada Lovelace"
Names = Annotated[list[Name], Field(min_length=20, max_length=20)]  # exactly 20 of them


async def seed_example(model: Model) -> None:
    start = time.perf_counter()

    def secs() -> str:
        return f"{time.perf_counter() - start:.1f}"

    async def extract_names():
        print("extract_names begin...", secs())
        names = await model.extract_async(Names, NAMES_PROMPT)
        print("...extract_names done", secs())
        return names

    async def classify_spam():
        print("classify_spam begin...", secs())
        label = await model.classify_async(["spam", "not spam"], SPAM_PROMPT)
        print("...classify_spam done", secs())
        return label

    with Timeline(title=f"two tasks at once on {model.name}") as timeline:
        print("as_completed begin---", secs())
        for task in asyncio.as_completed([extract_names(), classify_spam()]):
            print("Result:", await task)
        print("---as_completed done", secs())
    print()
    print(timeline.to_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmnb", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT, help=f"model name (default {DEFAULT}, offline)")
    parser.add_argument("--parallel", type=int, default=1, help="local models: sequences decoded together")
    args = parser.parse_args(argv)
    options = {"parallel": args.parallel} if args.parallel != 1 else {}
    asyncio.run(seed_example(Models.create(args.model, **options)))


if __name__ == "__main__":
    main()
