#!/usr/bin/env bash
# The package as users get it: build the sdist and the wheel, check their metadata as PyPI would
# render it, install the wheel alone (not editable) into a fresh venv, and run the seed example and
# notebook 01 from a directory outside the checkout, so nothing is imported from the source tree.
# Usage: bash .ci/package_check.sh [PYTHON]   (PYTHON: one with `build` and `twine`; default .venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m build --sdist --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$python" -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/llmnb-*.whl)
"$python" - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = {"llmnb/py.typed", "llmnb/__main__.py", "llmnb/backends/base.py", "llmnb/timeline/render.py"} - names
assert not missing, f"the wheel lacks {sorted(missing)}"
EOF

python3 -m venv "$work/env"
"$work/env/bin/pip" install -q "$wheel[notebook]" nbclient
# the notebook's kernel is this venv's Python, whatever kernels the machine has
"$work/env/bin/python" -m ipykernel install --sys-prefix --name llmnb-wheel >/dev/null
cp notebooks/01-seed-async-example.ipynb "$work/"
cd "$work"
env/bin/python -c "import llmnb, sys; assert llmnb.__file__.startswith(sys.prefix), llmnb.__file__"
env -u OPENAI_API_KEY env/bin/python -m llmnb
env -u OPENAI_API_KEY env/bin/python - <<'EOF'
import nbformat
from nbclient import NotebookClient

nb = nbformat.read("01-seed-async-example.ipynb", as_version=4)
NotebookClient(nb, timeout=600, kernel_name="llmnb-wheel", resources={"metadata": {"path": "."}}).execute()
errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
assert not errors, errors
print(f"notebook 01 ran from the installed wheel: {len(nb.cells)} cells, no errors")
EOF
