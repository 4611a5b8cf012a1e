#!/usr/bin/env bash
# Self-test for cluster.sh: start a throwaway cluster in a mktemp dir, run a
# plain job, a 4-task array, a job depending on it, an invalid dependency,
# cancel one running array task and resubmit just that task, then stop the
# cluster and check that no daemon, job process or listening port is left.
# Exit 0 only if every check passes. Needs root and slurm-wlm + munge.
#
# SELFTEST_TIMEOUT (s, default 120) bounds all job waits together.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=$HERE/cluster.sh
TIMEOUT=${SELFTEST_TIMEOUT:-120}
FINAL_STATES=" COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL PREEMPTED BOOT_FAIL DEADLINE "

PASS=0
FAIL=0
ok() { echo "ok - $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL - $*"; FAIL=$((FAIL + 1)); }
# check DESCRIPTION COMMAND...
check() {
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else bad "$desc"; fi
}
eq() { [[ $1 == "$2" ]] || { echo "    expected: $(printf %q "$2")  got: $(printf %q "$1")"; return 1; }; }

# Live (non-zombie) munge/slurm daemons: compared before and after, so another
# cluster already running on the machine does not fail the test.
daemon_pids() {
  ps -e -o pid=,stat=,comm= |
    awk '$2 !~ /^Z/ && $3 ~ /^(munged|slurmctld|slurmd|slurmstepd|slurmscriptd)$/ { print $1 }' |
    sort -n
}

# Processes of jobs of this cluster (slurmstepd puts SLURM_CONF in job envs);
# optional job id narrows it to one job.
job_procs() {
  local jid=${1:-} d
  for d in /proc/[0-9]*; do
    grep -zqxF "SLURM_CONF=$DIR/slurm.conf" "$d/environ" 2>/dev/null || continue
    [[ -z $jid ]] || grep -zqxF "SLURM_JOB_ID=$jid" "$d/environ" 2>/dev/null || continue
    echo "${d#/proc/}"
  done
  return 0
}

# TCP ports in LISTEN state, decimal (pure bash; no iproute2 needed).
listening_ports() {
  local _sl addr _rem st _rest f
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $f ]] || continue
    while read -r _sl addr _rem st _rest; do
      [[ $addr == *:* && $st == 0A ]] && echo $((16#${addr##*:}))
    done <"$f"
  done
  return 0
}

# One state per job / array task ("-r" expands pending array ranges).
states() { squeue -h -t all -r -j "$1" -o %T 2>/dev/null || true; }

# wait_final JOB...: until every job/task is in a final state or the deadline.
wait_final() {
  local j s all
  while :; do
    all=1
    for j in "$@"; do
      s=$(states "$j")
      [[ -n $s ]] || { all=0; break; }
      while read -r s; do
        [[ $FINAL_STATES == *" $s "* ]] || all=0
      done <<<"$(states "$j")"
    done
    ((all)) && return 0
    ((SECONDS < DEADLINE)) || { echo "    timeout waiting for: $*" >&2; squeue -t all -r >&2 || true; return 1; }
    sleep 0.5
  done
}

# wait_state JOB STATE: until squeue shows exactly that state (or deadline).
wait_state() {
  until [[ $(states "$1") == "$2" ]]; do
    ((SECONDS < DEADLINE)) || { echo "    timeout: $1 never reached $2 (now: $(states "$1"))" >&2; return 1; }
    sleep 0.3
  done
}

(( EUID == 0 )) || { echo "selftest.sh: must run as root (see cluster.sh)" >&2; exit 1; }

T0=$SECONDS
BASELINE=$(daemon_pids)
DIR=$(mktemp -d /tmp/qd-slurm-selftest.XXXXXX)
STOPPED=0

finish() {
  local rc=$?
  if ((!STOPPED)); then "$CLUSTER" stop "$DIR" >/dev/null 2>&1 || true; fi
  if ((FAIL == 0 && rc == 0)); then
    rm -rf "$DIR"
  else
    echo "selftest.sh: kept $DIR for inspection (logs in $DIR/log)" >&2
  fi
}
trap finish EXIT

echo "# cluster dir: $DIR"
if ! exports=$("$CLUSTER" start "$DIR"); then
  bad "cluster.sh start"
  echo "$PASS passed, $FAIL failed"
  exit 1
fi
ok "cluster.sh start ($((SECONDS - T0)) s)"
eval "$exports"
check "start printed SLURM_CONF=$DIR/slurm.conf" eq "${SLURM_CONF:-}" "$DIR/slurm.conf"
check "env.sh written" grep -qxF "export SLURM_CONF=$DIR/slurm.conf" "$DIR/env.sh"
check "sinfo: node idle in partition debug" eq "$(sinfo -h -p debug -o '%P %T %D')" "debug* idle 1"

DEADLINE=$((SECONDS + TIMEOUT))
W=$DIR/work
mkdir -p "$W"
# Array task: write ID/COUNT to PREFIX_ID after sleeping SLEEP seconds.
cat >"$W/task.sh" <<'EOF'
#!/bin/sh
sleep "$2"
echo "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" >"$1_$SLURM_ARRAY_TASK_ID"
EOF
chmod +x "$W/task.sh"

# --- plain job, array, dependency, invalid dependency ------------------------
P=$(sbatch --parsable -J plain -o "$W/plain.out" --wrap 'echo plain-ok')
A=$(sbatch --parsable -J arr -a 0-3 -o "$W/arr_%A_%a.log" "$W/task.sh" "$W/arr" 1)
# Tasks sleep 1 s and only 2 run at once: run early and it would see < 4 files.
D=$(sbatch --parsable -J dep -d "afterok:$A" -o "$W/dep.out" \
  --wrap "cat $W/arr_0 $W/arr_1 $W/arr_2 $W/arr_3")
F=$(sbatch --parsable -J fails -o /dev/null --wrap 'exit 3')
G=$(sbatch --parsable -J never -d "afterok:$F" -o "$W/never.out" --wrap 'echo ran')
echo "# jobs: plain=$P array=$A dependent=$D failing=$F invalid-dependent=$G"

if wait_final "$P" "$A" "$D" "$F" "$G"; then ok "all jobs finished ($((SECONDS - T0)) s)"; else bad "all jobs finished"; fi
check "plain job COMPLETED" eq "$(states "$P")" COMPLETED
check "plain job output" eq "$(cat "$W/plain.out" 2>/dev/null)" plain-ok
check "array: 4 tasks COMPLETED" eq "$(states "$A" | sort | uniq -c | sed 's/^ *//')" "4 COMPLETED"
for i in 0 1 2 3; do
  check "array task $i wrote $i/4" eq "$(cat "$W/arr_$i" 2>/dev/null)" "$i/4"
done
check "dependent job COMPLETED" eq "$(states "$D")" COMPLETED
check "dependent job ran after the whole array" eq "$(cat "$W/dep.out" 2>/dev/null)" $'0/4\n1/4\n2/4\n3/4'
check "failing job FAILED" eq "$(states "$F")" FAILED
check "kill_invalid_depend: afterok on failed job CANCELLED" eq "$(states "$G")" CANCELLED
check "kill_invalid_depend: its script never ran" test ! -e "$W/never.out"

# --- cancel one running array task, resubmit just that task ------------------
K=$(sbatch --parsable -J kill -a 0-1 -o "$W/kill_%A_%a.log" "$W/task.sh" "$W/kill" 300)
check "array task ${K}_0 RUNNING" wait_state "${K}_0" RUNNING
check "array task ${K}_1 RUNNING" wait_state "${K}_1" RUNNING
K1=$(squeue -h -j "${K}_1" -o %A)
check "task ${K}_1 (job $K1) has processes" test -n "$(job_procs "$K1")"
scancel "${K}_1"
check "scancel ${K}_1: task CANCELLED" wait_final "${K}_1"
check "scancel ${K}_1: state is CANCELLED" eq "$(states "${K}_1")" CANCELLED
gone() {
  local end=$((SECONDS + 15))
  while [[ -n $(job_procs "$1") ]]; do ((SECONDS < end)) || return 1; sleep 0.3; done
}
check "scancel ${K}_1: its processes are gone" gone "$K1"
check "sibling ${K}_0 still RUNNING" eq "$(states "${K}_0")" RUNNING
check "cancelled task wrote no result" test ! -e "$W/kill_1"
# A one-task array: SLURM_ARRAY_TASK_ID is kept, SLURM_ARRAY_TASK_COUNT is 1.
R=$(sbatch --parsable -J kill -a 1 -o "$W/kill_%A_%a.log" "$W/task.sh" "$W/kill" 0)
check "resubmitted task ${R}_1 finished" wait_final "$R"
check "resubmitted task COMPLETED" eq "$(states "$R")" COMPLETED
check "resubmitted task wrote 1/1" eq "$(cat "$W/kill_1" 2>/dev/null)" "1/1"
# ${K}_0 (sleep 300) stays running on purpose: stop must cancel it.

# --- stop and verify nothing is left -----------------------------------------
PORTS=$(cat "$DIR/ports")
T1=$SECONDS
if "$CLUSTER" stop "$DIR"; then ok "cluster.sh stop ($((SECONDS - T1)) s)"; else bad "cluster.sh stop"; fi
STOPPED=1
left=$(comm -13 <(echo "$BASELINE") <(daemon_pids) | grep . || true)
if [[ -z $left ]]; then ok "no munge/slurm process left"; else
  bad "no munge/slurm process left"; ps -o pid=,stat=,args= -p "${left//$'\n'/,}" || true
fi
left=$(job_procs)
if [[ -z $left ]]; then ok "no job process left"; else
  bad "no job process left"; ps -o pid=,stat=,args= -p "${left//$'\n'/,}" || true
fi
listening=" $(listening_ports | tr '\n' ' ') "
for p in $PORTS; do
  check "port $p not listening" test "${listening/ $p /}" == "$listening"
done
check "cluster.sh stop again (idempotent)" "$CLUSTER" stop "$DIR"

echo "# elapsed: $((SECONDS - T0)) s"
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
