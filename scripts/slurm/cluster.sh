#!/usr/bin/env bash
# Throwaway single-node Slurm cluster (munged + slurmctld + slurmd) that lives
# entirely under one directory, for tests.
#
#   cluster.sh start DIR   start it; prints `export SLURM_CONF=...` on stdout
#                          (so `eval "$(cluster.sh start DIR)"` works) and
#                          writes DIR/env.sh; progress goes to stderr
#   cluster.sh stop DIR    cancel all jobs, stop the daemons, kill leftovers;
#                          safe on a stopped or half-started cluster
#
# Needs root and the Debian packages slurm-wlm and munge. Nothing is written
# outside DIR: the daemons get explicit -f/--socket/--key-file flags and
# clients find this cluster through SLURM_CONF alone (slurm.conf's
# AuthInfo=socket= points every Slurm command at DIR's munged).
#
# Environment knobs: CLUSTER_START_TIMEOUT (s, default 60),
# CLUSTER_STOP_TIMEOUT (s, default 30).
set -euo pipefail
# The daemons live in /usr/sbin, which non-login shells may not have on PATH.
PATH=$PATH:/usr/sbin:/sbin

PROG=cluster.sh
NODE=localhost            # fixed node name: no dependence on `hostname`/DNS
PARTITION=debug
MARK_VAR=QD_SLURM_CLUSTER_DIR   # set only in the daemons' environment, so
                                # leftovers (slurmstepd too) can be found

log() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

usage() {
  echo "usage: $PROG start DIR | stop DIR" >&2
  exit 2
}

# ---- process helpers --------------------------------------------------------

# True if pid exists and is not a zombie (PID 1 here does not reap orphans,
# so dead daemons linger as zombies; kill -0 alone would call them alive).
alive() {
  local st
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

# Pid of this cluster's daemon from its pid file, only if that process really
# belongs to DIR (guards against pid reuse after a crash).
pid_from_file() {
  local f=$1 pid
  [[ -s $f ]] || return 1
  pid=$(tr -dc '0-9' <"$f")
  alive "$pid" || return 1
  is_ours "$pid" || { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null |
    grep -qF -- "$DIR/" || return 1
  echo "$pid"
}

# A process is ours if it carries the marker that only our daemons get (and
# pass on to slurmscriptd/slurmstepd), or, because Slurm's setproctitle can
# clobber the environ area, if it is a munged/slurm* process holding a file
# under DIR open (its log). Never by command line alone: that would also hit
# e.g. a `tail -f DIR/log/...` someone left running.
is_ours() {
  local pid=$1 comm fd
  grep -zqxF -e "$MARK_VAR=$DIR" "/proc/$pid/environ" 2>/dev/null && return 0
  { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || return 1
  [[ $comm == munged || $comm == slurm* ]] || return 1
  for fd in "/proc/$pid/fd/"*; do
    [[ $(readlink "$fd" 2>/dev/null) == "$DIR"/* ]] && return 0
  done
  return 1
}

# Job processes: slurmstepd sets SLURM_CONF in every job's environment.
is_job_of_ours() {
  local pid=$1
  grep -zqxF -e "SLURM_CONF=$DIR/slurm.conf" "/proc/$pid/environ" 2>/dev/null &&
    grep -zq '^SLURM_JOB_ID=' "/proc/$pid/environ" 2>/dev/null
}

# Every live process belonging to this cluster: daemons, slurmscriptd,
# slurmstepd, job processes and their descendants. Never this script or its
# ancestors/children (e.g. a test runner started with SLURM_CONF exported).
cluster_pids() {
  local -A ppid_of=() stat_of=() keep=() skip=()
  local pid p changed i
  local -a f
  # Word-split ps output at once: `read` from a pipe costs a syscall per byte.
  read -r -d '' -a f < <(ps -e -o pid=,ppid=,stat=) || true
  for ((i = 0; i + 2 < ${#f[@]}; i += 3)); do
    ppid_of[${f[i]}]=${f[i + 1]}
    stat_of[${f[i]}]=${f[i + 2]}
  done
  # Skip ourselves and our ancestors.
  p=$$
  while [[ -n $p && $p != 0 ]]; do skip[$p]=1; p=${ppid_of[$p]:-}; done
  for pid in "${!ppid_of[@]}"; do
    [[ ${stat_of[$pid]} == Z* ]] && continue
    if is_ours "$pid" || is_job_of_ours "$pid"; then keep[$pid]=1; fi
  done
  # Add descendants of what we found (job processes without SLURM_CONF).
  changed=1
  while ((changed)); do
    changed=0
    for pid in "${!ppid_of[@]}"; do
      [[ -n ${keep[$pid]:-} || ${stat_of[$pid]} == Z* ]] && continue
      if [[ -n ${keep[${ppid_of[$pid]}]:-} ]]; then keep[$pid]=1; changed=1; fi
    done
  done
  # Drop ourselves, ancestors, and our own children (sinfo, grep, ...).
  for pid in "${!keep[@]}"; do
    [[ -n ${skip[$pid]:-} || ${ppid_of[$pid]} == "$$" ]] && continue
    alive "$pid" && echo "$pid"
  done
  return 0
}

describe() { ps -o pid=,args= -p "$1" 2>/dev/null | sed 's/^ *//' || true; }

# wait_gone SECONDS PID... : wait until none of the pids is alive.
wait_gone() {
  local t=$1 end pid any
  shift
  end=$((SECONDS + t))
  while :; do
    any=0
    for pid in "$@"; do alive "$pid" && any=1; done
    ((any)) || return 0
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# ---- port helpers (read /proc/net directly: no iproute2 dependency) ---------

# Local TCP ports (decimal, one per line) from /proc/net/tcp{,6}; with an
# argument, only sockets in that state (0A = LISTEN). awk picks the hex
# fields (mawk has no hex parsing), bash converts them.
tcp_ports() {
  local h
  local -a hex=()
  read -r -d '' -a hex < <(awk -v want="${1:-}" 'FNR > 1 && (want == "" || $4 == want) {
      n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null) || true
  for h in "${hex[@]}"; do echo $((16#$h)); done | sort -un
}

# Random port below the kernel's ephemeral range, not in use, not in "$@".
pick_port() {
  local lo=20000 hi=32000 p i used eph_lo _x
  read -r eph_lo _x </proc/sys/net/ipv4/ip_local_port_range || eph_lo=32768
  ((hi < eph_lo)) || hi=$((eph_lo - 1))
  ((hi > lo + 100)) || { lo=40000; hi=60000; }
  used=" $(tcp_ports | tr '\n' ' ') $* "
  for ((i = 0; i < 500; i++)); do
    p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
    [[ $used == *" $p "* ]] || { echo "$p"; return 0; }
  done
  return 1
}

# ---- start -----------------------------------------------------------------

tail_logs() {
  local f
  for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$DIR/munge/munged.log" \
    "$DIR"/log/*.stdout; do
    [[ -s $f ]] || continue
    echo "----- tail of $f -----" >&2
    tail -n 15 "$f" >&2
  done
}

start_failed() {
  log "error: $*"
  tail_logs
  log "cleaning up the half-started cluster"
  do_stop >&2 || true
  exit 1
}

do_start() {
  local t=${CLUSTER_START_TIMEOUT:-60} cmd pid
  for cmd in munged mungekey munge slurmctld slurmd sinfo scontrol scancel squeue; do
    command -v "$cmd" >/dev/null ||
      die "'$cmd' not found; install with: apt-get install -y slurm-wlm munge"
  done

  if [[ -d $DIR ]] && [[ -n $(cluster_pids) ]]; then
    die "a cluster is already running in $DIR; run '$PROG stop $DIR' first"
  fi

  # Fresh state each start: job ids restart at 1, no stale sockets.
  rm -rf "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run" \
    "$DIR/slurm.conf" "$DIR/env.sh" "$DIR/ports"
  # munged requires every directory above its socket to be o+x.
  chmod 0755 "$DIR"
  mkdir -m 0711 "$DIR/munge"
  mkdir -m 0755 "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"

  local ctld_port slurmd_port cpus mem_kb mem_mb
  ctld_port=$(pick_port) || die "no free TCP port found"
  slurmd_port=$(pick_port "$ctld_port") || die "no free TCP port found"
  echo "$ctld_port $slurmd_port" >"$DIR/ports"

  cpus=$(nproc)
  mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  # slurmd drains a node whose RealMemory exceeds what it measures: keep 5% slack.
  mem_mb=$((mem_kb * 95 / 102400))

  cat >"$DIR/slurm.conf" <<EOF
# Generated by scripts/slurm/cluster.sh: throwaway single-node test cluster.
ClusterName=qdtest
# "localhost" is accepted as the controller name whatever \`hostname\` says.
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Private munged; cred_expire also bounds how long a requeued job waits (default 120 s).
AuthInfo=socket=$DIR/munge/munge.sock,cred_expire=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroup control in containers: track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobContainerType=job_container/none
# CR_Core: CPUs are the consumable; with memory too, a job without --mem
# would claim the whole node. Short intervals: time-based events (requeue
# BeginTime, freed CPUs) are acted on within seconds, not a minute.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=5,bf_interval=5
# No slurmdbd: no accounting, so no sacct; finished jobs stay visible to
# squeue -t all / scontrol for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
# A job whose dependency can never be met is cancelled, not left pending.
DependencyParameters=kill_invalid_depend
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MailProg=/bin/true
# Fast teardown: SIGKILL 5 s after SIGTERM on scancel.
KillWait=5
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

  export SLURM_CONF=$DIR/slurm.conf
  # Daemons: marker in env, stdio detached (so "$(cluster.sh start)" returns),
  # lock fd closed (so they do not hold DIR/.lock forever).
  local -a denv=(env "$MARK_VAR=$DIR" "SLURM_CONF=$SLURM_CONF")

  log "starting munged"
  mungekey --create --keyfile="$DIR/munge/munge.key" 2>>"$DIR/log/mungekey.stdout" ||
    start_failed "mungekey failed"
  chmod 0600 "$DIR/munge/munge.key"
  "${denv[@]}" munged --socket="$DIR/munge/munge.sock" \
    --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    </dev/null >>"$DIR/log/munged.stdout" 2>&1 9>&- ||
    start_failed "munged did not start"
  local end=$((SECONDS + t))
  until munge -n -S "$DIR/munge/munge.sock" </dev/null >/dev/null 2>&1; do
    ((SECONDS < end)) || start_failed "munged socket not answering after ${t}s"
    sleep 0.2
  done

  log "starting slurmctld (port $ctld_port)"
  "${denv[@]}" slurmctld -f "$SLURM_CONF" \
    </dev/null >>"$DIR/log/slurmctld.stdout" 2>&1 9>&- ||
    start_failed "slurmctld did not start"
  log "starting slurmd -N $NODE (port $slurmd_port)"
  "${denv[@]}" slurmd -f "$SLURM_CONF" -N "$NODE" \
    </dev/null >>"$DIR/log/slurmd.stdout" 2>&1 9>&- ||
    start_failed "slurmd did not start"

  local state=""
  while :; do
    state=$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    for pid in slurmctld slurmd; do
      # Daemon died (bad config, port taken, ...): fail now, not at timeout.
      if [[ -s $DIR/run/$pid.pid ]] && ! pid_from_file "$DIR/run/$pid.pid" >/dev/null; then
        start_failed "$pid exited during startup"
      fi
    done
    ((SECONDS < end)) ||
      start_failed "node '$NODE' not idle after ${t}s (state: '${state:-no answer}')"
    sleep 0.5
  done

  cat >"$DIR/env.sh" <<EOF
# Source this to use the test cluster in $DIR. Slurm clients need only
# SLURM_CONF: slurm.conf's AuthInfo=socket= gives them the munge socket.
# (The munge/unmunge CLIs read no env var: pass -S $DIR/munge/munge.sock.)
export SLURM_CONF=$DIR/slurm.conf
EOF
  log "cluster up in $DIR (slurmctld :$ctld_port, slurmd :$slurmd_port, ${cpus} CPUs, ${mem_mb} MB); stop with: $0 stop $DIR"
  echo "export SLURM_CONF=$DIR/slurm.conf"
}

# ---- stop ------------------------------------------------------------------

do_stop() {
  local t=${CLUSTER_STOP_TIMEOUT:-30} rc=0 pid ctld slurmd munged p
  local -a left=() ports=()
  if [[ ! -d $DIR ]]; then
    log "nothing to stop: $DIR does not exist"
    return 0
  fi
  export SLURM_CONF=$DIR/slurm.conf

  ctld=$(pid_from_file "$DIR/run/slurmctld.pid" || true)
  if [[ -n $ctld && -f $SLURM_CONF ]]; then
    # scontrol shutdown leaves running job steps behind: cancel jobs first.
    log "cancelling all jobs"
    timeout 15 scancel --partition="$PARTITION" >&2 || log "warning: scancel failed"
    local end=$((SECONDS + t)) n
    while :; do
      n=$(timeout 10 squeue -h -o %i 2>/dev/null | wc -l) || n=-1
      ((n == 0)) && break
      if ((SECONDS >= end)); then
        log "warning: $n job(s) still listed after ${t}s; killing their processes below"
        break
      fi
      sleep 0.3
    done
    log "scontrol shutdown"
    timeout 15 scontrol shutdown >&2 || log "warning: scontrol shutdown failed"
  fi

  ctld=$(pid_from_file "$DIR/run/slurmctld.pid" || true)
  slurmd=$(pid_from_file "$DIR/run/slurmd.pid" || true)
  # shellcheck disable=SC2086  # empty vars must vanish
  if ! wait_gone 15 $ctld $slurmd; then
    for pid in $ctld $slurmd; do
      alive "$pid" && { log "killing slurm daemon: $(describe "$pid")"; kill -TERM "$pid" 2>/dev/null || true; }
    done
  fi

  munged=$(pid_from_file "$DIR/munge/munged.pid" || true)
  if [[ -n $munged ]]; then
    # Not `munged --stop`: it polls with kill(pid, 0), which a zombie passes,
    # so here (PID 1 does not reap) it would always wait out its timeout.
    kill -TERM "$munged" 2>/dev/null || true
    wait_gone 10 "$munged" || true
  fi

  # Anything left (daemons that ignored TERM, orphaned slurmstepd or job
  # processes): TERM, then KILL, and say what it was.
  mapfile -t left < <(cluster_pids)
  if ((${#left[@]})); then
    for pid in "${left[@]}"; do
      alive "$pid" || continue   # already gone with its parent
      log "killing leftover: $(describe "$pid")"
      kill -TERM "$pid" 2>/dev/null || true
    done
    if ! wait_gone 5 "${left[@]}"; then
      for pid in "${left[@]}"; do
        alive "$pid" && { log "SIGKILL: $(describe "$pid")"; kill -KILL "$pid" 2>/dev/null || true; }
      done
      wait_gone 5 "${left[@]}" || true
    fi
  fi

  # Verify.
  mapfile -t left < <(cluster_pids)
  if ((${#left[@]})); then
    for pid in "${left[@]}"; do log "error: still running: $(describe "$pid")"; done
    rc=1
  fi
  if [[ -s $DIR/ports ]]; then
    read -r -a ports <"$DIR/ports"
    for p in "${ports[@]}"; do
      if tcp_ports 0A | grep -qx "$p"; then
        log "error: TCP port $p is still listening"
        rc=1
      fi
    done
  fi
  ((rc == 0)) && log "cluster in $DIR stopped"
  return "$rc"
}

# ---- main ------------------------------------------------------------------

(($# == 2)) || usage
ACTION=$1
((EUID == 0)) || die "must run as root (slurmd has to be root to launch jobs; SlurmUser=root)"
if [[ $ACTION == start ]]; then mkdir -p -- "$2" || die "cannot create $2"; fi
if [[ -d $2 ]]; then
  DIR=$(cd -- "$2" && pwd -P)
else
  DIR=$2
fi
# Serialize start/stop on the same DIR.
if [[ -d $DIR ]]; then
  exec 9>"$DIR/.lock"
  flock -w 120 9 || die "timed out waiting for the lock on $DIR/.lock"
fi

case $ACTION in
  start) do_start ;;
  stop) do_stop ;;
  *) usage ;;
esac
