"""`python -m llmnb [MODEL]`: two LLM tasks at once in a terminal (sibila's async example).

Two tasks run concurrently (extract 20 names, classify a spam message), each printing when it
begins and ends, as in sibila's async example; then the text timeline of both.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from . import Models, Timeline
from .registry import DEFAULT

NAMES_PROMPT = "Generate 20 English names with first name and surname"
SPAM_PROMPT = "I am a Nigerian prince and will make you very rich!"


async def seed_example(model) -> None:
    start = time.perf_counter()

    def secs() -> str:
        return f"{time.perf_counter() - start:.1f}"

    async def extract_names():
        print("extract_names begin...", secs())
        names = await model.extract_async(list[str], NAMES_PROMPT)
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
