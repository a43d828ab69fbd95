#!/usr/bin/env bash
# A throwaway one-node SLURM cluster (with accounting) on this machine, for tests/test_slurm_cluster.py:
#   cluster.sh up       start munged, a private MariaDB, slurmdbd, slurmctld and slurmd; wait for the node
#   cluster.sh down     stop what `up` started and remove its state and configuration
#   cluster.sh status   sinfo of the running cluster (exit 1 if none)
# Idempotent: `up` on a running cluster and `down` on a stopped one do nothing.
# Exit status 2 means "cannot run here" (not root, packages missing, a foreign /etc/slurm/slurm.conf);
# the test skips with the message printed. Needs root and the Debian packages below; no systemd.
set -euo pipefail

PACKAGES="slurm-wlm munge slurmdbd mariadb-server"
CLUSTER=caft
ACCOUNT=caft
PARTITION=debug
DB_PORT=3307                         # a private MariaDB, so a system one on 3306 is left alone
STATE=/var/lib/caft-slurm            # spool, controller state, the database's files
RUN=/run/caft-slurm                  # pid files and the database socket
LOGS=/var/log/caft-slurm
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by caft tests/slurm_cluster/cluster.sh"

unavailable() { echo "cluster.sh: $*" >&2; exit 2; }
fail() {
    echo "cluster.sh: $*" >&2
    tail -n 20 "$LOGS"/*.log >&2 2>/dev/null || true
    exit 1
}

# pid from a pid file, if that process is alive.
alive() { [[ -s $1 ]] && kill -0 "$(<"$1")" 2>/dev/null; }

wait_for() {  # wait_for <seconds> <what> <command...>
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "$what did not come up within the time limit"
        sleep 0.2
    done
}

check_machine() {
    [[ $(id -u) == 0 ]] || unavailable "needs root (it starts system daemons and writes $CONF)"
    local missing=()
    for binary in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$binary" >/dev/null || missing+=("$binary")
    done
    ((${#missing[@]} == 0)) || unavailable "missing ${missing[*]}; install: apt-get install -y $PACKAGES"
    for conf in "$CONF" "$DBD_CONF"; do
        if [[ -e $conf ]] && ! grep -qxF "$MARK" "$conf"; then
            unavailable "$conf exists and was not written by this script; not touching a real cluster's configuration"
        fi
    done
}

write_configs() {
    local host node memory
    host=$(hostname -s)
    # `slurmd -C` prints this machine's node line; leave 10 % of its memory to the daemons.
    node=$(slurmd -C | head -n 1)
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    node="${node% RealMemory=*} RealMemory=$((memory * 9 / 10))"
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/slurmd" "$RUN" "$LOGS"
    cat >"$CONF" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
# No cgroups: this works in a container without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
# Cores and memory are consumable, so several jobs share the node; without a default per CPU a job
# that asks for no memory would take all of it.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
# Finished jobs stay visible to squeue/scontrol for 5 minutes.
MinJobAge=300
KillWait=5
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DBD_CONF" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=caft
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
    chmod 600 "$DBD_CONF"
}

start_munge() {
    if alive /run/munge/munged.pid; then return; fi
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
    install -d -o munge -g munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    touch "$STATE/started-munged"  # `down` stops munged only if `up` started it
    wait_for 10 munged munge -n
}

start_database() {
    if alive "$RUN/mariadbd.pid"; then return; fi
    if [[ ! -d $STATE/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
    fi
    chown mysql:mysql "$RUN"
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --bind-address=127.0.0.1 \
        --port=$DB_PORT --socket="$RUN/mariadb.sock" --pid-file="$RUN/mariadbd.pid" \
        --log-error="$LOGS/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadbd mariadb-admin --socket="$RUN/mariadb.sock" ping
    mariadb --socket="$RUN/mariadb.sock" -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'caft';
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'caft';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

sacct_mgr() { timeout 30 sacctmgr -i "$@" </dev/null; }

node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null) == idle* ]]; }

up() {
    check_machine
    local started=$SECONDS
    if alive "$RUN/slurmd.pid" && alive "$RUN/slurmctld.pid" && node_idle; then
        echo "cluster.sh: already up"
        return
    fi
    write_configs
    start_munge
    start_database
    if ! alive "$RUN/slurmdbd.pid"; then
        slurmdbd
        wait_for 30 slurmdbd sacct_mgr -n list cluster
    fi
    # Register the cluster and a test account with root in it before the controller starts, so its
    # jobs are accounted under that account.
    # (sacctmgr asks before anything it finds unusual and repeats the question forever on a closed
    # stdin: -i and a timeout on every call.)
    [[ -n $(sacct_mgr -n list cluster "$CLUSTER" format=cluster) ]] || sacct_mgr add cluster "$CLUSTER" >/dev/null
    [[ -n $(sacct_mgr -n list account "$ACCOUNT" format=account) ]] ||
        sacct_mgr add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null
    [[ -n $(sacct_mgr -n list assoc user=root account="$ACCOUNT" format=user) ]] ||
        sacct_mgr add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" >/dev/null
    alive "$RUN/slurmctld.pid" || slurmctld
    alive "$RUN/slurmd.pid" || slurmd
    wait_for 60 "the node (sinfo idle)" node_idle
    echo "cluster.sh: up in $((SECONDS - started)) s: $(sinfo --version), partition $PARTITION, account $ACCOUNT"
}

stop() {  # stop <pid file>: TERM the process and wait for it to exit
    alive "$1" || return 0
    local pid
    pid=$(<"$1")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    [[ $(id -u) == 0 ]] || unavailable "needs root"
    if [[ -e $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
        unavailable "$CONF was not written by this script; not stopping a real cluster"
    fi
    # Cancel leftover jobs first, so slurmd's job processes do not outlive it.
    if alive "$RUN/slurmctld.pid"; then scancel --user=root 2>/dev/null || true; sleep 1; fi
    for daemon in slurmd slurmctld slurmdbd mariadbd; do stop "$RUN/$daemon.pid"; done
    if [[ -e $STATE/started-munged ]]; then stop /run/munge/munged.pid; fi
    rm -rf "$STATE" "$RUN" "$CONF" "$DBD_CONF"
    echo "cluster.sh: down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) sinfo ;;
    *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
