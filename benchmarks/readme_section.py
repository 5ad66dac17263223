"""Publishes a benchmark's report: benchmarks/results/NAME.md, and README.md between its markers
(`<!-- NAME:begin -->` ... `<!-- NAME:end -->`), so the README always shows what the script
measured last."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
README = RESULTS.parent.parent / "README.md"


def publish(name: str, report: str) -> None:
    """Write `report` to results/NAME.md and into the README's NAME section, and print it."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(report)
    write(name, report)
    print(report)


def write(name: str, report: str, readme: Path = README) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"{readme} needs exactly one {begin} and one {end}")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    readme.write_text(f"{head}{begin}\n{report.strip()}\n{end}{tail}")
