#!/bin/sh
# Runs once on the bootstrapping leader: the databases of the reference topology.
set -eu
for db in ${PG_DATABASES:-sequencer med1 p1 p2 harness}; do
  psql -h /tmp -U postgres -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
done
