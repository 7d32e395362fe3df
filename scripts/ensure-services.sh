#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer; start them when they are
# installed but stopped, otherwise fail at once saying how to start them.
set -u

reachable() { timeout 2 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
    for _ in $(seq 1 30); do reachable "$1" && return 0; sleep 1; done
    return 1
}

if ! reachable 5432; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "PostgreSQL is not reachable; starting it"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        wait_for 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432"; exit 1; }
    else
        echo "PostgreSQL is not reachable on 127.0.0.1:5432 and is not installed here."
        echo "Start one (trust auth for user postgres), e.g.: pg_ctlcluster <version> main start"
        exit 1
    fi
fi

if ! reachable 6379; then
    if command -v redis-server >/dev/null 2>&1; then
        echo "Redis is not reachable; starting it"
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_for 6379 || { echo "Redis did not start on 127.0.0.1:6379"; exit 1; }
    else
        echo "Redis is not reachable on 127.0.0.1:6379 and redis-server is not installed."
        echo "Start one, e.g.: redis-server --daemonize yes --port 6379 --save '' --appendonly no"
        exit 1
    fi
fi
echo "PostgreSQL and Redis are reachable"
