#!/usr/bin/env bash
# Installs everything the flamepipe integration tests need:
#   - go (Debian golang-go) for `go tool pprof`
#   - prometheus and victoria-metrics (Debian packages), remote-write receivers for the
#     metrics exporter's tests (the tests start their own instances on 127.0.0.1)
#   - integration/.venv         with pyroscope-io 1.x  (requirements.txt)
#   - integration/.venv-legacy  with pyroscope-io 0.8.x (requirements-legacy.txt)
#   - integration/.venv-otel    with the OpenTelemetry Python profiling SDK (requirements-otel.txt)
#   - integration/.venv-otlp    with opentelemetry-proto 1.45.x, the reference OTLP decoder
#                               (requirements-otlp.txt)
#   - integration/.venv-prof    with py-spy and pyinstrument, profilers that write speedscope
#                               files (requirements-prof.txt)
#   - integration/.venv-moto    with moto_server, an S3 API server (requirements-moto.txt)
#   - integration/node_modules  with @pyroscope/nodejs (package.json + lock)
# Idempotent: a stamp keyed on the requirement files makes re-runs instant.
# Usage: bash integration/setup.sh [--force]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
STAMP="$HERE/.setup-stamp"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
command -v node >/dev/null 2>&1 || die "node not found"
command -v npm >/dev/null 2>&1 || die "npm not found"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

apt_install() {
  # apt_install PKG...: runs apt-get update only because something is missing.
  command -v apt-get >/dev/null 2>&1 || die "apt-get not available to install: $*"
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  local out
  out="$(mktemp)"
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$@"; } >"$out" 2>&1; then
    tail -n 20 "$out" >&2
    rm -f "$out"
    die "apt-get install $* failed"
  fi
  rm -f "$out"
}

stamp_key() {
  {
    sha256sum requirements.txt requirements-legacy.txt requirements-otel.txt requirements-otlp.txt requirements-prof.txt \
      requirements-moto.txt \
      package.json package-lock.json setup.sh
    "$PYTHON" -c 'import sys; print(sys.version)'
    node --version
  } | sha256sum | cut -d' ' -f1
}

everything_present() {
  command -v go >/dev/null 2>&1 &&
    command -v prometheus >/dev/null 2>&1 && command -v victoria-metrics >/dev/null 2>&1 &&
    [ -x .venv/bin/python ] && [ -x .venv-legacy/bin/python ] &&
    [ -x .venv-otel/bin/python ] && [ -x .venv-otlp/bin/python ] &&
    [ -x .venv-prof/bin/py-spy ] && [ -x .venv-prof/bin/pyinstrument ] &&
    [ -x .venv-moto/bin/moto_server ] &&
    [ -f node_modules/@pyroscope/nodejs/package.json ] &&
    [ -f node_modules/pyroscope-nodejs-multipart/package.json ]
}

KEY="$(stamp_key)"
if [ "$FORCE" -eq 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && everything_present; then
  log "up to date (stamp $STAMP)"
  exit 0
fi
rm -f "$STAMP"

# 0. curl, which the tests use where a client must read an early 413.
if ! command -v curl >/dev/null 2>&1; then
  apt_install curl
fi

# 1. go, for `go tool pprof`.
if dpkg -s golang-go >/dev/null 2>&1 && command -v go >/dev/null 2>&1; then
  log "golang-go present ($(go version | cut -d' ' -f3))"
else
  apt_install golang-go
  command -v go >/dev/null 2>&1 || die "go still not on PATH after installing golang-go"
  log "golang-go installed ($(go version | cut -d' ' -f3))"
fi

# 1b. Prometheus and VictoriaMetrics. Their packages ship services; the tests run their own
# instances, so the packaged ones are stopped where a service manager started them.
for pkg in prometheus victoria-metrics; do
  if ! command -v "$pkg" >/dev/null 2>&1; then
    apt_install "$pkg"
    command -v "$pkg" >/dev/null 2>&1 || die "$pkg still not on PATH after installing it"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now "$pkg" >/dev/null 2>&1 || true
    fi
  fi
done
log "$(prometheus --version 2>&1 | head -1); victoria-metrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null)"

# 2. Python venvs.
make_venv() { # make_venv DIR REQFILE
  local dir="$1" req="$2"
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$dir"
    log "creating $dir"
    if ! "$PYTHON" -m venv "$dir" >/dev/null 2>&1; then
      # Debian's system python needs python3-venv for ensurepip.
      rm -rf "$dir"
      apt_install python3-venv
      "$PYTHON" -m venv "$dir" || die "python3 -m venv $dir failed"
    fi
  fi
  # Keep the venv out of git even where the repo's .gitignore does not list it
  # (python >= 3.13 writes this file itself).
  [ -f "$dir/.gitignore" ] || echo '*' > "$dir/.gitignore"
  log "pip install -r $req into $dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req" ||
    die "pip install -r $req failed"
}
make_venv .venv requirements.txt
make_venv .venv-legacy requirements-legacy.txt
make_venv .venv-otel requirements-otel.txt
make_venv .venv-otlp requirements-otlp.txt
make_venv .venv-prof requirements-prof.txt
make_venv .venv-moto requirements-moto.txt

# 3. npm packages.
if [ -f package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci failed"
else
  log "npm install (no package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error >/dev/null || die "npm install failed"
fi

# 4. Smoke checks: each SDK imports and reports the pinned version.
V1="$(.venv/bin/python -c 'import pyroscope; from importlib.metadata import version; print(version("pyroscope-io"))')" ||
  die "pyroscope-io does not import in .venv"
V08="$(.venv-legacy/bin/python -c 'import pyroscope; from importlib.metadata import version; print(version("pyroscope-io"))')" ||
  die "pyroscope-io does not import in .venv-legacy"
OTEL="$(.venv-otel/bin/python -c '
from importlib.metadata import version
from opentelemetry.sdk.extension.profiling import Profiler
from opentelemetry.sdk.extension.profiling.export.grpc import OTLPProfileExporter
from opentelemetry.sdk.extension.profiling.export.http import OTLPHTTPProfileExporter
print(version("opentelemetry-sdk-extension-profiling"))')" ||
  die "opentelemetry-sdk-extension-profiling does not import in .venv-otel"
OTLP="$(.venv-otlp/bin/python -c '
from importlib.metadata import version
from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import ExportProfilesServiceRequest
print(version("opentelemetry-proto"))')" || die "opentelemetry-proto does not import in .venv-otlp"
case "$V1" in 1.*) ;; *) die "expected pyroscope-io 1.x in .venv, got $V1" ;; esac
case "$V08" in 0.8.*) ;; *) die "expected pyroscope-io 0.8.x in .venv-legacy, got $V08" ;; esac
NV="$(node -e '
  require("@pyroscope/nodejs"); require("pyroscope-nodejs-multipart");
  const fs = require("fs");
  const v = (p) => JSON.parse(fs.readFileSync("node_modules/" + p + "/package.json", "utf8")).version;
  console.log(v("@pyroscope/nodejs") + " (multipart: " + v("pyroscope-nodejs-multipart") + ")");
')" || die "@pyroscope/nodejs does not load"
go tool pprof -h >/dev/null 2>&1 || die "go tool pprof does not run"
PROF="$(.venv-prof/bin/py-spy --version) / pyinstrument $(.venv-prof/bin/python -c 'from importlib.metadata import version; print(version("pyinstrument"))')" ||
  die "py-spy or pyinstrument does not run in .venv-prof"

log "pyroscope-io $V1 (.venv), $V08 (.venv-legacy); opentelemetry-sdk-extension-profiling $OTEL (.venv-otel);"
log "opentelemetry-proto $OTLP (.venv-otlp); @pyroscope/nodejs $NV; $(go version | cut -d' ' -f3)"
MOTO="$(.venv-moto/bin/python -c 'from importlib.metadata import version; print(version("moto"))')" ||
  die "moto does not import in .venv-moto"
[ -x .venv-moto/bin/moto_server ] || die "moto_server missing in .venv-moto"
log "$PROF (.venv-prof); moto $MOTO (.venv-moto)"
echo "$KEY" > "$STAMP"
log "done"
