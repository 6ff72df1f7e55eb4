#!/bin/bash
# A real Slurm on this machine, for the Slurm job tests (CI runs them against it).
#
#   scripts/slurm_local.sh install   # slurm-wlm, munge, slurmdbd and mariadb-server from the distribution (root)
#   scripts/slurm_local.sh start     # munged, slurmdbd (with its MariaDB), slurmctld, two slurmd; waits until idle
#   scripts/slurm_local.sh stop      # stops what start started (by their pid files)
#   scripts/slurm_local.sh status    # exit 0 when the controller answers and the node takes jobs
#
# Needs root (as in CI) and no systemd: the daemons are started directly. The configuration is
# the least Slurm runs with: two nodes on this host, each with SLURM_LOCAL_CPUS CPUs (default 8,
# more than the machine may have: SlurmdParameters=config_overrides lets the tests run an array of
# three side by side on two cores), all daemons as root, processes tracked by their parent
# (proctrack/linuxproc: no cgroups), no task binding. Accounting as a site keeps it, where slurmdbd
# and mariadbd are installed: slurmdbd over a MariaDB of its own (in SLURM_LOCAL_DIR/db, reached by
# its socket only, its root user authenticated as the system's root: no password anywhere), so sacct
# answers; without them none (sacct is off; finished jobs are known to scontrol for MinJobAge
# seconds). The configuration goes to /etc/slurm/slurm.conf and slurmdbd.conf, where every Slurm
# command looks, and only over files this script wrote. The two nodes are two slurmd
# (`slurmd -N NAME`, each on its own port, spool, pid and log file), named after this host and
# `localhost`: names that resolve here, as a real cluster's node names do, for the rendezvous of a
# job on two nodes. State and logs go to SLURM_LOCAL_DIR (default /tmp/segtrain-slurm).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/segtrain-slurm}
CPUS=${SLURM_LOCAL_CPUS:-8}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB=$DIR/db
MARK="# written by segtrain scripts/slurm_local.sh"
say() { printf 'slurm_local: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 2; }

install() {
    [ "$(id -u)" = 0 ] || die "install needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd \
        mariadb-server >/dev/null
}

# This host under two names (the first is where a job's script runs) and the port of each node's slurmd.
nodes() {
    local host
    host=$(hostname -s)
    [ "$host" != localhost ] || die "this host is called localhost: the second node needs that name"
    printf '%s 6818\nlocalhost 6821\n' "$host"  # 6819 is slurmdbd's
}

# Accounting where its daemons are installed.
accounting() { command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; }

# A file this script may write: absent, or written by it.
ours() {
    [ ! -e "$1" ] || grep -qxF "$MARK" "$1" || die "$1 exists and was not written by this script; not touching it"
}

write_conf() {
    local mem_mb name port storage=accounting_storage/none
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    ours "$CONF"
    accounting && storage=accounting_storage/slurmdbd
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat >"$CONF.new" <<EOF
$MARK
ClusterName=segtrain
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=$storage
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# scancel and the time limit: SIGTERM to every process of the job, SIGKILL KillWait s later (Slurm's default)
KillWait=30
MinJobAge=3600
EOF
    while read -r name port; do
        echo "NodeName=$name NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN"
    done < <(nodes) >>"$CONF.new"
    echo "PartitionName=debug Nodes=$(nodes | cut -d' ' -f1 | paste -sd,) Default=YES MaxTime=INFINITE State=UP" >>"$CONF.new"
    mv "$CONF.new" "$CONF"
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Wait up to 30 s for a command to succeed.
await() {
    local deadline=$((SECONDS + 30))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# MariaDB (its own data folder, socket only) and slurmdbd on it; the cluster registered once.
start_accounting() {
    mkdir -p "$DB"
    if [ ! -d "$DB/data/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$DB/data" --user=root --auth-root-authentication-method=socket \
            >"$DB/install.log" 2>&1 || die "mariadb-install-db failed; see $DB/install.log"
    fi
    if ! running "$DB/mariadbd.pid"; then
        setsid mariadbd --no-defaults --datadir="$DB/data" --socket="$DB/mysql.sock" --skip-networking --user=root \
            --pid-file="$DB/mariadbd.pid" --log-error="$DB/mariadbd.log" </dev/null >/dev/null 2>&1 &
        await mariadb --no-defaults --socket="$DB/mysql.sock" -u root -e "select 1" \
            || die "MariaDB did not answer within 30 s; see $DB/mariadbd.log"
    fi
    ours "$DBD_CONF"
    cat >"$DBD_CONF.new" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=segtrain_acct
EOF
    chmod 600 "$DBD_CONF.new"
    mv "$DBD_CONF.new" "$DBD_CONF"
    running "$DIR/slurmdbd.pid" || MYSQL_UNIX_PORT=$DB/mysql.sock slurmdbd  # the client library's socket
    await sacctmgr -n list cluster || die "slurmdbd did not answer within 30 s; see $DIR/slurmdbd.log"
    sacctmgr -n -P list cluster format=cluster | grep -qx segtrain || sacctmgr -i add cluster segtrain >/dev/null
}

start() {
    [ "$(id -u)" = 0 ] || die "start needs root (the daemons run as root here)"
    command -v slurmctld >/dev/null && command -v munged >/dev/null \
        || die "slurm-wlm and munge are not installed (scripts/slurm_local.sh install)"
    write_conf
    # munge: the package made a key; munged runs as its own user, with its socket in /run/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
    chmod 0400 /etc/munge/munge.key
    if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    fi
    ! accounting || start_accounting
    running "$DIR/slurmctld.pid" || slurmctld
    local name port deadline=$((SECONDS + 60)) states=""
    while read -r name port; do
        mkdir -p "$DIR/spool/$name"
        running "$DIR/slurmd-$name.pid" || slurmd -N "$name"
    done < <(nodes)
    while [ "$SECONDS" -lt "$deadline" ]; do
        if status; then
            say "up: nodes $(nodes | cut -d' ' -f1 | paste -sd' ') on this host, $CPUS CPUs each, accounting" \
                "$(accounting && echo "by slurmdbd" || echo "off"), conf $CONF, logs in $DIR"
            return 0
        fi
        states=$(sinfo -h -N -o '%N=%t' 2>/dev/null | paste -sd' ')
        for name in $(sinfo -h -N -t drain,down -o %N 2>/dev/null); do
            scontrol update nodename="$name" state=resume 2>/dev/null || true
        done
        sleep 1
    done
    say "the nodes did not become idle within 60 s (${states:-no answer}); logs in $DIR" >&2
    tail -n 20 "$DIR"/slurmctld.log "$DIR"/slurmd-*.log >&2 || true
    exit 1
}

stop() {
    local name pid
    scancel --user=root 2>/dev/null || true
    for name in $(nodes | cut -d' ' -f1 | sed 's/^/slurmd-/') slurmctld slurmdbd db/mariadbd; do
        running "$DIR/$name.pid" || continue
        pid=$(cat "$DIR/$name.pid")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    if [ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
        kill "$(cat /run/munge/munged.pid)"
    fi
    say "stopped"
}

# Every node takes jobs.
status() {
    local states
    scontrol ping >/dev/null 2>&1 && states=$(sinfo -h -N -o %t 2>/dev/null) && [ -n "$states" ] \
        && ! grep -qvE '^(idle|mix|alloc)$' <<<"$states"
}

case ${1:-} in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: scripts/slurm_local.sh install|start|stop|status" >&2; exit 2 ;;
esac
