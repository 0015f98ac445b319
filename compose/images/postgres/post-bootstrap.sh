#!/bin/sh
# Runs once on the bootstrapping leader: the databases of the reference topology.
set -eu
for db in ${PG_DATABASES:-sequencer med1 p1 p2 harness}; do
  psql -h /tmp -U postgres -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
done
# Every write statement on the pairs' databases is logged with its session (log_line_prefix in entrypoint.sh): the
# harness's `pglog` single-writer evidence. Set per database, so every session of the nodes has it from its start.
for db in ${PG_STATEMENT_LOGGED_DATABASES:-med1 p1 p2}; do
  psql -h /tmp -U postgres -d postgres -v ON_ERROR_STOP=1 -c "ALTER DATABASE \"$db\" SET log_statement = 'mod'" >/dev/null
done
