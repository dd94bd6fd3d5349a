#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying `dace slurm submit` and for its test:
#
#   deploy/slurm/local-cluster.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   deploy/slurm/local-cluster.sh stop DIR    # stops them
#
# After `start`, export SLURM_CONF=DIR/slurm.conf and sbatch/squeue/scontrol talk to it. Needs
# root (the daemons run as root here) and Debian's slurm-wlm and munge packages; everything the
# cluster writes (keys, sockets, state, logs) stays in DIR. A real cluster needs none of this:
# `dace slurm submit` only calls sbatch.
set -euo pipefail
cmd=${1:?usage: local-cluster.sh start|stop DIR}
dir=${2:?usage: local-cluster.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munge/munged.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 1
}

start() {
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || { echo "local-cluster.sh: $tool is missing: apt-get install slurm-wlm munge" >&2; exit 1; }
  done
  [ "$(id -u)" -eq 0 ] || { echo "local-cluster.sh: the daemons of this one-node cluster run as root" >&2; exit 1; }
  stop
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 700 "$dir/munge"
  [ -f "$dir/munge/munge.key" ] || { dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$dir/munge/munge.key"; }
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed"
  cpus=$(nproc)
  cat > "$dir/slurm.conf" <<CONF
ClusterName=dace-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -i
  slurmd -N localhost
  for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    case "$state" in idle*|mixed*|allocated*) echo "slurm: one node ($cpus CPUs) up; export SLURM_CONF=$SLURM_CONF"; return 0 ;; esac
    sleep 1
  done
  echo "local-cluster.sh: the node did not come up; logs in $dir/log" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: local-cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
