#!/usr/bin/env bash
# Measures what the distributed mode costs Redis per message lifecycle
# (submit -> notice -> held -> fired -> delivered -> purged), per component,
# against a running Redis (default the shared one of scripts/infra.sh).
#
#   scripts/infra.sh up && scripts/redis-cost.sh
#   COST_N=2000 COST_RATE=500 COST_MON_N=100 COST_MEM_N=20000 scripts/redis-cost.sh
#
# It builds sorakaq and sorakaq-load, starts worker, center and receive (no
# admin: it is not on a message's path) as three processes with a fresh
# Redis prefix, ZooKeeper root, Kafka topic prefix, group and cluster secret,
# on free loopback ports, with worker.retention 20s and purge_interval 2s so
# that the purge is part of the run, and then:
#   1. idle: 20 s with nothing to do (the holder's per-slot loads and sweeps);
#   2. lifecycle: sorakaq-load -mode fire -n COST_N at COST_RATE/s, delays
#      2 s ... 2 s + N/RATE (-lead 2s), every callback answered 200, then
#      30 s for the purge; INFO commandstats / stats deltas and, per process,
#      the bytes of its Redis sockets (ss -tnpi: tcp_info bytes_sent /
#      bytes_received of every connection to Redis, sampled every second);
#   3. attribution: the same with COST_MON_N messages under redis-cli
#      MONITOR, each command mapped to its process through the client port
#      (ss -tnp), idle rate measured in the same capture and subtracted;
#   4. memory: used_memory before/after COST_MEM_N pending messages (delay
#      1 h) and MEMORY USAGE of a message key; after the lifecycle run, the
#      drop in used_memory when the delivered messages are purged.
# All keys of the run are deleted at the end (SCAN "{<prefix>:*"), all
# processes it started are stopped. Reports: $COST_OUT (default a temp dir).
# Note: INFO counters are server-wide; the script prints the clients it did
# not start so that someone else's traffic is visible.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${COST_N:-2000}
RATE=${COST_RATE:-500}
MON_N=${COST_MON_N:-100}
MEM_N=${COST_MEM_N:-20000}
REDIS=${COST_REDIS:-127.0.0.1:16379}
ZK=${COST_ZK:-127.0.0.1:12181}
KAFKA=${COST_KAFKA:-127.0.0.1:19092}
RPORT=${REDIS##*:}
RUN=rc$RANDOM$RANDOM
WORK=$(mktemp -d /tmp/sorakaq-redis-cost.XXXXXX)
OUT=${COST_OUT:-$WORK/out}
mkdir -p "$OUT"
PIDS=()
MONPID=""
SSPID=""
rcli() { redis-cli -p "$RPORT" "$@"; }

cleanup() {
	[[ -n $MONPID ]] && kill "$MONPID" 2>/dev/null || true
	[[ -n $SSPID ]] && kill "$SSPID" 2>/dev/null || true
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rcli --scan --pattern "{$RUN:*" | xargs -r -n 500 redis-cli -p "$RPORT" DEL >/dev/null || true
	rcli --scan --pattern "{$RUN}*" | xargs -r -n 500 redis-cli -p "$RPORT" DEL >/dev/null || true
	rm -rf "$WORK/bin" "$WORK/data"
}
trap cleanup EXIT

free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

echo "== building"
(cd "$ROOT" && go build -o "$WORK/bin/sorakaq" ./cmd/sorakaq && go build -o "$WORK/bin/sorakaq-load" ./cmd/sorakaq-load)

RECV=$(free_port 19388)
CENTER=$(free_port $((RECV + 1)))
WORKER=$(free_port $((CENTER + 1)))
URL=http://127.0.0.1:$RECV
ENVS=(SORAKAQ_MODE=distributed SORAKAQ_LOG_LEVEL=warn
	SORAKAQ_REDIS_ADDRS="$REDIS" SORAKAQ_ZOOKEEPER_SERVERS="$ZK" SORAKAQ_KAFKA_BROKERS="$KAFKA"
	SORAKAQ_ZOOKEEPER_ROOT="/$RUN" SORAKAQ_REDIS_PREFIX="$RUN" SORAKAQ_KAFKA_TOPIC_PREFIX="${RUN}_"
	SORAKAQ_KAFKA_GROUP="$RUN" SORAKAQ_CLUSTER_SECRET="secret-$RUN" SORAKAQ_CALLBACK_PRIVATE_NETWORKS=loopback
	SORAKAQ_WORKER_RETENTION=20s SORAKAQ_WORKER_PURGE_INTERVAL=2s
	SORAKAQ_RECEIVE_LISTEN=127.0.0.1:$RECV SORAKAQ_CENTER_LISTEN=127.0.0.1:$CENTER
	SORAKAQ_WORKER_LISTEN=127.0.0.1:$WORKER SORAKAQ_ADMIN_LISTEN=127.0.0.1:$(free_port $((WORKER + 1))))
declare -A ROLE_OF
for role in worker center receive; do
	env "${ENVS[@]}" SORAKAQ_NODE_ID="$role-$RUN" SORAKAQ_DATA_DIR="$WORK/data/$role" \
		"$WORK/bin/sorakaq" "$role" >>"$OUT/$role.log" 2>&1 &
	PIDS+=($!)
	ROLE_OF[$!]=$role
	echo "$! $role" >>"$OUT/pids"
done
for _ in $(seq 1 300); do
	curl -fsS "$URL/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$WORKER/readyz" >/dev/null 2>&1 && break
	sleep 0.1
done
sleep 5 # slot map written, leases taken
echo "== run $RUN: receive $URL, worker :$WORKER, center :$CENTER; pids: $(tr '\n' ' ' <"$OUT/pids")"

# every second: local port -> pid and tcp_info byte counters of our Redis sockets
(while :; do
	echo "T $(date +%s.%N)"
	ss -tnpiH state established "( dport = :$RPORT )" 2>/dev/null | paste - - 
	sleep 1
done) >"$OUT/ss.log" &
SSPID=$!

snap() { # name
	{
		echo "T $(date +%s.%N)"
		rcli INFO commandstats
		rcli INFO stats
		rcli INFO memory
		rcli INFO cpu
		echo "DBKEYS $(rcli --scan --pattern "{$RUN:*" | wc -l)"
		echo "MSGKEYS $(rcli --scan --pattern "{$RUN:*}:m:*" | wc -l)"
	} >"$OUT/snap-$1.txt"
	rcli CLIENT LIST >"$OUT/clients-$1.txt"
}

echo "== 1. idle 20 s"
snap idle0
sleep 20
snap idle1

echo "== 2. lifecycle: $N messages at $RATE/s, then the purge"
snap life0
"$WORK/bin/sorakaq-load" -url "$URL" -mode fire -topic "cost-$RUN" -n "$N" -rate "$RATE" -lead 2s -c 10 \
	-wait 20s -grace 1s -json >"$OUT/life.json" 2>"$OUT/life.txt" || echo "load tool verdict: FAILED (see $OUT/life.txt)"
tail -n 25 "$OUT/life.txt"
snap life1
sleep 30
snap life2

echo "== 3. attribution: $MON_N messages under MONITOR"
redis-cli -p "$RPORT" MONITOR >"$OUT/monitor.txt" &
MONPID=$!
sleep 10
date +%s.%N >"$OUT/mon-t1"
"$WORK/bin/sorakaq-load" -url "$URL" -mode fire -topic "mon-$RUN" -n "$MON_N" -rate 50 -lead 2s -c 10 \
	-wait 20s -grace 1s -json >"$OUT/mon.json" 2>"$OUT/mon.txt" || echo "load tool verdict: FAILED (see $OUT/mon.txt)"
sleep 30 # retention 20 s + purge interval
date +%s.%N >"$OUT/mon-t2"
kill "$MONPID"
MONPID=""

echo "== 4. memory: $MEM_N pending messages (delay 1 h)"
snap mem0
"$WORK/bin/sorakaq-load" -url "$URL" -mode submit -topic "mem-$RUN" -n "$MEM_N" -c 10 -delay 3600000 -json >"$OUT/mem.json" 2>"$OUT/mem.txt" || true
sleep 2
snap mem1
{
	k=$(rcli --scan --pattern "{$RUN:*}:m:*" | sed -n 1p)
	echo "sample message key: $k"
	echo "STRLEN $(rcli STRLEN "$k")  MEMORY USAGE $(rcli MEMORY USAGE "$k")"
	rcli GET "$k"
	echo
	for suffix in due counts "t:mem-$RUN:all" "t:mem-$RUN:s:delayed" lease; do
		kk="${k%%\}*}}:$suffix"
		echo "$kk: TYPE $(rcli TYPE "$kk") ZCARD $(rcli ZCARD "$kk" 2>/dev/null) MEMORY USAGE $(rcli MEMORY USAGE "$kk") ENCODING $(rcli OBJECT ENCODING "$kk")"
	done
	echo "zset listpack limits: $(rcli CONFIG GET zset-max-listpack-entries | tr '\n' ' ')"
} >"$OUT/memory-sample.txt"
cat "$OUT/memory-sample.txt"
kill "$SSPID"
SSPID=""

python3 - "$OUT" "$N" "$MON_N" "$MEM_N" "$RPORT" "$RUN" <<'PY'
import sys, re, collections, os
out, N, MON_N, MEM_N, rport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
roles = {}
for l in open(f"{out}/pids"):
    p, r = l.split(); roles[p] = r

def snap(name):
    d = {"cmd": {}, "kv": {}}
    for l in open(f"{out}/snap-{name}.txt"):
        l = l.strip()
        if l.startswith("T "): d["t"] = float(l[2:])
        elif l.startswith("cmdstat_"):
            name_, rest = l[8:].split(":", 1)
            d["cmd"][name_] = int(re.search(r"calls=(\d+)", rest).group(1))
        elif l.startswith(("DBKEYS", "MSGKEYS")):
            k, v = l.split(); d["kv"][k] = int(v)
        elif ":" in l:
            k, v = l.split(":", 1)
            try: d["kv"][k] = int(v)
            except ValueError:
                try: d["kv"][k] = float(v)
                except ValueError: pass
    return d

def delta(a, b):
    A, B = snap(a), snap(b)
    cmds = {k: B["cmd"].get(k, 0) - A["cmd"].get(k, 0) for k in set(A["cmd"]) | set(B["cmd"])}
    cmds.pop("info", None); cmds.pop("client|list", None); cmds.pop("scan", None); cmds.pop("monitor", None)
    kv = {k: B["kv"][k] - A["kv"].get(k, 0) for k in B["kv"]}
    return B["t"] - A["t"], {k: v for k, v in cmds.items() if v}, kv, B["kv"]

# per-process socket bytes from ss samples: last value per connection, summed per pid, between two times
def ss_bytes(t0, t1):
    last = {}  # conn -> (pid, sent, recv) at last sample <= t
    first = {}
    t = 0
    for l in open(f"{out}/ss.log"):
        if l.startswith("T "): t = float(l[2:]); continue
        m = re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:%s" % rport, l)
        pm = re.search(r"pid=(\d+)", l)
        if not m or not pm: continue
        sent = int((re.search(r"bytes_sent:(\d+)", l) or re.search(r"bytes_acked:(\d+)", l)).group(1)) if re.search(r"bytes_(sent|acked):", l) else 0
        recv = int(re.search(r"bytes_received:(\d+)", l).group(1)) if "bytes_received" in l else 0
        c = m.group(1)
        if t <= t0: first[c] = (pm.group(1), sent, recv)
        if t <= t1: last[c] = (pm.group(1), sent, recv)
    res = collections.defaultdict(lambda: [0, 0])
    for c, (p, s, r) in last.items():
        s0, r0 = first.get(c, (p, 0, 0))[1:]
        res[roles.get(p, "pid" + p)][0] += s - s0
        res[roles.get(p, "pid" + p)][1] += r - r0
    return dict(res)

rep = open(f"{out}/report.md", "w")
def w(s=""):
    print(s); rep.write(s + "\n")

di, ci, kvi, _ = delta("idle0", "idle1")
w(f"## idle ({di:.1f} s, no messages): commands/s")
w("| command | per s |"); w("| --- | --- |")
for k, v in sorted(ci.items(), key=lambda x: -x[1]): w(f"| {k} | {v/di:.1f} |")
w(f"Redis CPU {(kvi['used_cpu_user']+kvi['used_cpu_sys'])/di*100:.1f} % of a core; net in {kvi['total_net_input_bytes']/di:.0f} B/s, out {kvi['total_net_output_bytes']/di:.0f} B/s")
bi = ss_bytes(snap("idle0")["t"], snap("idle1")["t"])
w("per process (socket bytes/s, to Redis / from Redis): " + ", ".join(f"{r} {s/di:.0f} / {rv/di:.0f}" for r, (s, rv) in sorted(bi.items())))
w()
for (a, b, label) in (("life0", "life1", "submit -> delivered"), ("life1", "life2", "purge (and idle)"), ("life0", "life2", "whole lifecycle")):
    d, c, kv, end = delta(a, b)
    w(f"## {label}: {N} messages, {d:.1f} s; per message after subtracting the idle rate")
    w("| command | calls | idle share | per message |"); w("| --- | --- | --- | --- |")
    tot = 0
    for k in sorted(set(c) | set(ci), key=lambda k: -c.get(k, 0)):
        idle = ci.get(k, 0) / di * d
        pm = (c.get(k, 0) - idle) / N
        tot += pm
        if c.get(k, 0): w(f"| {k} | {c.get(k,0)} | {idle:.0f} | {pm:.2f} |")
    w(f"| **all** | {sum(c.values())} | {sum(ci.values())/di*d:.0f} | **{tot:.2f}** |")
    nin = (kv['total_net_input_bytes'] - kvi['total_net_input_bytes'] / di * d) / N
    nout = (kv['total_net_output_bytes'] - kvi['total_net_output_bytes'] / di * d) / N
    cpu = (kv['used_cpu_user'] + kv['used_cpu_sys']) * 1e6
    cpui = (kvi['used_cpu_user'] + kvi['used_cpu_sys']) * 1e6 / di * d
    w(f"Redis CPU (used_cpu_user+sys): {cpu/1e3:.0f} ms in {d:.1f} s, idle share {cpui/1e3:.0f} ms: {(cpu-cpui)/N:.0f} us per message")
    w(f"net bytes per message: in (to Redis) {nin:.0f} B, out (from Redis) {nout:.0f} B; used_memory change {kv['used_memory']} B ({kv['used_memory']/N:.0f} B/message); message keys at end {end.get('MSGKEYS')}, keys of the run {end.get('DBKEYS')}")
    sb = ss_bytes(snap(a)["t"], snap(b)["t"])
    w("per process, socket bytes per message (to Redis / from Redis), idle subtracted: " + ", ".join(
        f"{r} {(s - bi.get(r,[0,0])[0]/di*d)/N:.0f} / {(rv - bi.get(r,[0,0])[1]/di*d)/N:.0f}" for r, (s, rv) in sorted(sb.items())))
    w()

# MONITOR attribution
port_pid = {}
for l in open(f"{out}/ss.log"):
    m = re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:%s" % rport, l)
    pm = re.search(r"pid=(\d+)", l)
    if m and pm: port_pid[m.group(1)] = pm.group(1)
t1 = float(open(f"{out}/mon-t1").read()); t2 = float(open(f"{out}/mon-t2").read())
t0 = None
last_role = "other"
RUN = sys.argv[6]
idle = collections.Counter(); busy = collections.Counter()
for l in open(f"{out}/monitor.txt", errors="replace"):
    m = re.match(r"([\d.]+) \[\d+ (?:127\.0\.0\.1:(\d+)|(lua))\] \"([^\"]+)\"(.*)", l)
    if not m: continue
    ts = float(m.group(1)); t0 = t0 or ts
    cmd = m.group(4).lower()
    if m.group(3):  # a command run by a Lua script: the caller's, shown right after its EVALSHA
        role, cmd = last_role, "(lua) " + cmd
    else:
        role = roles.get(port_pid.get(m.group(2), ""), "other")
        last_role = role
    if role == "other":
        continue  # a client this script did not start
    key = (role, cmd)
    if ts < t1: idle[key] += 1
    elif ts <= t2: busy[key] += 1
didle, dbusy = t1 - t0, t2 - t1
w(f"## MONITOR attribution: {MON_N} messages, {dbusy:.1f} s (idle {didle:.1f} s subtracted at its rate)")
w("| process | command | calls | idle share | per message |"); w("| --- | --- | --- | --- | --- |")
per_role = collections.Counter()
for key in sorted(set(idle) | set(busy)):
    share = idle[key] / didle * dbusy
    pm = (busy[key] - share) / MON_N
    per_role[key[0]] += pm
    w(f"| {key[0]} | {key[1]} | {busy[key]} | {share:.0f} | {pm:.2f} |")
w("per process, commands per message: " + ", ".join(f"{r} {v:.2f}" for r, v in sorted(per_role.items())))
w("idle commands/s per process: " + ", ".join(f"{r} {sum(v for (rr, c), v in idle.items() if rr == r)/didle:.1f}" for r in sorted({k[0] for k in idle})))
w()
d, c, kv, end = delta("mem0", "mem1")
w(f"## memory: {MEM_N} pending messages: used_memory +{kv['used_memory']} B = {kv['used_memory']/MEM_N:.0f} B per pending message (message keys {end.get('MSGKEYS')})")
rep.close()
PY
echo "== report: $OUT/report.md"
