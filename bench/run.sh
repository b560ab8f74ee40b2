#!/usr/bin/env bash
# meshgate vs nginx vs HAProxy on loopback; see bench/README.md.
#   bench/run.sh --smoke                 # 1 run x 2 s, a harness check (~2 min)
#   bench/run.sh                         # 5 runs x 10 s per scenario
#   bench/run.sh --runs 3 --duration 5 --rsa
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONDONTWRITEBYTECODE=1
exec python3 "$here/bench.py" "$@"
