// Package testproc holds helpers for tests that run the sorakaq binary as
// a child process; used only by tests.
//
// It builds the binary once (Build), picks free loopback ports
// (FreePorts), gives the child a clean environment (CleanEnv) and runs it
// as a Proc: start and wait until its readiness URLs answer 200, stop with
// a signal and check the exit status, kill -9, restart, and read what it
// wrote. What a test package does around that (which roles, which ports,
// which settings, what to log on failure) stays in the test package.
package testproc

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ModuleRoot is the root of the sorakaq module (../.. from this file).
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary is a sorakaq binary built by Build.
type Binary struct {
	Path string        // the binary
	Cmd  string        // the go command that built it, for logs
	Dir  string        // where it ran (the module root)
	Took time.Duration // how long the build took
	tmp  string
}

// Build builds ./cmd/sorakaq into a new temporary directory named after
// tmpPattern (os.MkdirTemp), with -race when race is set. The caller
// decides race (typically: the test binary itself was built with -race)
// and removes the directory with Remove when done.
func Build(tmpPattern string, race bool) (*Binary, error) {
	dir, err := os.MkdirTemp("", tmpPattern)
	if err != nil {
		return nil, err
	}
	b := &Binary{Path: filepath.Join(dir, "sorakaq"), Dir: ModuleRoot(), tmp: dir}
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", b.Path, "./cmd/sorakaq")
	b.Cmd = "go " + strings.Join(args, " ")
	build := exec.Command("go", args...)
	build.Dir = b.Dir
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s: %v\n%s", b.Cmd, err, out)
	}
	b.Took = time.Since(start)
	return b, nil
}

// Remove deletes the binary and its temporary directory.
func (b *Binary) Remove() { os.RemoveAll(b.tmp) }

// DefaultParallel sets -test.parallel to n unless it was given on the
// command line. The tests that run child processes mostly wait, and the
// default (GOMAXPROCS) serialises them needlessly on small machines. Call
// it after flag.Parse.
func DefaultParallel(n int) {
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", fmt.Sprint(n))
	}
}

// FreePorts returns n distinct free loopback addresses (host:port). A port
// is free when picked; another process may take it before the child binds
// it, which Proc.Start detects.
func FreePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// FreePort returns one free loopback address.
func FreePort() (string, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return "", err
	}
	return ports[0], nil
}

// CleanEnv is the environment without SORAKAQ_* (the caller's settings
// must not leak into the process under test).
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SORAKAQ_") {
			env = append(env, kv)
		}
	}
	return env
}

// Gorace is the GORACE setting for a child: a -race binary sleeps 1 s at
// exit by default; a race still makes it exit 66, which Proc.StopWith
// reports. The caller's GORACE is kept.
func Gorace() string { return "GORACE=atexit_sleep_ms=50 " + os.Getenv("GORACE") }

// Buffer is a bytes.Buffer safe for the exec copier and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Probe is a URL that answers 200 once the process is ready.
type Probe struct {
	URL    string
	Client *http.Client // nil: http.DefaultClient
}

// Proc is one child process (and its restarts with the same command and
// environment). Set the exported fields before the first Start.
type Proc struct {
	Name  string   // how errors name it ("sorakaq", "worker w1")
	Bin   string   // the binary
	Args  []string // its arguments
	Env   []string // its whole environment
	Ready []Probe  // each must answer 200, in order, for Start to return

	ReadyTimeout time.Duration // for all of Ready together
	Poll         time.Duration // between readiness tries (default 20 ms)
	// AliveAfter is how long the process must still run after it answered
	// ready: a free port can be taken by another process between the pick
	// and the bind, and that one answers the probe. 0 skips the check.
	AliveAfter  time.Duration
	StopTimeout time.Duration // for StopWith, before the goroutine dump

	// ReadyAt is when the last Start saw the process ready.
	ReadyAt time.Time

	out Buffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	runs    int
}

// Start runs the process and waits until every Ready probe answers 200
// (and, with AliveAfter, that it is still alive after that). On an error
// the process may still run: Kill it.
func (p *Proc) Start() error {
	p.mu.Lock()
	p.runs++
	fmt.Fprintf(&p.out, "=== run %d started %s ===\n", p.runs, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout = &p.out
	cmd.Stderr = &p.out
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		return err
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.waitErr = cmd, exited, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()

	deadline := time.Now().Add(p.ReadyTimeout)
	for _, probe := range p.Ready {
		if err := p.waitReady(probe, deadline, exited); err != nil {
			return err
		}
	}
	if p.AliveAfter > 0 {
		select {
		case <-exited:
			return fmt.Errorf("%s exited after it answered ready (port taken by another process?): %v", p.Name, p.exitErr())
		case <-time.After(p.AliveAfter):
		}
	}
	p.mu.Lock()
	p.ReadyAt = time.Now()
	p.mu.Unlock()
	return nil
}

func (p *Proc) waitReady(probe Probe, deadline time.Time, exited <-chan struct{}) error {
	client := probe.Client
	if client == nil {
		client = http.DefaultClient
	}
	poll := p.Poll
	if poll <= 0 {
		poll = 20 * time.Millisecond
	}
	var last error
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it was ready: %v", p.Name, p.exitErr())
		default:
		}
		resp, err := client.Get(probe.URL)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d %s", resp.StatusCode, body)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s within %v (last: %v)", p.Name, probe.URL, p.ReadyTimeout, last)
		}
		time.Sleep(poll)
	}
}

func (p *Proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Running reports whether the last run is still going.
func (p *Proc) Running() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// StopWith sends sig and waits for the exit; for any signal but SIGKILL
// it requires exit code 0. A process that does not exit within
// StopTimeout gets SIGQUIT (a goroutine dump into its output), then
// SIGKILL, and that is an error.
func (p *Proc) StopWith(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return fmt.Errorf("%s had already exited: %v", p.Name, p.exitErr())
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-exited:
	case <-time.After(p.StopTimeout):
		// Ask for a goroutine dump (SIGQUIT) to show where it hangs.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		return fmt.Errorf("%s did not exit within %v of %v (goroutine dump in its output)", p.Name, p.StopTimeout, sig)
	}
	fmt.Fprintf(&p.out, "=== stopped by %v %s: %v ===\n", sig, time.Now().Format("15:04:05.000"), p.exitErr())
	if sig == syscall.SIGKILL {
		return nil
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("%s exited with code %d after %v, want 0", p.Name, code, sig)
	}
	return nil
}

// Signal sends sig without waiting (SIGSTOP and SIGCONT freeze and thaw
// the process).
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return cmd.Process.Signal(sig)
}

// Kill kills the process if it runs and waits until it is gone (cleanup;
// errors ignored).
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
	default:
		cmd.Process.Kill()
		<-exited
	}
}

// Stop sends SIGTERM and requires a clean exit (code 0) in time.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	if err := p.StopWith(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// Kill9 kills the process with SIGKILL and waits until it is gone.
func (p *Proc) Kill9(t testing.TB) {
	t.Helper()
	if err := p.StopWith(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// Restart starts the process again with the same command and environment.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	if err := p.Start(); err != nil {
		t.Fatalf("restarting %s: %v", p.Name, err)
	}
}

// Output is everything the process (all its runs) wrote, with a line
// marking each start and stop.
func (p *Proc) Output() string { return p.out.String() }

// Raced reports whether the process (a -race build) reported a data race.
func (p *Proc) Raced() bool { return strings.Contains(p.Output(), "WARNING: DATA RACE") }

// PortTaken reports whether a failed Start failed because a port was
// taken: worth another try on other ports.
func (p *Proc) PortTaken() bool { return strings.Contains(p.Output(), "address already in use") }

// Tries is how many times StartOnFreePorts picks ports.
const Tries = 3

// StartOnFreePorts picks n free ports, makes a Proc for them with newProc
// and starts it; when the start fails because a port was taken, it tries
// again on new ports (Tries in all). On an error, the Proc is the last one
// tried (killed; nil if none was made), for its output.
func StartOnFreePorts(n int, newProc func(ports []string) *Proc) (*Proc, error) {
	var p *Proc
	var last error
	for try := 0; try < Tries; try++ {
		ports, err := FreePorts(n)
		if err != nil {
			return p, err
		}
		p = newProc(ports)
		if last = p.Start(); last == nil {
			return p, nil
		}
		p.Kill()
		if !p.PortTaken() {
			break
		}
	}
	return p, last
}
