#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for the cluster tests and benchmarks.
#
#   scripts/cluster.sh start          start the nodes that are down, joined (idempotent)
#   scripts/cluster.sh stop           stop every node and remove its directory
#   scripts/cluster.sh status         one line per node; exit 1 unless all three serve, clustered
#   scripts/cluster.sh urls           the BROKER_URL of the cluster (the three nodes, ';'-separated)
#   scripts/cluster.sh start-node N   start node N again (after kill-node or stop-node); it rejoins
#   scripts/cluster.sh stop-node N    stop node N cleanly (one step of a rolling restart)
#   scripts/cluster.sh kill-node N    SIGKILL node N's Erlang VM
#
# Node N (1-3) is bcastN@localhost with AMQP on 127.0.0.1:568N and Erlang distribution on
# port 2568N; its config, database and logs live in $BROADCASTER_CLUSTER_DIR/bcastN (default
# /var/tmp/broadcaster-cluster), owned by the rabbitmq user, which runs it with the machine's
# Erlang cookie. cluster_partition_handling is pause_minority: a node cut off from the other
# two stops serving until it sees them again. The main node rabbit@localhost is never
# touched. Needs root (the nodes drop to the rabbitmq user, as the main node does).
set -euo pipefail

BASE=${BROADCASTER_CLUSTER_DIR:-/var/tmp/broadcaster-cluster}
NODES=(1 2 3)
AMQP_BASE=5680
DIST_BASE=25680
STARTUP_TIMEOUT=90

name() { echo "bcast$1@localhost"; }
dir() { echo "$BASE/bcast$1"; }
port() { echo $((AMQP_BASE + $1)); }
pid_file() { echo "$(dir "$1")/mnesia/$(name "$1").pid"; }
ctl() {
    local n=$1
    shift
    rabbitmqctl -q -n "$(name "$n")" "$@"
}
# Checks without rabbitmqctl, which takes seconds to start on a busy machine: the VM's pid,
# and the AMQP listener, which a node opens once booted and closes while paused.
running() { [ -s "$(pid_file "$1")" ] && kill -0 "$(cat "$(pid_file "$1")")" 2>/dev/null; }
serving() { (exec 3<>"/dev/tcp/127.0.0.1/$(port "$1")") 2>/dev/null; }
members() { ctl 1 eval 'rabbit_nodes:all_running().' 2>/dev/null || true; }

configure() {
    local n=$1 d
    d=$(dir "$n")
    mkdir -p "$d/mnesia" "$d/log"
    {
        echo "listeners.tcp.default = 127.0.0.1:$(port "$n")"
        echo "cluster_partition_handling = pause_minority"
        # A blank node 2 or 3 joins node 1 as it boots (peer discovery); a node with a
        # database of its own ignores this and rejoins the cluster it belongs to.
        if [ "$n" != 1 ]; then
            echo "cluster_formation.peer_discovery_backend = classic_config"
            echo "cluster_formation.classic_config.nodes.1 = $(name 1)"
        fi
    } >"$d/rabbitmq.conf"
    : >"$d/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$d"
}

launch() {
    local n=$1 d
    d=$(dir "$n")
    [ -f "$d/rabbitmq.conf" ] || configure "$n"
    (
        cd "$d"
        RABBITMQ_NODENAME=$(name "$n") \
            RABBITMQ_NODE_PORT=$(port "$n") \
            RABBITMQ_DIST_PORT=$((DIST_BASE + n)) \
            RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
            RABBITMQ_MNESIA_BASE="$d/mnesia" \
            RABBITMQ_LOG_BASE="$d/log" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
            rabbitmq-server -detached
    )
}

await() {
    local n=$1 deadline=$((SECONDS + STARTUP_TIMEOUT))
    until serving "$n"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "cluster: $(name "$n") did not start within ${STARTUP_TIMEOUT} s; see $(dir "$n")/log" >&2
            return 1
        fi
        sleep 0.2
    done
}

start_node() {
    running "$1" || launch "$1"
    await "$1"
}

start() {
    local started=$SECONDS n all
    # Node 1 first: the others find it as they boot and join it.
    start_node 1
    for n in 2 3; do running "$n" || launch "$n"; done
    for n in 2 3; do await "$n"; done
    all=$(members)
    for n in "${NODES[@]}"; do
        grep -q "$(name "$n")" <<<"$all" || {
            echo "cluster: $(name "$n") is not a running member: $all" >&2
            return 1
        }
    done
    echo "cluster: $(name 1), $(name 2), $(name 3) running and joined in $((SECONDS - started)) s"
}

kill_node() {
    running "$1" || return 0
    kill -9 "$(cat "$(pid_file "$1")")"
    while running "$1"; do sleep 0.1; done
}

stop_node() {
    running "$1" || return 0
    ctl "$1" stop >/dev/null 2>&1 || kill_node "$1"
}

stop() {
    local n
    for n in "${NODES[@]}"; do stop_node "$n" & done
    wait
    rm -rf "$BASE"
    echo "cluster: stopped and removed"
}

status() {
    local n ok=0 all
    for n in "${NODES[@]}"; do
        if serving "$n"; then
            echo "$(name "$n") amqp://127.0.0.1:$(port "$n") serving"
        elif running "$n"; then
            echo "$(name "$n") amqp://127.0.0.1:$(port "$n") running, not serving (paused or booting)"
            ok=1
        else
            echo "$(name "$n") amqp://127.0.0.1:$(port "$n") down"
            ok=1
        fi
    done
    all=$(members)
    echo "running members: ${all:-none}"
    for n in "${NODES[@]}"; do grep -q "$(name "$n")" <<<"$all" || ok=1; done
    return $ok
}

urls() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(port "$n")/%2F"); done
    (
        IFS=';'
        echo "${out[*]}"
    )
}

node_arg() {
    case "${1:-}" in
        1 | 2 | 3) ;;
        *)
            echo "cluster: give a node number, 1-3" >&2
            exit 2
            ;;
    esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    urls) urls ;;
    start-node) node_arg "${2:-}" && start_node "$2" ;;
    stop-node) node_arg "${2:-}" && stop_node "$2" ;;
    kill-node) node_arg "${2:-}" && kill_node "$2" ;;
    *)
        echo "usage: $0 start|stop|status|urls|start-node N|stop-node N|kill-node N" >&2
        exit 2
        ;;
esac
