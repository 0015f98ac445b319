#!/bin/sh
# Writes Patroni's configuration from the environment and execs Patroni.
# PATRONI_NAME (pg1/pg2/pg3), ETCD_HOSTS (comma list, default etcd:2379), PG_SYNCHRONOUS_MODE (true/false, the
# bootstrap value; switchable at run time through Patroni's REST API: PATCH /config {"synchronous_mode": ...}).
#
# Why these settings (PostgreSQL HA as production runs it; the reference topology's default):
# - synchronous_mode: true, synchronous_node_count: 1. A commit is acknowledged only once one standby has it, and
#   Patroni promotes only the standby it recorded as synchronous (the /sync key), so a failover never loses an
#   acknowledged commit. With three nodes there are two standbys: when the synchronous one is lost the other is
#   made synchronous, so a failover has a candidate again once Patroni switched (about wal_sender_timeout +
#   loop_wait: while /sync still names the lost standby, a primary death promotes nobody - no loss, an outage);
#   with two nodes, one lost standby left none at all.
# - synchronous_mode_strict: false. When NO standby is left, the primary goes on alone (Patroni empties
#   synchronous_standby_names and records that no node is synchronous) instead of blocking every commit. That
#   keeps the database available through the loss of both standbys, and stays loss-free on failover: with no
#   synchronous standby recorded Patroni promotes nobody until the primary (which has every commit) is back. The
#   price: while it runs alone, an acknowledged commit lives on one disk only - strict mode would pay for that
#   with a write outage instead. Async mode (PG_SYNCHRONOUS_MODE=false) is the known-unsafe option.
# - maximum_lag_on_failover: 16 MB (one WAL segment). With synchronous_mode it hardly decides: the synchronous
#   standby has every acknowledged commit, and the lag is measured against the position the leader last reported
#   (acknowledged or not), which a synchronous standby trails by in-flight commits only. With async replication
#   it is the bound on what one failover may lose (the first version used 1 MB: a tighter loss bound, but a
#   failover refused after a few seconds of stalled replication under load).
# - A commit whose wait for the synchronous standby is cancelled (statement_timeout, a client's cancel request)
#   is committed locally and answered with a WARNING, not an error: not replicated, yet reported. The nodes'
#   asyncpg command timeout (HA_DB_COMMAND_TIMEOUT, 10 s) is longer than the time a cut standby takes to leave
#   synchronous replication (about wal_sender_timeout + loop_wait = 7 s), and the bench's write loop does not
#   count such a commit as acknowledged.
# - wal_sender_timeout / wal_receiver_timeout 5 s (default 60 s): a standby that stopped acknowledging (cut,
#   frozen) is dropped from synchronous replication within seconds, so commits do not hang for a minute.
# - log_line_prefix "%n|%a|%c|" (epoch time with ms, application_name, session id), and log_statement = 'mod' on
#   the pairs' databases (post-bootstrap.sh): PostgreSQL logs every write with the replica and session that sent it,
#   the harness's `pglog` single-writer evidence (harness/workload/pglog.py). The sequencers' database is left out
#   (most of the write volume, and no pair to judge).
# - ttl 20 s (loop_wait 2, retry_timeout 4): the leader lease; a dead leader is replaced about ttl seconds after its
#   death. 20 is Patroni 4's floor (patroni/config.py raises a smaller ttl to 20; Patroni 3.0.2 took 10, and
#   failover took ~10 s then, ~20 s now: `ha-chaos bench db-failover`).
# - use_pg_rewind, and remove_data_directory_on_rewind_failure / _on_diverged_timelines: a former primary that
#   diverged (it committed WAL the new primary never got) rejoins by pg_rewind, or by a fresh base backup when
#   rewinding is impossible - never by following a timeline it cannot.
set -eu
: "${PATRONI_NAME:?PATRONI_NAME is required}"
: "${ETCD_HOSTS:=${ETCD_HOST:-etcd:2379}}"
: "${PG_SYNCHRONOUS_MODE:=true}"
: "${PATRONI_TTL:=20}"
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
  hosts: ${ETCD_HOSTS}
bootstrap:
  dcs:
    ttl: ${PATRONI_TTL}
    loop_wait: ${PATRONI_LOOP_WAIT}
    retry_timeout: ${PATRONI_RETRY_TIMEOUT}
    maximum_lag_on_failover: 16777216
    synchronous_mode: ${PG_SYNCHRONOUS_MODE}
    synchronous_mode_strict: false
    synchronous_node_count: 1
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
        wal_sender_timeout: 5s
        wal_receiver_timeout: 5s
        log_line_prefix: "%n|%a|%c|"
  initdb:
    - encoding: UTF8
    - data-checksums
  post_bootstrap: /usr/local/bin/post-bootstrap.sh
postgresql:
  listen: 0.0.0.0:5432
  connect_address: ${PATRONI_NAME}:5432
  data_dir: ${DATA}
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
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
exec /opt/patroni/bin/patroni /tmp/patroni.yml
