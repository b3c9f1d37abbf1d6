#!/usr/bin/env bash
# Soak + chaos test of sorakaQ: runs cmd/sorakaq-soak (a known set of messages,
# each with a plan: plain / cancel / setDelay / failing callback) against
# sorakaQ while killing it, then checks every message (docs/reliability.md).
#
#   scripts/soak.sh allinone    [--short] [options]   `sorakaq all`, kill -9 + restart on the same data dir
#   scripts/soak.sh distributed [--short] [options]   receive, center x2, worker x1|x2, admin over its own
#                                                     Redis/ZooKeeper/Kafka; kills roles, kills/stops servers
# Options:
#   --short            CI size: allinone 300 msgs, delays 1-8 s, 2 kills (< 90 s);
#                      distributed 600 msgs at 10/s, delays 1-8 s, 6 faults (< 3 min with the infra cached)
#   --n N --rate R     messages and submits/s            (allinone 2000 @ 100/s; distributed 3000 @ 20/s)
#   --min-delay D --max-delay D   delays (Go durations)  (1s .. 30s)
#   --kills K          allinone: kill -9 this many times (3), every --kill-every MIN-MAX s (8-15)
#   --workers 1|2      distributed: worker processes (2); the slots spread the topic over them
#   --outage kill|stop|both  distributed: Redis, ZooKeeper and Kafka outages by kill -9 (kill), by a
#                      graceful stop (stop), or each once both ways (both: 9 faults); default both,
#                      --short: kill (CI: one short run --workers 1 --outage kill, one --workers 2 --outage stop)
#   --max-late D       fail on a callback later than this after its due time (allinone 15s, distributed 60s)
#   --max-dup N        fail above N duplicate callbacks (allinone 25 per kill, distributed 50)
#   --seed S           plan seed and chaos timing seed (default: time)
#   --grace D          wait at most this long after the last due time (60s)
#   --keep             keep the work directory (kept anyway on failure)
#   -- ARGS...         more flags for sorakaq-soak (e.g. -early-tolerance 1ms, -pct-race 40)
# Environment: SORAKAQ_SOAK_DIR (work dir; default a new /tmp/sorakaq-soak.XXXXXX);
# distributed: the infra instance is NOT the shared one: SORAKAQ_INFRA_DIR (/tmp/sorakaq-soak-infra),
# SORAKAQ_REDIS_PORT (26379), SORAKAQ_ZK_PORT (22181), SORAKAQ_KAFKA_PORT (29092),
# SORAKAQ_KAFKA_CONTROLLER_PORT (29093); each of its servers that was not running before the soak
# is stopped at the end, the others are left running.
# Exit status: 0 pass; 1 the soak tool's verdict failed (any check, see docs/reliability.md), a role
# panicked, or a role did not come back / is not running at the end; 2 when setup failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=${1:-}
case "$MODE" in allinone|distributed) shift ;; *) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;; esac

SHORT=0 N="" RATE="" MIN_DELAY=1s MAX_DELAY="" KILLS="" KILL_EVERY=8-15 SEED=$(( $(date +%s) % 100000 )) GRACE=60s KEEP=0
WORKERS=2 OUTAGE="" MAX_LATE="" MAX_DUP=""
EXTRA=()
while (($#)); do
  case "$1" in
    --short) SHORT=1 ;;
    --n) N=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --min-delay) MIN_DELAY=$2; shift ;;
    --max-delay) MAX_DELAY=$2; shift ;;
    --kills) KILLS=$2; shift ;;
    --kill-every) KILL_EVERY=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --outage) OUTAGE=$2; shift ;;
    --max-late) MAX_LATE=$2; shift ;;
    --max-dup) MAX_DUP=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --grace) GRACE=$2; shift ;;
    --keep) KEEP=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "soak: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ $MODE == allinone ]]; then
  if ((SHORT)); then : "${N:=300}" "${RATE:=10}" "${MAX_DELAY:=8s}" "${KILLS:=2}"; GRACE=30s; fi
  : "${N:=2000}" "${RATE:=100}" "${MAX_DELAY:=30s}" "${KILLS:=3}"
  : "${MAX_LATE:=15s}" "${MAX_DUP:=$((25 * KILLS))}"
else
  if ((SHORT)); then : "${N:=600}" "${RATE:=10}" "${MAX_DELAY:=8s}" "${OUTAGE:=kill}"; fi
  : "${N:=3000}" "${RATE:=20}" "${MAX_DELAY:=30s}" "${OUTAGE:=both}"
  : "${MAX_LATE:=60s}" "${MAX_DUP:=50}"
  case "$WORKERS" in 1|2) ;; *) echo "soak: --workers must be 1 or 2" >&2; exit 2 ;; esac
  case "$OUTAGE" in kill|stop|both) ;; *) echo "soak: --outage must be kill, stop or both" >&2; exit 2 ;; esac
fi
RANDOM=$SEED

WORK=${SORAKAQ_SOAK_DIR:-$(mktemp -d /tmp/sorakaq-soak.XXXXXX)}
mkdir -p "$WORK/data" "$WORK/logs"
EVENTS="$WORK/events.log"
: >"$EVENTS"
T0=$(date +%s.%N)
ev() { # a timestamped line on the terminal and in events.log
  local line
  line=$(printf '%s +%6.1fs %s' "$(date +%T.%3N)" "$(echo "$(date +%s.%N) - $T0" | bc)" "$*")
  echo "soak: $line" >&2
  echo "$line" >>"$EVENTS"
}
die() { echo "soak: ERROR: $*" >&2; exit 2; }
command -v bc >/dev/null || die "needs bc"
command -v curl >/dev/null || die "needs curl"

# ---------------------------------------------------------------- build
ev "building bin/sorakaq and bin/sorakaq-soak"
mkdir -p bin
go build -trimpath -o bin/sorakaq ./cmd/sorakaq
go build -trimpath -o bin/sorakaq-soak ./cmd/sorakaq-soak
BIN="$ROOT/bin/sorakaq"

# ---------------------------------------------------------------- processes
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Listen ports are chosen below the kernel's ephemeral range: a port inside it can be taken by
# any outgoing connection (a role's own to Kafka or Redis) between the choice and the bind, as
# CI saw once ("admin: listen 127.0.0.1:52826: bind: address already in use"). The soak
# instance's server ports are never chosen.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
[[ $EPHEMERAL_LOW =~ ^[0-9]+$ ]] && ((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=32768
USED_PORTS=" ${SORAKAQ_REDIS_PORT:-26379} ${SORAKAQ_ZK_PORT:-22181} ${SORAKAQ_KAFKA_PORT:-29092} ${SORAKAQ_KAFKA_CONTROLLER_PORT:-29093} "
# free_port: sets FREE_PORT to a port nothing listens on and no earlier call chose (run it in
# this shell, not in $(...), or USED_PORTS forgets the choice).
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    [[ $USED_PORTS == *" $p "* ]] && continue
    port_open "$p" && continue
    USED_PORTS+="$p "
    FREE_PORT=$p; return
  done
}

# The children get no SORAKAQ_* of ours except what we set.
CLEAN=()
for v in $(compgen -e); do [[ $v == SORAKAQ_* ]] && CLEAN+=(-u "$v"); done
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
declare -A ROLE PORT PID ENVS
COMMON=(SORAKAQ_LOG_LEVEL=info SORAKAQ_LOG_FORMAT=console "SORAKAQ_WORKER_RETRY_BACKOFF=200ms,400ms"
        SORAKAQ_SHUTDOWN_TIMEOUT=10s "SORAKAQ_ADMIN_API_TOKEN=$TOKEN")

# define NAME ROLE ENV...: a process to run (started by start_proc, restarted with the same env and port).
define() { local n=$1 r=$2; shift 2; free_port; ROLE[$n]=$r; PORT[$n]=$FREE_PORT; ENVS[$n]="$*"; }

start_proc() {
  local n=$1 role=${ROLE[$1]} port=${PORT[$1]} r a listen=()
  for r in receive admin center worker; do
    a=0
    [[ $r == "$role" ]] && a=$port
    [[ $role == all && $r == receive ]] && a=$port
    [[ $role == all && $r == admin ]] && a=${PORT[admin_of_all]}
    listen+=("SORAKAQ_${r^^}_LISTEN=127.0.0.1:$a")
  done
  echo "=== $(date +%T.%3N) start $n ===" >>"$WORK/logs/$n.log"
  # shellcheck disable=SC2086  # ENVS is a list of KEY=VALUE without spaces
  env "${CLEAN[@]}" "${COMMON[@]}" ${ENVS[$n]} "${listen[@]}" "$BIN" "$role" >>"$WORK/logs/$n.log" 2>&1 </dev/null &
  PID[$n]=$!
  local i
  for i in $(seq 600); do   # 60 s
    if ! kill -0 "${PID[$n]}" 2>/dev/null; then
      ev "$n exited while starting; last lines of $WORK/logs/$n.log:"; tail -n 20 "$WORK/logs/$n.log" >&2; return 1
    fi
    curl -fsS -m 2 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && { ev "$n ready (pid ${PID[$n]}, port $port, $((i / 10)) s)"; return 0; }
    sleep 0.1
  done
  ev "$n not ready within 60 s (still running, pid ${PID[$n]}); going on"
}

kill9() {
  local n=$1
  ev "CHAOS kill -9 $n (pid ${PID[$n]})"
  kill -9 "${PID[$n]}" 2>/dev/null || true
  wait "${PID[$n]}" 2>/dev/null || true
}

STOPPED_INFRA=""        # servers of the soak's infra instance that are down because of the chaos
declare -A INFRA_BEFORE # redis/zk/kafka -> up|down before the soak started
ROLE_TROUBLE=0          # a role that did not come back or is not running at the end
infra() { scripts/infra.sh "$@" >>"$WORK/logs/infra.log" 2>&1; }

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$? n
  set +e
  for n in "${!PID[@]}"; do kill -TERM "${PID[$n]}" 2>/dev/null; done
  for n in "${!PID[@]}"; do
    for _ in $(seq 150); do kill -0 "${PID[$n]}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${PID[$n]}" 2>/dev/null && { echo "soak: $n ignored SIGTERM for 15 s; kill -9" >&2; kill -9 "${PID[$n]}"; }
  done
  if [[ $MODE == distributed ]]; then
    for n in kafka zk redis; do
      [[ -v "INFRA_BEFORE[$n]" ]] || continue # not looked at yet: not touched
      if [[ ${INFRA_BEFORE[$n]} == up ]]; then
        [[ " $STOPPED_INFRA " == *" $n "* ]] && { echo "soak: starting $n again (it was running before the soak)" >&2; infra start-one "$n"; }
      else
        echo "soak: stopping $n (the soak started it)" >&2; infra stop-one "$n"
      fi
    done
  fi
  if ((rc == 0 && KEEP == 0)) && [[ -z ${SORAKAQ_SOAK_DIR:-} ]]; then rm -rf "$WORK"; else echo "soak: work directory kept: $WORK" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# sleep_until SECONDS: sleep until T0 + SECONDS.
sleep_until() { local d; d=$(echo "$T0 + $1 - $(date +%s.%N)" | bc); (($(echo "$d > 0" | bc))) && sleep "$d"; return 0; }
soak_running() { kill -0 "$SOAK_PID" 2>/dev/null; }

add_topic() { # add_topic ADMIN_PORT TOPIC WORKER_NUM PARTITIONS
  local out
  out=$(curl -sS -m 10 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/sorakaq/topic/add" \
    -d "{\"business\":\"soak\",\"topic_name\":\"$2\",\"worker_num\":$3,\"partitions\":$4,\"retry_backoff_ms\":[200,400]}")
  ev "topic $2: $out"
  [[ $out == *'"ec":200'* ]] || die "could not create the topic"
}

run_soak() { # run_soak RECEIVE_PORT TOPIC: starts the tool in the background (SOAK_PID)
  bin/sorakaq-soak -url "http://127.0.0.1:$1" -topic "$2" -n "$N" -rate "$RATE" -min-delay "$MIN_DELAY" \
    -max-delay "$MAX_DELAY" -seed "$SEED" -grace "$GRACE" -fail-attempts 3 -max-late "$MAX_LATE" -max-dup "$MAX_DUP" \
    -json-out "$WORK/report.json" -detail "$WORK/detail.jsonl" "${EXTRA[@]}" >"$WORK/report.txt" 2>"$WORK/soak.log" &
  SOAK_PID=$!
  ev "sorakaq-soak started (pid $SOAK_PID): n=$N rate=$RATE/s delays=$MIN_DELAY..$MAX_DELAY seed=$SEED max-late=$MAX_LATE max-dup=$MAX_DUP"
}

finish() {
  local rc=0
  wait "$SOAK_PID" || rc=$?
  ev "sorakaq-soak exited $rc"
  echo
  cat "$WORK/report.txt"
  echo
  echo "chaos events ($EVENTS):"
  grep -E 'CHAOS|ready|exited|killed|stopped|started again|did not|not running' "$EVENTS" | sed 's/^/  /'
  echo "server logs ($WORK/logs): lines with panic / ERROR / WARN:"
  local f panics total_panics=0
  for f in "$WORK"/logs/*.log; do
    [[ $f == */infra.log ]] && continue
    panics=$(grep -Ec '^panic|^fatal error' "$f" || true)
    total_panics=$((total_panics + panics))
    printf '  %-8s starts %s  panic %s  ERROR %s  WARN %s\n' "$(basename "$f" .log)" "$(grep -c '^=== .* start ' "$f" || true)" \
      "$panics" "$(grep -c $'\tERROR\t' "$f" || true)" "$(grep -c $'\tWARN\t' "$f" || true)"
  done
  echo "report: $WORK/report.json, per message: $WORK/detail.jsonl"
  if ((total_panics > 0)); then echo "soak: FAIL: $total_panics panic/fatal error lines in the server logs" >&2; ((rc)) || rc=1; fi
  if ((ROLE_TROUBLE > 0)); then echo "soak: FAIL: a role did not come back or was not running at the end (see events)" >&2; ((rc)) || rc=1; fi
  echo "soak: exit $rc"
  [[ $rc == 0 ]] || KEEP=1
  return "$rc"
}

# ---------------------------------------------------------------- all-in-one
if [[ $MODE == allinone ]]; then
  free_port; PORT[admin_of_all]=$FREE_PORT
  define all all "SORAKAQ_DATA_DIR=$WORK/data/all"
  start_proc all || exit 2
  TOPIC=soak-$SEED-$(date +%s)
  add_topic "${PORT[admin_of_all]}" "$TOPIC" 1 1
  run_soak "${PORT[all]}" "$TOPIC"
  kmin=${KILL_EVERY%-*} kmax=${KILL_EVERY#*-}
  for ((k = 1; k <= KILLS; k++)); do
    sleep $((kmin + RANDOM % (kmax - kmin + 1)))
    soak_running || break
    kill9 all
    sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
    start_proc all || { ROLE_TROUBLE=1; break; }
  done
  kill -0 "${PID[all]}" 2>/dev/null || { ev "all is not running at the end of the chaos"; ROLE_TROUBLE=1; }
  rc=0; finish || rc=$?
  exit "$rc"
fi

# ---------------------------------------------------------------- distributed
export SORAKAQ_INFRA_DIR=${SORAKAQ_INFRA_DIR:-/tmp/sorakaq-soak-infra}
export SORAKAQ_REDIS_PORT=${SORAKAQ_REDIS_PORT:-26379} SORAKAQ_ZK_PORT=${SORAKAQ_ZK_PORT:-22181}
export SORAKAQ_KAFKA_PORT=${SORAKAQ_KAFKA_PORT:-29092} SORAKAQ_KAFKA_CONTROLLER_PORT=${SORAKAQ_KAFKA_CONTROLLER_PORT:-29093}
# Which servers were up before (the status is read whole: a pipe into grep -q under pipefail
# would fail on SIGPIPE and say "up" every time).
STATUS=$(scripts/infra.sh status 2>&1) || die "infra.sh status failed: $STATUS"
for n in redis zk kafka; do
  if grep -Eq "^$n +(running|not-answering) " <<<"$STATUS"; then INFRA_BEFORE[$n]=up; else INFRA_BEFORE[$n]=down; fi
done
ev "infra instance $SORAKAQ_INFRA_DIR (redis :$SORAKAQ_REDIS_PORT, zk :$SORAKAQ_ZK_PORT, kafka :$SORAKAQ_KAFKA_PORT), up before: redis ${INFRA_BEFORE[redis]}, zk ${INFRA_BEFORE[zk]}, kafka ${INFRA_BEFORE[kafka]}"
infra up || { tail -n 20 "$WORK/logs/infra.log" >&2; die "infra up failed"; }
ev "infra up"

ID=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
COMMON+=(SORAKAQ_MODE=distributed "SORAKAQ_REDIS_ADDRS=127.0.0.1:$SORAKAQ_REDIS_PORT"
  "SORAKAQ_ZOOKEEPER_SERVERS=127.0.0.1:$SORAKAQ_ZK_PORT" "SORAKAQ_KAFKA_BROKERS=127.0.0.1:$SORAKAQ_KAFKA_PORT"
  "SORAKAQ_ZOOKEEPER_ROOT=/soak-$ID" "SORAKAQ_REDIS_PREFIX=soak$ID" "SORAKAQ_KAFKA_TOPIC_PREFIX=soak${ID}_"
  "SORAKAQ_KAFKA_GROUP=soak$ID" SORAKAQ_ZOOKEEPER_SESSION_TIMEOUT=4s
  SORAKAQ_CALLBACK_PRIVATE_NETWORKS=loopback)  # the sink is on 127.0.0.1
WNAMES=(w1); ((WORKERS == 2)) && WNAMES+=(w2)
for n in "${WNAMES[@]}"; do define "$n" worker "SORAKAQ_NODE_ID=$n" "SORAKAQ_DATA_DIR=$WORK/data/$n"; done
for n in c1 c2; do define "$n" center "SORAKAQ_NODE_ID=$n" "SORAKAQ_DATA_DIR=$WORK/data/$n"; done
define receive receive SORAKAQ_NODE_ID=receive "SORAKAQ_DATA_DIR=$WORK/data/receive"
define admin admin SORAKAQ_NODE_ID=admin "SORAKAQ_DATA_DIR=$WORK/data/admin"
ROLES=("${WNAMES[@]}" c1 c2 receive admin)
for n in "${ROLES[@]}"; do start_proc "$n" || exit 2; done
TOPIC=soak-$ID
add_topic "${PORT[admin]}" "$TOPIC" "$WORKERS" 4
T0=$(date +%s.%N)
ev "chaos times are from here on relative to the start of sorakaq-soak"
run_soak "${PORT[receive]}" "$TOPIC"

# The faults, in seconds after the start of the soak tool.
case "$OUTAGE" in
  kill) FAULTS=("w1" "c1" "receive" "redis kill 3" "zk kill 5" "kafka kill 5") ;;
  stop) FAULTS=("w1" "c1" "receive" "redis stop 3" "zk stop 5" "kafka stop 5") ;;
  both) FAULTS=("w1" "c1" "receive" "redis stop 3" "redis kill 3" "zk stop 5" "zk kill 5" "kafka stop 5" "kafka kill 5") ;;
esac
if [[ $OUTAGE == both ]]; then
  if ((SHORT)); then S=(4 10 16 22 28 34 41 48 68); else S=(10 25 40 55 70 85 100 115 140); fi
else
  if ((SHORT)); then S=(5 13 21 29 37 47); else S=(12 30 48 66 84 105); fi
fi
chaos_role() { # chaos_role NAME PAUSE
  kill9 "$1"; sleep "$2"; start_proc "$1" || { ev "$1 did not come back"; ROLE_TROUBLE=1; }
}
# infra_pid NAME: the pid in the soak instance's pid file, if it is a live process of that server.
infra_pid() {
  local pid marker
  case "$1" in redis) marker=redis-server ;; zk) marker=QuorumPeerMain ;; kafka) marker=kafka.Kafka ;; esac
  pid=$(tr -dc '0-9' <"$SORAKAQ_INFRA_DIR/$1/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$marker" || return 1
  echo "$pid"
}
chaos_infra() { # chaos_infra NAME kill|stop SECONDS
  local pid
  STOPPED_INFRA+=" $1"
  if [[ $2 == kill ]]; then
    pid=$(infra_pid "$1") || die "no live $1 process in $SORAKAQ_INFRA_DIR/$1/$1.pid"
    ev "CHAOS kill -9 $1 (pid $pid) for $3 s"
    kill -9 "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "$1 (pid $pid) still alive 10 s after kill -9"
    ev "$1 killed"
  else
    ev "CHAOS stop $1 for $3 s"
    infra stop-one "$1"; ev "$1 stopped"
  fi
  sleep "$3"
  infra start-one "$1" || { ev "$1 did not start"; tail -n 20 "$WORK/logs/infra.log" >&2; exit 2; }
  STOPPED_INFRA=${STOPPED_INFRA/ $1/}
  ev "$1 started again"
}
for k in "${!FAULTS[@]}"; do
  sleep_until "${S[$k]}"
  soak_running || break
  # shellcheck disable=SC2086  # a fault is NAME [kill|stop SECONDS]
  set -- ${FAULTS[$k]}
  case "$1" in
    w1 | c1) chaos_role "$1" 1 ;;
    receive) chaos_role receive 0.5 ;;
    *) chaos_infra "$@" ;;
  esac
done
for n in "${ROLES[@]}"; do kill -0 "${PID[$n]}" 2>/dev/null || { ev "$n is not running at the end of the chaos"; ROLE_TROUBLE=1; }; done
rc=0; finish || rc=$?
exit "$rc"
