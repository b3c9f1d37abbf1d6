#!/usr/bin/env bash
# Soak + chaos test of sorakaQ: runs cmd/sorakaq-soak (a known set of messages,
# each with a plan: plain / cancel / setDelay / failing callback) against
# sorakaQ while killing it, then checks every message (docs/reliability.md).
#
#   scripts/soak.sh allinone    [--short] [options]   `sorakaq all`, kill -9 + restart on the same data dir
#   scripts/soak.sh distributed [--short] [options]   receive, center x2, worker x2, admin over its own
#                                                     Redis/ZooKeeper/Kafka; kills roles, stops servers
# Options:
#   --short            CI size: allinone 300 msgs, delays 1-8 s, 2 kills (< 90 s);
#                      distributed 600 msgs at 10/s, delays 1-8 s (< 3 min with the infra cached)
#   --n N --rate R     messages and submits/s            (allinone 2000 @ 100/s; distributed 3000 @ 20/s)
#   --min-delay D --max-delay D   delays (Go durations)  (1s .. 30s)
#   --kills K          allinone: kill -9 this many times (3), every --kill-every MIN-MAX s (8-15)
#   --seed S           plan seed and chaos timing seed (default: time)
#   --grace D          wait at most this long after the last due time (60s)
#   --keep             keep the work directory (kept anyway on failure)
#   -- ARGS...         more flags for sorakaq-soak
# Environment: SORAKAQ_SOAK_DIR (work dir; default a new /tmp/sorakaq-soak.XXXXXX);
# distributed: the infra instance is NOT the shared one: SORAKAQ_INFRA_DIR (/tmp/sorakaq-soak-infra),
# SORAKAQ_REDIS_PORT (26379), SORAKAQ_ZK_PORT (22181), SORAKAQ_KAFKA_PORT (29092),
# SORAKAQ_KAFKA_CONTROLLER_PORT (29093); it is left running if it was running before, else stopped.
# Exit status: the soak tool's (0 pass; 1 lost / cancel violated / early), 2 when setup failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=${1:-}
case "$MODE" in allinone|distributed) shift ;; *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;; esac

SHORT=0 N="" RATE="" MIN_DELAY=1s MAX_DELAY="" KILLS="" KILL_EVERY=8-15 SEED=$(( $(date +%s) % 100000 )) GRACE=60s KEEP=0
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
else
  if ((SHORT)); then : "${N:=600}" "${RATE:=10}" "${MAX_DELAY:=8s}"; fi
  : "${N:=3000}" "${RATE:=20}" "${MAX_DELAY:=30s}"
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
USED_PORTS=" "
free_port() {
  local p
  while :; do
    p=$((30000 + RANDOM % 30000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    port_open "$p" && continue
    USED_PORTS+="$p "
    echo "$p"; return
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
define() { local n=$1 r=$2; shift 2; ROLE[$n]=$r; PORT[$n]=$(free_port); ENVS[$n]="$*"; }

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

STOPPED_INFRA=""
INFRA_WAS_UP=1
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
  for n in $STOPPED_INFRA; do echo "soak: starting $n again" >&2; infra start-one "$n"; done
  if [[ $MODE == distributed && $INFRA_WAS_UP == 0 ]]; then echo "soak: stopping the soak infra instance" >&2; infra down; fi
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
    -max-delay "$MAX_DELAY" -seed "$SEED" -grace "$GRACE" -fail-attempts 3 \
    -json-out "$WORK/report.json" -detail "$WORK/detail.jsonl" "${EXTRA[@]}" >"$WORK/report.txt" 2>"$WORK/soak.log" &
  SOAK_PID=$!
  ev "sorakaq-soak started (pid $SOAK_PID): n=$N rate=$RATE/s delays=$MIN_DELAY..$MAX_DELAY seed=$SEED"
}

finish() {
  local rc=0
  wait "$SOAK_PID" || rc=$?
  ev "sorakaq-soak exited $rc"
  echo
  cat "$WORK/report.txt"
  echo
  echo "chaos events ($EVENTS):"
  grep -E 'CHAOS|ready|exited|stopped|started again|did not' "$EVENTS" | sed 's/^/  /'
  echo "server logs ($WORK/logs): lines with panic / ERROR / WARN:"
  local f
  for f in "$WORK"/logs/*.log; do
    [[ $f == */infra.log ]] && continue
    printf '  %-8s starts %s  panic %s  ERROR %s  WARN %s\n' "$(basename "$f" .log)" "$(grep -c '^=== .* start ' "$f" || true)" \
      "$(grep -Ec '^panic|^fatal error' "$f" || true)" "$(grep -c $'\tERROR\t' "$f" || true)" "$(grep -c $'\tWARN\t' "$f" || true)"
  done
  echo "report: $WORK/report.json, per message: $WORK/detail.jsonl"
  [[ $rc == 0 ]] || KEEP=1
  return "$rc"
}

# ---------------------------------------------------------------- all-in-one
if [[ $MODE == allinone ]]; then
  PORT[admin_of_all]=$(free_port)
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
    start_proc all || exit 2
  done
  rc=0; finish || rc=$?
  exit "$rc"
fi

# ---------------------------------------------------------------- distributed
export SORAKAQ_INFRA_DIR=${SORAKAQ_INFRA_DIR:-/tmp/sorakaq-soak-infra}
export SORAKAQ_REDIS_PORT=${SORAKAQ_REDIS_PORT:-26379} SORAKAQ_ZK_PORT=${SORAKAQ_ZK_PORT:-22181}
export SORAKAQ_KAFKA_PORT=${SORAKAQ_KAFKA_PORT:-29092} SORAKAQ_KAFKA_CONTROLLER_PORT=${SORAKAQ_KAFKA_CONTROLLER_PORT:-29093}
scripts/infra.sh status | grep -q -v ' running ' && INFRA_WAS_UP=0
ev "infra instance $SORAKAQ_INFRA_DIR (redis :$SORAKAQ_REDIS_PORT, zk :$SORAKAQ_ZK_PORT, kafka :$SORAKAQ_KAFKA_PORT), up before: $INFRA_WAS_UP"
infra up || { tail -n 20 "$WORK/logs/infra.log" >&2; die "infra up failed"; }
ev "infra up"

ID=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
COMMON+=(SORAKAQ_MODE=distributed "SORAKAQ_REDIS_ADDRS=127.0.0.1:$SORAKAQ_REDIS_PORT"
  "SORAKAQ_ZOOKEEPER_SERVERS=127.0.0.1:$SORAKAQ_ZK_PORT" "SORAKAQ_KAFKA_BROKERS=127.0.0.1:$SORAKAQ_KAFKA_PORT"
  "SORAKAQ_ZOOKEEPER_ROOT=/soak-$ID" "SORAKAQ_REDIS_PREFIX=soak$ID" "SORAKAQ_KAFKA_TOPIC_PREFIX=soak${ID}_"
  "SORAKAQ_KAFKA_GROUP=soak$ID" SORAKAQ_ZOOKEEPER_SESSION_TIMEOUT=4s)
for n in w1 w2; do define "$n" worker "SORAKAQ_NODE_ID=$n" "SORAKAQ_DATA_DIR=$WORK/data/$n"; done
for n in c1 c2; do define "$n" center "SORAKAQ_NODE_ID=$n" "SORAKAQ_DATA_DIR=$WORK/data/$n"; done
define receive receive SORAKAQ_NODE_ID=receive "SORAKAQ_DATA_DIR=$WORK/data/receive"
define admin admin SORAKAQ_NODE_ID=admin "SORAKAQ_DATA_DIR=$WORK/data/admin"
for n in w1 w2 c1 c2 receive admin; do start_proc "$n" || exit 2; done
TOPIC=soak-$ID
add_topic "${PORT[admin]}" "$TOPIC" 2 4
T0=$(date +%s.%N)
ev "chaos times are from here on relative to the start of sorakaq-soak"
run_soak "${PORT[receive]}" "$TOPIC"

# The schedule (seconds after the start of the soak tool).
if ((SHORT)); then S=(5 13 21 29 37 47); else S=(12 30 48 66 84 105); fi
chaos_role() { # chaos_role NAME PAUSE
  kill9 "$1"; sleep "$2"; start_proc "$1" || ev "$1 did not come back"
}
chaos_infra() { # chaos_infra NAME SECONDS
  ev "CHAOS stop $1 for $2 s"
  STOPPED_INFRA+=" $1"
  infra stop-one "$1"; ev "$1 stopped"
  sleep "$2"
  infra start-one "$1" || { ev "$1 did not start"; tail -n 20 "$WORK/logs/infra.log" >&2; exit 2; }
  STOPPED_INFRA=${STOPPED_INFRA/ $1/}
  ev "$1 started again"
}
sleep_until "${S[0]}"; soak_running && chaos_role w1 1
sleep_until "${S[1]}"; soak_running && chaos_role c1 1
sleep_until "${S[2]}"; soak_running && chaos_role receive 0.5
sleep_until "${S[3]}"; soak_running && chaos_infra redis 3
sleep_until "${S[4]}"; soak_running && chaos_infra zk 5
sleep_until "${S[5]}"; soak_running && chaos_infra kafka 5
for n in w1 w2 c1 c2 receive admin; do kill -0 "${PID[$n]}" 2>/dev/null || ev "$n is not running at the end of the chaos"; done
rc=0; finish || rc=$?
exit "$rc"
