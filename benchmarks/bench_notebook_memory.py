"""Peak memory of one kernel that runs every teaching notebook, one after another.

    python benchmarks/bench_notebook_memory.py     # writes benchmarks/results/notebook_memory.md

mybinder.org restarts a kernel above 2 GB, so the notebooks should stay well under that. The kernel
reports its own high-water mark (VmHWM) at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import results_file  # benchmarks/, next to this script
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
REPORT = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def main() -> None:
    combined = nbformat.v4.new_notebook()
    for path in NOTEBOOKS:
        combined.cells += [c for c in nbformat.read(path, 4).cells if c.cell_type == "code"]
    combined.cells.append(nbformat.v4.new_code_cell(REPORT))
    start = time.perf_counter()
    NotebookClient(combined, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    took = time.perf_counter() - start
    peak_mb = int(combined.cells[-1].outputs[0]["text"]) / 1024
    report = (f"Peak memory of one kernel running all {len(NOTEBOOKS)} notebooks, "
              f"`python benchmarks/bench_notebook_memory.py` (Python {sys.version.split()[0]}): "
              f"**{peak_mb:.0f} MB** (mybinder.org allows 2 GB); run time {took:.0f} s.\n")
    results_file.publish("notebook_memory", report)


if __name__ == "__main__":
    main()
