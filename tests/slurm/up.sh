#!/usr/bin/env bash
# Starts a single-host Slurm cluster on this machine, for the Slurm executor's test:
# munged, slurmctld and slurmd from Debian's packages, one node (this host, its CPUs and
# memory), one partition `debug`. Idempotent: a cluster that already answers is left as is.
# Needs root. Installs the packages when they are missing and apt-get can (`--install`).
#
#   tests/slurm/up.sh [--install]      then: sinfo; cargo test --test integration slurm::
set -euo pipefail

if [ "${1:-}" = "--install" ] && ! command -v slurmctld >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "up.sh: $tool is not installed (run with --install)" >&2; exit 1; }
done
if pgrep -x slurmctld >/dev/null && pgrep -x slurmd >/dev/null \
    && [ -n "$(timeout 5 sinfo -h -t idle,mix,alloc -o %n 2>/dev/null)" ]; then
    echo "up.sh: a Slurm cluster already answers"; exit 0
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))

# munge: a key (the package makes one; make it if missing) and the daemon.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged
    else
        munged --force
    fi
fi

conf_dir=/etc/slurm
# A configuration this script did not write belongs to a real cluster: never replaced.
if [ -e "$conf_dir/slurm.conf" ] && ! grep -q '^ClusterName=mmflow-test$' "$conf_dir/slurm.conf"; then
    echo "up.sh: $conf_dir/slurm.conf exists and is not this test cluster's; not touching it" >&2
    exit 1
fi
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf_dir/slurm.conf" <<CONF
ClusterName=mmflow-test
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do
    # A node marked down while its slurmd was away comes back.
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    if [ -n "$(sinfo -h -t idle,mix,alloc -o %n 2>/dev/null)" ]; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "up.sh: the cluster did not come up; logs in /var/log/slurm" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
