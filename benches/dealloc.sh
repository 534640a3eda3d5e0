#!/bin/bash
# What `DEALLOCATE ALL` at the start of every transaction costs PostgreSQL: the backend CPU of N
# transactions shaped as the pooler mode's (BEGIN, one indexed read, COMMIT), with a plain BEGIN
# and with `BEGIN; DEALLOCATE ALL` in one simple query, in turn, ROUNDS times. Reads the backend's
# CPU from /proc, so PostgreSQL must run on this host. Uses (and recreates) rr_bench_dealloc.
#
#   benches/dealloc.sh [N=30000] [ROUNDS=3]   (PGHOST, PGPORT, PGUSER as for psql)
set -euo pipefail
N=${1:-30000}
ROUNDS=${2:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -1)
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

psql -X -q -c "DROP DATABASE IF EXISTS rr_bench_dealloc" 2> /dev/null
psql -X -q -c "CREATE DATABASE rr_bench_dealloc"
"$PGBENCH" -i -s 10 -q rr_bench_dealloc > /dev/null 2>&1
for variant in plain clean; do
    begin='BEGIN;'
    [ "$variant" = clean ] && begin='BEGIN \; DEALLOCATE ALL;'
    {
        echo "SET application_name = 'rr_dealloc_$variant';"
        # Through the environment: `awk -v` would turn `\;` (one query, for psql) into `;`.
        BEGIN_SQL=$begin awk -v n="$N" 'BEGIN { srand(1); for (i = 0; i < n; i++)
            printf "%s\nSELECT abalance FROM pgbench_accounts WHERE aid = %d;\nCOMMIT;\n", ENVIRON["BEGIN_SQL"], 1 + int(rand() * 1000000) }'
        # The backend waits here while its CPU is read.
        echo "SELECT pg_sleep(3);"
    } > "$DIR/$variant.sql"
done

measure() {
    local variant=$1 start pid=""
    start=$(date +%s%N)
    psql -X -q rr_bench_dealloc -f "$DIR/$variant.sql" > /dev/null &
    local client=$!
    while [ -z "$pid" ]; do
        pid=$(psql -X -Atq rr_bench_dealloc -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'rr_dealloc_$variant'")
        sleep 0.05
    done
    until [ "$(psql -X -Atq rr_bench_dealloc -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND query LIKE '%pg_sleep%'")" = 1 ]; do
        sleep 0.05
    done
    local wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    local ticks
    ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    wait "$client"
    awk -v v="$variant" -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$N" -v w="$wall_ms" \
        'BEGIN { printf "%-6s backend CPU %.2f s (%.0f µs per transaction), wall %.1f s\n", v, t / hz, t / hz / n * 1e6, w / 1000 }'
}

for _ in $(seq "$ROUNDS"); do
    measure plain
    measure clean
done
psql -X -q -c "DROP DATABASE rr_bench_dealloc"
