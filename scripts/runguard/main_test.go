package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunGuard runs commands that leave processes behind (started with
// setsid and a parent that exits, as infra.sh starts its servers) and
// commands that leave nothing.
func TestRunGuard(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string // $1 is a file to write the left-over pid to
		code   int
		left   bool
		output string
	}{
		{"clean exit", `exit 0`, 0, false, "left no process running"},
		{"failure passes through", `exit 3`, 3, false, "left no process running"},
		{"a daemon left running fails the run", `setsid sleep 60 >/dev/null 2>&1 & echo $! >"$1"`, 1, true, "left 1 process(es) running"},
		{"and keeps the command's own failure code", `setsid sleep 60 >/dev/null 2>&1 & echo $! >"$1"; exit 4`, 4, true, "sleep 60"},
		// it writes its pid once its trap is set, so TERM cannot come first
		{"one that ignores TERM is killed", `setsid sh -c 'trap "" TERM; echo $$ >"$0"; while :; do sleep 0.1; done' "$1" >/dev/null 2>&1 & while [ ! -s "$1" ]; do sleep 0.01; done`, 1, true, "SIGKILL"},
		{"a child stopped before the end is fine", `sleep 60 & p=$!; kill $p; wait $p; exit 0`, 0, false, "left no process running"},
		// a daemon killed with kill -9 while the command runs (the soak kills
		// its Redis) must be seen gone: reaped, not left a zombie
		{"an orphan killed during the run is reaped at once", `sh -c 'setsid sleep 61 >/dev/null 2>&1 & echo $! >"$1"' sh "$1"; sleep 0.3; p=$(cat "$1"); kill -9 $p; i=0; while kill -0 $p 2>/dev/null; do i=$((i+1)); [ $i -gt 30 ] && exit 3; sleep 0.1; done; exit 0`, 0, false, "left no process running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			var log bytes.Buffer
			code, err := run([]string{"sh", "-c", tc.script, "sh", pidFile}, 300*time.Millisecond, &log)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d; log:\n%s", code, tc.code, log.String())
			}
			if !strings.Contains(log.String(), tc.output) || tc.left == strings.Contains(log.String(), "left no process") {
				t.Errorf("log %q, want it to contain %q", log.String(), tc.output)
			}
			if !tc.left {
				return
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if !strings.Contains(log.String(), "pid "+strconv.Itoa(pid)+":") {
				t.Errorf("the left-over pid %d is not named: %s", pid, log.String())
			}
			if len(alive([]int{pid})) != 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("pid %d still runs after runguard", pid)
			}
		})
	}
}
