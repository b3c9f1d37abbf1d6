#!/usr/bin/env bash
# Real Redis, ZooKeeper and Kafka (KRaft) on 127.0.0.1 for sorakaQ's integration tests.
#
#   scripts/infra.sh up                 install what is missing, start all three, wait until they answer
#   scripts/infra.sh down [--wipe]      stop all three (--wipe also deletes their data)
#   scripts/infra.sh status             one line per server
#   scripts/infra.sh stop-one  redis|zk|kafka
#   scripts/infra.sh start-one redis|zk|kafka
#   scripts/infra.sh env                export lines for the tests (eval "$(scripts/infra.sh env)")
#   scripts/infra.sh topics ARGS...     Kafka's TopicCommand against the local broker
#                                       (e.g. topics --create --topic t --partitions 4)
#   scripts/infra.sh kafka-classpath    the java binary and the broker's classpath, one a line
#                                       (fetched if missing; for tests that start a broker of their own)
#   SORAKAQ_REDIS_CLUSTER=3 scripts/infra.sh up|down|status|env|stop-one redis|start-one redis
#                                       the same with a 3-master Redis Cluster instead of one Redis
#
# See docs/infra.md. Settings (environment):
#   SORAKAQ_INFRA_DIR    state: data, logs, pid files   (default /tmp/sorakaq-infra)
#   SORAKAQ_INFRA_CACHE  Kafka jars + maven repository   (default $HOME/.cache/sorakaq-infra)
#   SORAKAQ_REDIS_PORT (16379)  SORAKAQ_ZK_PORT (12181)
#   SORAKAQ_KAFKA_PORT (19092)  SORAKAQ_KAFKA_CONTROLLER_PORT (19093)
#   SORAKAQ_INFRA_WAIT   seconds to wait for each server to answer (default 90)
#   SORAKAQ_REDIS_CLUSTER  N >= 3: a Redis Cluster of N masters on SORAKAQ_REDIS_PORT .. +N-1
#                        (cluster bus on each port + 10000) instead of the single Redis
#   SORAKAQ_KAFKA_JVM_OPTS extra JVM flags for the broker (default -XX:TieredStopAtLevel=1: C1 only;
#                        set it to "" for the JVM's default C1+C2, see docs/benchmarks.md)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${SORAKAQ_INFRA_DIR:-/tmp/sorakaq-infra}
CACHE_DIR=${SORAKAQ_INFRA_CACHE:-${HOME:-/root}/.cache/sorakaq-infra}
REDIS_PORT=${SORAKAQ_REDIS_PORT:-16379}
ZK_PORT=${SORAKAQ_ZK_PORT:-12181}
KAFKA_PORT=${SORAKAQ_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${SORAKAQ_KAFKA_CONTROLLER_PORT:-19093}
WAIT_SECS=${SORAKAQ_INFRA_WAIT:-90}
# The broker's JIT: on two shared cores C2 kept compiling through every
# benchmark run (1.25-2.76 s of CPU per 40,000-message run, 32-45 % of the
# broker's share); with C1 alone the broker's CPU per notice was about
# 40 % lower there (median 67.5 against 113 us, docs/benchmarks.md).
KAFKA_JVM_OPTS=${SORAKAQ_KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1}
HOST=127.0.0.1
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
SERVERS=(redis zk kafka)
# Redis Cluster mode: REDIS_CLUSTER masters on consecutive ports from REDIS_PORT.
REDIS_CLUSTER=${SORAKAQ_REDIS_CLUSTER:-}
[[ "$REDIS_CLUSTER" == 0 ]] && REDIS_CLUSTER=""
REDIS_PORTS=("$REDIS_PORT")
CLUSTER_DIR="$STATE_DIR/redis-cluster"
CLUSTER_NODE_TIMEOUT=5000

log() { printf 'infra: %s\n' "$*"; }
die() { printf 'infra: ERROR: %s\n' "$*" >&2; exit 1; }

for p in "$REDIS_PORT" "$ZK_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
  case "$p" in 6379|2181|9092|9093) die "refusing default port $p: pick another";; esac
  [[ "$p" =~ ^[0-9]+$ ]] || die "bad port '$p'"
done
if [[ -n "$REDIS_CLUSTER" ]]; then
  [[ "$REDIS_CLUSTER" =~ ^[0-9]+$ && "$REDIS_CLUSTER" -ge 3 ]] \
    || die "SORAKAQ_REDIS_CLUSTER must be a number of masters >= 3 (redis-cli --cluster create needs 3), got '$REDIS_CLUSTER'"
  REDIS_PORTS=()
  for ((i = 0; i < REDIS_CLUSTER; i++)); do REDIS_PORTS+=($((REDIS_PORT + i))); done
  for p in "${REDIS_PORTS[@]}"; do
    ((p + 10000 <= 65535)) || die "Redis Cluster node $p: its bus port $((p + 10000)) is above 65535; lower SORAKAQ_REDIS_PORT"
    for q in "$p" "$((p + 10000))"; do
      case "$q" in 6379|2181|9092|9093) die "refusing default port $q (Redis Cluster node $p): pick another SORAKAQ_REDIS_PORT";; esac
      case "$q" in "$ZK_PORT"|"$KAFKA_PORT"|"$KAFKA_CONTROLLER_PORT")
        die "Redis Cluster node $p: port $q is also the ZooKeeper or Kafka port";;
      esac
    done
  done
fi

# ---------------------------------------------------------------- helpers

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; else command -v java; fi
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

dir_of() { echo "$STATE_DIR/$1"; }
pidfile_of() { echo "$STATE_DIR/$1/$1.pid"; }
logfile_of() {
  case "$1" in
    redis) echo "$STATE_DIR/redis/redis.log" ;;
    zk) echo "$STATE_DIR/zk/zookeeper.log" ;;
    kafka) echo "$STATE_DIR/kafka/kafka.log" ;;
  esac
}
port_of() {
  case "$1" in redis) echo "$REDIS_PORT" ;; zk) echo "$ZK_PORT" ;; kafka) echo "$KAFKA_PORT" ;; esac
}
# What the process's command line must contain (guards against a reused pid).
marker_of() {
  case "$1" in
    redis) echo "redis-server" ;;
    zk) echo "QuorumPeerMain" ;;
    kafka) echo "kafka.Kafka" ;;
  esac
}

# live_pid FILE MARKER: prints the pid when FILE names a live process whose command line has MARKER.
live_pid() {
  local f=$1 pid
  [[ -s "$f" ]] || return 1
  pid=$({ tr -dc '0-9' <"$f"; } 2>/dev/null)  # the server may delete it meanwhile
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

# pid_of NAME: prints the pid when the pid file names a live process of that server.
pid_of() { live_pid "$(pidfile_of "$1")" "$(marker_of "$1")"; }

# answers NAME: true when the server answers its health check.
answers() {
  case "$1" in
    redis) [[ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] ;;
    zk) [[ "$(echo ruok | nc -w 2 "$HOST" "$ZK_PORT" 2>/dev/null)" == imok ]] ;;
    kafka) port_open "$KAFKA_PORT" && kafka_tool org.apache.kafka.tools.TopicCommand --list >/dev/null 2>&1 ;;
  esac
}

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- install

apt_install() {
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -qq "$@" >/dev/null 2>"$STATE_DIR/apt.err"; then
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq "$@" >/dev/null 2>"$STATE_DIR/apt.err" || { cat "$STATE_DIR/apt.err" >&2; die "apt-get install $* failed"; }
  fi
}

ensure_packages() {
  local need=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server)
  [[ -f /usr/share/java/zookeeper.jar ]] || need+=(zookeeper)
  command -v nc >/dev/null || need+=(netcat-openbsd)
  java_bin >/dev/null || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || need+=(maven)
  if ((${#need[@]})); then apt_install "${need[@]}"; fi
  local v
  v=$("$(java_bin)" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null || die "Kafka 4 needs Java 17+, found '$v' ($(java_bin))"
}

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM"; }

# kafka_libs: directory holding the broker jars for the pom's Kafka version; fetched once.
kafka_libs() {
  local key dir tmp
  key=$(sha256sum "$KAFKA_POM" | cut -c1-12)
  dir="$CACHE_DIR/kafka-$(kafka_version)-$key"
  if [[ ! -f "$dir/.complete" ]]; then
    mkdir -p "$CACHE_DIR"
    tmp=$(mktemp -d "$CACHE_DIR/.fetch.XXXXXX")
    log "fetching Kafka $(kafka_version) jars with mvn into $dir" >&2
    if ! (cd "$tmp" && mvn -q -B -f "$KAFKA_POM" -Dmaven.repo.local="$CACHE_DIR/m2" \
          dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1); then
      tail -n 30 "$tmp/mvn.log" >&2; rm -rf "$tmp"; die "mvn could not fetch the Kafka jars"
    fi
    rm -rf "$dir"; mv "$tmp/libs" "$dir"; rm -rf "$tmp"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

KAFKA_LIBS=""
kafka_cp() { [[ -n "$KAFKA_LIBS" ]] || KAFKA_LIBS=$(kafka_libs); echo "$KAFKA_LIBS/*"; }

# kafka_tool CLASS ARGS...: a Kafka CLI class against the local broker (quick-starting client JVM).
kafka_tool() {
  local cls=$1; shift
  local extra=()
  case "$cls" in *TopicCommand|*ConfigCommand|*ConsumerGroupCommand) extra=(--bootstrap-server "$HOST:$KAFKA_PORT") ;; esac
  timeout 30 "$(java_bin)" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="$STATE_DIR/kafka/tools-log4j2.properties" \
    -cp "$(kafka_cp)" "$cls" "${extra[@]}" "$@"
}

# ---------------------------------------------------------------- start

# spawn NAME LOG CMD...: run CMD in the background, detached, pid into NAME's pid file.
spawn() {
  local name=$1 logf=$2; shift 2
  # 9>&-: the server must not inherit the lock (flock) descriptor.
  # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
  setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$(pidfile_of "$name")" "$@" >>"$logf" 2>&1 </dev/null 9>&- &
  for _ in $(seq 50); do [[ -s "$(pidfile_of "$name")" ]] && return 0; sleep 0.1; done
}

# redis_server PORT DIR PIDFILE LOGFILE EXTRA...: one daemonized redis-server with the test rig's
# persistence (AOF everysec, no RDB, noeviction); the cluster nodes add cluster-enabled.
redis_server() {
  local port=$1 d=$2 pidf=$3 logf=$4; shift 4
  redis-server --port "$port" --bind "$HOST" --dir "$d" \
    --appendonly yes --appendfsync everysec --save "" \
    --auto-aof-rewrite-min-size 512mb \
    --daemonize yes --pidfile "$pidf" --logfile "$logf" \
    --maxmemory "${SORAKAQ_REDIS_MAXMEMORY:-2gb}" --maxmemory-policy noeviction "$@" 9>&-
}

start_redis() { redis_server "$REDIS_PORT" "$(dir_of redis)" "$(pidfile_of redis)" "$(logfile_of redis)"; }

# ---------------------------------------------------------------- Redis Cluster mode

node_dir() { echo "$CLUSTER_DIR/$1"; }
node_pidfile() { echo "$CLUSTER_DIR/$1/redis.pid"; }
node_log() { echo "$CLUSTER_DIR/$1/redis.log"; }
node_pid() { live_pid "$(node_pidfile "$1")" redis-server; }
node_ping() { [[ "$(redis-cli -h "$HOST" -p "$1" ping 2>/dev/null)" == PONG ]]; }
# node_info PORT FIELD: one field of CLUSTER INFO as that node sees it.
node_info() { redis-cli -h "$HOST" -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }
node_ok() { [[ "$(node_info "$1" cluster_state)" == ok ]]; }
cluster_addrs() { local p out=(); for p in "${REDIS_PORTS[@]}"; do out+=("$HOST:$p"); done; (IFS=,; echo "${out[*]}"); }

node_fail() {
  echo "infra: ERROR: Redis Cluster node $1 $2; last lines of $(node_log "$1"):" >&2
  tail -n 30 "$(node_log "$1")" >&2 || true
  exit 1
}

# wait_nodes CHECK WHAT: until CHECK PORT holds for every node (or one exits / the wait ends).
wait_nodes() {
  local check=$1 what=$2 p deadline=$((SECONDS + WAIT_SECS))
  for p in "${REDIS_PORTS[@]}"; do
    until "$check" "$p"; do
      node_pid "$p" >/dev/null || node_fail "$p" "exited while starting"
      ((SECONDS < deadline)) || node_fail "$p" "is not $what within ${WAIT_SECS}s (cluster info: $(node_info "$p" cluster_state))"
      sleep 0.2
    done
  done
}

# start_redis_cluster: start the nodes that are not running, create the cluster on first start
# (a restart finds it in each node's nodes.conf), wait until every node says cluster_state:ok.
start_redis_cluster() {
  local p t0=$SECONDS assigned known fresh=0 formed=0 f had=()
  # a cluster created before must have been created with these very ports
  for f in "$CLUSTER_DIR"/*/nodes.conf; do [[ -e "$f" ]] && had+=("$(basename "$(dirname "$f")")"); done
  if ((${#had[@]})) && [[ "$(printf '%s\n' "${had[@]}" | sort -n | tr '\n' ' ')" != "$(printf '%s\n' "${REDIS_PORTS[@]}" | sort -n | tr '\n' ' ')" ]]; then
    die "the Redis Cluster under $CLUSTER_DIR was created on ports ${had[*]}, not ${REDIS_PORTS[*]}: use the SORAKAQ_REDIS_CLUSTER / SORAKAQ_REDIS_PORT it was created with, or wipe it (rm -rf $CLUSTER_DIR once its nodes are stopped)"
  fi
  for p in "${REDIS_PORTS[@]}"; do
    mkdir -p "$(node_dir "$p")"
    node_pid "$p" >/dev/null && continue
    rm -f "$(node_pidfile "$p")"
    port_open "$p" && die "port $p for Redis Cluster node $p is taken by another process"
    port_open $((p + 10000)) && die "cluster bus port $((p + 10000)) for Redis Cluster node $p is taken by another process"
    redis_server "$p" "$(node_dir "$p")" "$(node_pidfile "$p")" "$(node_log "$p")" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$CLUSTER_NODE_TIMEOUT"
  done
  wait_nodes node_ping "answering PING"
  for p in "${REDIS_PORTS[@]}"; do
    assigned=$(node_info "$p" cluster_slots_assigned); known=$(node_info "$p" cluster_known_nodes)
    if [[ "$assigned" == 0 && "$known" == 1 ]]; then fresh=$((fresh + 1))
    elif [[ "$assigned" == 16384 && "$known" == "$REDIS_CLUSTER" ]]; then formed=$((formed + 1))
    fi
  done
  if ((fresh == REDIS_CLUSTER)); then
    # shellcheck disable=SC2046  # one argument per address
    redis-cli --cluster create $(cluster_addrs | tr , ' ') --cluster-replicas 0 --cluster-yes \
      >"$CLUSTER_DIR/create.log" 2>&1 9>&- \
      || { cat "$CLUSTER_DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
    log "Redis Cluster created: $REDIS_CLUSTER masters, 16384 slots ($CLUSTER_DIR/create.log)"
  elif ((formed != REDIS_CLUSTER)); then
    die "the Redis Cluster under $CLUSTER_DIR is neither new nor a formed $REDIS_CLUSTER-master cluster (a broken earlier create?): SORAKAQ_REDIS_CLUSTER=$REDIS_CLUSTER scripts/infra.sh down --wipe, then up"
  fi
  wait_nodes node_ok "cluster_state:ok"
  local pids=() ; for p in "${REDIS_PORTS[@]}"; do pids+=("$(node_pid "$p")"); done
  log "redis cluster up (masters $(cluster_addrs), pids ${pids[*]}, cluster_state:ok, $((SECONDS - t0))s)"
}

stop_redis_cluster() {
  local p pid i pids=()
  for p in "${REDIS_PORTS[@]}"; do pids+=("$(node_pid "$p" || true)"); done
  # SIGTERM to every node first, so they shut down side by side
  for pid in "${pids[@]}"; do [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true; done
  for i in "${!REDIS_PORTS[@]}"; do
    p=${REDIS_PORTS[$i]} pid=${pids[$i]}
    if [[ -n "$pid" ]]; then stop_pid "redis cluster node $p" "$pid"; else log "redis cluster node $p already stopped"; fi
    rm -f "$(node_pidfile "$p")"
  done
}

status_redis_cluster() {
  local p pid state
  for p in "${REDIS_PORTS[@]}"; do
    if pid=$(node_pid "$p"); then
      if ! node_ping "$p"; then state=not-answering
      elif node_ok "$p"; then state=running
      else state=cluster-not-ok
      fi
    else
      pid=-; state=stopped
    fi
    printf '%-6s %-13s port %-6s pid %s (cluster master)\n' redis "$state" "$p" "$pid"
  done
}

start_zk() {
  local d; d=$(dir_of zk)
  mkdir -p "$d/data"
  cat >"$d/zoo.cfg" <<EOF
tickTime=2000
dataDir=$d/data
clientPort=$ZK_PORT
clientPortAddress=$HOST
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  local cp=/usr/share/java/zookeeper.jar
  [[ -f /usr/share/java/slf4j-simple.jar ]] && cp="$cp:/usr/share/java/slf4j-simple.jar"
  spawn zk "$(logfile_of zk)" "$(java_bin)" -Xms64m -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true \
    -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zoo.cfg"
}

write_kafka_config() {
  local d; d=$(dir_of kafka)
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
num.network.threads=2
num.io.threads=4
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# after a kill -9 the restarted broker cannot register until its old session expires
# (default 9 s); shorter for outage tests
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
log.retention.hours=24
log.retention.bytes=268435456
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
EOF
  cat >"$d/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c{1})%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
# the full config dumps (hundreds of lines per start); server.properties is beside this file
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
EOF
  cat >"$d/tools-log4j2.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = ERR
EOF
}

# Kafka's own Uuid format: 16 random bytes, base64url without padding, not starting with '-'.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ "$id" != -* ]] && { echo "$id"; return; }
  done
}

start_kafka() {
  local d cp; d=$(dir_of kafka)
  write_kafka_config
  cp=$(kafka_cp)
  if [[ ! -f "$d/data/meta.properties" ]]; then
    local id; id=$(new_cluster_id)
    "$(java_bin)" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$d/tools-log4j2.properties" -cp "$cp" \
      kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" >"$d/format.log" 2>&1 \
      || { cat "$d/format.log" >&2; die "kafka storage format failed"; }
  fi
  spawn kafka "$(logfile_of kafka)" "$(java_bin)" -Xmx512m -Xms256m $KAFKA_JVM_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$d/log4j2.properties" -Dkafka.logs.dir="$d" \
    -cp "$cp" kafka.Kafka "$d/server.properties"
}

wait_ready() {
  local name=$1 port deadline pid
  port=$(port_of "$name")
  deadline=$((SECONDS + WAIT_SECS))
  while ((SECONDS < deadline)); do
    if answers "$name"; then return 0; fi
    if ! pid_of "$name" >/dev/null; then
      echo "infra: ERROR: $name exited while starting; last lines of $(logfile_of "$name"):" >&2
      tail -n 30 "$(logfile_of "$name")" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  echo "infra: ERROR: $name did not answer on $HOST:$port within ${WAIT_SECS}s; last lines of $(logfile_of "$name"):" >&2
  tail -n 30 "$(logfile_of "$name")" >&2 || true
  exit 1
}

# start_one NAME: start (if not running) and wait until it answers.
start_one() {
  local name=$1 pid t0=$SECONDS
  if [[ "$name" == redis && -n "$REDIS_CLUSTER" ]]; then start_redis_cluster; return; fi
  mkdir -p "$(dir_of "$name")"
  if pid=$(pid_of "$name"); then
    wait_ready "$name"
    log "$name already running (port $(port_of "$name"), pid $pid)"
    return 0
  fi
  rm -f "$(pidfile_of "$name")"
  port_open "$(port_of "$name")" && die "port $(port_of "$name") for $name is taken by another process"
  [[ "$name" == kafka ]] && port_open "$KAFKA_CONTROLLER_PORT" && die "kafka controller port $KAFKA_CONTROLLER_PORT is taken by another process"
  "start_$name"
  wait_ready "$name"
  log "$name up (port $(port_of "$name"), pid $(pid_of "$name"), $((SECONDS - t0))s)"
}

# ---------------------------------------------------------------- stop

# stop_pid LABEL PID: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do   # 30 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  log "$name stopped"
}

stop_one() {
  local name=$1 pid
  if [[ "$name" == redis && -n "$REDIS_CLUSTER" ]]; then stop_redis_cluster; return; fi
  if ! pid=$(pid_of "$name"); then
    rm -f "$(pidfile_of "$name")"
    log "$name already stopped"
    return 0
  fi
  stop_pid "$name" "$pid"
  rm -f "$(pidfile_of "$name")"
}

# ---------------------------------------------------------------- commands

check_name() { case "${1:-}" in redis|zk|kafka) ;; *) die "expected redis|zk|kafka, got '${1:-}'";; esac; }

lock() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock -w 120 9 || die "another infra.sh is holding $STATE_DIR/.lock (or a server inherited it: see lsof $STATE_DIR/.lock)"
}

cmd_up() {
  local t0=$SECONDS n
  lock
  ensure_packages
  for n in "${SERVERS[@]}"; do start_one "$n"; done
  log "all up in $((SECONDS - t0))s (state $STATE_DIR)"
}

cmd_down() {
  local wipe=0 n
  [[ "${1:-}" == --wipe ]] && wipe=1
  lock
  for n in kafka zk redis; do stop_one "$n"; done
  if ((wipe)); then
    if [[ -n "$REDIS_CLUSTER" ]]; then
      rm -rf "$CLUSTER_DIR" "$STATE_DIR/zk" "$STATE_DIR/kafka" "$STATE_DIR/apt.err"
    else
      rm -rf "$STATE_DIR/redis" "$STATE_DIR/zk" "$STATE_DIR/kafka" "$STATE_DIR/apt.err"
    fi
    log "wiped data under $STATE_DIR"
  fi
}

cmd_status() {
  local n pid state
  for n in "${SERVERS[@]}"; do
    if [[ "$n" == redis && -n "$REDIS_CLUSTER" ]]; then status_redis_cluster; continue; fi
    if pid=$(pid_of "$n"); then
      if answers "$n"; then state=running; else state=not-answering; fi
    else
      pid=-; state=stopped
    fi
    printf '%-6s %-13s port %-6s pid %s\n' "$n" "$state" "$(port_of "$n")" "$pid"
  done
}

cmd_env() {
  echo "export SORAKAQ_TEST_REDIS=$HOST:$REDIS_PORT"
  echo "export SORAKAQ_TEST_ZK=$HOST:$ZK_PORT"
  echo "export SORAKAQ_TEST_KAFKA=$HOST:$KAFKA_PORT"
  if [[ -n "$REDIS_CLUSTER" ]]; then
    # the masters: what config's redis.addrs takes (several addresses = a Cluster client)
    echo "export SORAKAQ_REDIS_ADDRS=$(cluster_addrs)"
    echo "export SORAKAQ_TEST_REDIS_CLUSTER=$(cluster_addrs)"
  fi
}

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  start-one) check_name "${2:-}"; lock; ensure_packages; start_one "$2" ;;
  stop-one) check_name "${2:-}"; lock; stop_one "$2" ;;
  topics) shift; kafka_tool org.apache.kafka.tools.TopicCommand "$@" ;;
  kafka-classpath) ensure_packages; java_bin; kafka_cp ;;
  *) usage ;;
esac
