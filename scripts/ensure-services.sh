#!/usr/bin/env bash
# Make sure the local RabbitMQ (and PostgreSQL and MariaDB, when installed) accept connections.
# Used by `make demo` and `make test`; safe to run when both are already up.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    local port=$1 name=$2
    for _ in $(seq 1 120); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "ensure-services: $name did not open port $port within 60 s" >&2
    return 1
}

if ! port_open 5672; then
    if ! command -v rabbitmq-server >/dev/null; then
        echo "ensure-services: RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed" >&2
        exit 1
    fi
    if rabbitmqctl -q status >/dev/null 2>&1; then
        # The node is up but its app was stopped (for example by a fault-injection test).
        echo "ensure-services: starting the RabbitMQ app"
        rabbitmqctl -q start_app
    else
        echo "ensure-services: starting rabbitmq-server"
        rabbitmq-server -detached
    fi
    wait_for_port 5672 RabbitMQ
    rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi

# Ordered subscriptions hash events onto partition queues with the consistent-hash
# exchange, a plugin bundled with RabbitMQ; enabling it does not restart the broker.
if command -v rabbitmq-plugins >/dev/null && ! rabbitmq-plugins -q is_enabled rabbitmq_consistent_hash_exchange >/dev/null 2>&1; then
    echo "ensure-services: enabling rabbitmq_consistent_hash_exchange"
    rabbitmq-plugins -q enable rabbitmq_consistent_hash_exchange >/dev/null
fi

# broadcaster_topology --check/--prune read bindings from the management HTTP API
# (AMQP cannot list them); enabling the plugin does not restart the broker either.
if command -v rabbitmq-plugins >/dev/null && ! rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
    echo "ensure-services: enabling rabbitmq_management"
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null
fi
if command -v rabbitmq-plugins >/dev/null; then
    wait_for_port 15672 "RabbitMQ management"
fi

if ! port_open 5432 && command -v pg_ctlcluster >/dev/null; then
    echo "ensure-services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    wait_for_port 5432 PostgreSQL
fi

if ! port_open 3306 && [ -x /etc/init.d/mariadb ]; then
    echo "ensure-services: starting MariaDB"
    /etc/init.d/mariadb start >/dev/null
    wait_for_port 3306 MariaDB
fi
