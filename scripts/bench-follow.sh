#!/usr/bin/env bash
# bench-follow.sh — follow lag and idle cost of `tstat_send --follow`
# (design §12, issue 12's acceptance).
#
# What it does: starts a throwaway private RabbitMQ node (scripts/lib/
# rabbit-node.sh: own ports and files in a temp dir, never the system broker),
# creates a live Tstat directory holding only the log headers, starts
# `tstat_send --follow -b 0 --flush 5` on it, then runs examples/follow-lag.rs,
# which appends TCP rows copied unchanged from tests/fixtures/real-3.3 at a
# steady BENCH_RATE rows/s (bursts every 100 ms) for BENCH_SECONDS while
# consuming the queue, and prints the lag from a burst written to its last flow
# delivered (p50/p99/max). Then, with no more writes, it reads tstat_send's CPU
# time (utime+stime from /proc/PID/stat) before and after BENCH_IDLE seconds
# of idling and prints CPU seconds per minute idle (and, for comparison, the
# CPU it used while shipping). When the lag run failed (flows missing, or
# tstat_send gone), it stops there: no idle figure is printed.
#
# Needs: cargo, rabbitmq-server (the Debian package: /usr/lib/rabbitmq/bin),
# Linux /proc, getconf. Takes: the build (a few minutes the first time in
# release), ~10 s for the node, BENCH_SECONDS (60) of writing plus up to a few
# seconds of draining, BENCH_IDLE (60) of idling: about 2.5 minutes after the
# build. Writes ~220 MB into a temp dir (removed at the end).
#
# Environment:
#   BENCH_RATE     rows per second (5000)
#   BENCH_SECONDS  seconds of writing (60)
#   BENCH_IDLE     seconds of idling for the CPU figure (60)
#   BENCH_PROFILE  release (default) or debug
# Exit status: 0 when every flow was delivered, 1 otherwise (then without
# the idle figure).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=lib/rabbit-node.sh disable=SC1091 # checked on its own
. "$REPO/scripts/lib/rabbit-node.sh"

RATE=${BENCH_RATE:-5000}
SECS=${BENCH_SECONDS:-60}
IDLE=${BENCH_IDLE:-60}
PROFILE=${BENCH_PROFILE:-release}
FIXTURE=$REPO/tests/fixtures/real-3.3/2024_06_08_09_10.out/log_tcp_complete

say() { echo "bench-follow: $*" >&2; }

case $PROFILE in
release) build_flags=(--release) ;;
debug) build_flags=() ;;
*)
    say "BENCH_PROFILE must be release or debug, not '$PROFILE'"
    exit 2
    ;;
esac
say "building ($PROFILE)"
cargo build "${build_flags[@]+"${build_flags[@]}"}" --quiet --bin tstat_send --example follow-lag
# Ask cargo where it put them: CARGO_TARGET_DIR may send the build anywhere.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$target_dir/$PROFILE
if [ ! -x "$BIN/tstat_send" ] || [ ! -x "$BIN/examples/follow-lag" ]; then
    say "cannot find the programs cargo just built (in '$BIN')"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tstat-bench-follow.XXXXXX")
SEND_PID=""
cleanup() {
    if [ -n "$SEND_PID" ] && kill -0 "$SEND_PID" 2>/dev/null; then
        kill -TERM "$SEND_PID" 2>/dev/null || true
        wait "$SEND_PID" 2>/dev/null || true
    fi
    rabbit_node_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT

say "starting a private RabbitMQ node"
rabbit_node_start "$WORK/node"
queue=bench_follow
config=$WORK/config.ini
rabbit_node_write_config "$config" "$queue"
chmod 600 "$config"

# The directory Tstat is writing: headers only, so tstat_send follows it
# from its first row.
live=$WORK/tree/2026_01_01_00_00.out
mkdir -p "$live"
head -n 1 "$FIXTURE" >"$live/log_tcp_complete"
head -n 1 "$REPO/tests/fixtures/real-3.3/2024_06_08_09_10.out/log_udp_complete" \
    >"$live/log_udp_complete"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

url="amqp://guest:guest@$RABBIT_HOST:$RABBIT_PORT/%2f"
# The consumer declares the queue before tstat_send checks it.
say "writing $RATE rows/s for $SECS s; tstat_send --follow -b 0 --flush 5"
"$BIN/tstat_send" -d "$WORK/tree" -c "$config" --follow --flush 5 -b 0 -S bench -q \
    2>"$WORK/send.err" &
SEND_PID=$!
busy_start=$(cpu_ticks "$SEND_PID")
status=0
"$BIN/examples/follow-lag" "$url" "$queue" "$live/log_tcp_complete" "$FIXTURE" "$RATE" "$SECS" ||
    status=$?
if ! kill -0 "$SEND_PID" 2>/dev/null; then
    say "tstat_send exited; its stderr:"
    cat "$WORK/send.err" >&2
    exit 1
fi
busy_end=$(cpu_ticks "$SEND_PID")
if [ "$status" != 0 ]; then
    # Idle CPU after a failed run would describe a run that did not happen.
    say "the lag run failed (exit $status): no idle CPU measured"
    if [ -s "$WORK/send.err" ]; then
        say "tstat_send said:"
        cat "$WORK/send.err" >&2
    fi
    exit "$status"
fi

say "idling for $IDLE s"
sleep "$IDLE"
idle_end=$(cpu_ticks "$SEND_PID")
awk -v b="$((busy_end - busy_start))" -v i="$((idle_end - busy_end))" -v hz="$hz" \
    -v s="$SECS" -v idle="$IDLE" 'BEGIN {
    printf "tstat_send CPU while shipping: %.2f s over %d s written\n", b / hz, s
    printf "tstat_send CPU idle: %.3f s per minute (%.2f s in %d s, clock tick %.3f s)\n",
        (i / hz) * 60 / idle, i / hz, idle, 1 / hz
}'
if [ -s "$WORK/send.err" ]; then
    say "tstat_send said:"
    cat "$WORK/send.err" >&2
fi
exit "$status"
