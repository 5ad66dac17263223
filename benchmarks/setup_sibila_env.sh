#!/usr/bin/env bash
# Creates benchmarks/envs/sibila/: a plain venv with sibila 0.4.5 (its last release) and the
# llama-cpp-python of its time, for the peer benchmarks (LlamaCppModel here, OpenAIModel too).
#
# sibila 0.4.5 (June 2024) cannot be imported next to llama-cpp-python 0.3.x; 0.2.90 (Aug 2024)
# is the last 0.2 release, still has the API sibila calls (llama_token_get_text, kv_cache_clear,
# llava_cpp), and its llama.cpp knows the "smollm" pre-tokenizer of the embedded SmolLM2 GGUF.
# pip compiles llama.cpp from source: about 6 minutes on 2 cores (pip caches the wheel after).
#
# Usage: bash benchmarks/setup_sibila_env.sh   (idempotent; PYTHON=python3.11 to choose python)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
env="$here/envs/sibila"
python="${PYTHON:-python3}"

if [ -x "$env/bin/python" ] && "$env/bin/python" -c "import sibila, llama_cpp" 2>/dev/null; then
    echo "sibila env ready: $env/bin/python"
    exit 0
fi
"$python" -m venv "$env"
"$env/bin/python" -m pip install --quiet --upgrade pip
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$env/bin/python" -m pip install --quiet "sibila==0.4.5" "llama-cpp-python==0.2.90" "mistralai<1"
"$env/bin/python" -c "import sibila, llama_cpp; print('sibila', sibila.__version__ if hasattr(sibila, '__version__') else '0.4.5', 'llama-cpp-python', llama_cpp.__version__)"
echo "sibila env ready: $env/bin/python"
