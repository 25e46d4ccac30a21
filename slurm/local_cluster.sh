#!/usr/bin/env bash
# A throw-away Slurm cluster of one node or several on loopback, for CI and for trying the slurm/ scripts on one
# machine.
#
#   slurm/local_cluster.sh install        # apt: slurm-wlm munge slurmdbd mariadb-server (Debian 12: Slurm 22.05)
#   slurm/local_cluster.sh start [DIR]    # munged, mariadbd, slurmdbd, slurmctld, slurmd; all state under DIR
#   export SLURM_CONF=DIR/etc/slurm.conf  # what sbatch, srun, squeue, sacct need to find this cluster
#   slurm/local_cluster.sh stop  [DIR]    # cancel jobs, stop the daemons by their pid files
#   ALIGN_SLURM_NODES=2 slurm/local_cluster.sh start [DIR]    # two nodes, node1 and node2 (below)
#
# Several nodes: one slurmd per node, each with its own node name, port, spool directory, pid and log file, all at
# 127.0.0.1. Debian's slurmd is built without multiple-slurmd support, but a slurmd only needs a port and files of
# its own. The node names do not resolve: slurmctld reaches a node at its NodeAddr and port, and run_stage.sh takes
# a job's main address from NodeAddr too. Every daemon binds to 127.0.0.1 only (CommunicationParameters), never to
# all interfaces, so nothing listens beyond this machine.
#
# DIR defaults to $ALIGN_SLURM_DIR or /tmp/align-slurm. Runs as root (SlurmUser=root). Ports are not Slurm's defaults
# and can be changed (ALIGN_SLURM_PORT_BASE, default 16817: slurmctld, slurmd, slurmdbd, mariadb at +0..+3; the
# slurmd of node<i> of several at +3+i), so it does not collide with a real cluster's daemons. Accounting (slurmdbd)
# is on because submitit polls `sacct`.
set -euo pipefail

cmd=${1:?usage: local_cluster.sh install|start|stop [DIR]}
BASE=${2:-${ALIGN_SLURM_DIR:-/tmp/align-slurm}}
PORT=${ALIGN_SLURM_PORT_BASE:-16817}
CTLD_PORT=$PORT SLURMD_PORT=$((PORT + 1)) DBD_PORT=$((PORT + 2)) DB_PORT=$((PORT + 3))
NODES=${ALIGN_SLURM_NODES:-1}
export SLURM_CONF=$BASE/etc/slurm.conf PATH=$PATH:/usr/sbin

install() {
    for c in sbatch slurmctld slurmd slurmdbd munged mariadbd; do
        command -v "$c" >/dev/null && continue
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
        return
    done
}

node_names() {  # localhost for one node (it resolves), node1..nodeN for several
    if ((NODES == 1)); then echo localhost; else seq -f "node%g" "$NODES"; fi
}

node_lines() {  # each node's address and slurmd port: one port each, as they share this machine
    if ((NODES == 1)); then
        echo "NodeName=localhost NodeAddr=127.0.0.1 Port=$SLURMD_PORT"
        return
    fi
    for i in $(seq "$NODES"); do
        echo "NodeName=node$i NodeAddr=127.0.0.1 Port=$((PORT + 3 + i))"
    done
}

write_configs() {
    local cpus
    cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc, which counts OMP_NUM_THREADS
    cat >"$SLURM_CONF" <<CONF
ClusterName=align
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$BASE/run/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$BASE/spool/ctld
SlurmdSpoolDir=$BASE/spool/d-%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# with a private munge socket slurmctld must be told where it is for slurmdbd too
AccountingStoragePass=$BASE/run/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
ReturnToService=2
# sbatch --wait polls every 2 s only while MinJobAge <= 5 (else 2, 8, 32 s); finished jobs are then in sacct only
MinJobAge=5
# scancel and requeue: SIGKILL 5 s after SIGTERM instead of 30
KillWait=5
SlurmdParameters=config_overrides
# bind to the address this machine's name resolves to (loopback here), not to every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
NodeName=DEFAULT CPUs=$cpus RealMemory=${ALIGN_SLURM_MEM_MB:-16000} State=UNKNOWN
$(node_lines)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    cat >"$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$BASE/run/munge.socket
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CommunicationParameters=NoInAddrAny
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
CONF
    chmod 600 "$BASE/etc/slurmdbd.conf"  # slurmdbd refuses a readable config
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.25 s
    local tries=$(($1 * 4)) what=$2
    shift 2
    for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    echo "local_cluster: $what did not come up; logs in $BASE/log" >&2
    tail -n 20 "$BASE"/log/*.log >&2 || true
    return 1
}

start() {
    mkdir -p "$BASE"/{etc,munge,run,log,spool/ctld,spool/d,db}
    chmod 700 "$BASE/munge"
    chmod 755 "$BASE" "$BASE/run"  # munged wants its socket's directories open to all (not so a pytest tmp dir)
    if [[ ! -f $BASE/munge/munge.key ]]; then
        head -c 1024 /dev/urandom >"$BASE/munge/munge.key"
        chmod 400 "$BASE/munge/munge.key"
    fi
    write_configs
    munged --key-file="$BASE/munge/munge.key" --socket="$BASE/run/munge.socket" --pid-file="$BASE/run/munged.pid" \
        --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/munged.seed"
    [[ -d $BASE/db/mysql ]] || mariadb-install-db --user=root --datadir="$BASE/db" --skip-test-db \
        --auth-root-authentication-method=normal >"$BASE/log/mariadb-install.log" 2>&1
    # its own session and no inherited descriptors, or it keeps the caller's pipes (and pytest) waiting
    setsid mariadbd --user=root --datadir="$BASE/db" --socket="$BASE/run/mysqld.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --pid-file="$BASE/run/mariadbd.pid" --log-error="$BASE/log/mariadbd.log" \
        --skip-name-resolve --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    wait_for 20 mariadbd mariadb-admin --socket="$BASE/run/mysqld.sock" ping
    mariadb --socket="$BASE/run/mysqld.sock" -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
    slurmdbd  # reads slurmdbd.conf next to $SLURM_CONF
    wait_for 20 slurmdbd timeout 5 sacctmgr -n list cluster
    timeout 10 sacctmgr -i add cluster align >/dev/null 2>&1 || true  # already there on a restart
    slurmctld -i  # -i: ignore state left by an earlier run
    for node in $(node_names); do slurmd -N "$node"; done
    wait_for 30 "$NODES idle node(s)" bash -c "[[ \$(timeout 5 sinfo -h -N -o %T | grep -cx idle) == $NODES ]]"
    echo "local Slurm cluster up; export SLURM_CONF=$SLURM_CONF"
}

stop_daemons() {  # TERM the daemons named by their pid files, wait up to 15 s, then KILL what is left
    local pids=() pid
    for d in "$@"; do
        pid=$(cat "$BASE/run/$d.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); kill -TERM "$pid"; fi
        rm -f "$BASE/run/$d.pid"
    done
    for _ in $(seq 60); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && return 0
        sleep 0.25
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

stop() {
    if [[ -f $BASE/run/slurmctld.pid ]]; then
        timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true
        wait_for 15 "an empty queue" bash -c '[[ -z $(timeout 5 squeue -h) ]]' || true
    fi
    local slurmds=()
    for pid in "$BASE"/run/slurmd-*.pid; do [[ -f $pid ]] && slurmds+=("$(basename "$pid" .pid)"); done
    stop_daemons "${slurmds[@]}" slurmctld
    stop_daemons slurmdbd mariadbd munged
    # step daemons of this cluster that outlived slurmd (their descriptors point into $BASE), by pid
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/exe" 2>/dev/null) == /usr/sbin/slurmstepd* ]] || continue
        ls -l "$p/fd" 2>/dev/null | grep -q "$BASE" && kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
    echo "local Slurm cluster stopped"
}

case $cmd in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: local_cluster.sh install|start|stop [DIR]" >&2; exit 2 ;;
esac
