#!/usr/bin/env bash
# Runs every test: installs what cargo cannot (rabbitmq-server), checks
# formatting and lints, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "test.sh: installing rabbitmq-server (tests start private broker nodes)" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

# tests/package.rs builds the Debian package with cargo-deb: install it here,
# visibly, rather than inside a test whose output is captured.
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "test.sh: installing cargo-deb for the package test (cargo install cargo-deb --locked; once, a few minutes)" >&2
    env -u CARGO_TARGET_DIR cargo install cargo-deb --locked
fi

cargo fmt --check
# No --quiet on the builds: the first one takes minutes, and cargo's
# progress shows that something is happening.
cargo clippy --all-targets -- -D warnings
cargo build --all-targets
cargo test --quiet -- --test-threads="${TEST_THREADS:-4}"
