#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what is missing, then runs pytest.
# Extra arguments go to pytest, e.g. `tests/run.sh -k wkv7 -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
. local/install_deps.sh
export PYTHONUNBUFFERED=1
exec ${PYTHON:-python3} -m pytest tests -ra --durations=15 "$@"
