#!/usr/bin/env bash
# Benchmarks of design §10: input MB/s and peak RSS of each stage on a generated
# Tstat tree, next to `wc -l` and `cat` on the same files (the machine's
# ceiling), each also as a ratio to `wc -l` measured in the same run.
#
#     scripts/bench.sh                      # 500k TCP + 300k UDP rows, ~350 MB
#     BENCH_TCP=20000 BENCH_UDP=10000 scripts/bench.sh   # a quick try
#
# Environment:
#   BENCH_TCP, BENCH_UDP   rows per directory (500000, 300000)
#   BENCH_DIRS             directories (1)
#   BENCH_SEED             generator seed (1)
#   BENCH_RUNS             runs per row; the table shows the best (3)
#   BENCH_BROKER=0         skip the two rows that need a private RabbitMQ node
#   BENCH_REGEN=1          regenerate the tree even if one exists
#   BENCH_DATA             where trees and pre-made NDJSON/chunks live (./bench-data)
#
# Throughput is the best (shortest wall time) of BENCH_RUNS runs; peak RSS is
# the largest of those runs (GNU time's %M, i.e. the kernel's ru_maxrss;
# without /usr/bin/time, VmHWM polled from /proc). Inputs are read from the
# page cache: every file is read once before timing starts.
#
# Programs that are not built yet show "n/a (not built)". The broker rows use
# a throwaway RabbitMQ node on private ports (scripts/lib/rabbit-node.sh),
# never the system broker. Exit status: 0 when every row that ran succeeded.
# shellcheck disable=SC2317 # cleanup and the run hooks are called indirectly
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=lib/rabbit-node.sh disable=SC1091 # checked on its own
. "$REPO/scripts/lib/rabbit-node.sh"

TCP=${BENCH_TCP:-500000}
UDP=${BENCH_UDP:-300000}
DIRS=${BENCH_DIRS:-1}
SEED=${BENCH_SEED:-1}
RUNS=${BENCH_RUNS:-3}
BROKER=${BENCH_BROKER:-1}
DATA=${BENCH_DATA:-$REPO/bench-data}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
SENSOR=bench

say() { echo "bench: $*" >&2; }

# --- build -----------------------------------------------------------------
say "building release binaries and the generator"
cargo build --release --quiet --bins --example gen-tree

# --- measuring ---------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tstat-bench.XXXXXX")
cleanup() {
    rabbit_node_stop
    rm -rf "$WORK"
    # tstat_send marks what it published; leave the reusable tree unmarked.
    if [ -n "${TREE:-}" ] && [ -d "$TREE" ]; then
        find "$TREE" -maxdepth 2 \( -name .processed -o -name .progress \) -delete 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -x /usr/bin/time ] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
    HAVE_GNU_TIME=1
else
    HAVE_GNU_TIME=0
    say "no GNU /usr/bin/time (apt-get install time); polling VmHWM from /proc instead"
fi

now_ns() { date +%s%N; }

# run_once IN OUT ERR CMD...: runs CMD <IN >OUT 2>ERR; sets R_SECS, R_KIB, R_RC.
run_once() {
    local in=$1 out=$2 err=$3
    shift 3
    local t0 t1 pid hwm line
    R_KIB=0
    t0=$(now_ns)
    if [ "$HAVE_GNU_TIME" = 1 ]; then
        if /usr/bin/time -f %M -o "$WORK/time.out" "$@" <"$in" >"$out" 2>"$err"; then
            R_RC=0
        else
            R_RC=$?
        fi
        t1=$(now_ns)
        # On failure GNU time writes "Command exited with ..." before %M.
        R_KIB=$(tail -n 1 "$WORK/time.out" 2>/dev/null || echo 0)
        [[ "$R_KIB" =~ ^[0-9]+$ ]] || R_KIB=0
    else
        "$@" <"$in" >"$out" 2>"$err" &
        pid=$!
        while kill -0 "$pid" 2>/dev/null; do
            line=$(grep '^VmHWM:' "/proc/$pid/status" 2>/dev/null || true)
            hwm=$(echo "$line" | tr -s ' \t' ' ' | cut -d' ' -f2)
            if [[ "$hwm" =~ ^[0-9]+$ ]] && [ "$hwm" -gt "$R_KIB" ]; then R_KIB=$hwm; fi
            sleep 0.02
        done
        if wait "$pid"; then R_RC=0; else R_RC=$?; fi
        t1=$(now_ns)
    fi
    R_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
}

# Results, one row per line: LABEL|INPUT|BYTES|SECS|KIB|STATUS
ROWS=()
FAILED=0

# bench LABEL INPUT_NAME INPUT_BYTES BEFORE_HOOK IN OUT CMD...: best of RUNS.
# BEFORE_HOOK is a function run (untimed) before each run ("" for none).
bench() {
    local label=$1 iname=$2 ibytes=$3 hook=$4 in=$5 out=$6
    shift 6
    local best="" kib=0 i err
    err="$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_-' '_').err"
    say "$label ($RUNS runs)"
    for ((i = 1; i <= RUNS; i++)); do
        if [ -n "$hook" ]; then "$hook"; fi
        run_once "$in" "$out" "$err" "$@"
        if [ "$R_RC" != 0 ]; then
            say "$label: exit $R_RC; its stderr:"
            tail -n 20 "$err" >&2 || true
            ROWS+=("$label|$iname|$ibytes|||FAILED (exit $R_RC)")
            FAILED=1
            return 0
        fi
        if [ -z "$best" ] || awk -v a="$R_SECS" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$R_SECS
        fi
        if [ "$R_KIB" -gt "$kib" ]; then kib=$R_KIB; fi
    done
    ROWS+=("$label|$iname|$ibytes|$best|$kib|ok")
}

skip() { ROWS+=("$1|$2|$3|||$4"); }

have() { [ -x "$BIN/$1" ]; }

file_bytes() { if [ "$#" -gt 0 ]; then stat -c %s "$@" | awk '{ s += $1 } END { print s + 0 }'; else echo 0; fi; }

# --- the tree ------------------------------------------------------------------
NAME="tree-t$TCP-u$UDP-d$DIRS-s$SEED"
TREE="$DATA/$NAME"
STAMP="$DATA/$NAME.ok"
mkdir -p "$DATA"
if [ "${BENCH_REGEN:-0}" = 1 ] || [ ! -f "$STAMP" ] || [ ! -d "$TREE" ]; then
    say "generating $TREE"
    rm -rf "$TREE" "$STAMP" "$DATA/$NAME".*.ndjson "$DATA/$NAME".chunks
    "$BIN/examples/gen-tree" "$TREE" --dirs "$DIRS" --tcp "$TCP" --udp "$UDP" --seed "$SEED"
    touch "$STAMP"
else
    say "reusing $TREE (BENCH_REGEN=1 to regenerate)"
fi
find "$TREE" -maxdepth 2 \( -name .processed -o -name .progress \) -delete
mapfile -t OUTDIRS < <(find "$TREE" -mindepth 1 -maxdepth 1 -type d -name '*.out' | sort)
mapfile -t FILES < <(find "$TREE" -mindepth 2 -maxdepth 2 -type f -name 'log_*_complete' | sort)
TREE_BYTES=$(file_bytes "${FILES[@]}")
cat "${FILES[@]}" >/dev/null # warm the page cache

# --- pre-made NDJSON and chunks (inputs of tstat-chunk and tstat-rabbit) -------
NDJSON="$DATA/$NAME.bytes0.ndjson"
CHUNKS="$DATA/$NAME.chunks"
if have tstat-parse && { [ ! -s "$NDJSON" ] || [ "$BIN/tstat-parse" -nt "$NDJSON" ]; }; then
    say "making $NDJSON"
    "$BIN/tstat-parse" --bytes 0 -S "$SENSOR" "${OUTDIRS[@]}" >"$NDJSON.tmp"
    mv "$NDJSON.tmp" "$NDJSON"
fi
if have tstat-chunk && [ -s "$NDJSON" ] &&
    { [ ! -s "$CHUNKS" ] || [ "$BIN/tstat-chunk" -nt "$CHUNKS" ] || [ "$NDJSON" -nt "$CHUNKS" ]; }; then
    say "making $CHUNKS"
    "$BIN/tstat-chunk" <"$NDJSON" >"$CHUNKS.tmp"
    mv "$CHUNKS.tmp" "$CHUNKS"
fi
NDJSON_BYTES=0
CHUNK_BYTES=0
CHUNK_LINES=0
if [ -s "$NDJSON" ]; then NDJSON_BYTES=$(file_bytes "$NDJSON"); fi
if [ -s "$CHUNKS" ]; then
    CHUNK_BYTES=$(file_bytes "$CHUNKS")
    CHUNK_LINES=$(wc -l <"$CHUNKS")
fi

# --- the rows without a broker ------------------------------------------------
bench "wc -l" tree "$TREE_BYTES" "" /dev/null /dev/null wc -l "${FILES[@]}"
bench "cat" tree "$TREE_BYTES" "" /dev/null /dev/null cat "${FILES[@]}"

if have tstat-parse; then
    bench "tstat-parse --bytes 25G" tree "$TREE_BYTES" "" /dev/null /dev/null \
        "$BIN/tstat-parse" --bytes 25G -S "$SENSOR" "${OUTDIRS[@]}"
    bench "tstat-parse --bytes 0" tree "$TREE_BYTES" "" /dev/null /dev/null \
        "$BIN/tstat-parse" --bytes 0 -S "$SENSOR" "${OUTDIRS[@]}"
else
    skip "tstat-parse --bytes 25G" tree "$TREE_BYTES" "n/a (not built)"
    skip "tstat-parse --bytes 0" tree "$TREE_BYTES" "n/a (not built)"
fi

if have tstat-chunk && [ -s "$NDJSON" ]; then
    bench "tstat-chunk" ndjson "$NDJSON_BYTES" "" "$NDJSON" /dev/null "$BIN/tstat-chunk"
elif have tstat-chunk; then
    skip "tstat-chunk" ndjson 0 "n/a (no NDJSON: tstat-parse not built)"
else
    skip "tstat-chunk" ndjson "$NDJSON_BYTES" "n/a (not built)"
fi

unmark_tree() {
    find "$TREE" -maxdepth 2 \( -name .processed -o -name .progress \) -delete
}

if have tstat_send; then
    bench "tstat_send -N --bytes 0" tree "$TREE_BYTES" unmark_tree /dev/null /dev/null \
        "$BIN/tstat_send" -N --all --bytes 0 -S "$SENSOR" -d "$TREE"
else
    skip "tstat_send -N --bytes 0" tree "$TREE_BYTES" "n/a (not built)"
fi

# --- the rows with a broker -----------------------------------------------------
QUEUE="bench_$$_$RANDOM"
CONFIG="$WORK/config.ini"
NODE_UP=0
need_node() {
    [ "$NODE_UP" = 1 ] && return 0
    if [ "$BROKER" = 0 ]; then return 1; fi
    say "starting a private RabbitMQ node"
    if rabbit_node_start "$WORK/rabbit"; then
        rabbit_node_write_config "$CONFIG" "$QUEUE"
        NODE_UP=1
        say "node $RABBIT_NODENAME on 127.0.0.1:$RABBIT_PORT, queue $QUEUE"
        return 0
    fi
    BROKER=0
    FAILED=1
    return 1
}
# Each run starts from a missing queue; the publisher declares it (design §6.4).
fresh_queue() {
    rabbit_node_ctl delete_queue "$QUEUE" >/dev/null 2>&1 || true
}
fresh_queue_and_tree() {
    fresh_queue
    unmark_tree
}
queue_messages() {
    rabbit_node_ctl list_queues name messages 2>/dev/null | awk -v q="$QUEUE" '$1 == q { print $2 }'
}
check_delivered() {
    local label=$1 got
    got=$(queue_messages)
    if [ "${got:-0}" != "$CHUNK_LINES" ]; then
        say "$label: the queue holds ${got:-0} messages, expected $CHUNK_LINES"
        FAILED=1
    fi
}

E2E_LABEL="tstat_send -> broker"
RABBIT_LABEL="tstat-rabbit (pre-made chunks)"
if ! have tstat_send; then
    skip "$E2E_LABEL" tree "$TREE_BYTES" "n/a (not built)"
elif need_node; then
    bench "$E2E_LABEL" tree "$TREE_BYTES" fresh_queue_and_tree /dev/null /dev/null \
        "$BIN/tstat_send" -c "$CONFIG" --all --bytes 0 -S "$SENSOR" -d "$TREE"
    check_delivered "$E2E_LABEL"
else
    skip "$E2E_LABEL" tree "$TREE_BYTES" "n/a (no broker)"
fi
if ! have tstat-rabbit; then
    skip "$RABBIT_LABEL" chunks "$CHUNK_BYTES" "n/a (not built)"
elif [ ! -s "$CHUNKS" ]; then
    skip "$RABBIT_LABEL" chunks 0 "n/a (no chunks: tstat-parse/tstat-chunk not built)"
elif need_node; then
    bench "$RABBIT_LABEL" chunks "$CHUNK_BYTES" fresh_queue "$CHUNKS" /dev/null \
        "$BIN/tstat-rabbit" -c "$CONFIG"
    check_delivered "$RABBIT_LABEL"
else
    skip "$RABBIT_LABEL" chunks "$CHUNK_BYTES" "n/a (no broker)"
fi

# --- the table --------------------------------------------------------------------
WC_MBPS=""
for r in "${ROWS[@]}"; do
    IFS='|' read -r label _ bytes secs _ status <<<"$r"
    if [ "$label" = "wc -l" ] && [ "$status" = ok ]; then
        WC_MBPS=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.6f", b / 1e6 / s }')
    fi
done

echo
printf 'tstat-transport bench: %s dir(s), %s TCP + %s UDP rows each, tree %.1f MB; ' \
    "$DIRS" "$TCP" "$UDP" "$(awk -v b="$TREE_BYTES" 'BEGIN { print b / 1e6 }')"
printf 'best of %s runs (shortest wall time), peak RSS = largest of the runs\n' "$RUNS"
printf '%-32s %-7s %10s %9s %10s %10s %9s\n' program input "input MB" "best s" "MB/s" "peak RSS" "vs wc -l"
for r in "${ROWS[@]}"; do
    IFS='|' read -r label iname bytes secs kib status <<<"$r"
    mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
    if [ "$status" != ok ]; then
        printf '%-32s %-7s %10s  %s\n' "$label" "$iname" "$mb" "$status"
        continue
    fi
    awk -v label="$label" -v iname="$iname" -v b="$bytes" -v s="$secs" -v k="$kib" -v wc="$WC_MBPS" 'BEGIN {
        mbps = b / 1e6 / s
        rss = (k > 0) ? sprintf("%.1f MiB", k / 1024) : "n/a"
        ratio = (wc != "" && mbps > 0) ? sprintf("%.1fx", wc / mbps) : "n/a"
        printf "%-32s %-7s %10.1f %9.3f %10.1f %10s %9s\n", label, iname, b / 1e6, s, mbps, rss, ratio
    }'
done
echo "(vs wc -l: wc -l MB/s divided by this row's MB/s; input: tree = the log files,"
echo " ndjson = tstat-parse --bytes 0 output, chunks = tstat-chunk output of it)"

# End to end against publishing alone (design §10 target: within 1.3×).
e2e="" alone=""
for r in "${ROWS[@]}"; do
    IFS='|' read -r label _ _ secs _ status <<<"$r"
    [ "$status" = ok ] || continue
    if [ "$label" = "$E2E_LABEL" ]; then e2e=$secs; fi
    if [ "$label" = "$RABBIT_LABEL" ]; then alone=$secs; fi
done
if [ -n "$e2e" ] && [ -n "$alone" ]; then
    awk -v a="$e2e" -v b="$alone" 'BEGIN { printf "end to end / tstat-rabbit alone: %.2fx (target <= 1.3x)\n", a / b }'
fi
if [ "$CHUNK_LINES" -gt 0 ]; then
    echo "messages per publish run: $CHUNK_LINES ($(awk -v b="$CHUNK_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }') MB)"
fi
exit "$FAILED"
