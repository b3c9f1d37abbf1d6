// Command runguard runs a command so that nothing it starts can outlive it
// unnoticed. runguard makes itself a child subreaper (Linux
// PR_SET_CHILD_SUBREAPER): a process the command starts whose parent exits
// (a daemon, a server started with setsid, a test's child left by a
// timeout) is re-parented to runguard instead of init. When the command
// has exited, every such process still running was left by the run:
// runguard lists them, stops them (by pid: TERM, then KILL after -grace)
// and exits 1 (or the command's own code when that failed). .ci/run and
// scripts/test.sh run themselves under it.
//
//	runguard [-grace 10s] -- command [args...]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const prSetChildSubreaper = 36 // linux/prctl.h

func main() {
	grace := flag.Duration("grace", 10*time.Second, "how long a left-over process gets to exit after SIGTERM")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: runguard [-grace 10s] -- command [args...]")
		os.Exit(2)
	}
	code, err := run(flag.Args(), *grace, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runguard:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

// run runs args, then stops what it left; it returns the exit code.
func run(args []string, grace time.Duration, log io.Writer) (int, error) {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return 0, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", e)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	// A subreaper must reap the orphans that exit while the command runs
	// (a server killed with kill -9 by the command): unreaped, they stay
	// zombies, and `kill -0` says they are still alive.
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				reapOrphans(cmd.Process.Pid)
			}
		}
	}()
	code := 0
	err := cmd.Wait()
	close(done)
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return 0, fmt.Errorf("wait %s: %w", args[0], err)
		}
		code = ee.ExitCode()
		if code < 0 {
			code = 1 // killed by a signal
		}
	}
	left := descendants(os.Getpid())
	if len(left) == 0 {
		fmt.Fprintf(log, "runguard: %s left no process running\n", strings.Join(args, " "))
		return code, nil
	}
	fmt.Fprintf(log, "runguard: FAIL: %s left %d process(es) running; the step that started them must stop them:\n", strings.Join(args, " "), len(left))
	// Stopping one can orphan its own children (a killed wrapper's
	// server): they come to us too, so go again until none is left.
	for round := 0; len(left) > 0 && round < 10; round++ {
		for _, p := range left {
			fmt.Fprintf(log, "runguard:   pid %d: %s\n", p, cmdline(p))
		}
		stop(left, grace, log)
		left = descendants(os.Getpid())
	}
	if code == 0 {
		code = 1
	}
	return code, nil
}

// descendants lists the live (not zombie) processes below pid.
func descendants(pid int) []int {
	reap()
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p] = pp
	}
	var out []int
	for p := range parent {
		for a, n := parent[p], 0; a > 1 && n < 1000; a, n = parent[a], n+1 {
			if a == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// reapOrphans collects exited children other than except (the command,
// which cmd.Wait collects): the orphans re-parented to us.
func reapOrphans(except int) {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == except {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp == self {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p, &ws, syscall.WNOHANG, nil)
		}
	}
}

// reap collects exited children (orphans re-parented to us among them).
func reap() {
	for {
		var ws syscall.WaitStatus
		p, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if p <= 0 || err != nil {
			return
		}
	}
}

func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return "?"
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// stop sends TERM to each pid, then KILL to those still there after grace.
func stop(pids []int, grace time.Duration, log io.Writer) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && len(alive(pids)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range alive(pids) {
		fmt.Fprintf(log, "runguard:   pid %d ignored SIGTERM for %v: SIGKILL\n", p, grace)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for time.Now().Before(deadline.Add(5*time.Second)) && len(alive(pids)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	reap()
}

// alive is the pids that still run (zombies are reaped, not counted).
func alive(pids []int) []int {
	reap()
	var out []int
	for _, p := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 0 && f[0] != "Z" && f[0] != "X" {
			out = append(out, p)
		}
	}
	return out
}
