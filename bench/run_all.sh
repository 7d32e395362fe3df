#!/usr/bin/env bash
# Every benchmark, one after the other (`make bench`). Each prints one summary line and appends a
# dated section to docs/benchmarks.md. They use a database and a Redis DB of their own (bench_sd
# and DB 14 on the servers DATABASE_URL and CELERY_BROKER_URL point at; see bench/_common.py),
# never the ones the tests use.
#
# Extra arguments per script: FIRE_BURST_ARGS, SCHEDULER_TICK_ARGS, API_BENCH_ARGS,
# SCHEDULE_BENCH_ARGS (e.g. FIRE_BURST_ARGS="--deployments 2000 --runs 1").
# Exit status: 0 when every script ran (targets met or not: the report says which), 1 otherwise.
set -u
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
SUMMARY="$(mktemp)"
trap 'rm -f "$SUMMARY"' EXIT

{
    echo
    echo "## bench/run_all.sh — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1024/1024}' /proc/meminfo) RAM; 1-min load average at start: $(cut -d' ' -f1 /proc/loadavg). The four sections below are one run."
} >> docs/benchmarks.md

failed=0
run() {
    local script="$1"; shift
    echo "== bench/$script $* (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$PY" "bench/$script" "$@" | tee -a "$SUMMARY"
    local status=${PIPESTATUS[0]}
    # 0: every target met; 2: ran, some target missed; anything else: the script failed.
    if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
        echo "bench/$script failed (exit $status)" >&2
        failed=1
    fi
}

# shellcheck disable=SC2086  # the *_ARGS variables are word lists on purpose
# The longest (fire_burst: minutes per run, bounded by the workers' throughput) last.
run schedule_bench.py ${SCHEDULE_BENCH_ARGS:-}
run scheduler_tick.py ${SCHEDULER_TICK_ARGS:-}
run api_bench.py ${API_BENCH_ARGS:-}
run fire_burst.py ${FIRE_BURST_ARGS:-}

echo
echo "Summary (also appended to docs/benchmarks.md):"
cat "$SUMMARY"
exit "$failed"
