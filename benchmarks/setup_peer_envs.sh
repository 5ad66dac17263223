#!/usr/bin/env bash
# Peers for benchmarks/bench_peers.py (LangChain, pydantic-ai, sibila), each in its own venv under
# benchmarks/envs/ (git-ignored);
# never dependencies of llmnb. sibila 0.4.5 cannot be imported next to llama-cpp-python 0.3.36,
# so it lives in benchmarks/envs/sibila (made by setup_sibila_env.sh, with the older
# llama-cpp-python it was written for).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x envs/langchain/bin/python ]; then
    python3 -m venv envs/langchain
    envs/langchain/bin/pip install -q "langchain-openai" psutil
fi
if [ ! -x envs/pydantic-ai/bin/python ]; then
    python3 -m venv envs/pydantic-ai
    envs/pydantic-ai/bin/pip install -q "pydantic-ai-slim[openai]"
fi
[ -x envs/sibila/bin/python ] || bash setup_sibila_env.sh
