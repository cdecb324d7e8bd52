#!/usr/bin/env bash
# Set up (idempotent: venv, camexp[dev], Fashion-MNIST) and run the test suite.
#   scripts/test.sh                 everything
#   scripts/test.sh -k cam -x       any pytest arguments
#   CAMEXP_TEST_WORKERS=0 scripts/test.sh   in one process (default: one worker per core,
#                                   each test file whole on one worker)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
camexp_setup dev,launchers  # test_launchers.py runs the joblib and submitit launchers
# The suite writes its own tiny datasets; the real files are only read by the tests that say so.
camexp_fashion_mnist || say "continuing without the real Fashion-MNIST files"
cd "$CAMEXP_ROOT"
exec "$VENV/bin/python" -m pytest -n "${CAMEXP_TEST_WORKERS:-auto}" --dist loadfile "$@"
