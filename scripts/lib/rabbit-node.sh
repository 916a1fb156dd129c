# shellcheck shell=bash
# A throwaway private RabbitMQ node, for scripts (bench.sh, demo.sh).
#
# The recipe is ../shared/rabbitmq-node.md: the Erlang scripts in
# /usr/lib/rabbitmq/bin run directly (the /usr/sbin wrappers switch to the
# rabbitmq user), everything under one directory, three private ports (AMQP,
# Erlang distribution, epmd), so the node never touches the system broker on
# 5672 or the system epmd on 4369.
#
# Usage (source this file; it sets no shell options of its own):
#
#     . scripts/lib/rabbit-node.sh
#     dir=$(mktemp -d)
#     trap 'rabbit_node_stop; rm -rf "$dir"' EXIT
#     rabbit_node_start "$dir"          # sets RABBIT_PORT, RABBIT_NODENAME, ...
#     rabbit_node_write_config "$dir/config.ini" "my_queue"
#     rabbit_node_ctl list_queues name messages
#
# rabbit_node_start exports RABBIT_HOST (127.0.0.1) and RABBIT_PORT (the AMQP
# port) and sets RABBIT_NODE_DIR, RABBIT_NODENAME, RABBIT_DIST_PORT,
# RABBIT_EPMD_PORT and RABBIT_SERVER_PID. The node's environment (its HOME,
# for the private Erlang cookie) is passed only to the node's own commands,
# never exported into the caller's shell.
#
# With RABBIT_STREAM=1 set when rabbit_node_start runs, the node also
# enables the rabbitmq_stream plugin and listens for the stream protocol on
# 127.0.0.1:RABBIT_STREAM_PORT (exported); rabbit_node_write_stream_config
# then writes a config that publishes to a stream. Without it the node is
# AMQP only, as before.

RABBIT_BIN_DIR=${RABBIT_BIN_DIR:-/usr/lib/rabbitmq/bin}
RABBIT_NODE_DIR=""
RABBIT_SERVER_PID=""
RABBIT_NODE_ENV=()
RABBIT_STREAM_PORT=""

# Prints a TCP port on 127.0.0.1 that nothing listens on and that is not one
# of the arguments. Racy by nature, like every free-port picker; the range
# stays below the usual ephemeral range (32768+) to make collisions rare.
rabbit_node_free_port() {
    local p tries=0
    while [ "$tries" -lt 200 ]; do
        tries=$((tries + 1))
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        case " $* " in *" $p "*) continue ;; esac
        # A successful connect means something listens there.
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        echo "$p"
        return 0
    done
    echo "rabbit-node: no free port found" >&2
    return 1
}

# rabbit_node_ctl ARGS...: rabbitmqctl against the private node.
rabbit_node_ctl() {
    env "${RABBIT_NODE_ENV[@]}" "$RABBIT_BIN_DIR/rabbitmqctl" -q -n "$RABBIT_NODENAME" "$@"
}

# rabbit_node_start DIR: start a node whose files all live in DIR (created if
# missing) and wait until it accepts work (up to RABBIT_START_TIMEOUT seconds,
# default 60). Returns 1, with the node's log tail on stderr, if it fails.
rabbit_node_start() {
    local dir=$1
    if [ ! -x "$RABBIT_BIN_DIR/rabbitmq-server" ]; then
        echo "rabbit-node: $RABBIT_BIN_DIR/rabbitmq-server not found; install the rabbitmq-server package (apt-get install rabbitmq-server)" >&2
        return 1
    fi
    mkdir -p "$dir/mnesia" "$dir/log"
    dir=$(cd "$dir" && pwd)
    RABBIT_NODE_DIR=$dir
    RABBIT_PORT=$(rabbit_node_free_port) || return 1
    RABBIT_DIST_PORT=$(rabbit_node_free_port "$RABBIT_PORT") || return 1
    RABBIT_EPMD_PORT=$(rabbit_node_free_port "$RABBIT_PORT" "$RABBIT_DIST_PORT") || return 1
    RABBIT_NODENAME="t$$_${RANDOM}@localhost"
    RABBIT_HOST=127.0.0.1
    export RABBIT_HOST RABBIT_PORT

    : >"$dir/rabbitmq-env.conf"
    cat >"$dir/rabbitmq.conf" <<EOF
loopback_users = none
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
EOF
    if [ "${RABBIT_STREAM:-0}" = 1 ]; then
        RABBIT_STREAM_PORT=$(rabbit_node_free_port "$RABBIT_PORT" "$RABBIT_DIST_PORT" "$RABBIT_EPMD_PORT") || return 1
        export RABBIT_STREAM_PORT
        printf '[rabbitmq_stream].\n' >"$dir/enabled_plugins"
        cat >>"$dir/rabbitmq.conf" <<EOF
stream.listeners.tcp.1 = 127.0.0.1:$RABBIT_STREAM_PORT
stream.advertised_host = 127.0.0.1
stream.advertised_port = $RABBIT_STREAM_PORT
EOF
    else
        RABBIT_STREAM_PORT=""
        printf '[].\n' >"$dir/enabled_plugins"
    fi
    RABBIT_NODE_ENV=(
        "HOME=$dir"
        "RABBITMQ_NODENAME=$RABBIT_NODENAME"
        "RABBITMQ_NODE_PORT=$RABBIT_PORT"
        "RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT"
        "ERL_EPMD_PORT=$RABBIT_EPMD_PORT"
        "RABBITMQ_MNESIA_BASE=$dir/mnesia"
        "RABBITMQ_LOG_BASE=$dir/log"
        "RABBITMQ_PID_FILE=$dir/pid"
        "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins"
        "RABBITMQ_CONFIG_FILE=$dir/rabbitmq"
        "RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf"
        "RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config"
    )
    env "${RABBIT_NODE_ENV[@]}" "$RABBIT_BIN_DIR/rabbitmq-server" \
        >"$dir/log/server.out" 2>&1 </dev/null &
    RABBIT_SERVER_PID=$!

    local deadline=$((SECONDS + ${RABBIT_START_TIMEOUT:-60}))
    until rabbit_node_ctl await_startup >/dev/null 2>&1; do
        if ! kill -0 "$RABBIT_SERVER_PID" 2>/dev/null; then
            echo "rabbit-node: the node exited while starting; its output:" >&2
            tail -n 30 "$dir/log/server.out" >&2 || true
            RABBIT_SERVER_PID=""
            rabbit_node_stop
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "rabbit-node: the node did not start within ${RABBIT_START_TIMEOUT:-60} s; its output:" >&2
            tail -n 30 "$dir/log/server.out" >&2 || true
            rabbit_node_stop
            return 1
        fi
        sleep 0.5
    done
}

# rabbit_node_write_config FILE QUEUE: a tstat-transport config.ini for the
# node (guest/guest, default exchange, routing key = queue).
rabbit_node_write_config() {
    local file=$1 queue=$2
    # Owner-only, like any config holding a password (tstat_send warns
    # about a password others can read).
    (umask 077 && : >"$file")
    cat >"$file" <<EOF
[rabbit]
host = $RABBIT_HOST
port = $RABBIT_PORT
username = guest
password = guest
vhost = /
exchange =
queue = $queue
routing_key = $queue
EOF
}

# rabbit_node_write_stream_config FILE STREAM: a config.ini that publishes
# to the stream STREAM of a node started with RABBIT_STREAM=1 (the first
# run creates the stream).
rabbit_node_write_stream_config() {
    local file=$1 stream=$2
    if [ -z "$RABBIT_STREAM_PORT" ]; then
        echo "rabbit-node: the node has no stream listener (start it with RABBIT_STREAM=1)" >&2
        return 1
    fi
    (umask 077 && : >"$file")
    cat >"$file" <<EOF
[rabbit]
host = $RABBIT_HOST
port = $RABBIT_PORT
username = guest
password = guest
vhost = /
transport = stream
stream = $stream
stream_port = $RABBIT_STREAM_PORT
EOF
}

# rabbit_node_stop: stop the node and its private epmd. Safe to call twice,
# or when the node never started (use it in an EXIT trap). Leaves
# RABBIT_NODE_DIR itself for the caller to remove.
rabbit_node_stop() {
    [ -n "$RABBIT_NODE_DIR" ] || return 0
    if [ -n "$RABBIT_SERVER_PID" ] && kill -0 "$RABBIT_SERVER_PID" 2>/dev/null; then
        rabbit_node_ctl stop >/dev/null 2>&1 || true
        local i=0
        while kill -0 "$RABBIT_SERVER_PID" 2>/dev/null && [ "$i" -lt 40 ]; do
            sleep 0.25
            i=$((i + 1))
        done
        if kill -0 "$RABBIT_SERVER_PID" 2>/dev/null; then
            kill "$RABBIT_SERVER_PID" 2>/dev/null || true
        fi
        wait "$RABBIT_SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${RABBIT_EPMD_PORT:-}" ]; then
        env "${RABBIT_NODE_ENV[@]}" epmd -port "$RABBIT_EPMD_PORT" -kill >/dev/null 2>&1 || true
    fi
    RABBIT_SERVER_PID=""
    RABBIT_NODE_DIR=""
}
