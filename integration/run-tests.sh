#!/usr/bin/env bash
# The whole test suite: installs the integration peers (idempotent, see setup.sh), then runs
# every unit and end-to-end test of the workspace. This is the README's test command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash integration/setup.sh
# go tool pprof is the reference reader; setup.sh installs it from Debian's golang-go.
export PATH="$PATH:/usr/lib/go/bin"
cargo test --workspace --locked "$@"
