#!/usr/bin/env bash
# demo.sh — see tstat-transport work, from a fresh Debian machine (design §9.1).
#
# Builds the programs, starts a throwaway private RabbitMQ node (its own
# ports and files in a temp dir; the system broker on 5672 is never used),
# ships the bundled sample tree with tstat_send, reads the queue back and
# prints what arrived (counts and one flow, pretty), then stops the node.
#
# Environment: TSTAT_DEMO_PROFILE=debug builds and runs the debug programs
# (the tests use it; the default is release).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)

say() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: cargo not found: install Rust first (https://rustup.rs: curl https://sh.rustup.rs -sSf | sh)" >&2
    exit 1
fi

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    say "installing rabbitmq-server (the demo starts a private node of it)"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    # The package starts the system broker; the demo does not need it and
    # never talks to it.
fi

profile=${TSTAT_DEMO_PROFILE:-release}
case $profile in
release) build_flags=(--release) ;;
debug) build_flags=() ;;
*)
    echo "demo.sh: TSTAT_DEMO_PROFILE must be release or debug, not '$profile'" >&2
    exit 2
    ;;
esac
say "building ($profile; the first build takes a few minutes)"
cargo build "${build_flags[@]+"${build_flags[@]}"}" --bins --example consume
# Ask cargo where it put them: CARGO_TARGET_DIR or build.target-dir may send
# the build anywhere, not only to ./target.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$target_dir" ] || [ ! -x "$target_dir/$profile/tstat_send" ]; then
    echo "demo.sh: cannot find the programs cargo just built (target directory '$target_dir')" >&2
    exit 1
fi
bin=$target_dir/$profile
echo "programs in $bin"

# shellcheck source=scripts/lib/rabbit-node.sh
. "$root_dir/scripts/lib/rabbit-node.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/tstat-demo.XXXXXX")
cleanup() {
    rabbit_node_stop
    rm -rf "$work"
}
trap cleanup EXIT

say "starting a private RabbitMQ node"
rabbit_node_start "$work/node"
echo "node $RABBIT_NODENAME listening on $RABBIT_HOST:$RABBIT_PORT (data in $work/node)"

queue=demo_tstat
config=$work/config.ini
rabbit_node_write_config "$config" "$queue"

tree=$work/tree
mkdir -p "$tree"
cp -r tests/fixtures/synthetic/*.out tests/fixtures/real-3.3/*.out "$tree/"
chmod -R u+w "$tree"
expected=0
for f in tests/fixtures/synthetic/expected.bytes0.sensor-s.instance-1.ndjson \
    tests/fixtures/real-3.3/expected.bytes0.sensor-s.instance-1.ndjson; do
    expected=$((expected + $(wc -l <"$f")))
done
say "the sample tree"
(cd "$tree" && find . -type f | sort | xargs ls -l | awk '{print $5, $9}')

say "tstat_send -d TREE --all --bytes 0 -c config.ini -S demo"
echo "(the synthetic sample has damaged rows on purpose: the warnings about them"
echo " show that a bad row is counted and skipped, not shipped and not fatal)"
"$bin/tstat_send" -d "$tree" --all --bytes 0 -c "$config" -S demo
echo "markers: $(cd "$tree" && find . -name .processed | sort | tr '\n' ' ')"

say "the queue"
rabbit_node_ctl list_queues name messages durable

say "reading it back"
"$bin/examples/consume" "amqp://guest:guest@$RABBIT_HOST:$RABBIT_PORT/%2f" "$queue" | tee "$work/consumed"

got=$(sed -n 's/^flows received: \([0-9]*\)$/\1/p' "$work/consumed")
if [ "$got" = "$expected" ]; then
    say "OK: $got flows arrived, expected $expected"
else
    say "MISMATCH: $got flows arrived, expected $expected" >&2
    exit 1
fi
