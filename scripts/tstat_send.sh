#!/usr/bin/env bash
# tstat_send.sh — the tstat_send job as a pipeline of the filters (design §8.6).
#
# For each ready directory of ROOT, oldest first: its logs are read once
# completely (a log that cannot be, e.g. a .gz Tstat is still writing, leaves
# the directory for a later run: nothing of it is published), then
#
#     tstat-parse DIR | tstat-chunk | tstat-rabbit --message-id-prefix SENSOR@TREE:DIRNAME \
#         --progress DIR/.progress --fingerprint "settings and log identities"
#
# and only when that whole pipeline succeeded (pipefail): tstat-find --mark DIR
# and remove DIR/.progress. tstat-rabbit refuses a progress record made for
# other settings or other logs (exit 3: that directory is reported and left
# unmarked, the others are shipped). A directory without flows above the
# threshold is marked at once, without connecting. A broker failure stops the
# run with status 1; a usage or config error is status 2, before any log is
# read. Like tstat_send, one run per tree: the lock ROOT/.tstat_send.lock
# (flock); a run that finds it taken names the holder and exits 75.
#
# The messages (bodies and ids SENSOR@TREE:DIRNAME:INDEX, TREE from tstat-find --tree-id, DIRNAME the directory's
# path relative to ROOT) are the ones tstat_send publishes for the same tree:
# both run the same library code.
#
# The programs are taken from $TSTAT_BIN_DIR, else the script's own directory
# (an installed copy beside them), else this project's target/release or
# target/debug (the newer build), else PATH.
set -euo pipefail
# The last stage of a pipeline runs in this shell, so it can note whether a
# directory had data (for --single) without a temp file.
shopt -s lastpipe

prog=tstat_send.sh

usage() {
    cat <<EOF
Usage: $prog -d ROOT [OPTIONS]

Ship every finished Tstat directory under ROOT to RabbitMQ with the filters
(tstat-find | tstat-parse | tstat-chunk | tstat-rabbit), marking each one
.processed only when all its messages are confirmed.

Options (as tstat_send):
  -d, --directory ROOT     the Tstat output tree (required)
  -c, --config FILE        config.ini with the [rabbit] section [./config.ini]
  -b, --bytes N            keep flows of at least N bytes (25G, 1.5G, 0 ...) [25Gb]
  -T, --threshold MB       keep flows of at least MB megabytes (10^6 bytes)
  -t, --transport KIND     rabbit (default) or stdout
  -N, --no-transport       print the arrays on stdout and mark nothing
  -s, --single             stop after the first directory that yielded data
  -S, --sensor ID          sensor id [the host name]
  -I, --instance ID        instance id (a JSON string)
      --legacy-udp-duration  the original tool's UDP durations
      --all                ship every directory that is not done
      --settle SECONDS     quiet time after which a directory counts as finished [7200]
      --chunk-size N       objects per message [100]
      --window N           most unconfirmed messages in flight [256]
      --retries N          reconnect-and-resend rounds [5]
      --connect-timeout S  seconds to connect to one broker [10]
      --confirm-timeout S  seconds to wait for a confirm [30]
      --reship DIR         ship DIR again from its start under new message ids
                           (after a refused progress record; repeatable)
  -v, --verbose            report each directory
  -q, --quiet              no summary line
  -h, --help               this text

Exit status: 0 ok, 1 a directory failed (it stays unmarked), 2 usage or
config error, 75 another run holds the tree's lock, 130/143 interrupted.
EOF
}

usage_error() {
    echo "$prog: error: $*" >&2
    echo "Try '$prog --help'." >&2
    exit 2
}

root=""
config=./config.ini
sensor=""
to_stdout=0
single=0
verbose=0
quiet=0
parse_opts=()
find_opts=()
chunk_opts=()
rabbit_opts=()
reship_dirs=()

# Split --opt=value so one case arm handles both spellings.
args=()
for a in "$@"; do
    case $a in
    --*=*) args+=("${a%%=*}" "${a#*=}") ;;
    *) args+=("$a") ;;
    esac
done
set -- "${args[@]+"${args[@]}"}"

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
    -d | --directory | -c | --config | -b | --bytes | -T | --threshold | -t | --transport | \
        -S | --sensor | -I | --instance | --settle | --chunk-size | --window | --retries | \
        --connect-timeout | --confirm-timeout | --reship)
        [ $# -ge 2 ] || usage_error "$opt needs a value"
        val=$2
        shift 2
        ;;
    *)
        val=""
        shift
        ;;
    esac
    case $opt in
    -h | --help)
        usage
        exit 0
        ;;
    -d | --directory) root=$val ;;
    -c | --config) config=$val ;;
    -b | --bytes) parse_opts+=("--bytes=$val") ;;
    -T | --threshold) parse_opts+=("--threshold=$val") ;;
    -t | --transport)
        case $val in
        rabbit) to_stdout=0 ;;
        stdout) to_stdout=1 ;;
        *) usage_error "--transport: expected rabbit or stdout, got '$val'" ;;
        esac
        ;;
    -N | --no-transport) to_stdout=1 ;;
    -s | --single) single=1 ;;
    -S | --sensor) sensor=$val ;;
    -I | --instance) parse_opts+=("--instance=$val") ;;
    --legacy-udp-duration) parse_opts+=(--legacy-udp-duration) ;;
    --all) find_opts+=(--all) ;;
    --settle) find_opts+=("--settle=$val") ;;
    --chunk-size) chunk_opts+=("--size=$val") ;;
    --window | --retries | --connect-timeout | --confirm-timeout) rabbit_opts+=("$opt=$val") ;;
    --reship) reship_dirs+=("$val") ;;
    -v | --verbose | -D | --debug) verbose=1 ;;
    -q | --quiet) quiet=1 ;;
    *) usage_error "unexpected argument '$opt'" ;;
    esac
done

[ -n "$root" ] || usage_error "-d/--directory ROOT is required"
if [ ! -e "$root" ]; then
    usage_error "-d $root: does not exist"
fi
[ -d "$root" ] || usage_error "-d $root: not a directory"

# The host name as the programs read it (cli::hostname), so ids match.
if [ -z "$sensor" ]; then
    sensor=$(cat /proc/sys/kernel/hostname 2>/dev/null || true)
    [ -n "$sensor" ] || sensor=${HOSTNAME:-}
    [ -n "$sensor" ] || sensor=$(hostname 2>/dev/null || true)
    [ -n "$sensor" ] || sensor=localhost
fi
parse_opts+=("--sensor=$sensor")

# Where the programs are.
script_dir=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
bin_dir=""
if [ -n "${TSTAT_BIN_DIR:-}" ]; then
    bin_dir=$TSTAT_BIN_DIR
elif [ -x "$script_dir/tstat-rabbit" ]; then
    bin_dir=$script_dir
else
    # cargo builds into $CARGO_TARGET_DIR when it is set.
    target=${CARGO_TARGET_DIR:-$script_dir/../target}
    rel=$target/release
    dbg=$target/debug
    if [ -x "$rel/tstat-rabbit" ] && { [ ! -x "$dbg/tstat-rabbit" ] || [ "$rel/tstat-rabbit" -nt "$dbg/tstat-rabbit" ]; }; then
        bin_dir=$rel
    elif [ -x "$dbg/tstat-rabbit" ]; then
        bin_dir=$dbg
    fi
fi
bin() {
    if [ -n "$bin_dir" ]; then
        printf '%s/%s' "$bin_dir" "$1"
    elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        echo "$prog: error: $1 not found (build with cargo build --release, or set TSTAT_BIN_DIR)" >&2
        exit 2
    fi
}
FIND=$(bin tstat-find)
PARSE=$(bin tstat-parse)
CHUNK=$(bin tstat-chunk)
RABBIT=$(bin tstat-rabbit)
for p in "$FIND" "$PARSE" "$CHUNK" "$RABBIT"; do
    [ -x "$p" ] || {
        echo "$prog: error: $p is not executable (set TSTAT_BIN_DIR)" >&2
        exit 2
    }
done

# Usage and config errors before any log is read: tstat-parse checks the
# threshold and metadata flags on empty input; tstat-rabbit on empty input
# checks the config and connects once (queue checked or declared).
rc=0
"$PARSE" "${parse_opts[@]}" </dev/null >/dev/null || rc=$?
[ "$rc" -eq 0 ] || exit 2
if [ "$to_stdout" -eq 0 ]; then
    [ -f "$config" ] || usage_error "$config: no such config file (-c)"
    rc=0
    "$RABBIT" -c "$config" "${rabbit_opts[@]+"${rabbit_opts[@]}"}" </dev/null || rc=$?
    case $rc in
    0) ;;
    2) exit 2 ;;
    *)
        echo "$prog: error: cannot publish with $config (see above); nothing shipped" >&2
        exit 1
        ;;
    esac
fi

# One run per tree (the lock tstat_send takes too).
if [ "$to_stdout" -eq 0 ]; then
    lockfile="${root%/}/.tstat_send.lock"
    if ! { exec 9<>"$lockfile"; } 2>/dev/null; then
        echo "$prog: error: cannot lock $lockfile: not writable by $(id -un) (the tree must be writable by this user)" >&2
        exit 1
    fi
    if ! flock -n 9; then
        holder=$(cat -- "$lockfile" 2>/dev/null || true)
        echo "$prog: error: another run is shipping $root: ${holder:-another process} holds $lockfile; nothing done" >&2
        exit 75
    fi
    printf 'pid %s (%s) since %s\n' "$$" "$prog" "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" >"$lockfile"
fi

stopping=0
trap 'stopping=130' INT
trap 'stopping=143' TERM

work=$(mktemp -d "${TMPDIR:-/tmp}/tstat_send.sh.XXXXXX")
trap 'rm -rf "$work"' EXIT

find_rc=0
"$FIND" -0 "${find_opts[@]+"${find_opts[@]}"}" -- "$root" >"$work/dirs" || find_rc=$?
if [ "$find_rc" -eq 2 ]; then
    exit 2
fi
mapfile -d '' -t dirs <"$work/dirs"
reship_flag=()
if [ "${#reship_dirs[@]}" -gt 0 ]; then
    [ "$to_stdout" -eq 0 ] || usage_error "--reship needs the rabbit transport"
    # A directory Tstat still writes is never shipped half-written and marked.
    for r in "${reship_dirs[@]}"; do
        ready=0
        for d in "${dirs[@]+"${dirs[@]}"}"; do
            if [ "$d" -ef "$r" ]; then ready=1; fi
        done
        [ "$ready" -eq 1 ] || usage_error "--reship $r: Tstat is still writing it (no newer directory, logs changed within --settle); nothing shipped: re-ship it once Tstat has finished it"
    done
    dirs=("${reship_dirs[@]}")
    reship_flag=(--reship)
fi
version=$("$PARSE" --version)
# The tree's identity in message ids, as tstat_send gives it.
tree=$("$FIND" --tree-id -- "$root")

had_data=0

# Last stage for -N: pass the arrays through, noting whether there were any.
forward() {
    local c
    IFS= read -r -N 1 c || return 0
    had_data=1
    printf '%s' "$c" && cat
}

# What shapes a directory's messages: the settings and its logs as they are
# now (name, size, mtime, inode). tstat-rabbit refuses a record made otherwise.
fingerprint() {
    local dir=$1
    printf '%s|%s|%s|' "$version" "${parse_opts[*]}" "${chunk_opts[*]+"${chunk_opts[*]}"}"
    # A directory may hold only one of the two logs: the other glob stays
    # unmatched and stat complains; what it printed is the fingerprint.
    { (cd -- "$dir" && stat -c '%n:%s:%Y:%i' log_tcp_complete* log_udp_complete* 2>/dev/null) || true; } |
        tr '\n' ' '
}

# Last stage for RabbitMQ: publish unless the directory yielded nothing.
publish() {
    local dir=$1 name=$2 fp=$3 c
    IFS= read -r -N 1 c || return 0
    had_data=1
    { printf '%s' "$c" && cat; } |
        "$RABBIT" -c "$config" "${rabbit_opts[@]+"${rabbit_opts[@]}"}" \
            --message-id-prefix "$sensor@$tree:$name" --progress "$dir/.progress" \
            --fingerprint "$fp" --generations "${root%/}/.tstat_send.generation" \
            "${reship_flag[@]+"${reship_flag[@]}"}"
}

shipped=0
with_data=0
status=0
for dir in "${dirs[@]+"${dirs[@]}"}"; do
    [ "$stopping" -eq 0 ] || break
    # The directory's path relative to ROOT names it in message ids.
    name=${dir#"${root%/}"/}
    had_data=0
    rc=0
    # Every log read completely first: nothing of a directory is published
    # before it is known to be whole.
    check=0
    "$PARSE" "${parse_opts[@]}" -- "$dir" >/dev/null 2>"$work/check" || check=$?
    cat -- "$work/check" >&2
    if [ "$check" -ne 0 ]; then
        echo "$prog: error: $dir: not marked: a log cannot be read completely; it is shipped once it can" >&2
        status=1
        continue
    fi
    if [ "$to_stdout" -eq 1 ]; then
        "$PARSE" "${parse_opts[@]}" -- "$dir" | "$CHUNK" "${chunk_opts[@]+"${chunk_opts[@]}"}" |
            forward || rc=$?
    else
        fp=$(fingerprint "$dir")
        "$PARSE" "${parse_opts[@]}" -- "$dir" 2>/dev/null | "$CHUNK" "${chunk_opts[@]+"${chunk_opts[@]}"}" |
            publish "$dir" "$name" "$fp" || rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
        echo "$prog: error: $dir: not marked (pipeline status $rc)" >&2
        case $rc in
        130 | 143) status=$rc ;;
        *) status=1 ;;
        esac
        # A refused record is that directory's problem; others still ship.
        if [ "$rc" -eq 3 ]; then
            echo "$prog: to ship it again under new message ids: $prog -d $root --reship $dir" >&2
            continue
        fi
        break
    fi
    if [ "$to_stdout" -eq 0 ]; then
        "$FIND" --mark -- "$dir"
        rm -f -- "$dir/.progress"
        [ "$verbose" -eq 0 ] || echo "$prog: $dir: marked processed" >&2
    fi
    shipped=$((shipped + 1))
    with_data=$((with_data + had_data))
    if [ "$single" -eq 1 ] && [ "$had_data" -eq 1 ]; then
        break
    fi
done

if [ "$quiet" -eq 0 ]; then
    echo "$prog: $shipped of ${#dirs[@]} ready directories done ($with_data with data)" >&2
fi
if [ "$status" -eq 0 ] && [ "$stopping" -ne 0 ]; then
    status=$stopping
fi
if [ "$status" -eq 0 ] && [ "$find_rc" -ne 0 ]; then
    status=1
fi
exit "$status"
