#!/bin/sh
# Prepare a clone for running and testing: a virtualenv holding exactly the versions
# locked in uv.lock (cellfleet, its dependencies and its dev tools), a redis-server
# binary (Debian's package, installed if none is on PATH) and, for the browser tests
# only, Debian's chromium (the same way).
#
# Refresh the lock after changing dependencies: .venv/bin/uv lock (--upgrade for newer).
set -eu
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv

# uv first, as locked: its version and wheel hashes come from uv.lock. pip runs isolated
# from the machine's pip configuration, so that nothing but the lock decides.
.venv/bin/python - >.venv/uv-requirement.txt <<'EOF'
import tomllib

with open("uv.lock", "rb") as lock:
    uv = next(p for p in tomllib.load(lock)["package"] if p["name"] == "uv")
print(f"uv=={uv['version']}", *(f"--hash={wheel['hash']}" for wheel in uv["wheels"]))
EOF
.venv/bin/python -m pip install --isolated -q --disable-pip-version-check \
    --require-hashes -r .venv/uv-requirement.txt

# Then everything else, exactly as locked; --locked also fails if pyproject.toml changed
# without a new lock.
.venv/bin/uv sync --locked --quiet
.venv/bin/python -c 'from cellfleet.ops.redis_server import find_redis_server; find_redis_server()'

# The browser tests drive /usr/bin/chromium through Playwright (which never downloads a
# browser of its own). Elsewhere than on a Debian machine as root, install it by hand.
if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "ops/setup.sh: no chromium on PATH; the browser tests will fail without it" >&2
    fi
fi
