#!/usr/bin/env bash
# Benchmarks of design §10 and issue 13: input MB/s, CPU seconds (user+sys)
# per GB of logs and peak RSS of each stage on a generated Tstat tree, next to
# `wc -l`, `cat` and `zcat` on the same files (the machine's ceiling), each
# also as a ratio measured in the same run; then the goals as one line each.
#
#     scripts/bench.sh                      # the full bench, see below
#     BENCH_TCP=20000 BENCH_UDP=10000 BENCH_SMALL_DIRS=100 BENCH_FIND_DIRS=10000 \
#         scripts/bench.sh                  # a quick try (about a minute)
#     scripts/bench.sh --help               # this text
#
# Needs: cargo (it builds the release binaries itself and finds them through
# `cargo metadata`, wherever CARGO_TARGET_DIR points), GNU time
# (apt-get install time; without it CPU shows n/a and peak RSS is polled),
# gzip and zcat, and rabbitmq-server for the broker rows (a throwaway node on
# private ports, never the system broker; BENCH_BROKER=0 skips those rows).
# Disk: about 5 GB under BENCH_DATA (the trees are kept and reused).
# Time on a 2-core machine: the first run generates about 5 GB of trees (3 to 5
# minutes), then about 6 minutes with BENCH_RUNS=3; later runs reuse the trees.
#
# Environment:
#   BENCH_TCP, BENCH_UDP   rows per directory of the main tree (500000, 300000)
#   BENCH_DIRS             directories of the main tree (1)
#   BENCH_SEED             generator seed (1)
#   BENCH_RUNS             runs per row; the table shows the best (3)
#   BENCH_BROKER=0         skip the rows that need a private RabbitMQ node
#   BENCH_GZ=0             skip the gzip rows (a gzip -6 copy of the main tree)
#   BENCH_SMALL_DIRS       many small directories of ~1 MB each (2000; 0 skips);
#                          compared with the same rows in BENCH_SMALL_FEW (4)
#                          directories, best of BENCH_SMALL_RUNS (2) runs
#   BENCH_FIND_DIRS        directories for the tstat-find row (100000; 0 skips)
#   BENCH_IDLE_DIRS        processed directories beside the live one for the
#                          idle `tstat_send --follow` lines (20000; 0 skips):
#                          CPU-s per idle minute with that history and with
#                          none, over BENCH_IDLE_SECS (60) each
#   BENCH_SENSORS          sensors shipping at once in the "N sensors at once"
#                          rows (10; 0 skips): N copies (hard links) of one
#                          directory of BENCH_SENSOR_TCP, BENCH_SENSOR_UDP rows
#                          (a tenth of the main tree's), each its own -S
#   BENCH_REGEN=1          regenerate the trees even if they exist
#   BENCH_DATA             where trees and pre-made NDJSON/chunks live (./bench-data)
#
# Every figure of a row comes from one run, the best (shortest wall time) of
# BENCH_RUNS runs: its wall time, its CPU (user+sys: getrusage of the child,
# GNU time's %U+%S, which counts the threads and children it waited for) and
# its peak RSS (GNU time's %M, i.e. the kernel's ru_maxrss; without
# /usr/bin/time, VmHWM polled from /proc). A figure that was not measured
# shows n/a. CPU-s/GB divides by the row's input (for the gzip rows: by the
# uncompressed bytes, the logs Tstat wrote). Inputs are read from the page
# cache: every file is read once before timing starts.
#
# A broker row is ok only when every run also delivered what it should (the
# queue or stream holds every message, every directory is marked): a run
# that exits 0 but fails its check makes the row FAILED. The broker rows go
# to a classic queue, a quorum queue (x-queue-type = quorum) and a stream
# (transport = stream), each from a missing queue or stream; the "N sensors
# at once" rows run N tstat_send processes together and count the wall time
# of all of them (CPU: all of them; peak RSS: the largest one).
#
# Programs that are not built yet show "n/a (not built)". Exit status: 0 when
# every row that ran succeeded.
set -euo pipefail
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
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
GZ=${BENCH_GZ:-1}
SMALL_DIRS=${BENCH_SMALL_DIRS:-2000}
SMALL_FEW=${BENCH_SMALL_FEW:-4}
SMALL_RUNS=${BENCH_SMALL_RUNS:-2}
FIND_DIRS=${BENCH_FIND_DIRS:-100000}
IDLE_DIRS=${BENCH_IDLE_DIRS:-20000}
IDLE_SECS=${BENCH_IDLE_SECS:-60}
SENSORS=${BENCH_SENSORS:-10}
SENSOR_TCP=${BENCH_SENSOR_TCP:-$((TCP / 10))}
SENSOR_UDP=${BENCH_SENSOR_UDP:-$((UDP / 10))}
DATA=${BENCH_DATA:-$REPO/bench-data}
SENSOR=bench

say() { echo "bench: $*" >&2; }

# --- build -----------------------------------------------------------------
say "building release binaries and the generator"
cargo build --release --quiet --bins --example gen-tree
# Wherever CARGO_TARGET_DIR (or .cargo/config.toml) puts them.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$TARGET_DIR" ]; then
    say "cargo metadata did not name the target directory"
    exit 1
fi
BIN=$TARGET_DIR/release

# --- measuring ---------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tstat-bench.XXXXXX")
cleanup() {
    rabbit_node_stop
    rm -rf "$WORK"
    # tstat_send marks what it published; leave the reusable trees unmarked.
    local t
    for t in "${MARKED[@]}"; do
        if [ -d "$t" ]; then
            find "$t" -maxdepth 3 \( -name .processed -o -name .progress \) -delete 2>/dev/null || true
        fi
    done
}
MARKED=()
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

# run_once IN OUT ERR CMD...: runs CMD <IN >OUT 2>ERR; sets R_SECS, R_KIB,
# R_CPU (user+sys seconds, "" when unknown) and R_RC.
run_once() {
    local in=$1 out=$2 err=$3
    shift 3
    local t0 t1 pid hwm line
    R_KIB=0
    R_CPU=""
    t0=$(now_ns)
    if [ "$HAVE_GNU_TIME" = 1 ]; then
        if /usr/bin/time -f '%M %U %S' -o "$WORK/time.out" "$@" <"$in" >"$out" 2>"$err"; then
            R_RC=0
        else
            R_RC=$?
        fi
        t1=$(now_ns)
        # On failure GNU time writes "Command exited with ..." first.
        line=$(tail -n 1 "$WORK/time.out" 2>/dev/null || true)
        if [[ "$line" =~ ^([0-9]+)\ ([0-9.]+)\ ([0-9.]+)$ ]]; then
            R_KIB=${BASH_REMATCH[1]}
            R_CPU=$(awk -v u="${BASH_REMATCH[2]}" -v s="${BASH_REMATCH[3]}" 'BEGIN { printf "%.2f", u + s }')
        fi
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

# Results, one row per line: LABEL|INPUT|BYTES|SECS|KIB|STATUS|CPU
ROWS=()
FAILED=0

# bench LABEL INPUT_NAME INPUT_BYTES BEFORE_HOOK IN OUT CMD...: best of RUNS
# (or of $BENCH_N_RUNS when set). BEFORE_HOOK is a function run (untimed)
# before each run ("" for none); $BENCH_CHECK, when set, names a function
# run (untimed) after each run that exited 0: it prints why the run did not
# deliver and returns non-zero, which makes the row FAILED. The row is
# marked ok only after every run passed. Its CPU and peak RSS are those of
# its best-wall run.
bench() {
    local label=$1 iname=$2 ibytes=$3 hook=$4 in=$5 out=$6
    shift 6
    local best="" cpu="" kib=0 i err why runs=${BENCH_N_RUNS:-$RUNS} check=${BENCH_CHECK:-}
    err="$WORK/$(echo "$label" | tr -c 'A-Za-z0-9_-' '_').err"
    say "$label ($runs runs)"
    for ((i = 1; i <= runs; i++)); do
        if [ -n "$hook" ]; then "$hook"; fi
        run_once "$in" "$out" "$err" "$@"
        if [ "$R_RC" != 0 ]; then
            say "$label: exit $R_RC; its stderr:"
            tail -n 20 "$err" >&2 || true
            ROWS+=("$label|$iname|$ibytes|||FAILED (exit $R_RC)|")
            FAILED=1
            return 0
        fi
        if [ -n "$check" ] && ! why=$("$check"); then
            say "$label: run $i exited 0 but $why"
            ROWS+=("$label|$iname|$ibytes|||FAILED ($why)|")
            FAILED=1
            return 0
        fi
        if [ -z "$best" ] || awk -v a="$R_SECS" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$R_SECS
            cpu=$R_CPU
            kib=$R_KIB
        fi
    done
    ROWS+=("$label|$iname|$ibytes|$best|$kib|ok|$cpu")
}

skip() { ROWS+=("$1|$2|$3|||$4|"); }

# row_field LABEL N: field N (1-based) of the row LABEL when it is ok.
row_field() {
    local r
    for r in "${ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$r"
        if [ "${f[0]}" = "$1" ] && [ "${f[5]}" = ok ]; then
            echo "${f[$(($2 - 1))]}"
            return 0
        fi
    done
    return 0
}

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
MARKED+=("$TREE")
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

# --- more trees: gzip copy, many small directories, 100k directories ---------
# gen_tree NAME ARGS...: generates $DATA/NAME once (a stamp marks it complete).
gen_tree() {
    local name=$1
    shift
    if [ "${BENCH_REGEN:-0}" = 1 ] || [ ! -f "$DATA/$name.ok" ] || [ ! -d "$DATA/$name" ]; then
        say "generating $DATA/$name"
        rm -rf "${DATA:?}/$name" "$DATA/$name.ok"
        "$BIN/examples/gen-tree" "$DATA/$name" "$@"
        touch "$DATA/$name.ok"
    fi
}

# The main tree as `tstat -Z` writes it: every log gzipped (level 6, zlib's
# default, which Tstat uses).
GZ_TREE="$DATA/$NAME-gz"
GZ_FILES=()
GZ_BYTES=0
if [ "$GZ" = 1 ]; then
    if [ "${BENCH_REGEN:-0}" = 1 ] || [ ! -f "$GZ_TREE.ok" ] || [ "$STAMP" -nt "$GZ_TREE.ok" ]; then
        say "gzipping the tree into $GZ_TREE"
        rm -rf "$GZ_TREE" "$GZ_TREE.ok"
        for f in "${FILES[@]}"; do
            d="$GZ_TREE/$(basename "$(dirname "$f")")"
            mkdir -p "$d"
            gzip -6 -c "$f" >"$d/$(basename "$f").gz"
            touch -r "$f" "$d/$(basename "$f").gz"
        done
        touch "$GZ_TREE.ok"
    fi
    MARKED+=("$GZ_TREE")
    mapfile -t GZ_OUTDIRS < <(find "$GZ_TREE" -mindepth 1 -maxdepth 1 -type d -name '*.out' | sort)
    mapfile -t GZ_FILES < <(find "$GZ_TREE" -mindepth 2 -maxdepth 2 -type f -name 'log_*_complete.gz' | sort)
    GZ_BYTES=$(file_bytes "${GZ_FILES[@]}")
    cat "${GZ_FILES[@]}" >/dev/null
fi

# Tstat with `dirs = 1` rotates every 5 minutes: many directories of ~1 MB
# (1,430 TCP + 860 UDP rows), and the same rows in a few large directories.
SMALL_TCP=1430
SMALL_UDP=860
if [ "$SMALL_DIRS" -gt 0 ]; then
    SMALL_NAME="small-t$SMALL_TCP-u$SMALL_UDP-d$SMALL_DIRS-s$SEED"
    FEW_NAME="few-t$((SMALL_TCP * SMALL_DIRS / SMALL_FEW))-u$((SMALL_UDP * SMALL_DIRS / SMALL_FEW))-d$SMALL_FEW-s$SEED"
    gen_tree "$SMALL_NAME" --dirs "$SMALL_DIRS" --tcp "$SMALL_TCP" --udp "$SMALL_UDP" --seed "$SEED"
    gen_tree "$FEW_NAME" --dirs "$SMALL_FEW" --tcp "$((SMALL_TCP * SMALL_DIRS / SMALL_FEW))" \
        --udp "$((SMALL_UDP * SMALL_DIRS / SMALL_FEW))" --seed "$SEED"
    SMALL_TREE="$DATA/$SMALL_NAME"
    FEW_TREE="$DATA/$FEW_NAME"
    MARKED+=("$SMALL_TREE" "$FEW_TREE")
    find "$SMALL_TREE" "$FEW_TREE" -maxdepth 2 \( -name .processed -o -name .progress \) -delete
    SMALL_BYTES=$(find "$SMALL_TREE" -mindepth 2 -maxdepth 2 -type f -name 'log_*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    FEW_BYTES=$(find "$FEW_TREE" -mindepth 2 -maxdepth 2 -type f -name 'log_*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    find "$SMALL_TREE" "$FEW_TREE" -mindepth 2 -maxdepth 2 -type f -name 'log_*' -exec cat {} + >/dev/null
fi

# tstat-find's tree: directories of one TCP and one UDP row each.
if [ "$FIND_DIRS" -gt 0 ]; then
    FIND_TREE="$DATA/find-d$FIND_DIRS"
    gen_tree "find-d$FIND_DIRS" --dirs "$FIND_DIRS" --tcp 1 --udp 1 --seed "$SEED" 2>/dev/null
    find "$FIND_TREE" -printf "%s\n" >/dev/null # warm the dentry and inode caches
fi

# The sensors' trees: SENSORS copies (hard links: one page cache) of one
# directory; tstat_send writes only its markers next to the logs.
SENSOR_BYTES=0
SENSOR_LINES=0
SENSOR_CHUNK_BYTES=0
if [ "$SENSORS" -gt 0 ] && [ "$BROKER" != 0 ]; then
    SENSOR_NAME="sensor-t$SENSOR_TCP-u$SENSOR_UDP-s$SEED"
    gen_tree "$SENSOR_NAME" --dirs 1 --tcp "$SENSOR_TCP" --udp "$SENSOR_UDP" --seed "$SEED"
    SENSORS_ROOT="$DATA/$SENSOR_NAME-x$SENSORS"
    for ((i = 1; i <= SENSORS; i++)); do
        if [ ! -d "$SENSORS_ROOT/s$i" ] || [ "$DATA/$SENSOR_NAME.ok" -nt "$SENSORS_ROOT/s$i" ]; then
            rm -rf "${SENSORS_ROOT:?}/s$i" "$SENSORS_ROOT/s$i.tmp"
            mkdir -p "$SENSORS_ROOT"
            cp -al "$DATA/$SENSOR_NAME" "$SENSORS_ROOT/s$i.tmp" 2>/dev/null ||
                cp -a "$DATA/$SENSOR_NAME" "$SENSORS_ROOT/s$i.tmp"
            mv "$SENSORS_ROOT/s$i.tmp" "$SENSORS_ROOT/s$i"
        fi
    done
    MARKED+=("$SENSORS_ROOT")
    find "$SENSORS_ROOT" -mindepth 3 -maxdepth 3 \( -name .processed -o -name .progress \) -delete
    mapfile -t SENSOR_FILES < <(find "$SENSORS_ROOT" -mindepth 3 -maxdepth 3 -type f -name 'log_*_complete' | sort)
    SENSOR_BYTES=$(file_bytes "${SENSOR_FILES[@]}")
    cat "${SENSOR_FILES[@]}" >/dev/null
    # Messages of one sensor: one directory, so what tstat-chunk makes of it.
    if have tstat-parse && have tstat-chunk; then
        read -r SENSOR_LINES SENSOR_CHUNK_BYTES < <("$BIN/tstat-parse" --bytes 0 -S "$SENSOR" "$DATA/$SENSOR_NAME"/*.out | "$BIN/tstat-chunk" | wc -lc)
    fi
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

# The gzip path against zcat on the same files; MB/s and CPU-s/GB count the
# uncompressed bytes (the logs as Tstat would have written them plain).
if [ "$GZ" = 1 ]; then
    bench "zcat" gz "$TREE_BYTES" "" /dev/null /dev/null zcat "${GZ_FILES[@]}"
    if have tstat-parse; then
        bench "tstat-parse --bytes 25G (gz)" gz "$TREE_BYTES" "" /dev/null /dev/null \
            "$BIN/tstat-parse" --bytes 25G -S "$SENSOR" "${GZ_OUTDIRS[@]}"
        bench "tstat-parse --bytes 0 (gz)" gz "$TREE_BYTES" "" /dev/null /dev/null \
            "$BIN/tstat-parse" --bytes 0 -S "$SENSOR" "${GZ_OUTDIRS[@]}"
    else
        skip "tstat-parse --bytes 25G (gz)" gz "$TREE_BYTES" "n/a (not built)"
        skip "tstat-parse --bytes 0 (gz)" gz "$TREE_BYTES" "n/a (not built)"
    fi
fi

if [ "$FIND_DIRS" -gt 0 ]; then
    if have tstat-find; then
        bench "tstat-find ($FIND_DIRS dirs)" dirs 0 "" /dev/null /dev/null \
            "$BIN/tstat-find" "$FIND_TREE"
    else
        skip "tstat-find ($FIND_DIRS dirs)" dirs 0 "n/a (not built)"
    fi
fi

# Idle `tstat_send --follow` (issue 20): CPU seconds per minute while nothing
# is written, following a live directory that has IDLE_DIRS processed ones
# beside it, with nothing to follow (all processed), and on a tree of the
# live directory alone. -N: the same passes and looks without a broker.
IDLE_LINES=()
# idle_cpu ROOT: CPU-s per minute of `tstat_send --follow -N` idling on ROOT.
idle_cpu() {
    local pid a b hz
    hz=$(getconf CLK_TCK)
    "$BIN/tstat_send" --follow -N -q -b 0 -S "$SENSOR" -d "$1" >/dev/null 2>"$WORK/idle.err" &
    pid=$!
    sleep 5 # its first pass and the first look at the live logs
    a=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    sleep "$IDLE_SECS"
    b=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    kill -TERM "$pid"
    wait "$pid" || true
    awk -v a="$a" -v b="$b" -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN { printf "%.3f", (b - a) / hz / s * 60 }'
}
if [ "$IDLE_DIRS" -gt 0 ] && have tstat_send; then
    IDLE_TREE="$WORK/idle"
    HEADER_LINE=$(head -n 1 "$REPO/tests/fixtures/real-3.3/2024_06_08_09_10.out/log_tcp_complete")
    say "idle --follow: making $IDLE_DIRS processed directories"
    mkdir -p "$IDLE_TREE/history"
    (
        cd "$IDLE_TREE/history"
        for ((i = 0; i < IDLE_DIRS; i++)); do
            printf '%s\n' "2000_$((i / 8760))_$((i % 8760)).out"
        done | xargs mkdir
        for d in *.out; do
            printf '%s\n' "$HEADER_LINE" >"$d/log_tcp_complete"
            printf processed >"$d/.processed"
        done
    )
    mkdir -p "$IDLE_TREE/alone"
    for t in history alone; do
        mkdir -p "$IDLE_TREE/$t/9999_12_31_23_00.out"
        printf '%s\n' "$HEADER_LINE" >"$IDLE_TREE/$t/9999_12_31_23_00.out/log_tcp_complete"
    done
    say "idle --follow: following beside $IDLE_DIRS processed directories (${IDLE_SECS} s)"
    v=$(idle_cpu "$IDLE_TREE/history")
    IDLE_LINES+=("following, $IDLE_DIRS processed beside it:|$v")
    rm -rf "$IDLE_TREE/history/9999_12_31_23_00.out"
    say "idle --follow: nothing to follow, $IDLE_DIRS processed directories (${IDLE_SECS} s)"
    v=$(idle_cpu "$IDLE_TREE/history")
    IDLE_LINES+=("nothing to follow, $IDLE_DIRS processed:|$v")
    say "idle --follow: the live directory alone (${IDLE_SECS} s)"
    v=$(idle_cpu "$IDLE_TREE/alone")
    IDLE_LINES+=("following, the live directory alone:|$v")
    rm -rf "$IDLE_TREE"
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
unmark_small() {
    find "$SMALL_TREE" "$FEW_TREE" -maxdepth 2 \( -name .processed -o -name .progress \) -delete
}
SMALL_N_LABEL="tstat_send -N -b 25G ($SMALL_DIRS dirs)"
FEW_N_LABEL="tstat_send -N -b 25G ($SMALL_FEW dirs)"
SMALL_B_LABEL="tstat_send -b 25G ($SMALL_DIRS dirs) -> broker"
FEW_B_LABEL="tstat_send -b 25G ($SMALL_FEW dirs) -> broker"

if have tstat_send; then
    bench "tstat_send -N --bytes 0" tree "$TREE_BYTES" unmark_tree /dev/null /dev/null \
        "$BIN/tstat_send" -N --all --bytes 0 -S "$SENSOR" -d "$TREE"
else
    skip "tstat_send -N --bytes 0" tree "$TREE_BYTES" "n/a (not built)"
fi
# Per-directory cost without a broker (finding, opening, parse set-up); the
# production threshold, so parsing itself is a small part of the time.
if [ "$SMALL_DIRS" -gt 0 ] && have tstat_send; then
    BENCH_N_RUNS=$SMALL_RUNS bench "$FEW_N_LABEL" tree "$FEW_BYTES" unmark_small /dev/null /dev/null \
        "$BIN/tstat_send" -N --all -S "$SENSOR" -d "$FEW_TREE"
    BENCH_N_RUNS=$SMALL_RUNS bench "$SMALL_N_LABEL" tree "$SMALL_BYTES" unmark_small /dev/null /dev/null \
        "$BIN/tstat_send" -N --all -S "$SENSOR" -d "$SMALL_TREE"
fi

# --- the rows with a broker -----------------------------------------------------
QUEUE="bench_$$_$RANDOM"
CONFIG="$WORK/config.ini"
QQUEUE="${QUEUE}_quorum"
QCONFIG="$WORK/quorum.ini"
# A new stream for every run (a deleted stream's name is not reused at once).
STREAM=""
STREAM_N=0
SCONFIG="$WORK/stream.ini"
NODE_UP=0
need_node() {
    [ "$NODE_UP" = 1 ] && return 0
    if [ "$BROKER" = 0 ]; then return 1; fi
    say "starting a private RabbitMQ node"
    if RABBIT_STREAM=1 rabbit_node_start "$WORK/rabbit"; then
        rabbit_node_write_config "$CONFIG" "$QUEUE"
        rabbit_node_write_config "$QCONFIG" "$QQUEUE"
        printf '[rabbit_queue_options]\ndurable = true\nx-queue-type = quorum\n' >>"$QCONFIG"
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
    rabbit_node_ctl list_queues name messages 2>/dev/null | awk -v q="${1:-$QUEUE}" '$1 == q { print $2 }'
}
fresh_quorum_and_tree() {
    rabbit_node_ctl delete_queue "$QQUEUE" >/dev/null 2>&1 || true
    unmark_tree
}
# drop_queues: deletes what the rows published (a gigabyte each at the
# default size) before the next row, so the node's disk holds one at a time.
drop_queues() {
    local q
    for q in "$QUEUE" "$QQUEUE" "$STREAM"; do
        if [ -n "$q" ]; then rabbit_node_ctl delete_queue "$q" >/dev/null 2>&1 || true; fi
    done
}
fresh_stream() {
    if [ -n "$STREAM" ]; then rabbit_node_ctl delete_queue "$STREAM" >/dev/null 2>&1 || true; fi
    STREAM_N=$((STREAM_N + 1))
    STREAM="${QUEUE}_stream_$STREAM_N"
    rabbit_node_write_stream_config "$SCONFIG" "$STREAM"
}
fresh_stream_and_tree() {
    fresh_stream
    unmark_tree
}
unmark_sensors() {
    find "$SENSORS_ROOT" -mindepth 3 -maxdepth 3 \( -name .processed -o -name .progress \) -delete
}
fresh_stream_and_sensors() {
    fresh_stream
    unmark_sensors
}
fresh_quorum_and_sensors() {
    rabbit_node_ctl delete_queue "$QQUEUE" >/dev/null 2>&1 || true
    unmark_sensors
}
# Checks for BENCH_CHECK (see bench): silent when the run delivered, else
# they print what is wrong and fail.
#
# check_delivered: the queue holds every message of the run. The count
# rabbitmqctl reports may trail the confirms a little, so it is polled (up
# to 15 s) until it is the expected one.
check_delivered() { holds "$QUEUE" "$CHUNK_LINES"; }
# holds QUEUE N: QUEUE (a queue or a stream) holds N messages. A stream's
# count trails by the statistics interval (about 5 s), so up to 30 s.
holds() {
    local got="" i
    for ((i = 0; i < 60; i++)); do
        got=$(queue_messages "$1")
        if [ "${got:-0}" = "$2" ]; then return 0; fi
        sleep 0.5
    done
    echo "$1 holds ${got:-0} messages, expected $2"
    return 1
}
# marked_all ROOT N: all N directories of ROOT are marked done.
marked_all() {
    local got
    got=$(find "$1" -mindepth 2 -maxdepth 2 -name .processed | wc -l)
    if [ "$got" != "$2" ]; then
        echo "$got directories marked .processed, expected $2"
        return 1
    fi
}
check_marked_tree() { marked_all "$TREE" "${#OUTDIRS[@]}"; }
check_stream_tree() { check_marked_tree && stream_holds "$STREAM" "$CHUNK_LINES" "$CHUNK_BYTES"; }
# stream_holds STREAM N BYTES: like holds, but a stream's count also counts
# the producer-tracking record each new segment file begins with (one per
# 500 MB segment, RabbitMQ's default size; tstat_send confirmed N), so up to
# BYTES / 500 MB more are accepted; fewer than N never.
stream_holds() {
    local got="" i extra=$(($3 / 500000000))
    for ((i = 0; i < 60; i++)); do
        got=$(queue_messages "$1")
        if [ "${got:-0}" -ge "$2" ] && [ "${got:-0}" -le "$(($2 + extra))" ]; then return 0; fi
        sleep 0.5
    done
    echo "$1 holds ${got:-0} messages, expected $2 (up to $extra more: segment tracking records)"
    return 1
}
check_quorum_tree() { check_marked_tree && holds "$QQUEUE" "$CHUNK_LINES"; }
check_marked_sensors() {
    local got
    got=$(find "$SENSORS_ROOT" -mindepth 3 -maxdepth 3 -name .processed | wc -l)
    if [ "$got" != "$SENSORS" ]; then
        echo "$got sensor directories marked .processed, expected $SENSORS"
        return 1
    fi
}
check_stream_sensors() { check_marked_sensors && stream_holds "$STREAM" "$((SENSORS * SENSOR_LINES))" "$((SENSORS * SENSOR_CHUNK_BYTES))"; }
check_quorum_sensors() { check_marked_sensors && holds "$QQUEUE" "$((SENSORS * SENSOR_LINES))"; }
check_marked_few() { marked_all "$FEW_TREE" "$SMALL_FEW"; }
check_marked_small() { marked_all "$SMALL_TREE" "$SMALL_DIRS"; }
fresh_queue_and_small() {
    fresh_queue
    unmark_small
}

E2E_LABEL="tstat_send -> broker"
E2E25_LABEL="tstat_send -b 25G -> broker"
RABBIT_LABEL="tstat-rabbit (pre-made chunks)"
CONSUME_LABEL="tstat-consume (queue -> NDJSON out)"
# refill_queue: the chunks published again into an empty queue.
refill_queue() {
    fresh_queue
    "$BIN/tstat-rabbit" -c "$CONFIG" <"$CHUNKS" >/dev/null 2>&1
}
# check_consumed: every document came back, as tstat-parse wrote it.
check_consumed() {
    cmp -s "$WORK/consumed.ndjson" "$NDJSON" || { echo "the documents read back differ from tstat-parse's"; return 1; }
}
QUORUM_LABEL="tstat_send -> quorum queue"
STREAM_LABEL="tstat_send -> stream"
SENS_STREAM_LABEL="$SENSORS sensors at once -> stream"
SENS_QUORUM_LABEL="$SENSORS sensors at once -> quorum queue"
# sensors.sh BIN CONFIG ROOT N: N tstat_send at once, one per copy, each its
# own -S; fails when any of them fails.
cat >"$WORK/sensors.sh" <<'EOF'
#!/usr/bin/env bash
bin=$1 config=$2 root=$3 n=$4
pids=()
for ((i = 1; i <= n; i++)); do
    "$bin" -c "$config" --all --bytes 0 -S "bench-s$i" -d "$root/s$i" &
    pids+=("$!")
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit "$rc"
EOF
chmod +x "$WORK/sensors.sh"
if ! have tstat_send; then
    for l in "$E2E_LABEL" "$E2E25_LABEL" "$QUORUM_LABEL" "$STREAM_LABEL"; do
        skip "$l" tree "$TREE_BYTES" "n/a (not built)"
    done
elif need_node; then
    BENCH_CHECK=check_delivered bench "$E2E_LABEL" tree "$TREE_BYTES" fresh_queue_and_tree \
        /dev/null /dev/null "$BIN/tstat_send" -c "$CONFIG" --all --bytes 0 -S "$SENSOR" -d "$TREE"
    BENCH_CHECK=check_marked_tree bench "$E2E25_LABEL" tree "$TREE_BYTES" fresh_queue_and_tree \
        /dev/null /dev/null "$BIN/tstat_send" -c "$CONFIG" --all --bytes 25G -S "$SENSOR" -d "$TREE"
    BENCH_CHECK=check_quorum_tree bench "$QUORUM_LABEL" tree "$TREE_BYTES" fresh_quorum_and_tree \
        /dev/null /dev/null "$BIN/tstat_send" -c "$QCONFIG" --all --bytes 0 -S "$SENSOR" -d "$TREE"
    drop_queues
    BENCH_CHECK=check_stream_tree bench "$STREAM_LABEL" tree "$TREE_BYTES" fresh_stream_and_tree \
        /dev/null /dev/null "$BIN/tstat_send" -c "$SCONFIG" --all --bytes 0 -S "$SENSOR" -d "$TREE"
    drop_queues
else
    for l in "$E2E_LABEL" "$E2E25_LABEL" "$QUORUM_LABEL" "$STREAM_LABEL"; do
        skip "$l" tree "$TREE_BYTES" "n/a (no broker)"
    done
fi
if ! have tstat-rabbit; then
    skip "$RABBIT_LABEL" chunks "$CHUNK_BYTES" "n/a (not built)"
elif [ ! -s "$CHUNKS" ]; then
    skip "$RABBIT_LABEL" chunks 0 "n/a (no chunks: tstat-parse/tstat-chunk not built)"
elif need_node; then
    BENCH_CHECK=check_delivered bench "$RABBIT_LABEL" chunks "$CHUNK_BYTES" fresh_queue "$CHUNKS" \
        /dev/null "$BIN/tstat-rabbit" -c "$CONFIG"
    # Reading them back: the queue refilled (untimed) before each run; the
    # row's MB are the NDJSON written, which must be tstat-parse's, byte
    # for byte.
    if have tstat-consume; then
        BENCH_CHECK=check_consumed bench "$CONSUME_LABEL" ndjson "$NDJSON_BYTES" refill_queue \
            /dev/null "$WORK/consumed.ndjson" "$BIN/tstat-consume" -c "$CONFIG" --count "$CHUNK_LINES" -q
    else
        skip "$CONSUME_LABEL" ndjson "$NDJSON_BYTES" "n/a (not built)"
    fi
    drop_queues
else
    skip "$RABBIT_LABEL" chunks "$CHUNK_BYTES" "n/a (no broker)"
fi
# Per-directory cost with the broker: the same rows in many small and in a
# few large directories (each directory: its progress record, its messages
# and confirms, its .processed marker; design §8.7).
if [ "$SMALL_DIRS" -gt 0 ] && have tstat_send && need_node; then
    BENCH_N_RUNS=$SMALL_RUNS BENCH_CHECK=check_marked_few bench "$FEW_B_LABEL" tree "$FEW_BYTES" \
        fresh_queue_and_small /dev/null /dev/null \
        "$BIN/tstat_send" -c "$CONFIG" --all -S "$SENSOR" -d "$FEW_TREE"
    BENCH_N_RUNS=$SMALL_RUNS BENCH_CHECK=check_marked_small bench "$SMALL_B_LABEL" tree "$SMALL_BYTES" \
        fresh_queue_and_small /dev/null /dev/null \
        "$BIN/tstat_send" -c "$CONFIG" --all -S "$SENSOR" -d "$SMALL_TREE"
fi

# Many sensors at once (design §14): aggregate input and messages over the
# wall time of all of them.
if [ "$SENSORS" -gt 0 ] && [ "$SENSOR_LINES" -gt 0 ] && have tstat_send && need_node; then
    BENCH_CHECK=check_stream_sensors bench "$SENS_STREAM_LABEL" tree "$SENSOR_BYTES" \
        fresh_stream_and_sensors /dev/null /dev/null \
        "$WORK/sensors.sh" "$BIN/tstat_send" "$SCONFIG" "$SENSORS_ROOT" "$SENSORS"
    drop_queues
    BENCH_CHECK=check_quorum_sensors bench "$SENS_QUORUM_LABEL" tree "$SENSOR_BYTES" \
        fresh_quorum_and_sensors /dev/null /dev/null \
        "$WORK/sensors.sh" "$BIN/tstat_send" "$QCONFIG" "$SENSORS_ROOT" "$SENSORS"
elif [ "$SENSORS" -gt 0 ]; then
    skip "$SENS_STREAM_LABEL" tree "$SENSOR_BYTES" "n/a (no broker, or tstat_send/tstat-parse/tstat-chunk not built)"
    skip "$SENS_QUORUM_LABEL" tree "$SENSOR_BYTES" "n/a (no broker, or tstat_send/tstat-parse/tstat-chunk not built)"
fi

# --- the table --------------------------------------------------------------------
WC_MBPS=""
for r in "${ROWS[@]}"; do
    IFS='|' read -r label _ bytes secs _ status _ <<<"$r"
    if [ "$label" = "wc -l" ] && [ "$status" = ok ]; then
        WC_MBPS=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.6f", b / 1e6 / s }')
    fi
done

echo
printf 'tstat-transport bench: %s dir(s), %s TCP + %s UDP rows each, tree %.1f MB; ' \
    "$DIRS" "$TCP" "$UDP" "$(awk -v b="$TREE_BYTES" 'BEGIN { print b / 1e6 }')"
printf 'best of %s runs (shortest wall time); CPU and peak RSS are those of that same run\n' "$RUNS"
printf '%-40s %-6s %9s %8s %9s %7s %8s %10s %8s\n' program input "input MB" "best s" "MB/s" "CPU s" "CPU-s/GB" "peak RSS" "vs wc -l"
for r in "${ROWS[@]}"; do
    IFS='|' read -r label iname bytes secs kib status cpu <<<"$r"
    mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
    if [ "$status" != ok ]; then
        printf '%-40s %-6s %9s  %s\n' "$label" "$iname" "$mb" "$status"
        continue
    fi
    awk -v label="$label" -v iname="$iname" -v b="$bytes" -v s="$secs" -v k="$kib" -v wc="$WC_MBPS" -v cpu="$cpu" 'BEGIN {
        mbps = (b > 0) ? sprintf("%.1f", b / 1e6 / s) : "-"
        rss = (k > 0) ? sprintf("%.1f MiB", k / 1024) : "n/a"
        ratio = (wc != "" && b > 0) ? sprintf("%.1fx", wc / (b / 1e6 / s)) : "-"
        c = (cpu != "") ? sprintf("%.2f", cpu) : "n/a"
        cgb = (cpu != "" && b > 0) ? sprintf("%.2f", cpu / (b / 1e9)) : "-"
        printf "%-40s %-6s %9.1f %8.3f %9s %7s %8s %10s %8s\n", label, iname, b / 1e6, s, mbps, c, cgb, rss, ratio
    }'
done
echo "(vs wc -l: wc -l MB/s divided by this row's MB/s; CPU-s/GB: user+sys seconds per GB of"
echo " input; input: tree = the log files, gz = the same logs gzipped (MB and MB/s count them"
echo " uncompressed), ndjson = tstat-parse --bytes 0 output, chunks = tstat-chunk output of it)"
echo

# The goals of issue 13, each a ratio or a figure from this run.
goal() { printf '%-46s %s\n' "$1" "$2"; }
# An awk function: peak RSS in KiB as MiB, or n/a when it was not measured.
AWK_RSS='function rss(k) { return (k > 0) ? sprintf("%.1f MiB", k / 1024) : "n/a" } '
cpu_gb() { # LABEL: CPU-s/GB of the row, or empty
    local c b
    c=$(row_field "$1" 7)
    b=$(row_field "$1" 3)
    if [ -n "$c" ] && [ -n "$b" ] && [ "$b" -gt 0 ]; then awk -v c="$c" -v b="$b" 'BEGIN { printf "%.2f", c / (b / 1e9) }'; fi
}
v=$(cpu_gb "$E2E_LABEL")
[ -z "$v" ] || goal "CPU per GB, tstat_send -b 0 -> broker:" "$v CPU-s/GB (goal <= 6)"
v=$(cpu_gb "$E2E25_LABEL")
[ -z "$v" ] || goal "CPU per GB, tstat_send -b 25G -> broker:" "$v CPU-s/GB"
s0=$(row_field "tstat-parse --bytes 0" 4)
if [ -n "$s0" ] && [ -n "$WC_MBPS" ]; then
    goal "full output, tstat-parse -b 0:" "$(awk -v b="$TREE_BYTES" -v s="$s0" -v wc="$WC_MBPS" 'BEGIN {
        m = b / 1e6 / s; printf "%.1fx wc -l (goal <= 8x), %.0f MB/s (goal >= 550)", wc / m, m }')"
fi
zs=$(row_field "zcat" 4)
for l in "tstat-parse --bytes 25G (gz)" "tstat-parse --bytes 0 (gz)"; do
    gs=$(row_field "$l" 4)
    gk=$(row_field "$l" 5)
    if [ -n "$zs" ] && [ -n "$gs" ]; then
        goal "gzip, ${l% (gz)}:" "$(awk -v z="$zs" -v g="$gs" -v k="$gk" "$AWK_RSS"'BEGIN {
            printf "%.2fx the throughput of zcat (goal >= 2x), peak RSS %s (goal <= 32 MiB)", z / g, rss(k) }')"
    fi
done
for pair in "$SMALL_N_LABEL|$FEW_N_LABEL" "$SMALL_B_LABEL|$FEW_B_LABEL"; do
    ms=$(row_field "${pair%|*}" 4)
    fs=$(row_field "${pair#*|}" 4)
    if [ -n "$ms" ] && [ -n "$fs" ]; then
        # The few-directory time scaled to the many-directory bytes.
        goal "per directory, ${pair%|*}:" "$(awk -v m="$ms" -v f="$fs" -v mb="$SMALL_BYTES" -v fb="$FEW_BYTES" -v n="$SMALL_DIRS" 'BEGIN {
            printf "%.1f ms over the same rows in few directories (goal <= 5 ms)", (m - f * mb / fb) / n * 1000 }')"
    fi
done
fs=$(row_field "tstat-find ($FIND_DIRS dirs)" 4)
fk=$(row_field "tstat-find ($FIND_DIRS dirs)" 5)
if [ -n "$fs" ]; then
    goal "tstat-find on $FIND_DIRS directories:" "$(awk -v s="$fs" -v k="$fk" "$AWK_RSS"'BEGIN {
        printf "%.2f s (goal <= 1 s), peak RSS %s", s, rss(k) }')"
fi
cs=$(row_field "$CONSUME_LABEL" 4)
ps=$(row_field "tstat-parse --bytes 0" 4)
if [ -n "$cs" ] && [ -s "$NDJSON" ]; then
    docs=$(wc -l <"$NDJSON")
    goal "reading back, $CONSUME_LABEL:" "$(awk -v s="$cs" -v p="$ps" -v d="$docs" -v b="$NDJSON_BYTES" 'BEGIN {
        printf "%.0f documents/s, %.1f MB/s out", d / s, b / 1e6 / s
        if (p != "") printf " (tstat-parse -b 0 on the same flows: %.0f documents/s, %.1f MB/s)", d / p, b / 1e6 / p }')"
fi
alone=$(row_field "$RABBIT_LABEL" 4)
for l in "$E2E_LABEL" "$QUORUM_LABEL" "$STREAM_LABEL"; do
    e2e=$(row_field "$l" 4)
    if [ -n "$e2e" ] && [ -n "$alone" ]; then
        # Against tstat-rabbit's time for the same messages into a classic queue.
        goal "end to end / tstat-rabbit alone ($l):" "$(awk -v a="$e2e" -v b="$alone" 'BEGIN { printf "%.2fx (goal <= 1.15x for the classic queue)", a / b }')"
    fi
done
for l in "$SENS_STREAM_LABEL" "$SENS_QUORUM_LABEL"; do
    ss=$(row_field "$l" 4)
    if [ -n "$ss" ]; then
        goal "$l:" "$(awk -v s="$ss" -v b="$SENSOR_BYTES" -v m="$((SENSORS * SENSOR_LINES))" 'BEGIN {
            printf "%.1f MB/s input, %.0f messages/s (%d messages) over the wall time of all", b / 1e6 / s, m / s, m }')"
    fi
done
for l in "${IDLE_LINES[@]}"; do
    goal "idle tstat_send --follow, ${l%|*}" "${l#*|} CPU-s per idle minute (goal <= 0.1, not growing with history)"
done
if [ "$CHUNK_LINES" -gt 0 ]; then
    echo "messages per publish run: $CHUNK_LINES ($(awk -v b="$CHUNK_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }') MB)"
fi
exit "$FAILED"
