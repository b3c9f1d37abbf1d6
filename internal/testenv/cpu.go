package testenv

import (
	"syscall"
	"time"
)

// ProcessCPU is this process's user + system CPU time so far (0 if the
// kernel will not say): benchmarks report CPU per operation from two
// readings, a figure the shared box's noise moves far less than wall time.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
