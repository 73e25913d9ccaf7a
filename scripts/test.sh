#!/usr/bin/env bash
# Set up (with test extras and the Debian packages the tests use) and run every test,
# slow ones included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
