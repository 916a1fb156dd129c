#!/usr/bin/env bash
# package.sh — builds the Debian package (design §13.2) and prints its path.
#
# Generates the man pages and shell completions from the programs' clap
# definitions (examples/gen-docs.rs) into the target directory, then runs
# `cargo deb`, which makes the release build and the .deb from
# [package.metadata.deb] in Cargo.toml. Installs cargo-deb with
# `cargo install cargo-deb --locked` when it is missing (once, a few minutes).
#
# Extra arguments go to cargo deb (e.g. --fast; the tests use --profile dev
# --fast to package the debug build they already have). Install the result with
#   sudo apt install ./tstat-transport_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "package.sh: cargo not found: install Rust first (https://rustup.rs)" >&2
    exit 1
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    # Its own build directory: not this project's target.
    env -u CARGO_TARGET_DIR cargo install cargo-deb --locked
fi

# Ask cargo where the build goes (CARGO_TARGET_DIR, build.target-dir).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$target_dir" ]; then
    echo "package.sh: cannot find cargo's target directory" >&2
    exit 1
fi
# The profile's output directory (cargo-deb reads the assets named
# target/release/... there): release unless --profile says otherwise.
profile_dir=release
prev=""
for a in "$@"; do
    case $prev in --profile) [ "$a" = dev ] && profile_dir=debug || profile_dir=$a ;; esac
    case $a in --profile=*) p=${a#--profile=}; [ "$p" = dev ] && profile_dir=debug || profile_dir=$p ;; esac
    prev=$a
done
gen=$target_dir/$profile_dir/gen-docs
rm -rf "$gen"
echo "package.sh: generating man pages and completions in $gen" >&2
cargo run --example gen-docs -- "$gen" >/dev/null

# cargo deb prints the path of the package on stdout.
cargo deb "$@"
