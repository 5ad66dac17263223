"""Writes a benchmark's measured tables into benchmarks/results/NAME.md, and prints them.

A results file is prose (what is measured, how to read it) written by hand around the parts the
scripts write, each between `<!-- PART:begin -->` and `<!-- PART:end -->`. A run replaces only its
own part, so the discussion stays; a part the file does not have yet is appended to it.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def publish(name: str, report: str, part: str = "measured") -> None:
    """Put `report` in results/NAME.md as its PART, and print it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(replace_part(path.read_text() if path.exists() else "", part, report))
    print(report)


def replace_part(text: str, part: str, report: str) -> str:
    begin, end = f"<!-- {part}:begin -->", f"<!-- {part}:end -->"
    block = f"{begin}\n{report.strip()}\n{end}"
    if begin not in text:
        return f"{text.rstrip()}\n\n{block}\n".lstrip()
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"a results file needs exactly one {begin} and one {end}")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{block}{tail}"
