#!/bin/sh
# Writes Patroni's configuration from the environment and execs Patroni.
# PATRONI_NAME (pg1/pg2), ETCD_HOST (etcd:2379), PG_SYNCHRONOUS_MODE (true/false, the bootstrap value;
# switchable at run time through Patroni's REST API: PATCH /config {"synchronous_mode": ...}).
set -eu
: "${PATRONI_NAME:?PATRONI_NAME is required}"
: "${ETCD_HOST:=etcd:2379}"
: "${PG_SYNCHRONOUS_MODE:=false}"
: "${PATRONI_TTL:=10}"
: "${PATRONI_LOOP_WAIT:=2}"
: "${PATRONI_RETRY_TIMEOUT:=4}"
: "${PG_PASSWORD:=ha-chaos}"
DATA=/var/lib/postgresql/data
chmod 700 "$DATA" 2>/dev/null || true
cat > /tmp/patroni.yml <<YAML
scope: ha-chaos
name: ${PATRONI_NAME}
restapi:
  listen: 0.0.0.0:8008
  connect_address: ${PATRONI_NAME}:8008
etcd3:
  hosts: ${ETCD_HOST}
bootstrap:
  dcs:
    ttl: ${PATRONI_TTL}
    loop_wait: ${PATRONI_LOOP_WAIT}
    retry_timeout: ${PATRONI_RETRY_TIMEOUT}
    maximum_lag_on_failover: 1048576
    synchronous_mode: ${PG_SYNCHRONOUS_MODE}
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 300
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
        fsync: "on"
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
    - data-checksums
  post_bootstrap: /usr/local/bin/post-bootstrap.sh
postgresql:
  listen: 0.0.0.0:5432
  connect_address: ${PATRONI_NAME}:5432
  data_dir: ${DATA}
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass
  basebackup:
    - checkpoint: fast
  authentication:
    superuser:
      username: postgres
      password: ${PG_PASSWORD}
    replication:
      username: replicator
      password: ${PG_PASSWORD}
    rewind:
      username: postgres
      password: ${PG_PASSWORD}
  parameters:
    unix_socket_directories: /tmp
  pg_hba:
    - local all all trust
    - host replication replicator 0.0.0.0/0 md5
    - host all all 0.0.0.0/0 md5
tags:
  nofailover: false
  noloadbalance: false
YAML
exec patroni /tmp/patroni.yml
