#!/usr/bin/env bash
# Starts sorakaQ in the background, pid files and logs under logs/.
#   ./start.sh all                     the all-in-one (receive + worker + admin); with a
#                                      distributed config, the four roles as separate processes
#   ./start.sh receive|center|worker|admin   one role (distributed mode)
#   ./start.sh stop [role]             stops what start.sh started (all roles by default)
#   ./start.sh status                  shows what runs
# The config comes from SORAKAQ_CONFIG (or built-in defaults). Builds
# bin/sorakaq first if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
roles="all receive center worker admin"
mkdir -p logs

pidfile() { echo "logs/sorakaq-$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

start() {
  local role=$1
  if running "$role"; then
    echo "sorakaq $role already running (pid $(cat "$(pidfile "$role")"))"; return 0
  fi
  [ -x bin/sorakaq ] || ./build.sh
  nohup bin/sorakaq "$role" >>"logs/sorakaq-$role.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$(pidfile "$role")"
  # wait until it answers /readyz (or dies)
  local port=""
  case $role in
    all|receive) port=${SORAKAQ_RECEIVE_LISTEN:-:9088};;
    admin) port=${SORAKAQ_ADMIN_LISTEN:-:9087};;
    center) port=${SORAKAQ_CENTER_LISTEN:-:9086};;
    worker) port=${SORAKAQ_WORKER_LISTEN:-:9089};;
  esac
  port=${port##*:}
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "sorakaq $role exited at start; last log lines:" >&2
      tail -n 20 "logs/sorakaq-$role.log" >&2
      rm -f "$(pidfile "$role")"
      return 1
    fi
    if [ -z "$port" ] || curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      echo "sorakaq $role started (pid $pid, log logs/sorakaq-$role.log)"; return 0
    fi
    sleep 0.1
  done
  echo "sorakaq $role started (pid $pid) but is not ready yet; see logs/sorakaq-$role.log"
}

stop() {
  local role=$1 f pid
  f=$(pidfile "$role")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "sorakaq $role did not stop in 30 s; killing"; kill -KILL "$pid"; fi
    echo "sorakaq $role stopped"
  fi
  rm -f "$f"
}

# distributed: `all` means the four roles as separate processes
distributed() {
  [ "${SORAKAQ_MODE:-}" = distributed ] && return 0
  [ -n "${SORAKAQ_CONFIG:-}" ] && grep -Eq '^mode:[[:space:]]*distributed' "$SORAKAQ_CONFIG"
}

case "${1:-}" in
  all) if distributed; then for r in worker center receive admin; do start "$r"; done; else start all; fi ;;
  receive|center|worker|admin) start "$1" ;;
  stop) if [ -n "${2:-}" ]; then stop "$2"; else for r in $roles; do stop "$r"; done; fi ;;
  status) for r in $roles; do if running "$r"; then echo "$r: running (pid $(cat "$(pidfile "$r")"))"; fi; done ;;
  *) echo "usage: $0 all|receive|center|worker|admin|stop [role]|status" >&2; exit 2 ;;
esac
