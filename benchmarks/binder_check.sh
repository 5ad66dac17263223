#!/usr/bin/env bash
# The closest we come to Binder without Docker: a fresh virtual environment built only from
# binder/'s files (requirements.txt, then postBuild, as repo2docker does), which then runs every
# notebook through nbval. Usage: bash benchmarks/binder_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=$(mktemp -d)/binder-env
python3 -m venv "$env_dir"
source "$env_dir/bin/activate"
pip install -q -r binder/requirements.txt
bash binder/postBuild
pip install -q nbval pytest   # the checker itself, not part of the Binder image
env -u OPENAI_API_KEY python -m pytest -q -p no:cacheprovider -o addopts="" -o testpaths="" --nbval-lax --nbval-current-env notebooks/
rm -rf "$(dirname "$env_dir")"
