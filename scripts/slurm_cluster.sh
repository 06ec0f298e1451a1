#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (Debian's slurm-wlm + munge), for the Slurm integration tests
# and for trying `python train.py -m ... hydra/launcher=slurm` without a cluster.
#
#   scripts/slurm_cluster.sh start    install the packages if missing, write the config, start munged/slurmctld/slurmd
#   scripts/slurm_cluster.sh stop     stop the daemons (queued jobs are kept in the state dir)
#   scripts/slurm_cluster.sh status   print sinfo/squeue, exit 1 when the cluster is not up
#
# Needs root (slurmd runs jobs as their submitting user). The config goes to /etc/slurm/slurm.conf, where sbatch and
# friends find it; an existing slurm.conf that this script did not write is never touched. State, spool and logs live
# in $LMLAB_SLURM_STATE (default /var/tmp/lmlab-slurm); slurmctld.log and slurmd.log there explain a job that did not run.
set -euo pipefail

STATE=${LMLAB_SLURM_STATE:-/var/tmp/lmlab-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by lmlab scripts/slurm_cluster.sh"
HOST=$(hostname -s)

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd and munged are system daemons); try: sudo $0 $*"
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    echo "Installing slurm-wlm and munge (apt-get)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to replace a real cluster's config"
    fi
    mkdir -p "$STATE/ctld" "$STATE/d" /etc/slurm
    local cpus mem
    cpus=$(nproc)
    # Leave a tenth of the memory to the system; CR_CPU does not schedule by memory, this only bounds --mem requests.
    mem=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10))
    cat >"$CONF" <<EOF
$MARKER: a single-node cluster for tests.
ClusterName=lmlab
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again after cred_expire seconds (Slurm's default is 120); short here, for tests.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# No cgroups here: processes are tracked by parent pid, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Look at pending jobs every few seconds (defaults: 60 s, backfill 30 s), so a requeued job restarts promptly.
SchedulerParameters=sched_interval=3,bf_interval=3
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Refuse at sbatch time a job this node can never run (e.g. more CPUs per task than it has), instead of leaving it
# pending for ever with reason PartitionConfig while the submitting command waits.
EnforcePartLimits=ALL
# Jobs may be requeued (scontrol requeue, submitit's requeue on preemption/time limit).
JobRequeue=1
ReturnToService=2
KillWait=30
MinJobAge=600
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

cmd_start() {
    need_root start
    install_packages
    write_config
    start_munge
    if running slurmctld; then
        scontrol reconfigure # a cluster started by an older version of this script takes the config just written
    else
        /usr/sbin/slurmctld
    fi
    running slurmd || /usr/sbin/slurmd
    for _ in $(seq 100); do
        state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
        case "$state" in
            idle* | mix* | alloc*) echo "Slurm is up: node $HOST ($state), partition debug"; return ;;
            down* | drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    die "the node did not come up (state '${state:-none}'); see $STATE/slurmctld.log and $STATE/slurmd.log"
}

cmd_stop() {
    need_root stop
    for daemon in slurmd slurmctld; do
        if running "$daemon"; then
            pid=$(cat "$STATE/$daemon.pid")
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    echo "Slurm stopped (state kept in $STATE)"
}

cmd_status() {
    running slurmctld && running slurmd || { echo "Slurm is not running"; exit 1; }
    sinfo
    squeue
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
