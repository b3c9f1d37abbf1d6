#!/usr/bin/env bash
# Benchmarks sorakaQ on this machine with cmd/sorakaq-load (docs sizes):
# builds the server and the load tool, starts an all-in-one server on free
# test ports with a temporary data dir, runs
#   submit  -c 100 -d 20s
#   fire    -n 100000 -rate 5000 -lead 30s -ref   (everything submitted first, all in the wheel)
#   fire-overlap  the same rate, each message submitted 1 s before its due
#           time, so submits keep arriving while messages fire
#   fire-loader   the server started with SORAKAQ_WORKER_WINDOW=5s and a 30 s
#           lead: every message is beyond the wheel's window when submitted and
#           reaches the wheel through the worker's store-to-wheel loader
#   fire-herd     $BENCH_HERD_N (50000) messages all due in the same millisecond:
#           the drain time (due -> last callback) and its ratio to the reference's
#   fire-pending  $BENCH_PENDING_N (1000000) messages submitted first with a 1 h delay
#           (on disk, beyond the wheel's window), then the fire run on the same
#           server: compare with mode fire (issue 10: "no worse", the loader keeps up)
# (each fire mode also runs the load tool's in-memory reference on the same
# plan and prints sorakaQ's lateness as ratios to it; the load tool exits 1
# on missing, early or duplicate callbacks or a schedule error out of bounds,
# and this script then exits 1 after the remaining modes)
#   latency -c 10 -n 20000
# (and wrk -t2 -c100 -d20s on submit if wrk is installed, since wrk costs
# less CPU than Go's client on the same box), prints the results and stops
# the server. Each run starts from an empty data dir.
#
#   scripts/bench.sh                  everything
#   BENCH_MODES="submit latency" scripts/bench.sh
#   BENCH_OUT=/some/dir scripts/bench.sh   keep the JSON reports and logs there
#   BENCH_FIRE_N=20000 BENCH_FIRE_RATE=1000 scripts/bench.sh
#       the fire modes with fewer messages / a lower rate (default 100000 at 5000/s)
#   BENCH_REPEAT=5 BENCH_MODES=fire-herd scripts/bench.sh
#       each mode 5 times, each on a fresh server, reports NAME-1.json (.txt) ...; a
#       mode run with the reference then prints its ratios of every run and their
#       median (one herd or one p99 ratio on this shared box says little)
#   BENCH_TARGET=distributed scripts/bench.sh
#       the distributed mode instead: receive, center, worker and admin as four
#       processes over the servers of scripts/infra.sh (run `scripts/infra.sh up`
#       first), each run with its own ZooKeeper root, Redis prefix and Kafka topics
# Modes: submit wrk fire latency (default), fire-overlap, fire-loader, fire-herd, flow (submit latency at 10 clients
# and the flow time received -> held by a worker, same run), ab (the original's
# ab table, scripts/ab-table.sh), ab-submit (ab -k -c 100 -n 100000 on submit, then on the
# same server's /healthz, and their ratio), keyed (submits with a unique Idempotency-Key each
# against unkeyed ones, 10 s each),
# batch (10 s each on a fresh server: single submits at -c 100, then
# submitBatch with 100 per request at -c 4 and 500 at -c 2; messages/s),
# isolation (fire -n $BENCH_FIRE_N at $BENCH_FIRE_RATE/s to a healthy receiver
# and, in the same run and due window, -slow $BENCH_SLOW_N (2000) messages to a
# second receiver answering in $BENCH_SLOW_MS (5s): the healthy destination's
# lateness beside a slow one; compare with mode fire).
#
# The client, the callback sink and the server share the machine: figures
# are for "everything on one host", see the machine line of each report.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODES=${BENCH_MODES:-"submit wrk fire latency"}
FIRE_N=${BENCH_FIRE_N:-100000}
FIRE_RATE=${BENCH_FIRE_RATE:-5000}
TARGET=${BENCH_TARGET:-allinone}
SERVER_PIDS=()
WORK=$(mktemp -d /tmp/sorakaq-bench.XXXXXX)
OUT=${BENCH_OUT:-$WORK/out}
mkdir -p "$OUT"
SERVER_PID=""
SERVER_ENV=() # extra KEY=VALUE for the next server start
FAILED=()
REPEAT=${BENCH_REPEAT:-1}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_REPEAT must be a positive integer, not '$REPEAT'" >&2; exit 2; }
RUN=""     # the report's suffix in a repeated run: -1, -2, ...
REPORTS=() # name|file of each load run of the current mode

cleanup() {
	stop_server
	rm -rf "$WORK/data" "$WORK/bin"
	[[ -n ${BENCH_OUT:-} ]] && rm -rf "$WORK" || true
}
trap cleanup EXIT

free_port() { # first port from $1 on which nothing listens
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

RECV_PORT=$(free_port 19288)
ADMIN_PORT=$(free_port $((RECV_PORT + 1)))
URL="http://127.0.0.1:$RECV_PORT"

echo "== building into $WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/sorakaq" ./cmd/sorakaq && go build -o "$WORK/bin/sorakaq-load" ./cmd/sorakaq-load)

start_server() {
	if [[ $TARGET == distributed ]]; then start_distributed; return; fi
	rm -rf "$WORK/data"
	env SORAKAQ_DATA_DIR="$WORK/data" SORAKAQ_RECEIVE_LISTEN="127.0.0.1:$RECV_PORT" \
		SORAKAQ_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" SORAKAQ_LOG_LEVEL=warn "${SERVER_ENV[@]}" \
		"$WORK/bin/sorakaq" all >>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$RECV_PORT") 2>/dev/null; then return 0; fi
		kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; see $OUT/server.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "server did not listen on $RECV_PORT" >&2
	exit 1
}

start_distributed() {
	[[ -n ${SORAKAQ_TEST_REDIS:-} ]] || eval "$("$ROOT/scripts/infra.sh" env)"
	local run=$RANDOM$RANDOM
	BENCH_RUN=$run
	local center_port worker_port
	center_port=$(free_port $((ADMIN_PORT + 1)))
	worker_port=$(free_port $((center_port + 1)))
	local env=(SORAKAQ_MODE=distributed SORAKAQ_DATA_DIR="$WORK/data" SORAKAQ_LOG_LEVEL=warn
		SORAKAQ_REDIS_ADDRS="$SORAKAQ_TEST_REDIS" SORAKAQ_ZOOKEEPER_SERVERS="$SORAKAQ_TEST_ZK" SORAKAQ_KAFKA_BROKERS="$SORAKAQ_TEST_KAFKA"
		SORAKAQ_ZOOKEEPER_ROOT="/sqbench-$run" SORAKAQ_REDIS_PREFIX="bench$run" SORAKAQ_KAFKA_TOPIC_PREFIX="bench${run}_"
		SORAKAQ_KAFKA_GROUP="bench$run" SORAKAQ_KAFKA_DEFAULT_PARTITIONS=8 SORAKAQ_ADMIN_API_TOKEN=bench
		SORAKAQ_CLUSTER_SECRET="bench-secret-$run"
		SORAKAQ_RECEIVE_LISTEN="127.0.0.1:$RECV_PORT" SORAKAQ_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT"
		SORAKAQ_CENTER_LISTEN="127.0.0.1:$center_port" SORAKAQ_WORKER_LISTEN="127.0.0.1:$worker_port" SORAKAQ_NODE_ID=w1
		SORAKAQ_CALLBACK_PRIVATE_NETWORKS=loopback "${SERVER_ENV[@]}")
	ROLE_PIDS=()
	for role in worker center receive admin; do
		env "${env[@]}" "$WORK/bin/sorakaq" "$role" >>"$OUT/server-$role.log" 2>&1 &
		SERVER_PIDS+=($!)
		ROLE_PIDS+=("$role=$!")
	done
	FLOW_METRICS="http://127.0.0.1:$worker_port/metrics"
	if ((${BENCH_WORKERS:-1} > 1)); then # more workers on the same box, slots shared
		local i wp=$worker_port
		for i in $(seq 2 "$BENCH_WORKERS"); do
			wp=$(free_port $((wp + 1)))
			env "${env[@]}" SORAKAQ_NODE_ID="w$i" SORAKAQ_WORKER_LISTEN="127.0.0.1:$wp" SORAKAQ_DATA_DIR="$WORK/data/w$i" \
				"$WORK/bin/sorakaq" worker >>"$OUT/server-worker$i.log" 2>&1 &
			SERVER_PIDS+=($!)
			ROLE_PIDS+=("worker$i=$!")
			FLOW_METRICS+=",http://127.0.0.1:$wp/metrics"
		done
	fi
	for _ in $(seq 1 300); do
		curl -fsS "$URL/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	for t in sorakaq-load delay_test; do
		curl -fsS -H 'Authorization: Bearer bench' "http://127.0.0.1:$ADMIN_PORT/sorakaq/topic/add" \
			-d "{\"topic_name\":\"$t\"}" >/dev/null
	done
	sleep 2 # the worker takes its slots
}

stop_server() {
	for p in "${SERVER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	SERVER_PIDS=()
	if [[ -n ${BENCH_RUN:-} ]]; then # leave the shared Redis as it was
		local rport=${SORAKAQ_TEST_REDIS##*:}
		redis-cli -p "$rport" --scan --pattern "{bench$BENCH_RUN*" | xargs -r -n 1000 redis-cli -p "$rport" DEL >/dev/null || true
		BENCH_RUN=""
	fi
	if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID"
		for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=""
}

# CPU accounting of a run: every server process, and in the distributed
# mode the Redis and Kafka servers too (shared ones count other clients').
cpu_procs() { # "name=pid ..."
	if [[ $TARGET == distributed ]]; then
		echo "${ROLE_PIDS[*]}"
		local r k
		r=$(pgrep -f "redis-server.*:${SORAKAQ_TEST_REDIS##*:}" | head -1 || true)
		k=$(pgrep -f "kafka\.Kafka" | head -1 || true)
		[[ -n $r ]] && echo "redis=$r"
		[[ -n $k ]] && echo "kafka=$k"
	else
		echo "server=$SERVER_PID"
	fi
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CPU_BEFORE=()
cpu_start() {
	CPU_BEFORE=()
	local e
	for e in $(cpu_procs); do CPU_BEFORE+=("$e:$(cpu_ticks "${e#*=}")"); done
	CPU_LOAD0=$(cut -d' ' -f1 /proc/loadavg)
}
cpu_report() { # units (messages) of the run
	local n=$1 e name pid before line="" hz
	hz=$(getconf CLK_TCK)
	for e in "${CPU_BEFORE[@]}"; do
		name=${e%%=*}
		pid=${e#*=}
		before=${pid#*:}
		pid=${pid%%:*}
		line+=" $name $(((($(cpu_ticks "$pid") - before) * 1000000 / hz) / n))"
	done
	echo "== CPU µs per message ($n):$line (load average $CPU_LOAD0 -> $(cut -d' ' -f1 /proc/loadavg))"
}

load() { # name args...
	local name=$1
	shift
	echo
	echo "== $name$RUN: ${SERVER_ENV[*]} sorakaq-load -url $URL $*"
	start_server
	local args=("${@//@FLOW_METRICS@/${FLOW_METRICS:-}}") # the worker's /metrics, known once it runs
	cpu_start
	local report="$OUT/$name$RUN.json"
	if ! "$WORK/bin/sorakaq-load" -url "$URL" -json "${args[@]}" >"$report"; then
		echo "== $name$RUN FAILED (see the verdict above)"
		FAILED+=("$name$RUN")
	fi
	REPORTS+=("$name|$report")
	local n
	n=$(grep -o '"acknowledged": *[0-9]*\|"messages": *[0-9]*' "$report" | head -1 | grep -o '[0-9]*$' || true)
	[[ -n $n && $n -gt 0 ]] && cpu_report "$n"
	worker_shares
	stop_server
	SERVER_ENV=()
}

# worker_shares (distributed): each worker's callback attempts and slots
# held, from its /metrics, so a run with BENCH_WORKERS=2 shows the share.
worker_shares() {
	[[ $TARGET == distributed && -n ${FLOW_METRICS:-} ]] || return 0
	local u line=""
	for u in ${FLOW_METRICS//,/ }; do
		line+=" $(curl -fsS "$u" 2>/dev/null | awk -v u="${u%/metrics}" '
			/^sorakaq_callbacks_total/ {c += $NF}
			/^sorakaq_slots_held / {s = $NF}
			END {printf "%s: %d callbacks, %d slots;", u, c, s}')"
	done
	echo "== workers:$line"
	curl -fsS "$URL/metrics" 2>/dev/null | awk '
		/^sorakaq_notice_publish_seconds_count/ {n += $NF}
		/^sorakaq_notice_records_total/ {r += $NF}
		END {if (r > 0) printf "== notices: %d in %d Kafka records (%.1f per record)\n", n, r, n / r}'
}

# ratio_of FILE KEY: the value of KEY in the report's ratio_to_reference
ratio_of() {
	tr -d ' \n\t' <"$1" | sed -n 's/.*"ratio_to_reference":{\([^}]*\)}.*/\1/p' | tr ',' '\n' |
		sed -n "s/^\"$2\":\([0-9.eE+-]*\)\$/\1/p"
}

# median of the numbers on stdin
median() {
	sort -g | awk '{a[NR] = $1} END {if (NR == 0) exit; if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m}'
}

# ratios_summary: after a repeated mode, each run's ratios to the reference
# (drain and p99 of the client's clock) and their medians.
ratios_summary() {
	local names entry name key vals
	names=$(printf '%s\n' "${REPORTS[@]}" | cut -d'|' -f1 | sort -u)
	for name in $names; do
		for key in drain p99; do
			vals=()
			for entry in "${REPORTS[@]}"; do
				[[ ${entry%%|*} == "$name" ]] || continue
				local v
				v=$(ratio_of "${entry#*|}" "$key")
				[[ -n $v ]] && vals+=("$(printf '%.2f' "$v")")
			done
			((${#vals[@]})) || continue
			echo "== $name over ${#vals[@]} runs: $key ratio to the reference ${vals[*]} (median $(printf '%s\n' "${vals[@]}" | median))"
		done
	done
}

for m in $MODES; do
	REPORTS=()
	for ((rep = 1; rep <= REPEAT; rep++)); do
		RUN=""
		((REPEAT > 1)) && RUN="-$rep"
		case $m in
		submit) load submit -mode submit -c 100 -d 20s ;;
		fire) load fire -mode fire -n "$FIRE_N" -rate "$FIRE_RATE" -lead 30s -wait 60s -ref ;;
		fire-overlap) load fire-overlap -mode fire -pattern overlap -ahead 1s -n "$FIRE_N" -rate "$FIRE_RATE" -wait 60s -ref ;;
		fire-pending) # the fire run with a million messages pending beyond the window
			echo
			echo "== fire-pending: ${BENCH_PENDING_N:-1000000} submits with delay 1 h (-c 100), then fire -n $FIRE_N -rate $FIRE_RATE on the same server"
			start_server
			"$WORK/bin/sorakaq-load" -url "$URL" -json -mode submit -c 100 -n "${BENCH_PENDING_N:-1000000}" -delay 3600000 >"$OUT/fire-pending-fill$RUN.json"
			echo "== fire-pending: filled; data dir $(du -sh "$WORK/data" 2>/dev/null | cut -f1)"
			cpu_start
			if ! "$WORK/bin/sorakaq-load" -url "$URL" -json -mode fire -n "$FIRE_N" -rate "$FIRE_RATE" -lead 30s -wait 60s -ref >"$OUT/fire-pending$RUN.json"; then
				echo "== fire-pending$RUN FAILED (see the verdict above)"
				FAILED+=("fire-pending$RUN")
			fi
			REPORTS+=("fire-pending|$OUT/fire-pending$RUN.json")
			cpu_report "$FIRE_N"
			stop_server
			;;
		fire-herd) # every message due in one millisecond: the drain time, as a ratio to the reference's
			load fire-herd -mode fire -pattern herd -n "${BENCH_HERD_N:-50000}" -lead 30s -wait 60s -ref ;;
		fire-loader)
			SERVER_ENV=(SORAKAQ_WORKER_WINDOW=5s)
			load fire-loader -mode fire -n "$FIRE_N" -rate "$FIRE_RATE" -lead 30s -window 5s -wait 60s -ref
			;;
		latency) load latency -mode latency -c 10 -n 20000 ;;
		isolation) load isolation -mode fire -n "$FIRE_N" -rate "$FIRE_RATE" -lead 30s -wait 60s -slow "${BENCH_SLOW_N:-2000}" -slow-ms "${BENCH_SLOW_MS:-5s}" ;;
		keyed) # keyed submits (a unique Idempotency-Key each) against unkeyed, fresh servers, 10 s each
			load keyed-off -mode submit -c 100 -d 10s
			load keyed-on -mode submit -c 100 -d 10s -keyed
			;;
		batch)
			load batch-single -mode submit -c 100 -d 10s
			load batch-100 -mode submit -c 4 -batch 100 -d 10s
			load batch-500 -mode submit -c 2 -batch 500 -d 10s
			;;
		flow)
			if [[ $TARGET == distributed ]]; then
				load flow -mode latency -c 10 -n 10000 -flow-metrics @FLOW_METRICS@
			else
				load flow -mode latency -c 10 -n 10000 -flow-samples 1000
			fi
			;;
		ab-submit)
			# the issue's headline: ApacheBench, 100 keep-alive clients, a delay
			# long enough that nothing fires during the run
			echo
			echo "== ab-submit: ab -k -c 100 -n 100000 (after a warm-up of 1,000 at -c 10) on $URL/sorakaq/msg/submit"
			command -v ab >/dev/null || { echo "bench: ab-submit needs ab: apt-get install -y apache2-utils" >&2; exit 1; }
			start_server
			printf '%s' '{"topic_name":"delay_test","delay_time":600000,"ttr":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/cb","params":"{\"id\":111}"}}' >"$WORK/body.json"
			ab -q -k -c 10 -n 1000 -p "$WORK/body.json" -T application/json "$URL/sorakaq/msg/submit" >/dev/null
			ab -q -k -c 100 -n 100000 -p "$WORK/body.json" -T application/json "$URL/sorakaq/msg/submit" | tee "$OUT/ab-submit$RUN.txt" |
				grep -E "Complete requests|Failed requests|Non-2xx|Requests per second|  50%|  99%"
			# the same server's floor: /healthz, same ab, right after
			echo "== ab-submit: the same server's /healthz (ab -k -c 100 -n 100000), the reference for the ratio"
			ab -q -k -c 100 -n 100000 "$URL/healthz" >"$OUT/ab-healthz$RUN.txt"
			grep -E "Requests per second" "$OUT/ab-healthz$RUN.txt"
			awk '/Requests per second/ {r[n++]=$4} END {if (n == 2 && r[1] > 0) printf "== durable submit / healthz = %.2f\n", r[0] / r[1]}' "$OUT/ab-submit$RUN.txt" "$OUT/ab-healthz$RUN.txt"
			stop_server
			;;
		ab)
			echo
			echo "== ab: scripts/ab-table.sh $URL (the original's pairs)"
			start_server
			"$ROOT/scripts/ab-table.sh" "$URL" | tee "$OUT/ab$RUN.txt"
			stop_server
			;;
		wrk)
			if ! command -v wrk >/dev/null; then
				echo "== wrk not installed, skipped"
				continue
			fi
			cat >"$WORK/submit.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"topic_name":"sorakaq-load","delay_time":600000,"ttr":1000,"callback":{"request_type":"POST","url":"http://127.0.0.1:9/sorakaq-load","params":"{}"}}'
LUA
			echo
			echo "== wrk: wrk -t2 -c100 -d20s --latency -s submit.lua $URL/sorakaq/msg/submit"
			echo "   (wrk's percentiles come from its histogram, not exact; 'Non-2xx' lines are errors)"
			start_server
			wrk -t2 -c100 -d20s --latency -s "$WORK/submit.lua" "$URL/sorakaq/msg/submit" | tee "$OUT/wrk$RUN.txt"
			stop_server
			;;
		*) echo "unknown mode $m" >&2; exit 2 ;;
		esac
	done
	if ((REPEAT > 1)); then ratios_summary; fi
done
echo
echo "== reports (JSON) in $OUT"
if ((${#FAILED[@]})); then echo "== FAILED: ${FAILED[*]}"; fi
if [[ -s $OUT/server.log || $TARGET == distributed ]]; then
	echo "== server log (warn and above), last lines:"
	tail -n 20 "$OUT"/server*.log
fi
if ((${#FAILED[@]})); then exit 1; fi
