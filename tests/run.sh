#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what is missing, then runs pytest.
# Extra arguments go to pytest, e.g. `tests/run.sh -k wkv7 -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
. local/install_deps.sh
export PYTHONUNBUFFERED=1
# Idle OpenMP threads sleep instead of spinning: spinning threads made torch 5-20x slower whenever
# another process shared the 2 cores (measured on the encoder bench).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec ${PYTHON:-python3} -m pytest tests -ra --durations=15 "$@"
